"""The node's view of the cloud: membership, per-request elections, the failure token, state sync.

A thin driver around three pure cores (actors.core.membership, actors.core.election, actors.core.token_ring):
it feeds them peer messages and ticks, performs the sends they return, and turns their events
into calls on the node's services (callbacks set by NodeParts):
- election Won/Lost -> on_won / on_lost (the encrypt service seals or waits);
- a peer that goes down, becomes unreachable or restarts -> election.peer_down + on_peer_down
  (re-election from the cache);
- token WentDown -> on_going_down (keep nothing); NeedSync -> ask a live peer for its state,
  apply it, and only then let the token move on (RELIABILITY 2.3 rule 5);
- anti-entropy: a peer whose heartbeat digest differs from ours for `SYNC_AFTER` heartbeats in
  a row is asked for its state, which we merge (union with tombstones), so the nodes converge
  after a partition heals.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from actors.core import election as el
from actors.core import token_ring as ft
from actors.core.membership import Membership, Output
from codec.messages import (
    ComingUp,
    Coordinator,
    Election,
    ElectionOk,
    GoingDown,
    Message,
    PeerHeartbeat,
    StateRequest,
    StateSync,
    Token,
    TokenVote,
)

if TYPE_CHECKING:
    from actors.node.supervisor import NodeActor

log = logging.getLogger(__name__)

SYNC_AFTER = 3  # heartbeats with a different digest before we ask that peer for its state
SYNC_RETRY_S = 1.0


class ClusterState:
    def __init__(self, node: NodeActor, rng: random.Random, failures: bool) -> None:
        cfg = node.cfg
        self.node = node
        self.id = node.node_id
        self.boot_epoch = int(time.time() * 1000)
        ids = [n.id for n in cfg.nodes]
        timeout_s = cfg.election.failure_timeout_ms / 1000
        self.m = Membership(self.id, ids, timeout_s, epoch=self.boot_epoch)
        self.election = el.ElectionCore(self.id, self.m, cfg.election.answer_timeout_ms / 1000)
        fcfg = cfg.failures if failures else _disabled(cfg.failures)
        self.token = ft.TokenRing(self.id, ids, fcfg, rng, membership=self.m,
                                  now=node.clock())
        self.hb_period = cfg.election.heartbeat_interval_ms / 1000
        self.next_hb = 0.0
        self.syncing_from: int | None = None
        self.sync_deadline = 0.0
        self.digest_mismatch: dict[int, int] = {}
        self.cpus = os.cpu_count() or 1
        self._load = (0.0, 0.0)  # (when, loadavg per cpu)
        # set by NodeParts
        self.on_won: Callable[[str], None] = lambda rid: None
        self.on_lost: Callable[[str, int], None] = lambda rid, w: None
        self.on_peer_down: Callable[[int, float], None] = lambda n, now: None
        self.on_going_down: Callable[[], None] = lambda: None
        self.state_digest: Callable[[], bytes] = lambda: b""
        self.state_snapshot: Callable[[], StateSync] = lambda: None  # type: ignore[assignment,return-value]
        self.state_apply: Callable[[StateSync], None] = lambda msg: None
        self.job_load: Callable[[], tuple[int, int]] = lambda: (0, 0)

    # ---- queries ----------------------------------------------------------------------------------
    def is_up(self) -> bool:
        return self.m.self_up

    def syncing(self) -> bool:
        """True from coming back until the state of a peer has been applied."""
        return self.syncing_from is not None

    def has_majority(self, now: float) -> bool:
        return self.m.self_up and self.m.has_majority(now)

    def status(self) -> dict[str, Any]:
        st = self.token.status()
        down_since = 0.0
        if st.down:
            down_since = time.time() - (self.node.clock() - st.down_since)
        return {"token": st.holding, "token_holder": st.holder, "down_since": down_since,
                "epoch": st.epoch, "syncing": st.syncing}

    def _loadavg(self) -> float:
        now = time.monotonic()
        if now - self._load[0] > 1.0:
            self._load = (now, psutil.getloadavg()[0] / self.cpus)
        return self._load[1]

    def priority(self) -> int:
        in_flight, queued = self.job_load()
        return el.priority(in_flight, queued, self._loadavg(), self.node.cfg.encoder.pool_size)

    # ---- elections ----------------------------------------------------------------------------------
    def start_election(self, rid: str, now: float) -> None:
        self._run(self.election.start(rid, self.priority(), now))

    def forget_election(self, rid: str) -> None:
        self.election.forget(rid)

    # ---- inputs ---------------------------------------------------------------------------------------
    def started(self, now: float) -> None:
        self.next_hb = now
        if self.m.peer_ids:  # a (re)started process lost the directory: sync before serving it
            self.syncing_from = -1
            self.sync_deadline = now

    def on_peer(self, sender: int, msg: Message, now: float) -> bool:
        """Handle membership/election/token/state messages; False for the services' messages."""
        if not isinstance(msg, (PeerHeartbeat, GoingDown, ComingUp)):
            self.m.heard_from(sender, now)  # any authenticated message proves the peer is alive
        if isinstance(msg, (PeerHeartbeat, GoingDown, ComingUp)):
            restarted = self.m.observe(msg, now)
            if restarted:
                log.info("node %d restarted (new boot epoch)", sender)
                self._peer_gone(sender, now)
            if isinstance(msg, PeerHeartbeat):
                self._run(self.token.on_message(sender, msg, now))
                self._check_digest(sender, msg, now)
            elif isinstance(msg, GoingDown):
                self._peer_gone(sender, now)
            return True
        if isinstance(msg, (Election, ElectionOk, Coordinator)):
            # a peer's Election before our own copy of the request: the core keeps it pending
            self._run(self.election.on_message(sender, msg, now))
            return True
        if isinstance(msg, (Token, TokenVote)):
            self._run(self.token.on_message(sender, msg, now))
            return True
        if isinstance(msg, StateSync) and self.syncing_from is not None:
            self.state_apply(msg)
            self.syncing_from = None
            log.info("state synced from node %d (%s)", sender,
                     "after a failure" if self.token.status().syncing else "at start-up")
            self._run(self.token.sync_done(now))
            return True
        return False

    def on_tick(self, now: float) -> None:
        if now >= self.next_hb:
            self.next_hb = now + self.hb_period
            self._send_heartbeats()
        for node, state in self.m.transitions(now):
            if state != "up":
                self._peer_gone(node, now)
        self._run(self.election.on_tick(now))
        self._run(self.token.on_tick(now))
        if self.syncing_from is not None and now >= self.sync_deadline:
            self._ask_state(now)

    # ---- helpers --------------------------------------------------------------------------------------
    def _send_heartbeats(self) -> None:
        epoch, holder = self.token.token_view()
        in_flight, queued = self.job_load()
        hb = self.m.heartbeat(load=in_flight + queued, token_epoch=epoch, token_holder=holder,
                              digest=self.state_digest())
        for peer in self.m.peer_ids:
            self.node.send_peer(peer, hb)

    def _peer_gone(self, node: int, now: float) -> None:
        self._run(self.election.peer_down(node, now))
        self.on_peer_down(node, now)

    def _check_digest(self, sender: int, hb: PeerHeartbeat, now: float) -> None:
        if not self.has_majority(now) or hb.state != "up" or self.syncing_from is not None:
            return
        if hb.digest == self.state_digest():
            self.digest_mismatch.pop(sender, None)
            return
        n = self.digest_mismatch.get(sender, 0) + 1
        self.digest_mismatch[sender] = n
        if n >= SYNC_AFTER:
            self.digest_mismatch[sender] = 0
            self.node.send_peer(sender, StateRequest(node=self.id))

    def _ask_state(self, now: float) -> None:
        peers = sorted(self.m.up_peers(now))
        if not peers:  # none heard from yet: ask as soon as a heartbeat shows one
            self.sync_deadline = now + self.hb_period
            return
        target = peers[0] if self.syncing_from not in peers else self.syncing_from
        self.syncing_from = target
        self.sync_deadline = now + SYNC_RETRY_S
        self.node.send_peer(target, StateRequest(node=self.id))

    def _run(self, out: Output) -> None:
        now = self.node.clock()
        for ev in out.events:  # before the sends: the Done of replies already out must reach
            if isinstance(ev, ft.WentDown):  # the peers before our GoingDown does
                log.info("simulated failure: going down for %.1f s", ev.until - now)
                self.election.clear()
                self.on_going_down()
        for dest, msg in out.sends:
            self.node.send_peer(dest, msg)
        for ev in out.events:
            if isinstance(ev, el.Won):
                self.on_won(ev.rid)
            elif isinstance(ev, el.Lost):
                self.on_lost(ev.rid, ev.winner)
            elif isinstance(ev, ft.NeedSync):
                log.info("back from a simulated failure: syncing state before passing the token")
                self.syncing_from = -1
                self._ask_state(now)
            elif isinstance(ev, (ft.Minted, ft.Dropped)):
                log.info("token: %s", ev)
            elif isinstance(ev, (el.Restart, el.NoMajority)):
                log.debug("election: %s", ev)


def _disabled(cfg: Any) -> Any:
    from dataclasses import replace

    return replace(cfg, enabled=False)
