"""FailureTokenActor: the failure-simulation token ring of one node.

Owns the pure core `actors.core.token_ring.TokenRing` and the `Membership` it reads (its own
replica, fed the same heartbeats, GoingDown and ComingUp as the ElectionActor's, so no state is
shared between threads). It feeds the ring Token/TokenVote messages, heartbeats and ticks, sends
what the ring asks, and tells the node's other actors what follows:
- WentDown: `GoDown` to the Election, Directory and PendingUpdate actors, and `GoDown(then_send=
  the ring's sends)` to the EncryptFlowActor, which sends Done for its replies in flight and only
  then the ring's GoingDown: Done before GoingDown by construction (one thread, one transport).
- NeedSync (back from a simulated failure): `ComeUp` to every actor, `NeedSync` to the
  ElectionActor, which fetches the state from a peer and answers `SyncDone`; only then does the
  ring pass the token on (RELIABILITY 2.3 rule 5).
- `PeerRefused` (a peer's address answered port unreachable): that peer is unreachable at once
  in this Membership too, so the ring skips it, or mints a new token without waiting out the
  failure timeout when it held the token.
- After every input, and before the ring's sends: a `TokenView` (epoch, holder, holding, down) to
  the ElectionActor when it changed, for the heartbeats and the cluster view, and to the
  supervisor, for its status replies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from actors.core import token_ring as ft
from actors.core.membership import Membership, Output
from actors.node.base import NodePartActor, PeerLink
from actors.node.signals import (
    ComeUp,
    GoDown,
    NeedSync,
    PeerIn,
    PeerRefused,
    SyncDone,
    Tick,
    TokenView,
)
from codec.messages import ComingUp, GoingDown, PeerHeartbeat, Token, TokenVote
from config import Config

log = logging.getLogger(__name__)

SERVICES = ("election", "directory", "pending")


class FailureTokenActor(NodePartActor):
    def __init__(
        self,
        cfg: Config,
        node_id: int,
        peers: PeerLink,
        *,
        clock: Callable[[], float],
        rng: Any,
        boot_epoch: int,
        failures: bool,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(node_id, clock)
        self.peers = peers
        self.wall = wall
        ids = [n.id for n in cfg.nodes]
        self.m = Membership(node_id, ids, cfg.election.failure_timeout_ms / 1000, epoch=boot_epoch)
        fcfg = cfg.failures if failures else replace(cfg.failures, enabled=False)
        confirm = 2 * cfg.election.heartbeat_interval_ms / 1000  # two heartbeats
        self.ring = ft.TokenRing(node_id, ids, fcfg, rng, membership=self.m, now=clock(),
                                 confirm_within_s=min(confirm, self.m.failure_timeout_s))
        self.view: TokenView | None = None
        self.view_key: tuple[int, int, bool, bool] | None = None  # self.view but down_since

    def wired(self) -> None:
        self._publish()

    def handle(self, message: Any) -> Any:
        now = self.clock()
        if isinstance(message, Tick):
            self._run(self.ring.on_tick(now), now)
        elif isinstance(message, PeerIn):
            msg = message.msg
            if isinstance(msg, (PeerHeartbeat, GoingDown, ComingUp)):
                self.m.observe(msg, now)
                if isinstance(msg, PeerHeartbeat):
                    self._run(self.ring.on_message(message.sender, msg, now), now)
            elif isinstance(msg, (Token, TokenVote)):
                self.m.heard_from(message.sender, now)
                self._run(self.ring.on_message(message.sender, msg, now), now)
            else:
                self.count("peer_unexpected", type(msg).__name__)
        elif isinstance(message, SyncDone):
            self._run(self.ring.sync_done(now), now)
        elif isinstance(message, PeerRefused):
            if self.m.refused(message.node, now):
                self._run(self.ring.on_tick(now), now)
        self._publish()
        return None

    def _run(self, out: Output, now: float) -> None:
        went = [ev for ev in out.events if isinstance(ev, ft.WentDown)]
        if went:
            log.info("simulated failure: going down for %.1f s", went[0].until - now)
            for name in SERVICES:
                self.tell(name, GoDown())
            # the flow actor sends its Done first, then these (GoingDown among them)
            self.tell("flow", GoDown(then_send=tuple(out.sends)))
        else:
            # the view first: a pass's TokenView (holding False) is in the supervisor's mailbox
            # before the Token leaves, so no status answered after the next holder took it
            # says this node holds it too
            self._publish()
            for dest, msg in out.sends:
                self.peers.send(dest, msg)
        for ev in out.events:
            if isinstance(ev, ft.NeedSync):
                for name in (*SERVICES, "flow"):
                    self.tell(name, ComeUp())
                self.tell("election", NeedSync())
            elif isinstance(ev, (ft.Minted, ft.Dropped)):
                log.info("token: %s", ev)

    def _publish(self) -> None:
        """A TokenView to the ElectionActor when it changed (down_since aside: it is the same
        instant in wall-clock seconds, recomputed each time). Called after every input."""
        st = self.ring.status()
        key = (st.epoch, st.holder, st.holding, st.down)
        if self.view is not None and key == self.view_key:
            return
        down_since = 0.0
        if st.down:
            down_since = self.wall() - (self.clock() - st.down_since)
        self.view_key = key
        self.view = TokenView(
            epoch=st.epoch,
            holder=st.holder,
            holding=st.holding,
            down=st.down,
            down_since=down_since,
        )
        log.debug("token view: %s", self.view)
        self.tell("election", self.view)
        # and to the supervisor itself, which answers status queries: through the election's
        # ClusterView a status could still say "holding" well after the pass on a busy host
        # (test_chaos [delay], load 10 on 2 cores: the same two holders in 4 samples in a row)
        self.tell("supervisor", self.view)
