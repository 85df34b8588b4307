"""What a node does with each message: the routing between transports, cores and services.

Runs on the node actor's thread only. `NodeParts` holds the cores (membership, election,
failure token) and services (encrypt flow, directory, pending updates) and decides, per
message, who handles it. Rules enforced here, before any service sees a message:
- a node that is down (simulated) answers clients nothing but `StatusQuery`;
- a node without a majority answers state-changing client requests with a retryable
  "not_in_majority" error and wins no election (the election core checks that too);
- a client request that breaks a rule gets an ErrorReply, and is counted and logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

from actors.node import cluster_state
from actors.core.directory import AlreadyOnline, Directory, DirectoryError
from actors.node.pending_store import PendingStore
from actors.core.encrypt_flow import EncryptService
from codec import images
from codec.messages import (
    Ack,
    ClientHeartbeat,
    ConfirmUpdates,
    DirectoryChange,
    DirectoryQuery,
    DirectoryReply,
    Done,
    Election,
    EncryptRequest,
    ErrorReply,
    ForgetUpdates,
    Join,
    JoinReply,
    Leave,
    Message,
    PostUpdate,
    ReplicateUpdate,
    StateRequest,
    StateSync,
    StatusQuery,
    StatusReply,
)
from codec.records import LIST_MAX

if TYPE_CHECKING:
    from actors.node.supervisor import NodeActor

log = logging.getLogger(__name__)

Addr = tuple[str, int]
HOUSEKEEPING_S = 1.0  # how often caches, directory entries and tombstones are expired
PROBE_S = 0.5  # an online client's transport acknowledges a probe well within this
STATE_CHANGING = (EncryptRequest, Join, Leave, PostUpdate, ConfirmUpdates)
# answered from the directory and pending state: a node back from a failure defers them
# (retryable) until its state is synced, instead of refusing sessions it has not heard of yet
NEEDS_STATE = (Join, Leave, PostUpdate, ConfirmUpdates)


class NodeParts:
    def __init__(self, node: NodeActor, data_dir: Path, rng: random.Random, failures: bool) -> None:
        cfg = node.cfg
        self.node = node
        self.cfg = cfg
        self.id = node.node_id
        self.wall = time.time
        self.pending = PendingStore(data_dir / "pending.db")
        dir_key = hashlib.sha256(b"veilshare directory v1|" + cfg.secret_bytes()).digest()
        self.directory = Directory(dir_key, cfg.directory.ttl_s, pins=self.pending.pins(),
                                   on_pin=self.pending.pin_set)
        self.cluster = cluster_state.ClusterState(node, rng, failures)
        self.service = EncryptService(
            node_id=self.id,
            send_client=lambda addr, msg, rid: node.send_client(addr, msg, f"reply:{rid}"),
            send_peers=node.send_peers,
            start_election=self.cluster.start_election,
            cancel_election=self.cluster.forget_election,
            submit_seal=lambda rid, data: node.pool.submit(rid, data),
            max_pixels=images.max_user_pixels(cfg),
            clock=node.clock,
            cache_ttl_s=2 * cfg.client.request_deadline_s,
        )
        self.cluster.on_won = self.service.on_won
        self.cluster.on_lost = self.service.on_lost
        self.cluster.on_peer_down = self.service.on_node_down
        self.cluster.on_going_down = self.going_down
        self.cluster.job_load = lambda: (node.pool.in_flight(), 0)
        self.cluster.state_digest = self.state_digest
        self.cluster.state_snapshot = self.state_snapshot
        self.cluster.state_apply = self.state_apply
        self.next_housekeeping = 0.0
        self.probing: dict[str, tuple[Addr, Join]] = {}  # join rid -> (new address, Join)

    def started(self, now: float) -> None:
        self.cluster.started(now)

    def close(self) -> None:
        self.pending.close()

    # ---- client socket ------------------------------------------------------------------------
    def on_client(self, addr: Addr, msg: Message, now: float) -> None:
        if isinstance(msg, StatusQuery):
            self.node.send_client(addr, self.status_reply(msg.rid))
            return
        if not self.cluster.is_up():
            self.node.count("client_while_down", type(msg).__name__)
            return
        rid = getattr(msg, "rid", None)
        if isinstance(msg, STATE_CHANGING) and not self.cluster.has_majority(now):
            if rid is not None:
                self.node.send_client(addr, ErrorReply(
                    rid=rid, code="not_in_majority", retryable=True,
                    message=f"node {self.id} sees no majority of the cloud; try again"))
            return
        if isinstance(msg, NEEDS_STATE) and self.cluster.syncing():
            self.node.count("client_while_syncing", type(msg).__name__)
            if rid is not None:
                self.node.send_client(addr, ErrorReply(
                    rid=rid, code="syncing", retryable=True,
                    message=f"node {self.id} is syncing its state after a failure; try again"))
            return
        try:
            self._client_message(addr, msg, now)
        except DirectoryError as exc:
            self.node.count("directory_refused", str(exc))
            if rid is not None:
                self.node.send_client(addr, ErrorReply(rid=rid, code=exc.code, message=str(exc),
                                                       retryable=False))

    def _client_message(self, addr: Addr, msg: Message, now: float) -> None:
        wall = self.wall()
        if isinstance(msg, EncryptRequest):
            self.service.on_request(addr, msg, now)
        elif isinstance(msg, Join):
            try:
                self._join(addr, msg, wall)
            except AlreadyOnline as exc:  # is that session alive? its transport must ack a probe
                if exc.current is None or msg.rid in self.probing:
                    raise
                old = (exc.current.host, exc.current.port)
                self.probing[msg.rid] = (addr, msg)
                self.node.send_client(old, Ack(rid=msg.rid), f"probe:{msg.rid}", PROBE_S)
        elif isinstance(msg, ClientHeartbeat):
            entry = self.directory.heartbeat(msg.user, msg.token, wall)
            if entry.host != addr[0] or entry.port != addr[1]:
                self.node.count("heartbeat_wrong_address", f"{msg.user} from {addr}")
        elif isinstance(msg, Leave):
            tomb = self.directory.leave(msg.user, msg.token, wall)
            if tomb is not None:
                self.node.send_peers(DirectoryChange(op="leave", entry=tomb))
        elif isinstance(msg, DirectoryQuery):
            users = tuple(self.directory.online(wall))
            self.node.send_client(addr, DirectoryReply(rid=msg.rid, users=users))
        elif isinstance(msg, PostUpdate):
            self.directory.check(msg.user, msg.token, wall)
            u = msg.update
            author = u.id.partition("#")[0]
            poster_role = u.borrower if u.kind == "more" else u.owner
            if msg.user != author or msg.user != poster_role:  # ids and kinds belong to their author
                raise DirectoryError(f"{msg.user} may not post update {u.id} ({u.kind})")
            if self.pending.add(msg.update):  # durable (synchronous=FULL) before the Ack
                self.node.send_peers(ReplicateUpdate(update=msg.update))
            self.node.send_client(addr, Ack(rid=msg.rid))
        elif isinstance(msg, ConfirmUpdates):
            self.directory.check(msg.user, msg.token, wall)
            mine = {u.id for u in self.pending.for_user(msg.user)}
            ids = [i for i in msg.ids if i in mine]
            self.pending.forget(ids, wall)
            if ids:
                self.node.send_peers(ForgetUpdates(ids=tuple(ids)))
            self.node.send_client(addr, Ack(rid=msg.rid))
        else:
            self.node.count("client_unexpected", type(msg).__name__)

    def _join(self, addr: Addr, msg: Join, wall: float, replace_stale: bool = False) -> None:
        token, entry = self.directory.join(msg.user, addr[0], addr[1], msg.rid, msg.sign_key,
                                           msg.box_key, wall, replace_stale=replace_stale)
        self.node.send_peers(DirectoryChange(op="join", entry=entry))
        updates = tuple(self.pending.for_user(msg.user))
        self.node.send_client(addr, JoinReply(rid=msg.rid, token=token, updates=updates))

    def _probed(self, rid: str, error: object | None) -> None:
        """The old session of a joining user answered the probe (alive: refuse) or not (dead:
        the new session replaces it)."""
        addr, msg = self.probing.pop(rid, (None, None))
        if addr is None or msg is None:
            return
        try:
            self._join(addr, msg, self.wall(), replace_stale=error is not None)
        except DirectoryError as exc:
            self.node.count("directory_refused", str(exc))
            self.node.send_client(addr, ErrorReply(rid=rid, code=exc.code, message=str(exc),
                                                   retryable=False))

    def status_reply(self, rid: str) -> StatusReply:
        st = self.cluster.status()
        return StatusReply(
            rid=rid, node=self.id, state="up" if self.cluster.is_up() else "down",
            served=self.service.counters.served, cached=len(self.service.cache),
            token=st["token"], users=len(self.directory.online(self.wall())),
            pending=self.pending.count(), down_since=st["down_since"],
            token_holder=st["token_holder"], majority=self.cluster.has_majority(self.node.clock()),
            digest=self.state_digest() if self.cluster.is_up() else b"",
            pid=os.getpid(),
        )

    # ---- peer socket --------------------------------------------------------------------------
    def on_peer(self, sender: int, msg: Message, now: float) -> None:
        if getattr(msg, "node", sender) != sender:
            self.node.count("peer_id_mismatch", f"{type(msg).__name__} claims {msg.node} from {sender}")  # type: ignore[attr-defined]
            return
        if isinstance(msg, Election) and self.service.settled(msg.rid) and self.cluster.is_up():
            # a peer that missed the Done of an acknowledged reply re-elects: tell it again
            self.node.send_peer(sender, Done(rid=msg.rid, node=self.id, acked=True))
            return
        if self.cluster.on_peer(sender, msg, now):
            return
        if not self.cluster.is_up():
            return
        wall = self.wall()
        if isinstance(msg, Done):
            self.service.on_done(msg.rid, msg.acked, now)
        elif isinstance(msg, DirectoryChange):
            self.directory.merge(msg.entry, wall)
        elif isinstance(msg, ReplicateUpdate):
            if self.cluster.has_majority(now):
                self.pending.add(msg.update)
        elif isinstance(msg, ForgetUpdates):
            self.pending.forget(msg.ids, wall)
        elif isinstance(msg, StateRequest):
            self.node.send_peer(sender, self.state_snapshot())
        elif isinstance(msg, StateSync):
            self.state_apply(msg)
        else:
            self.node.count("peer_unexpected", type(msg).__name__)

    # ---- state sync ---------------------------------------------------------------------------
    def state_digest(self) -> bytes:
        wall = self.wall()
        return hashlib.sha256(self.directory.digest(wall) + self.pending.digest()).digest()[:16]

    def state_snapshot(self) -> StateSync:
        users = self.directory.snapshot(self.wall())
        if len(users) > LIST_MAX:  # online entries come first; the oldest news (leaves) wait
            self.node.count("state_sync_truncated", f"{len(users)} directory entries")
            users = users[:LIST_MAX]
        return StateSync(node=self.id, users=tuple(users), updates=tuple(self.pending.all()),
                         forgotten=tuple(self.pending.forgotten()), digest=self.state_digest())

    def state_apply(self, msg: StateSync) -> None:
        wall = self.wall()
        for entry in msg.users:
            self.directory.merge(entry, wall)
        self.pending.forget(msg.forgotten, wall)
        self.pending.merge(msg.updates)

    # ---- timers and sends -------------------------------------------------------------------
    def on_tick(self, now: float) -> None:
        self.cluster.on_tick(now)
        if now >= self.next_housekeeping:  # expiries need seconds, not every 10 ms tick
            self.next_housekeeping = now + HOUSEKEEPING_S
            wall = self.wall()
            self.service.expire(now)
            self.directory.expire(wall)
            self.pending.expire_tombstones(wall)

    def on_send_result(self, key: str, error: object | None, now: float) -> None:
        kind, _, rid = key.partition(":")
        if kind == "reply":
            self.service.on_reply_done(rid, error, now)
        elif kind == "probe":
            self._probed(rid, error)

    def going_down(self) -> None:
        """Simulated fail-stop: keep nothing in memory (the pending store is on disk)."""
        self.service.drop_all(self.node.clock())
        self.directory.entries.clear()
