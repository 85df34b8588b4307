"""PendingUpdateActor: the node's durable pending updates (sqlite, synchronous=FULL).

Owns `actors.node.pending_store.PendingStore`; every commit (and its fsync) happens on this
actor's thread, never ahead of an election or a heartbeat. An update is acknowledged to the
client only after its commit returned (on disk), exactly as before the actors were split.

Inputs:
- from the DirectoryActor, which checked the session first: `StoreUpdate` (commit, Ack, replicate
  to the peers), `ConfirmIds` (forget the addressee's confirmed ids, tell the peers with the
  session, Ack), `ForgetIds` (a peer's ForgetUpdates from a session this node accepted too),
  `HandOver` (answer a join with the user's pending updates, in post order), `BuildSync` (add the
  pending part to a state sync and send it), `ApplySync` (merge a peer's pending part, then tell the
  ElectionActor `SyncApplied`);
- from the peers: ReplicateUpdate (stored only with a majority in view).
A node that is down (simulated) ignores the peers; its store stays on disk.

Replication. The client posts every update to every node, so usually every node stores it from
the client and a replica is only for a node that missed the client's copy. The lowest node up
replicates what it stored at once; the k-th lowest waits k x REPLICATE_DEFER_S and replicates only
if no peer's ReplicateUpdate of that id came meanwhile (a peer that replicates sends to all). All up,
an update costs two ReplicateUpdates instead of six, and the nodes hold it as soon as before.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.node.base import PeerLink, ServicePartActor
from actors.node.pending_store import PendingStore
from actors.node.signals import (
    ApplySync,
    BuildSync,
    ClusterView,
    ConfirmIds,
    Digest,
    ForgetIds,
    GoDown,
    HandOver,
    PeerIn,
    Snapshot,
    StoreUpdate,
    SyncApplied,
    Tick,
)
from codec.messages import Ack, ForgetUpdates, ReplicateUpdate, StateSync
from codec.records import Update
from transport.udp import Transport

REPLICATE_DEFER_S = 0.2  # per rank among the nodes up; past a peer's replica and its delivery


class PendingUpdateActor(ServicePartActor):
    def __init__(
        self,
        node_id: int,
        client_tp: Transport,
        peers: PeerLink,
        store: PendingStore,
        view: ClusterView,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(node_id, client_tp, peers, view, clock=clock, wall=wall)
        self.store = store
        self.published: tuple[bytes, int] | None = None
        self.deferred: dict[str, tuple[float, Update]] = {}  # id -> (replicate at, update)

    def on_stop(self) -> None:
        self.store.close()

    def serve(self, message: Any) -> None:
        if isinstance(message, StoreUpdate):
            if self.store.add(message.update):  # durable (synchronous=FULL) before the Ack
                self._replicate(message.update)
            self.client_tp.send(message.addr, Ack(rid=message.rid))
        elif isinstance(message, ConfirmIds):
            ids = self._forget_addressed(message.user, message.ids)
            if ids:
                self.peers.send_all(
                    ForgetUpdates(ids=tuple(ids), user=message.user, session=message.session)
                )
            self.client_tp.send(message.addr, Ack(rid=message.rid))
        elif isinstance(message, ForgetIds):
            if self.up:
                self._forget_addressed(message.user, message.ids)
        elif isinstance(message, HandOver):
            updates = tuple(self.store.for_user(message.user))
            self.client_tp.send(message.addr, replace(message.reply, updates=updates))
        elif isinstance(message, BuildSync):
            digest = hashlib.sha256(message.dir_digest + self.store.digest()).digest()[:16]
            self.peers.send(
                message.to,
                StateSync(
                    node=self.node_id,
                    users=message.users,
                    updates=tuple(self.store.all()),
                    forgotten=tuple(self.store.forgotten()),
                    digest=digest,
                    pins=message.pins,
                ),
            )
        elif isinstance(message, ApplySync):
            self.store.forget(message.msg.forgotten, self.wall())
            self.store.merge(message.msg.updates)
            m = message.msg
            empty = not (m.users or m.pins or m.updates or m.forgotten)
            self.tell("election", SyncApplied(message.sender, empty))
        elif isinstance(message, PeerIn):
            self._peer(message.msg)

    def handle(self, message: Any) -> Any:
        if isinstance(message, Tick) and self.deferred:
            self._replicate_due(self.clock())
        return super().handle(message)

    def going_down(self, message: GoDown) -> None:
        self.deferred.clear()  # a down node sends nothing; its store stays on disk

    def housekeeping(self, now: float) -> None:
        self.store.expire_tombstones(self.wall())

    def _replicate(self, update: Update) -> None:
        """Send `update` to every peer now if this node is the lowest up, else in rank x
        REPLICATE_DEFER_S unless a peer replicates it first."""
        rank = sum(1 for n in self.view.up if n < self.node_id)
        if rank == 0:
            self.peers.send_all(ReplicateUpdate(update=update))
        else:
            self.deferred[update.id] = (self.clock() + rank * REPLICATE_DEFER_S, update)

    def _replicate_due(self, now: float) -> None:
        due = [i for i, (at, _) in self.deferred.items() if at <= now]
        for i in due:
            _, update = self.deferred.pop(i)
            if self.up:
                self.peers.send_all(ReplicateUpdate(update=update))

    def _forget_addressed(self, user: str, ids: tuple[str, ...]) -> list[str]:
        """Forget those of `ids` that are addressed to `user` (an update is forgotten only once
        its addressee confirmed it); returns them."""
        mine = {u.id for u in self.store.for_user(user)}
        found = [i for i in ids if i in mine]
        self.store.forget(found, self.wall())
        return found

    def _peer(self, msg: Any) -> None:
        if not self.up:
            return
        if isinstance(msg, ReplicateUpdate):
            self.deferred.pop(msg.update.id, None)  # that peer sent it to every node
            if self.view.majority:
                self.store.add(msg.update)
        else:
            self.count("peer_unexpected", type(msg).__name__)

    def publish(self) -> None:
        digest = self.store.digest()
        count = self.store.count()
        if self.published == (digest, count):
            return
        self.published = (digest, count)
        self.tell("election", Digest("pending", digest))
        self.tell("supervisor", Digest("pending", digest))
        self.tell("supervisor", Snapshot("pending", {"pending": count}))
