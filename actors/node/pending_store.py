"""The node's durable pending updates (DESIGN "Pending updates"), plus the highest boot epoch per node.

An update posted for an offline addressee is stored here until the addressee confirms it. sqlite in
the node's data dir, WAL with synchronous=FULL: when `add` returns, the update is on disk, so an Ack
sent after it survives kill -9 and power loss (RELIABILITY 2.4). Updates are keyed by their unique id:
a retry or a copy replicated from another node is stored once. Order is post order: the order in
which this node first stored them (insertion order, stable across restarts).

Only Update records (ids, names, counts, the small grant blob) are stored: nothing of an image.
Forgotten ids are kept as tombstones (`forgotten`, ids only, for TOMBSTONE_TTL_S): `add` and
`merge` refuse them, and a StateSync carries them, so a node that missed a ForgetUpdates (it was
down or cut off) forgets too, and the nodes converge. Delivery stays at least once either way
(the addressee applies each id once).
Callers: the node service (PostUpdate, ReplicateUpdate, ConfirmUpdates, StateSync, Join hand-over)
and, if it wishes, the transport's epoch store.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

from actors.sqlite_util import SqliteStore, StoreError
from codec.messages import Update

__all__ = ["PendingStore", "PinStore", "StoreError"]

_COLS = "id, kind, owner, borrower, image, delta, addressee, grant, created"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS updates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        owner TEXT NOT NULL, borrower TEXT NOT NULL, image TEXT NOT NULL, delta INTEGER NOT NULL,
        addressee TEXT NOT NULL, grant BLOB NOT NULL, created REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS updates_addressee ON updates (addressee, seq)",
    "CREATE TABLE IF NOT EXISTS epochs (node INTEGER PRIMARY KEY, epoch INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS forgotten (id TEXT PRIMARY KEY, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pins (user TEXT PRIMARY KEY, sign_key BLOB, box_key BLOB)",
)
_INSERT = (
    f"INSERT OR IGNORE INTO updates ({_COLS}) SELECT ?,?,?,?,?,?,?,?,? "
    "WHERE NOT EXISTS (SELECT 1 FROM forgotten WHERE id=?1)"
)
TOMBSTONE_TTL_S = 7 * 24 * 3600.0
MAX_EPOCH = 2**63 - 1


def _row(update: Update) -> tuple[object, ...]:
    if not isinstance(update, Update):
        raise StoreError(f"expected an Update, got {type(update).__name__}")
    return (
        update.id,
        update.kind,
        update.owner,
        update.borrower,
        update.image,
        update.delta,
        update.addressee,
        bytes(update.grant),
        float(update.created),
    )


def _update(row: tuple[Any, ...]) -> Update:
    uid, kind, owner, borrower, image, delta, addressee, grant, created = row
    return Update(
        id=uid,
        kind=kind,
        owner=owner,
        borrower=borrower,
        image=image,
        delta=delta,
        addressee=addressee,
        grant=bytes(grant),
        created=float(created),
    )


class PinStore(SqliteStore):
    """The users' pinned public keys (the directory's trust on first use) in the node's
    pending.db. The DirectoryActor opens its own connection: its writes happen on its thread."""

    SCHEMA = _SCHEMA

    # -- users' pinned public keys (the directory's trust on first use) ---------------------
    def pin_set(self, user: str, sign_key: bytes, box_key: bytes) -> None:
        with self._db.write() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO pins (user, sign_key, box_key) VALUES (?,?,?)",
                (user, bytes(sign_key), bytes(box_key)),  # a pin a majority replaced too
            )

    def pins(self) -> dict[str, tuple[bytes, bytes]]:
        rows = self._db.query("SELECT user, sign_key, box_key FROM pins")
        return {str(u): (bytes(s), bytes(b)) for u, s, b in rows}


class PendingStore(SqliteStore):
    """Pending updates in one sqlite file (`path`, created if missing). Thread-safe."""

    SCHEMA = _SCHEMA
    _digest: bytes | None = None  # cache of digest(), cleared by every write of updates

    def add(self, update: Update) -> bool:
        """Store `update` durably. True if new, False if its id was already stored (not stored twice).
        On return the update is on disk: the caller may acknowledge it."""
        row = _row(update)
        self._digest = None
        with self._db.write() as cur:
            return cur.execute(_INSERT, row).rowcount == 1

    def merge(self, updates: Iterable[Update]) -> int:
        """Add a peer's updates in the peer's order, in one transaction; returns how many were new."""
        rows = [_row(u) for u in updates]
        added = 0
        self._digest = None
        with self._db.write() as cur:
            for row in rows:
                added += cur.execute(_INSERT, row).rowcount
        return added

    def for_user(self, user: str) -> list[Update]:
        """Updates addressed to `user`, in post order (what the node hands over at Join)."""
        rows = self._db.query(
            f"SELECT {_COLS} FROM updates WHERE addressee=? ORDER BY seq", (user,)
        )
        return [_update(r) for r in rows]

    def all(self) -> list[Update]:
        """Every pending update in post order (what a StateSync carries)."""
        return [_update(r) for r in self._db.query(f"SELECT {_COLS} FROM updates ORDER BY seq")]

    def forget(self, ids: Iterable[str], now: float | None = None) -> int:
        """Drop the updates with these ids (confirmed by their addressee) and keep their ids as
        tombstones; returns how many were here. `now`: wall-clock seconds (for tombstone expiry)."""
        wanted = list(ids)
        if not all(isinstance(i, str) for i in wanted):
            raise StoreError("forget needs update ids (str)")
        at = time.time() if now is None else now
        removed = 0
        self._digest = None
        with self._db.write() as cur:
            for uid in wanted:
                removed += cur.execute("DELETE FROM updates WHERE id=?", (uid,)).rowcount
                cur.execute("INSERT OR IGNORE INTO forgotten (id, at) VALUES (?, ?)", (uid, at))
        return removed

    def forgotten(self) -> list[str]:
        """Tombstoned ids, sorted (what a StateSync carries)."""
        return [str(r[0]) for r in self._db.query("SELECT id FROM forgotten ORDER BY id")]

    def expire_tombstones(self, now: float, ttl_s: float = TOMBSTONE_TTL_S) -> int:
        with self._db.write() as cur:
            return cur.execute("DELETE FROM forgotten WHERE at < ?", (now - ttl_s,)).rowcount

    def count(self) -> int:
        """Number of pending updates (StatusReply.pending)."""
        return int(self._db.query("SELECT COUNT(*) FROM updates")[0][0])

    def ids(self) -> list[str]:
        """Pending ids, sorted."""
        return [str(r[0]) for r in self._db.query("SELECT id FROM updates ORDER BY id")]

    def digest(self) -> bytes:
        """sha256 over the sorted ids, each followed by a NUL (ids never contain one): 32 bytes,
        equal on two nodes holding the same set of ids, whatever the insertion order. Cached until
        the next add/merge/forget (heartbeats carry it several times a second; one process owns a
        node's store)."""
        if self._digest is None:
            h = hashlib.sha256()
            for uid in self.ids():
                h.update(uid.encode("utf-8") + b"\x00")
            self._digest = h.digest()
        return self._digest

    # -- boot epochs -------------------------------------------------------------------------
    def epoch_get(self, node: int) -> int:
        """The highest boot epoch recorded for `node` (0 if none)."""
        rows = self._db.query("SELECT epoch FROM epochs WHERE node=?", (node,))
        return int(rows[0][0]) if rows else 0

    def epoch_raise(self, node: int, epoch: int) -> bool:
        """Record `epoch` for `node` if higher than the stored one; True if it was raised."""
        if type(node) is not int or type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
            raise StoreError(
                f"epoch_raise needs int node and int epoch 0..2**63-1: {node!r} {epoch!r}"
            )
        with self._db.write() as cur:
            return (
                cur.execute(
                    "INSERT INTO epochs (node, epoch) VALUES (?, ?) ON CONFLICT (node) "
                    "DO UPDATE SET epoch = excluded.epoch WHERE excluded.epoch > epochs.epoch",
                    (node, epoch),
                ).rowcount
                == 1
            )
