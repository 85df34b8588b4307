"""state.db: the client's durable state (sqlite, WAL, synchronous=FULL). Imported via actors.client.client_store.

Tables: `counter` (request ids: the counter is committed BEFORE the id is returned, so an id is never
reused after a crash), `grants_given` (owner side), `grants_received` (borrower side: the authoritative
views left; grant versions only move forward), `applied` (update ids applied, recorded in the same
transaction as their effect), `requests` (the owner's inbox of requests for more views).

Concurrency: one connection guarded by a lock per StateDB; writes use BEGIN IMMEDIATE, so two processes
on one file serialise (take_view never hands out more views than there are).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.core import access
from actors.core.access import GrantState, UpdateLike
from actors.sqlite_util import SqliteStore, StoreError
from codec.names import check_name, make_request_id

MAX_REQUEST_COUNTER = 2**53
REQUEST_STATES = ("pending", "approved", "denied")
Row = tuple[Any, ...]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS counter (user TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS grants_given (
        borrower TEXT NOT NULL, image TEXT NOT NULL, views_granted INTEGER NOT NULL,
        views_left INTEGER NOT NULL CHECK (views_left >= 0), version INTEGER NOT NULL,
        grant BLOB NOT NULL DEFAULT x'', PRIMARY KEY (borrower, image))""",
    """CREATE TABLE IF NOT EXISTS peer_keys (
        user TEXT PRIMARY KEY, sign_key BLOB NOT NULL, box_key BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS grants_received (
        owner TEXT NOT NULL, image TEXT NOT NULL,
        views_left INTEGER NOT NULL CHECK (views_left >= 0), version INTEGER NOT NULL,
        path TEXT NOT NULL, expires REAL NOT NULL, content_key BLOB NOT NULL,
        ended INTEGER NOT NULL, last_position INTEGER NOT NULL,
        views_total INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (owner, image))""",
    "CREATE TABLE IF NOT EXISTS applied (id TEXT PRIMARY KEY)",
    """CREATE TABLE IF NOT EXISTS requests (
        id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL UNIQUE,
        borrower TEXT NOT NULL, image TEXT NOT NULL, views INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied')))""",
    """CREATE TABLE IF NOT EXISTS reports (
        borrower TEXT NOT NULL, image TEXT NOT NULL, views_left INTEGER NOT NULL,
        at REAL NOT NULL, PRIMARY KEY (borrower, image))""",
)


@dataclass(frozen=True, slots=True)
class GivenGrant:
    """Owner side: what this user granted `borrower` on `image` (views_left as last known)."""

    borrower: str
    image: str
    views_granted: int
    views_left: int
    version: int
    grant: bytes = b""  # the signed grant last issued (codec.sharecrypt.SignedGrant.encode())


@dataclass(frozen=True, slots=True)
class ReceivedGrant:
    """Borrower side: a grant from `owner`. path: the sealed file, relative to the home.
    expires: unix seconds, 0.0 = never. content_key: the wrapped key blob (may be empty)."""

    owner: str
    image: str
    views_left: int
    version: int
    path: str
    expires: float = 0.0
    content_key: bytes = b""
    ended: bool = False
    last_position: int = 0
    views_total: int = 0  # the views total of the last signed grant (0 = unsigned or revoked)


@dataclass(frozen=True, slots=True)
class ViewRequest:
    """Owner side: a request for more views. id: local number shown by `requests`;
    request_id: the borrower's id ("bob#7"), which makes adding it idempotent."""

    id: int
    request_id: str
    borrower: str
    image: str
    views: int
    state: str


def _check_count(value: object, what: str) -> None:
    """Versions and totals: int (not bool) in 0..2**63-1, else StoreError."""
    if type(value) is not int or not 0 <= value < 2**63:
        raise StoreError(f"{what} must be an int in 0..2**63-1, got {value!r}")


def _given(row: Row) -> GivenGrant:
    borrower, image, granted, left, version, blob = row
    return GivenGrant(borrower, image, granted, left, version, bytes(blob))


def _received(row: Row) -> ReceivedGrant:
    owner, image, views, version, path, expires, key, ended, last, total = row
    return ReceivedGrant(
        owner, image, views, version, path, float(expires), bytes(key), bool(ended), last, total
    )


