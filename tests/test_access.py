"""Access arithmetic: every rule, TI-7 counts, post order, and a hypothesis model check."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.core import access
from actors.core.access import MAX_VIEWS, AccessError, GrantState, cap_views, final_views


@dataclass(frozen=True)
class U:
    """A bare update record: lets the tests feed values codec.messages.Update would refuse."""

    id: str
    kind: str
    delta: Any
    owner: str = "alice"
    borrower: str = "bob"
    image: str = "pic.jpg"


BAD_COUNTS = [-1, 2**31, 2**64, True, False, 1.0, "3", None, 3 + 0j]


@pytest.mark.parametrize("good", [0, 1, 7, MAX_VIEWS])
def test_views_in_range_are_accepted(good: int) -> None:
    assert access.check_views(good) == good


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_views_of_wrong_type_or_range_are_refused(bad: object) -> None:
    with pytest.raises(AccessError) as info:
        access.check_views(bad)
    assert info.value.what == "views"
    assert info.value.value is bad


@pytest.mark.parametrize("bad", [2**31, 2**64, -(2**31), True, 1.0, "3", -1_000_001])
def test_deltas_of_wrong_type_or_range_are_refused(bad: object) -> None:
    with pytest.raises(AccessError):
        access.check_delta(bad)


def test_delta_bounds_are_inclusive() -> None:
    assert access.check_delta(-1_000_000) == -1_000_000
    assert access.check_delta(1_000_000) == 1_000_000


def test_plus_adds_and_minus_subtracts() -> None:
    assert access.apply(2, U("alice#1", "grant", 3)) == 5
    assert access.apply(5, U("alice#2", "grant", -2)) == 3


def test_decrement_larger_than_views_left_floors_at_zero() -> None:
    assert access.apply(2, U("alice#1", "grant", -5)) == 0
    assert access.apply(0, U("alice#1", "grant", -1_000_000)) == 0


def test_result_is_capped_at_max_views() -> None:
    assert access.apply(MAX_VIEWS, U("alice#1", "grant", 5)) == MAX_VIEWS


def test_revoke_zeroes_and_deny_keeps() -> None:
    assert access.apply(9, U("alice#1", "revoke", 0)) == 0
    assert access.apply(9, U("alice#1", "deny", 0)) == 9


def test_approve_adds_but_cannot_remove() -> None:
    assert access.apply(1, U("alice#1", "approve", 4)) == 5
    with pytest.raises(AccessError, match="approval"):
        access.apply(1, U("alice#1", "approve", -1))


@pytest.mark.parametrize("kind", ["more", "GRANT", "", "delete"])
def test_non_access_kinds_are_refused(kind: str) -> None:
    with pytest.raises(AccessError) as info:
        access.apply(1, U("alice#1", kind, 1))
    assert info.value.what == "kind"


@pytest.mark.parametrize("bad", [True, 1.0, "3", 2**64])
def test_apply_refuses_bad_delta_and_bad_views(bad: object) -> None:
    with pytest.raises(AccessError):
        access.apply(1, U("alice#1", "grant", bad))
    with pytest.raises(AccessError):
        access.apply(bad, U("alice#1", "grant", 1))


def test_cap_views_takes_the_smaller() -> None:
    assert cap_views(3, 10) == 3
    assert cap_views(50, 10) == 10
    assert cap_views(10, 10) == 10


@pytest.mark.parametrize(
    ("req", "cap"),
    [(0, 10), (-1, 10), (True, 10), (1.0, 10), ("3", 10), (2**64, 10), (3, 0), (3, True), (3, 2.5)],
)
def test_cap_views_refuses_bad_counts(req: object, cap: object) -> None:
    with pytest.raises(AccessError):
        cap_views(req, cap)


def test_position_reads_the_counter_and_checks_the_author() -> None:
    assert access.position("alice#0") == 0
    assert access.position("alice#42", author="alice") == 42
    with pytest.raises(AccessError, match="authored by"):
        access.position("bob#42", author="alice")


@pytest.mark.parametrize(
    "bad",
    [
        "alice",
        "alice#",
        "#3",
        "alice#-1",
        "alice#01",
        "alice#1.0",
        f"alice#{2**53 + 1}",
        "a/b#1",
        3,
        None,
    ],
)
def test_position_refuses_non_ids(bad: object) -> None:
    with pytest.raises(AccessError) as info:
        access.position(bad)
    assert info.value.what == "id"


def test_revoke_ends_the_grant_and_later_updates_are_ignored() -> None:
    s = GrantState("alice", "bob", "pic.jpg", 3)
    s = s.apply(U("alice#1", "revoke", 0))
    assert (s.views_left, s.ended, s.last_position) == (0, True, 1)
    s = s.apply(U("alice#2", "grant", 5))
    assert (s.views_left, s.ended, s.last_position) == (0, True, 2)
    s = s.apply(U("alice#3", "approve", 5))
    assert s.views_left == 0


def test_grant_state_refuses_other_grants_and_foreign_authors() -> None:
    s = GrantState("alice", "bob", "pic.jpg", 3)
    with pytest.raises(AccessError, match="another grant"):
        s.apply(U("alice#1", "grant", 1, image="other.jpg"))
    with pytest.raises(AccessError, match="authored by"):
        s.apply(U("bob#1", "grant", 100))
    with pytest.raises(AccessError):
        GrantState("alice", "bob", "pic.jpg", -1)


def test_final_views_sorts_by_post_order_and_drops_duplicates() -> None:
    ups = [
        U("alice#3", "grant", 4),
        U("alice#1", "grant", -5),
        U("alice#2", "grant", 1),
        U("alice#1", "grant", -5),
    ]
    # post order: 2 -5 -> 0, +1 -> 1, +4 -> 5 (arrival order would give 2+4+1-5 = 2)
    assert final_views(2, ups) == 5
    assert final_views(7, []) == 7


def test_final_views_revoke_in_the_middle_wins() -> None:
    ups = [U("alice#5", "grant", 10), U("alice#4", "revoke", 0), U("alice#3", "grant", 2)]
    assert final_views(1, ups) == 0


def _model(initial: int, ops: list[tuple[str, int]]) -> int:
    """Independent counter arithmetic in post order (the I4 checker's rule)."""
    v = initial
    for kind, d in ops:
        if kind == "revoke":
            return 0
        if kind in ("grant", "approve"):
            v = min(MAX_VIEWS, max(0, v + d))
    return v


_op = st.one_of(
    st.tuples(st.just("grant"), st.integers(-1_000_000, 1_000_000)),
    st.tuples(st.just("grant"), st.integers(-5, 5)),
    st.tuples(st.just("approve"), st.integers(0, 10)),
    st.tuples(st.just("deny"), st.just(0)),
    st.tuples(st.just("revoke"), st.just(0)),
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    initial=st.integers(0, 20),
    ops=st.lists(_op, max_size=30),
    seed=st.integers(0, 2**32 - 1),
    dup=st.integers(0, 5),
)
def test_final_views_equals_counter_arithmetic_whatever_the_arrival_order(
    initial: int, ops: list[tuple[str, int]], seed: int, dup: int
) -> None:
    ups = [U(f"alice#{i + 1}", kind, d) for i, (kind, d) in enumerate(ops)]
    rng = random.Random(seed)
    arrived = ups + [rng.choice(ups) for _ in range(dup if ups else 0)]
    rng.shuffle(arrived)
    got = final_views(initial, arrived)
    assert got == _model(initial, ops)
    assert 0 <= got <= MAX_VIEWS


@settings(max_examples=200, derandomize=True, deadline=None)
@given(initial=st.integers(0, 20), ops=st.lists(_op, max_size=30))
def test_grant_state_in_post_order_never_goes_negative(
    initial: int, ops: list[tuple[str, int]]
) -> None:
    s = GrantState("alice", "bob", "pic.jpg", initial)
    for i, (kind, d) in enumerate(ops):
        s = s.apply(U(f"alice#{i + 1}", kind, d))
        assert 0 <= s.views_left <= MAX_VIEWS
    assert s.views_left == _model(initial, ops)
    assert s.ended == any(k == "revoke" for k, _ in ops)
