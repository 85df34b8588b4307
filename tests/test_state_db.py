"""state.db: request ids never reused, updates applied once, views taken atomically, inbox."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.client.client_store import (
    GivenGrant,
    ReceivedGrant,
    RequestIdBlock,
    StateDB,
    StateTxn,
    StoreError,
)
from codec.messages import Update


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    d = StateDB(tmp_path / "state.db")
    yield d
    d.close()


def test_request_ids_count_per_user_and_survive_reopen(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as d:
        assert [d.next_request_id("alice") for _ in range(3)] == ["alice#1", "alice#2", "alice#3"]
        assert d.next_request_id("bob") == "bob#1"
    with StateDB(tmp_path / "s.db") as d:
        assert d.next_request_id("alice") == "alice#4"
        assert d.last_request_number("alice") == 4
        assert d.last_request_number("carol") == 0


_RUN = [sys.executable, "-c"]
_KILL_IDS = """
import os, signal, sys
from actors.client.client_store import StateDB
db = StateDB(sys.argv[1])
for _ in range(25):
    print(db.next_request_id("alice"), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_request_ids_are_never_reused_after_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateDB(path) as d:
        d.next_request_id("alice")
    out = subprocess.run(
        _RUN + [_KILL_IDS, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == -signal.SIGKILL
    used = out.stdout.split()
    assert used == [f"alice#{n}" for n in range(2, 27)]
    with StateDB(path) as d:
        assert d.next_request_id("alice") == "alice#27"


_KILL_BLOCK = """
import os, signal, sys
from actors.client.client_store import RequestIdBlock, StateDB
ids = RequestIdBlock(StateDB(sys.argv[1]), "alice", size=10)
for _ in range(13):  # a block of 10 used up, 3 of the next
    print(ids.next(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_block_of_ids_is_one_commit_and_never_handed_out_twice(tmp_path: Path) -> None:
    """Encrypt ids come from blocks (one commit per block). An update's id, drawn one at a time,
    is above every id of the blocks reserved before it; ids of a block left unused when the
    process dies are skipped, never reused, by this home's next process."""
    path = tmp_path / "s.db"
    with StateDB(path) as d:
        block = RequestIdBlock(d, "alice", size=4)
        assert block.next() == "alice#1"
        assert d.last_request_number("alice") == 4  # the whole block committed at once
        assert d.next_request_id("alice") == "alice#5"  # an update: above the block
        assert [block.next() for _ in range(4)] == ["alice#2", "alice#3", "alice#4", "alice#6"]
        assert d.last_request_number("alice") == 9
        assert d.reserve_request_ids("bob", 2) == range(1, 3)  # per user
        with pytest.raises(StoreError):
            d.reserve_request_ids("alice", 0)
    out = subprocess.run(
        _RUN + [_KILL_BLOCK, str(path)], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    used = out.stdout.split()
    assert used == [f"alice#{n}" for n in range(10, 23)]
    with StateDB(path) as d:
        assert d.next_request_id("alice") == "alice#30"  # 23..29 were reserved: skipped


def test_skipping_moves_past_the_block_and_that_many_ids_none_handed_out(tmp_path: Path) -> None:
    """`skip(n)` (the cloud said the next ids are in use: another home of this user): the rest
    of the block and n more ids are passed over, in one commit; the next id follows them."""
    with StateDB(tmp_path / "s.db") as d:
        block = RequestIdBlock(d, "alice", size=4)
        assert block.next() == "alice#1"
        block.skip(8)  # alice#2..4 (the block) and alice#5..12
        assert d.last_request_number("alice") == 12
        assert [block.next() for _ in range(2)] == ["alice#13", "alice#14"]
        assert d.last_request_number("alice") == 16


def test_the_counter_is_raised_never_lowered(tmp_path: Path) -> None:
    with StateDB(tmp_path / "s.db") as d:
        d.raise_counter("alice", 1000)  # no row yet: created at 1000
        assert d.next_request_id("alice") == "alice#1001"
        d.raise_counter("alice", 10)  # below: unchanged
        assert d.last_request_number("alice") == 1001
        with pytest.raises(StoreError):
            d.raise_counter("alice", 2**53 + 1)


def test_blocks_from_threads_and_a_second_process_hand_out_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateDB(path) as d, StateDB(path) as other:
        mine, theirs = RequestIdBlock(d, "alice", size=7), RequestIdBlock(other, "alice", size=5)
        got: list[str] = []
        lock = threading.Lock()

        def draw(block: RequestIdBlock) -> None:
            for _ in range(40):
                rid = block.next()
                with lock:
                    got.append(rid)

        threads = [threading.Thread(target=draw, args=(b,)) for b in (mine, mine, theirs, theirs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 160 and len(set(got)) == 160


def test_reserving_past_the_counter_limit_is_refused_and_moves_nothing(tmp_path: Path) -> None:
    from actors.client.state_db import MAX_REQUEST_COUNTER

    with StateDB(tmp_path / "s.db") as d:
        d.reserve_request_ids("alice", MAX_REQUEST_COUNTER - 3)
        with pytest.raises(StoreError, match="exhausted"):
            d.reserve_request_ids("alice", 4)
        assert d.last_request_number("alice") == MAX_REQUEST_COUNTER - 3
        assert d.reserve_request_ids("alice", 3) == range(MAX_REQUEST_COUNTER - 2,
                                                          MAX_REQUEST_COUNTER + 1)


def up(n: int, kind: str, delta: int, author: str = "alice", image: str = "pic.jpg") -> Update:
    addressee = "alice" if kind == "more" else "bob"
    return Update(
        id=f"{author}#{n}",
        kind=kind,
        owner="alice",
        borrower="bob",
        image=image,
        delta=delta,
        addressee=addressee,
        grant=b"",
        created=0.0,
    )


def _grant(
    owner: str = "alice", image: str = "pic.jpg", views: int = 3, version: int = 1
) -> ReceivedGrant:
    return ReceivedGrant(owner, image, views, version, f"received/{owner}/{image}", 0.0, b"k")


def test_apply_once_runs_fn_once_and_records_id_with_effect(db: StateDB) -> None:
    db.put_received(_grant(views=3))
    calls: list[str] = []

    def effect(txn: StateTxn) -> None:
        calls.append("x")
        g = txn.get_received("alice", "pic.jpg")
        assert g is not None
        txn.put_received(ReceivedGrant(g.owner, g.image, g.views_left + 1, g.version + 1, g.path))

    assert db.apply_once("alice#5", effect) is True
    assert db.apply_once("alice#5", effect) is False
    assert calls == ["x"]
    assert db.is_applied("alice#5")
    assert db.get_received("alice", "pic.jpg").views_left == 4  # type: ignore[union-attr]


def test_apply_once_failure_records_nothing(db: StateDB) -> None:
    db.put_received(_grant(views=3))

    def half_then_crash(txn: StateTxn) -> None:
        txn.put_received(_grant(views=99, version=2))
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        db.apply_once("alice#5", half_then_crash)
    assert not db.is_applied("alice#5")
    assert db.get_received("alice", "pic.jpg") == _grant(views=3)
    assert db.apply_once("alice#5", lambda txn: None) is True


def test_apply_once_from_many_threads_applies_once(db: StateDB) -> None:
    results: list[bool] = []
    counter = [0]
    barrier = threading.Barrier(8)

    def bump(txn: StateTxn) -> None:
        counter[0] += 1

    def worker() -> None:
        barrier.wait()
        results.append(db.apply_once("alice#1", bump))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]
    assert counter[0] == 1


def _race(args: list[str], n: int = 2) -> list[str]:
    """Run n copies of a script that prints "ready" and waits for a line on stdin; release them
    together; return what each printed after that. Each must exit 0."""
    procs = [
        subprocess.Popen(_RUN + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.close()
        outs = [p.stdout.read() for p in procs if p.stdout is not None]
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0] * n
    return outs


_APPLY_ALL = """
import sys
from actors.client.client_store import StateDB
from codec.messages import Update
db = StateDB(sys.argv[1])
deltas = [int(x) for x in sys.argv[2].split(",")]
print("ready", flush=True)
sys.stdin.readline()
got = []
for i, d in enumerate(deltas, 1):
    u = Update(id=f"alice#{i}", kind="grant", owner="alice", borrower="bob", image="pic.jpg",
               delta=d, addressee="bob", grant=b"", created=0.0)
    got.append(db.apply_update(u))
print(got.count("applied"))
"""


def test_two_processes_applying_the_same_updates_apply_each_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    deltas = [3, -1, 2, -10, 4, 1, -2, 5] * 6
    with StateDB(path) as first:
        first.put_received(_grant(views=2))
    applied = [int(out) for out in _race([_APPLY_ALL, str(path), ",".join(map(str, deltas))])]
    assert sum(applied) == len(deltas)
    expected = 2
    for delta in deltas:
        expected = max(0, expected + delta)
    with StateDB(path) as s:
        assert s.get_received("alice", "pic.jpg").views_left == expected  # type: ignore[union-attr]


def test_take_view_counts_down_then_refuses(db: StateDB) -> None:
    db.put_received(_grant(views=2))
    assert [db.take_view("alice", "pic.jpg") for _ in range(3)] == [1, 0, None]
    assert db.take_view("alice", "nope.jpg") is None
    assert db.get_received("alice", "pic.jpg").views_left == 0  # type: ignore[union-attr]


def test_take_view_checks_expiry_when_given_the_time(db: StateDB) -> None:
    db.put_received(ReceivedGrant("alice", "pic.jpg", 5, 1, "p", expires=100.0))
    assert db.take_view("alice", "pic.jpg", now=99.0) == 4
    assert db.take_view("alice", "pic.jpg", now=100.0) is None
    db.put_received(ReceivedGrant("alice", "b.jpg", 5, 1, "p", expires=0.0))
    assert db.take_view("alice", "b.jpg", now=1e12) == 4


_TAKE_ALL = """
import sys
from actors.client.client_store import StateDB
db = StateDB(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
n = 0
while db.take_view("alice", "pic.jpg") is not None:
    n += 1
print(n)
"""


def test_take_view_racing_from_two_processes_uses_exactly_n_views(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateDB(path) as d:
        d.put_received(_grant(views=300))
    taken = [int(out) for out in _race([_TAKE_ALL, str(path)])]
    assert sum(taken) == 300
    with StateDB(path) as d:
        assert d.get_received("alice", "pic.jpg").views_left == 0  # type: ignore[union-attr]


def test_received_grant_versions_only_move_forward(db: StateDB) -> None:
    assert db.put_received(_grant(views=3, version=2)) is True
    db.take_view("alice", "pic.jpg")
    assert db.put_received(_grant(views=3, version=2)) is False  # same grant again: count stays
    assert db.put_received(_grant(views=9, version=1)) is False  # an older file: no views back
    assert db.get_received("alice", "pic.jpg").views_left == 2  # type: ignore[union-attr]
    assert db.put_received(_grant(views=9, version=3)) is True
    assert db.inbox() == [_grant(views=9, version=3)]


def test_requests_inbox_is_idempotent_and_answered_once(db: StateDB) -> None:
    r1 = db.add_request("bob#7", "bob", "pic.jpg", 3)
    again = db.add_request("bob#7", "bob", "pic.jpg", 3)
    r2 = db.add_request("carol#1", "carol", "b.jpg", 1)
    assert again == r1
    assert (r1.id, r1.state, r2.id) == (1, "pending", 2)
    assert db.answer_request(1, approved=True).state == "approved"
    with pytest.raises(StoreError, match="already approved"):
        db.answer_request(1, approved=False)
    with pytest.raises(StoreError, match="no request"):
        db.answer_request(99, approved=True)
    assert [r.request_id for r in db.requests()] == ["carol#1"]
    assert [r.state for r in db.requests(None)] == ["approved", "pending"]
    for bad in [
        ("bob#8", "bob", "pic.jpg", 0),
        ("bob#8", "bob", "pic.jpg", True),
        ("carol#8", "bob", "pic.jpg", 1),
        ("bob#8", "../x", "pic.jpg", 1),
    ]:
        with pytest.raises(ValueError):
            db.add_request(*bad)
    assert len(db.requests(None)) == 2


def test_given_grants_follow_the_owner_updates(db: StateDB) -> None:
    with pytest.raises(StoreError, match="no grant given"):
        db.given_apply(up(1, "grant", 1))
    db.put_given(GivenGrant("bob", "pic.jpg", 2, 2, 1))
    assert db.given_apply(up(2, "grant", 3)) == GivenGrant("bob", "pic.jpg", 5, 5, 1)
    assert db.given_apply(up(3, "grant", -9)) == GivenGrant("bob", "pic.jpg", 5, 0, 1)
    assert db.given_apply(up(4, "approve", 2)) == GivenGrant("bob", "pic.jpg", 7, 2, 1)
    assert db.given_apply(up(5, "revoke", 0)) == GivenGrant("bob", "pic.jpg", 7, 0, 1)
    assert db.shared() == [GivenGrant("bob", "pic.jpg", 7, 0, 1)]
    assert db.get_given("bob", "pic.jpg") == db.shared()[0]


def test_apply_update_changes_views_once_in_post_order(db: StateDB) -> None:
    db.put_received(_grant(views=2))
    steps = [
        (up(1, "grant", 3), "applied", 5),
        (up(1, "grant", 3), "duplicate", 5),
        (up(2, "grant", -9), "applied", 0),
        (up(3, "approve", 4), "applied", 4),
        (up(4, "deny", 0), "applied", 4),
        (up(5, "revoke", 0), "applied", 0),
        (up(6, "grant", 7), "applied", 0),
    ]
    for update, outcome, views in steps:
        assert db.apply_update(update) == outcome
        g = db.get_received("alice", "pic.jpg")
        assert g is not None and g.views_left == views
    assert g is not None and g.ended and g.last_position == 6
    assert db.take_view("alice", "pic.jpg") is None


def test_apply_update_without_grant_is_recorded_without_effect(db: StateDB) -> None:
    assert db.apply_update(up(1, "grant", 3, image="gone.jpg")) == "no_grant"
    assert db.apply_update(up(1, "grant", 3, image="gone.jpg")) == "duplicate"
    assert db.inbox() == []


def test_apply_update_more_enters_the_owner_inbox_once(db: StateDB) -> None:
    assert db.apply_update(up(4, "more", 3, author="bob")) == "request"
    assert db.apply_update(up(4, "more", 3, author="bob")) == "duplicate"
    assert [(r.request_id, r.borrower, r.views) for r in db.requests()] == [("bob#4", "bob", 3)]


def test_apply_update_refuses_forged_author_and_records_nothing(db: StateDB) -> None:
    db.put_received(_grant(views=1))
    with pytest.raises(ValueError, match="authored by"):
        db.apply_update(up(9, "grant", 100, author="bob"))
    assert not db.is_applied("bob#9")
    assert db.get_received("alice", "pic.jpg").views_left == 1  # type: ignore[union-attr]


def test_grants_with_bad_counts_are_refused(db: StateDB) -> None:
    bad_received = [
        ReceivedGrant("alice", "pic.jpg", -1, 1, "p"),
        ReceivedGrant("alice", "pic.jpg", True, 1, "p"),
        ReceivedGrant("alice", "pic.jpg", 1, 1.0, "p"),  # type: ignore[arg-type]
        ReceivedGrant("alice", "pic.jpg", 1, 1, "p", expires=float("nan")),
        ReceivedGrant("alice", "pic.jpg", 1, 1, "p", expires=-1.0),
    ]
    for grant in bad_received:
        with pytest.raises((ValueError, StoreError)):
            db.put_received(grant)
    for given in [
        GivenGrant("bob", "pic.jpg", 3, 2**31 * 1000, 1),
        GivenGrant("bob", "a", -1, 0, 1),
    ]:
        with pytest.raises((ValueError, StoreError)):
            db.put_given(given)
    assert db.inbox() == [] and db.shared() == []