_RECEIVED_COLS = (
    "owner, image, views_left, version, path, expires, content_key, ended, last_position, "
    "views_total"
)
_GIVEN_COLS = "borrower, image, views_granted, views_left, version, grant"
_REQUEST_COLS = "id, request_id, borrower, image, views, state"


class StateTxn:
    """State operations inside one open write transaction (what apply_once hands to its fn)."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def _one(self, sql: str, params: tuple[object, ...]) -> Row | None:
        row: Row | None = self._cur.execute(sql, params).fetchone()
        return row

    def _run(self, sql: str, params: tuple[object, ...]) -> None:
        self._cur.execute(sql, params)

    def get_received(self, owner: str, image: str) -> ReceivedGrant | None:
        row = self._one(
            f"SELECT {_RECEIVED_COLS} FROM grants_received WHERE owner=? AND image=?",
            (owner, image),
        )
        return None if row is None else _received(row)

    def put_received(self, grant: ReceivedGrant) -> bool:
        """Store a grant unless an equal or newer version is stored (then False: the stored count
        stays, so re-receiving or restoring an old grant never restores views)."""
        check_name(grant.owner, "owner")
        check_name(grant.image, "image")
        access.check_views(grant.views_left, "views_left")
        _check_count(grant.version, "version")
        _check_count(grant.last_position, "last_position")
        if type(grant.expires) not in (int, float) or not grant.expires >= 0:
            raise StoreError(f"expires must be seconds >= 0 (0 = never), got {grant.expires!r}")
        old = self.get_received(grant.owner, grant.image)
        if old is not None and old.version >= grant.version:
            return False
        self._run(
            f"INSERT OR REPLACE INTO grants_received ({_RECEIVED_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                grant.owner,
                grant.image,
                grant.views_left,
                grant.version,
                grant.path,
                float(grant.expires),
                bytes(grant.content_key),
                int(grant.ended),
                grant.last_position,
                grant.views_total,
            ),
        )
        return True

    def set_received_state(self, owner: str, image: str, state: GrantState) -> None:
        self._run(
            "UPDATE grants_received SET views_left=?, ended=?, last_position=? WHERE owner=? AND image=?",
            (state.views_left, int(state.ended), state.last_position, owner, image),
        )

    def set_received_signed(self, owner: str, image: str, views_left: int, version: int,
                            blob: bytes, views_total: int, ended: bool) -> None:
        self._run(
            "UPDATE grants_received SET views_left=?, version=?, content_key=?, views_total=?, "
            "ended=? WHERE owner=? AND image=?",
            (views_left, version, bytes(blob), views_total, int(ended), owner, image))

    def get_given(self, borrower: str, image: str) -> GivenGrant | None:
        row = self._one(
            f"SELECT {_GIVEN_COLS} FROM grants_given WHERE borrower=? AND image=?",
            (borrower, image),
        )
        return None if row is None else _given(row)

    def put_given(self, grant: GivenGrant) -> None:
        check_name(grant.borrower, "borrower")
        check_name(grant.image, "image")
        access.check_views(grant.views_left, "views_left")
        _check_count(grant.views_granted, "views_granted")
        _check_count(grant.version, "version")
        self._run(
            f"INSERT OR REPLACE INTO grants_given ({_GIVEN_COLS}) VALUES (?,?,?,?,?,?)",
            (grant.borrower, grant.image, grant.views_granted, grant.views_left, grant.version,
             bytes(grant.grant)),
        )

    def add_request(self, request_id: str, borrower: str, image: str, views: int) -> ViewRequest:
        """Add a request for more views; the same request_id again returns the stored one."""
        check_name(borrower, "borrower")
        check_name(image, "image")
        access.position(request_id, author=borrower)
        views = access.cap_views(views, access.MAX_VIEWS)
        query = f"SELECT {_REQUEST_COLS} FROM requests WHERE request_id=?"
        row = self._one(query, (request_id,))
        if row is None:
            self._run(
                "INSERT INTO requests (request_id, borrower, image, views, state) "
                "VALUES (?,?,?,?,'pending')",
                (request_id, borrower, image, views),
            )
            row = self._one(query, (request_id,))
        if row is None:
            raise StoreError(f"request {request_id} vanished inside its own transaction")
        return ViewRequest(*row)


def _apply_signed(txn: StateTxn, grant: ReceivedGrant, update: UpdateLike,
                  signed: tuple[bytes, int, int]) -> str:
    """A signed access update: the views follow the signed totals, never the unsigned delta.

    views_left moves by (new total - old total), kept within 0..new total; a revoke (or any
    total of 0) ends the grant, and a newer signed grant with views reopens it. The signed blob
    (with the wrapped content key) is kept only while views remain."""
    blob, version, total = signed
    if not version > grant.version:
        return "stale"
    access.check_views(total, "views total")
    if update.kind == "revoke" or total == 0:
        left, ended = 0, True
    else:
        base = 0 if grant.ended else grant.views_left
        old_total = 0 if grant.ended else grant.views_total
        left, ended = max(0, min(base + total - old_total, total)), False
    txn.set_received_signed(grant.owner, grant.image, left, version,
                            blob if left > 0 and not ended else b"", total, ended)
    return "applied"


class StateDB(SqliteStore):
    """The client's state.db. Thread-safe; several processes may share the file."""

    SCHEMA = _SCHEMA

    # -- request ids ------------------------------------------------------------------------
    def next_request_id(self, user: str) -> str:
        """Return "user#n" with n one above the last id handed out; committed to disk before returning."""
        return make_request_id(user, self.reserve_request_ids(user, 1)[0])

    def reserve_request_ids(self, user: str, count: int) -> range:
        """Move the counter past `count` ids at once (one commit, before returning) and return
        their numbers: the caller hands them out from memory (`RequestIdBlock`). None of them is
        ever handed out again, by this process or another of the same home, even if this one
        dies before using them all (the rest is skipped, never reused). For requests that need
        a unique id but no order among themselves (encrypt); an update takes its id from
        next_request_id, so it stays above every id handed out before it."""
        check_name(user, "user")
        if type(count) is not int or count < 1:
            raise StoreError(f"reserve at least one request id, not {count!r}")
        with self._db.write() as cur:
            (n,) = cur.execute(
                "INSERT INTO counter (user, n) VALUES (?, ?) "
                "ON CONFLICT (user) DO UPDATE SET n = n + excluded.n RETURNING n",
                (user, count),
            ).fetchone()
            if n > MAX_REQUEST_COUNTER:
                raise StoreError(f"request counter of {user} exhausted (above 2**53)")
        return range(n - count + 1, n + 1)

    def raise_counter(self, user: str, at_least: int) -> None:
        """Move the counter of `user` up to `at_least` if it is below (never down): the next
        id is above it. One commit, before returning."""
        check_name(user, "user")
        if type(at_least) is not int or not 0 <= at_least <= MAX_REQUEST_COUNTER:
            raise StoreError(f"a request counter of 0 to 2**53, not {at_least!r}")
        with self._db.write() as cur:
            cur.execute(
                "INSERT INTO counter (user, n) VALUES (?, ?) "
                "ON CONFLICT (user) DO UPDATE SET n = max(n, excluded.n)",
                (user, at_least),
            )

    def last_request_number(self, user: str) -> int:
        """The n of the last id handed out to `user` (0 if none)."""
        rows = self._db.query("SELECT n FROM counter WHERE user=?", (user,))
        return int(rows[0][0]) if rows else 0

    # -- applied updates --------------------------------------------------------------------
    def apply_once(self, update_id: str, fn: Callable[[StateTxn], object]) -> bool:
        """Run fn(txn) and record update_id in ONE transaction, unless the id is recorded already.

        Returns True if fn ran now, False for a duplicate. If fn raises, nothing is recorded (the
        effect and the id roll back together) and the exception propagates.
        """
        if not isinstance(update_id, str) or not update_id:
            raise StoreError(f"update id must be a non-empty string, got {update_id!r}")
        with self._db.write() as cur:
            if cur.execute("SELECT 1 FROM applied WHERE id=?", (update_id,)).fetchone():
                return False
            fn(StateTxn(cur))
            cur.execute("INSERT INTO applied (id) VALUES (?)", (update_id,))
        return True

    def is_applied(self, update_id: str) -> bool:
        return bool(self._db.query("SELECT 1 FROM applied WHERE id=?", (update_id,)))

    def apply_update(self, update: UpdateLike, signed: tuple[bytes, int, int] | None = None) -> str:
        """Apply one update addressed to this user, once. Returns what happened:
        "applied" (views changed or answer recorded), "request" (a request for more views entered the
        inbox), "no_grant" (no such grant here: recorded, no effect), "stale" (its signed grant is
        not newer than the stored one: recorded, no effect), "duplicate" (already applied).
        `signed` = (signed grant blob, its version, its views total), verified by the caller: the
        version must move forward; views left are capped at the total; the blob (it carries the
        wrapped content key) is kept only while views remain, else wiped.
        The caller has checked that the update's addressee is this user."""
        outcome = ["duplicate"]

        def effect(txn: StateTxn) -> None:
            if update.kind == "more":
                txn.add_request(update.id, update.borrower, update.image, update.delta)
                outcome[0] = "request"
                return
            grant = txn.get_received(update.owner, update.image)
            if grant is None:
                access.apply(0, update)  # still refuse a malformed update
                outcome[0] = "no_grant"
                return
            if signed is not None:
                outcome[0] = _apply_signed(txn, grant, update, signed)
                return
            state = GrantState(
                grant.owner,
                update.borrower,
                grant.image,
                grant.views_left,
                grant.ended,
                grant.last_position,
            ).apply(update)
            txn.set_received_state(grant.owner, grant.image, state)
            outcome[0] = "applied"

        self.apply_once(update.id, effect)
        return outcome[0]

    # -- borrower side ----------------------------------------------------------------------
    def put_received(self, grant: ReceivedGrant) -> bool:
        """Store a received grant (False: an equal or newer version is already stored)."""
        with self._db.write() as cur:
            return StateTxn(cur).put_received(grant)

    def get_received(self, owner: str, image: str) -> ReceivedGrant | None:
        with self._db.read() as cur:
            return StateTxn(cur).get_received(owner, image)

    def inbox(self) -> list[ReceivedGrant]:
        """Grants received, by owner then image (the `inbox` command)."""
        rows = self._db.query(f"SELECT {_RECEIVED_COLS} FROM grants_received ORDER BY owner, image")
        return [_received(r) for r in rows]

    def take_view(self, owner: str, image: str, *, now: float | None = None) -> int | None:
        """Use one view: decrement views_left if > 0 and return the new count, else None.

        Atomic across threads and processes (BEGIN IMMEDIATE). If `now` (unix seconds) is given,
        an expired grant (expires != 0 and now >= expires) yields None; without `now` expiry is not
        checked. Called BEFORE the picture is shown, so closing the program does not save a view.
        """
        with self._db.write() as cur:
            row = cur.execute(
                "SELECT views_left, expires, ended FROM grants_received WHERE owner=? AND image=?",
                (owner, image),
            ).fetchone()
            if row is None or row[0] <= 0 or row[2]:
                return None
            if now is not None and row[1] != 0 and now >= row[1]:
                return None
            cur.execute(
                "UPDATE grants_received SET views_left = views_left - 1 WHERE owner=? AND image=?",
                (owner, image),
            )
            return int(row[0]) - 1

    def wipe_key(self, owner: str, image: str) -> None:
        """The grant ended (no views left, expired, revoked): forget its wrapped content key."""
        with self._db.write() as cur:
            cur.execute("UPDATE grants_received SET content_key=x'' WHERE owner=? AND image=?",
                        (owner, image))

    # -- peers' public keys (pinned at first sight) ------------------------------------------
    def pin_peer(self, user: str, sign_key: bytes, box_key: bytes) -> bool:
        """Remember a peer's public keys the first time; True if they match what is pinned."""
        check_name(user, "user")
        with self._db.write() as cur:
            row = cur.execute("SELECT sign_key, box_key FROM peer_keys WHERE user=?",
                              (user,)).fetchone()
            if row is None:
                cur.execute("INSERT INTO peer_keys (user, sign_key, box_key) VALUES (?,?,?)",
                            (user, bytes(sign_key), bytes(box_key)))
                return True
            return bytes(row[0]) == sign_key and bytes(row[1]) == box_key

    def peer_keys(self, user: str) -> tuple[bytes, bytes] | None:
        rows = self._db.query("SELECT sign_key, box_key FROM peer_keys WHERE user=?", (user,))
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    # -- owner side -------------------------------------------------------------------------
    def put_given(self, grant: GivenGrant) -> None:
        with self._db.write() as cur:
            StateTxn(cur).put_given(grant)

    def get_given(self, borrower: str, image: str) -> GivenGrant | None:
        with self._db.read() as cur:
            return StateTxn(cur).get_given(borrower, image)

    def given_apply(self, update: UpdateLike) -> GivenGrant:
        """The owner's own record after it issued `update` (grant/approve/revoke/deny) to a
        borrower: views_left by the access arithmetic, views_granted grows by positive deltas."""
        with self._db.write() as cur:
            txn = StateTxn(cur)
            old = txn.get_given(update.borrower, update.image)
            if old is None:
                raise StoreError(f"no grant given to {update.borrower} on {update.image}")
            left = access.apply(old.views_left, update)
            added = max(update.delta, 0) if update.kind in ("grant", "approve") else 0
            new = GivenGrant(old.borrower, old.image, old.views_granted + added, left, old.version,
                             old.grant)
            txn.put_given(new)
            return new

    def report_views(self, borrower: str, image: str, views_left: int, at: float) -> None:
        """Owner side: `borrower` had `views_left` views of `image` at `at` (unix time), as its
        client reported (issue 17). Only the latest report is kept."""
        access.check_views(views_left, "views_left")
        with self._db.write() as cur:
            cur.execute("INSERT OR REPLACE INTO reports (borrower, image, views_left, at) "
                        "VALUES (?,?,?,?)", (borrower, image, views_left, float(at)))

    def reports(self) -> dict[tuple[str, str], tuple[int, float]]:
        """(borrower, image) -> (views left, unix time) of the borrowers' latest reports."""
        rows = self._db.query("SELECT borrower, image, views_left, at FROM reports")
        return {(b, i): (int(v), float(at)) for b, i, v, at in rows}

    def shared(self) -> list[GivenGrant]:
        """Grants given, by borrower then image (the `shared` command)."""
        rows = self._db.query(f"SELECT {_GIVEN_COLS} FROM grants_given ORDER BY borrower, image")
        return [_given(r) for r in rows]

    def add_request(self, request_id: str, borrower: str, image: str, views: int) -> ViewRequest:
        """Record a request for more views (idempotent by the borrower's request_id)."""
        with self._db.write() as cur:
            return StateTxn(cur).add_request(request_id, borrower, image, views)

    def requests(self, state: str | None = "pending") -> list[ViewRequest]:
        """Requests in `state` (None: all), oldest first (the `requests` command)."""
        if state is None:
            rows = self._db.query(f"SELECT {_REQUEST_COLS} FROM requests ORDER BY id")
        else:
            rows = self._db.query(
                f"SELECT {_REQUEST_COLS} FROM requests WHERE state=? ORDER BY id", (state,)
            )
        return [ViewRequest(*r) for r in rows]

    def answer_request(self, local_id: int, approved: bool) -> ViewRequest:
        """Mark a pending request approved or denied; StoreError if unknown or already answered."""
        state = "approved" if approved else "denied"
        with self._db.write() as cur:
            row = cur.execute(
                f"SELECT {_REQUEST_COLS} FROM requests WHERE id=?", (local_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no request {local_id}")
            if row[5] != "pending":
                raise StoreError(f"request {local_id} was already {row[5]}")
            cur.execute("UPDATE requests SET state=? WHERE id=?", (state, local_id))
        return ViewRequest(row[0], row[1], row[2], row[3], row[4], state)


class RequestIdBlock:
    """Request ids handed out from blocks reserved in state.db (`reserve_request_ids`): one
    commit (an fsync, with synchronous=FULL) per `size` ids instead of one per id. Only for
    requests whose ids must be unique but need no order (encrypt). Thread-safe."""

    def __init__(self, db: StateDB, user: str, size: int = 64) -> None:
        self._db, self._user, self._size = db, user, size
        self._left: range = range(0)
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            if not self._left:
                self._left = self._db.reserve_request_ids(self._user, self._size)
            n, self._left = self._left[0], self._left[1:]
        return make_request_id(self._user, n)

    def skip(self, count: int) -> None:
        """Move past the rest of this block and `count` more ids, none of them ever handed out:
        the ids after ours are in use by another client of this user (the cloud refused one
        with `id_in_use`: the same user in another home, whose counter started again)."""
        with self._lock:
            self._db.reserve_request_ids(self._user, count)
            self._left = range(0)
