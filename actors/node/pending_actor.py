"""PendingUpdateActor: the node's durable pending updates (sqlite, synchronous=FULL).

Owns `actors.node.pending_store.PendingStore`; every commit (and its fsync) happens on this
actor's thread, never ahead of an election or a heartbeat. An update is acknowledged to the
client only after its commit returned (on disk), exactly as before the actors were split.

Inputs:
- from the DirectoryActor, which checked the session first: `StoreUpdate` (commit, Ack, replicate
  to the peers), `ConfirmIds` (forget the addressee's confirmed ids, tell the peers, Ack),
  `HandOver` (answer a join with the user's pending updates, in post order), `BuildSync` (add the
  pending part to a state sync and send it), `ApplySync` (merge a peer's pending part, then tell the
  ElectionActor `SyncApplied`);
- from the peers: ReplicateUpdate (stored only with a majority in view), ForgetUpdates.
A node that is down (simulated) ignores the peers; its store stays on disk.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.node.base import HOUSEKEEPING_S, NodePartActor, PeerLink
from actors.node.pending_store import PendingStore
from actors.node.signals import (
    ApplySync,
    BuildSync,
    ClusterView,
    ComeUp,
    ConfirmIds,
    Digest,
    GoDown,
    HandOver,
    PeerIn,
    Snapshot,
    StoreUpdate,
    SyncApplied,
    Tick,
)
from codec.messages import Ack, ForgetUpdates, ReplicateUpdate, StateSync
from transport.udp import Transport


class PendingUpdateActor(NodePartActor):
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
        super().__init__(node_id, clock)
        self.client_tp = client_tp
        self.peers = peers
        self.store = store
        self.view = view
        self.wall = wall
        self.up = True
        self.next_housekeeping = 0.0
        self.published: tuple[bytes, int] | None = None

    def wired(self) -> None:
        self._publish()

    def on_stop(self) -> None:
        self.store.close()

    def handle(self, message: Any) -> Any:
        if isinstance(message, StoreUpdate):
            if self.store.add(message.update):  # durable (synchronous=FULL) before the Ack
                self.peers.send_all(ReplicateUpdate(update=message.update))
            self.client_tp.send(message.addr, Ack(rid=message.rid))
        elif isinstance(message, ConfirmIds):
            mine = {u.id for u in self.store.for_user(message.user)}
            ids = [i for i in message.ids if i in mine]
            self.store.forget(ids, self.wall())
            if ids:
                self.peers.send_all(ForgetUpdates(ids=tuple(ids)))
            self.client_tp.send(message.addr, Ack(rid=message.rid))
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
                ),
            )
        elif isinstance(message, ApplySync):
            self.store.forget(message.msg.forgotten, self.wall())
            self.store.merge(message.msg.updates)
            self.tell("election", SyncApplied(message.sender))
        elif isinstance(message, PeerIn):
            self._peer(message.msg)
        elif isinstance(message, ClusterView):
            self.view = message
        elif isinstance(message, Tick):
            now = self.clock()
            if now >= self.next_housekeeping:
                self.next_housekeeping = now + HOUSEKEEPING_S
                self.store.expire_tombstones(self.wall())
        elif isinstance(message, GoDown):
            self.up = False
        elif isinstance(message, ComeUp):
            self.up = True
        self._publish()
        return None

    def _peer(self, msg: Any) -> None:
        if not self.up:
            return
        if isinstance(msg, ReplicateUpdate):
            if self.view.majority:
                self.store.add(msg.update)
        elif isinstance(msg, ForgetUpdates):
            self.store.forget(msg.ids, self.wall())
        else:
            self.count("peer_unexpected", type(msg).__name__)

    def _publish(self) -> None:
        digest = self.store.digest()
        count = self.store.count()
        if self.published == (digest, count):
            return
        self.published = (digest, count)
        self.tell("election", Digest("pending", digest))
        self.tell("supervisor", Digest("pending", digest))
        self.tell("supervisor", Snapshot("pending", {"pending": count}))
