"""Access arithmetic: how views change with updates. Pure: no I/O, no clock.

Rules (callers: actors.client.client_store on the borrower side to apply updates, the owner's shell to
keep its own count of views granted, and the test checkers for invariant I4):

- A grant is keyed by (owner, borrower, image). Its state is the views left and whether it ended.
- `grant` with delta +N adds N; with delta -N subtracts N, floored at 0 (a decrement larger than the
  views left leaves 0, it is not an error).
- `approve` (the owner's yes to a request for more views) adds delta, which must be >= 0.
- The result is capped at MAX_VIEWS (a count above what any message can carry is never stored).
- `deny` changes nothing (it only tells the borrower the answer).
- `revoke` sets the views to 0 and ends the grant. An ended grant ignores every later update of that
  grant: sharing again means a new grant (a higher grant version, stored fresh by the client store).
- `more` (borrower -> owner request) is not an access change: applying it is a caller error.
- Views are `type(v) is int` in 0..MAX_VIEWS, deltas in -MAX_DELTA..MAX_DELTA. bool, float, str and
  anything else are refused (CBOR `true` is not 1; `1.0` is not 1).
- Order: updates of one grant are applied in post order, the counter n of their id "owner#n"
  (the owner's client never reuses n). Every access update is authored by the owner, so its id must
  start with "<owner>#". `final_views` sorts by n and drops duplicate ids (delivery is at least once).
  `GrantState.apply` applies in arrival order; the client sees post order because the nodes hand over
  pending updates in post order and direct updates arrive while the borrower is online.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from codec.names import InvalidName, parse_request_id

MAX_VIEWS = 1_000_000
MAX_DELTA = 1_000_000
ACCESS_KINDS = frozenset({"grant", "revoke", "approve", "deny"})


class AccessError(ValueError):
    """A view count, delta or update breaks the rules; `what` names the field, `value` is the bad value."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        super().__init__(f"{what}: {reason} (got {value!r})")
        self.what = what
        self.value = value
        self.reason = reason


class UpdateLike(Protocol):
    """The fields of codec.messages.Update that the arithmetic reads."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def borrower(self) -> str: ...
    @property
    def image(self) -> str: ...
    @property
    def delta(self) -> int: ...


def _check_int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise AccessError(what, value, "must be an integer")
    if not lo <= value <= hi:
        raise AccessError(what, value, f"must be in {lo}..{hi}")
    return value


def check_views(value: object, what: str = "views") -> int:
    """A view count: int in 0..MAX_VIEWS. Raises AccessError otherwise."""
    return _check_int(value, what, 0, MAX_VIEWS)


def check_delta(value: object, what: str = "delta") -> int:
    """A change of views: int in -MAX_DELTA..MAX_DELTA. Raises AccessError otherwise."""
    return _check_int(value, what, -MAX_DELTA, MAX_DELTA)


def cap_views(requested: object, max_views_per_grant: object) -> int:
    """Views the owner grants for a request: min(requested, cap). Both must be ints >= 1.

    Caller: the owner's client answering ImageRequest / MoreViews (cap = client.max_views_per_grant).
    """
    req = _check_int(requested, "views", 1, MAX_VIEWS)
    cap = _check_int(max_views_per_grant, "max_views_per_grant", 1, MAX_VIEWS)
    return min(req, cap)


def position(update_id: object, author: str | None = None) -> int:
    """The counter n of an update id "user#n" (its post order). If author is given, user must match."""
    try:
        user, n = parse_request_id(update_id)
    except InvalidName as exc:
        raise AccessError("id", update_id, exc.reason) from None
    if author is not None and user != author:
        raise AccessError("id", update_id, f"must be authored by {author!r}")
    return n


def apply(views_left: object, update: UpdateLike) -> int:
    """Views left after one update (grant state aside: see GrantState for 'ended').

    Raises AccessError for a bad count, delta or kind; never returns a negative count.
    """
    views = check_views(views_left, "views_left")
    kind = update.kind
    if kind not in ACCESS_KINDS:
        raise AccessError("kind", kind, f"not an access change (one of {sorted(ACCESS_KINDS)})")
    delta = check_delta(update.delta)
    if kind == "revoke":
        return 0
    if kind == "deny":
        return views
    if kind == "approve" and delta < 0:
        raise AccessError("delta", delta, "an approval cannot remove views")
    return min(max(views + delta, 0), MAX_VIEWS)


@dataclass(frozen=True, slots=True)
class GrantState:
    """One grant as the borrower holds it. last_position: n of the last update applied (0: none)."""

    owner: str
    borrower: str
    image: str
    views_left: int
    ended: bool = False
    last_position: int = 0

    def __post_init__(self) -> None:
        check_views(self.views_left, "views_left")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.owner, self.borrower, self.image)

    def apply(self, update: UpdateLike) -> GrantState:
        """The state after `update` (which must belong to this grant and be authored by its owner)."""
        if (update.owner, update.borrower, update.image) != self.key:
            raise AccessError("update", update.id, f"belongs to another grant than {self.key}")
        n = position(update.id, author=self.owner)
        views = apply(self.views_left, update)  # validates kind and delta even when ended
        if self.ended:
            return replace(self, last_position=max(self.last_position, n))
        return replace(
            self,
            views_left=views,
            ended=update.kind == "revoke",
            last_position=max(self.last_position, n),
        )


def final_views(initial: int, updates: Iterable[UpdateLike]) -> int:
    """Views left after applying updates of ONE grant in post order, each id once.

    Callers: tests and history checkers (invariant I4: views equal the counter arithmetic).
    """
    items = list(updates)
    if not items:
        return check_views(initial, "initial")
    first = items[0]
    state = GrantState(first.owner, first.borrower, first.image, check_views(initial, "initial"))
    seen: set[str] = set()
    for update in sorted(items, key=lambda u: position(u.id, author=state.owner)):
        if update.id in seen:
            continue
        seen.add(update.id)
        state = state.apply(update)
    return state.views_left
