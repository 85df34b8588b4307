"""Peer-socket authentication state: who may talk, with which boot epoch.

Every peer datagram carries an HMAC tag (frames.HmacFramer) over a header naming the sender node
and its boot epoch. On top of the tag, `PeerGuard` enforces (RELIABILITY 4):
- a datagram is accepted only from the configured (host, port) of the node id it names;
- epochs are wall-clock milliseconds: one more than 30 s ahead of our clock is refused;
- an epoch lower than the highest seen from that node is refused; the highest is persisted in an
  `EpochStore` (sqlite in the node's data dir) before anything of the new epoch is acknowledged
  or delivered. The guard does no I/O: it queues the writes (`take_writes`), and the transport
  performs them before it sends the datagrams or delivers the messages of that turn;
- after our own restart the replay window of the current epoch of a peer is lost, so DATA in that
  epoch is refused with a REJECT frame, and the peer moves to a fresh epoch for us
  (`Endpoint` does both sides). Replays of older epochs are refused silently.
Message-id replays inside an epoch are caught by the receiver's 1024-wide `ReplayWindow`.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from transport.frames import HmacFramer, derive_peer_key

FUTURE_EPOCH_MS = 30_000
MIN_SECRET = 32

ACCEPT, NEW_EPOCH, STALE, FUTURE, RESTARTED = range(5)


class EpochStore(Protocol):
    """Highest boot epoch seen per node id (ours included), kept across restarts."""

    def get(self, node_id: int) -> int | None:
        """The highest epoch stored for `node_id`, or None."""

    def put(self, node_id: int, epoch: int) -> None:
        """Store `epoch` for `node_id` if higher than the stored one; durable on return."""


class MemoryEpochStore:
    """EpochStore in a dict (tests, clients)."""

    def __init__(self) -> None:
        self._epochs: dict[int, int] = {}
        self._lock = threading.Lock()

    def get(self, node_id: int) -> int | None:
        with self._lock:
            return self._epochs.get(node_id)

    def put(self, node_id: int, epoch: int) -> None:
        with self._lock:
            self._epochs[node_id] = max(epoch, self._epochs.get(node_id, epoch))


class SqliteEpochStore:
    """EpochStore in sqlite (WAL, synchronous=FULL: stored means on disk). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS epochs (node INTEGER PRIMARY KEY, epoch INTEGER NOT NULL)"
        )

    def get(self, node_id: int) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT epoch FROM epochs WHERE node = ?", (node_id,)).fetchone()
        return None if row is None else int(row[0])

    def put(self, node_id: int, epoch: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO epochs (node, epoch) VALUES (?, ?) ON CONFLICT(node) "
                "DO UPDATE SET epoch = max(epoch, excluded.epoch)",
                (node_id, epoch),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class PeerAuth:
    """Turns on the peer-socket protections (see module docstring). `peers`: node id ->
    configured (host, port) of its peer socket; our own id may be listed and is ignored."""

    secret: bytes
    self_id: int
    peers: dict[int, tuple[str, int]]
    epoch_store: EpochStore = field(default_factory=MemoryEpochStore)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET:
            raise ValueError(f"cluster secret must be at least {MIN_SECRET} bytes")
        if not 1 <= self.self_id <= 255:
            raise ValueError(f"node id must be 1..255, not {self.self_id}")


def boot_epoch(store: EpochStore, self_id: int, wall_ms: int) -> int:
    """Our epoch for this boot: wall-clock ms, strictly above any epoch we used before."""
    last = store.get(self_id)
    epoch = wall_ms if last is None else max(wall_ms, last + 1)
    store.put(self_id, epoch)
    return epoch


def _canonical(addr: tuple[str, int]) -> tuple[str, int]:
    return (ipaddress.ip_address(addr[0]).compressed, addr[1])


class PeerGuard:
    """Checks sender address and epoch of authenticated peer datagrams (used by Endpoint).
    `wall_ms()` is the wall clock in milliseconds (injected)."""

    def __init__(self, auth: PeerAuth, wall_ms: Callable[[], int]) -> None:
        self.auth = auth
        self.self_id = auth.self_id
        self.framer = HmacFramer(derive_peer_key(auth.secret))
        self.wall_ms = wall_ms
        self._addrs = {_canonical(a): n for n, a in auth.peers.items() if n != auth.self_id}
        self._highest: dict[int, int] = {}
        for n in self._addrs.values():
            stored = auth.epoch_store.get(n)
            self._highest[n] = -1 if stored is None else stored
        self._trusted: dict[int, int] = {}  # node -> epoch whose replay window we hold
        self._writes: list[tuple[int, int]] = []  # (node, epoch) to persist, in order

    def take_writes(self) -> list[tuple[int, int]]:
        """The epochs to persist (node id, epoch), oldest first; the caller writes them to the
        EpochStore before it acts on what was received since the last call."""
        writes, self._writes = self._writes, []
        return writes

    def sender_ok(self, addr: tuple[str, int], node_id: int) -> bool:
        """True if `addr` is the configured peer address of `node_id`."""
        return self._addrs.get((addr[0], addr[1])) == node_id

    def check_epoch(self, node_id: int, epoch: int) -> int:
        """ACCEPT, NEW_EPOCH (queued for the store), STALE, FUTURE or RESTARTED for a DATA epoch."""
        highest = self._highest[node_id]
        if epoch < highest:
            return STALE
        if epoch > self.wall_ms() + FUTURE_EPOCH_MS:
            return FUTURE
        if epoch > highest:
            self._writes.append((node_id, epoch))
            self._highest[node_id] = epoch
            self._trusted[node_id] = epoch
            return NEW_EPOCH
        return ACCEPT if self._trusted.get(node_id) == epoch else RESTARTED

    def next_epoch(self, current: int) -> int:
        """A fresh epoch after a peer refused `current`; to be persisted as ours."""
        epoch = max(self.wall_ms(), current + 1)
        self._writes.append((self.self_id, epoch))
        return epoch
