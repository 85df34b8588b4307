"""EncryptFlowActor: the encrypt flow of one node (request cache, who seals, the reply, Done).

Owns the pure core `actors.core.encrypt_flow.EncryptService` and the `EncoderPool` it seals on.
- client EncryptRequest or EncryptOffer -> cache it, `StartElection` to the ElectionActor;
  won an offer -> FetchPayload to the client, whose EncryptRequest then comes to us alone;
- `Won` -> seal on the pool (only the winner looks at the payload); `Lost` -> wait for Done;
  `PeerDown` -> re-elect what the fallen winner held;
- a seal's result -> EncryptReply to the client; its acknowledgement (or failure) -> Done to the
  peers, `ForgetElection` (settled when the client's transport acknowledged the reply);
- peer Done -> drop the cached copy; `GoDown` -> keep nothing, Done first for replies in flight,
  then the failure token's own sends (GoingDown).
The pool's load goes to the ElectionActor (`Load`, for the election priority) whenever it changes;
served and cached counts go to the supervisor (`Snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.core.encrypt_flow import EncryptService
from actors.node.base import PeerLink, ServicePartActor
from actors.node.encoder import EncoderPool, Sealed
from actors.node.signals import (
    ClientIn,
    ClusterView,
    ForgetElection,
    GoDown,
    Load,
    Lost,
    PeerDown,
    PeerIn,
    SendResult,
    Snapshot,
    StartElection,
    Won,
)
from codec import images, seal
from codec.messages import Done, EncryptOffer, EncryptRequest, Message
from config import Config
from transport.udp import Transport

Addr = tuple[str, int]
WARM_SIZES = (4096, 2 * 1024 * 1024)  # covers of small images and of a photo, prepared at start


class EncryptFlowActor(ServicePartActor):
    def __init__(
        self,
        cfg: Config,
        node_id: int,
        client_tp: Transport,
        peers: PeerLink,
        view: ClusterView,
        *,
        clock: Callable[[], float],
        pool: EncoderPool | None = None,
    ) -> None:
        super().__init__(node_id, client_tp, peers, view, clock=clock)
        self.cfg = cfg
        self.pool = pool
        self.published: tuple[int, int, int] | None = None
        self.flow = EncryptService(
            node_id=node_id,
            send_client=self._send_reply,
            send_peers=peers.send_all,
            start_election=lambda rid, now: self.tell("election", StartElection(rid)),
            cancel_election=lambda rid: self.tell(
                "election", ForgetElection(rid, settled=self.flow.settled(rid))
            ),
            submit_seal=self._submit,
            max_pixels=images.max_user_pixels(cfg),
            clock=clock,
            cache_ttl_s=2 * cfg.client.request_deadline_s,
            max_image=seal.max_image_bytes(cfg.seal, cfg.transport.max_message),
            max_reply=cfg.transport.max_message - seal.REPLY_OVERHEAD,
            send_fetch=lambda addr, msg, rid: self._send_client(addr, msg, f"fetch:{rid}"),
        )

    def on_start(self) -> None:
        if self.pool is None:
            self.pool = EncoderPool(
                self.cfg.encoder.pool_size,
                self.cfg.seal,
                self.cfg.transport.max_message,
                self.actor_ref.tell,
                warm=WARM_SIZES,
            )

    def on_stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()

    # ---- sends -----------------------------------------------------------------------------------
    def _send_reply(self, addr: Addr, msg: Message, rid: str) -> None:
        self._send_client(addr, msg, f"reply:{rid}")

    def _send_client(self, addr: Addr, msg: Message, key: str) -> None:
        me = self.actor_ref
        self.client_tp.send(addr, msg, on_done=lambda err: me.tell(SendResult(key, err)))

    def _submit(self, rid: str, data: bytes) -> None:
        assert self.pool is not None
        self.pool.submit(rid, data)

    # ---- dispatch --------------------------------------------------------------------------------
    def serve(self, message: Any) -> None:
        now = self.clock()
        if isinstance(message, ClientIn):
            self._client(message.addr, message.msg, now)
        elif isinstance(message, Won):
            if self.up:
                self.flow.on_won(message.rid)
        elif isinstance(message, Lost):
            self.flow.on_lost(message.rid, message.winner)
        elif isinstance(message, Sealed):
            assert self.pool is not None
            self.pool.finished(message.rid)
            self.flow.on_sealed(message.rid, message.png, message.ms, message.error)
        elif isinstance(message, SendResult):
            kind, _, rid = message.key.partition(":")
            if kind == "reply":
                self.flow.on_reply_done(rid, message.error, now)
            elif kind == "fetch":
                self.flow.on_fetch_done(rid, message.error, now)
        elif isinstance(message, PeerIn):
            if isinstance(message.msg, Done):
                if self.up:
                    self.flow.on_done(message.msg.rid, message.msg.acked, now)
            else:
                self.count("peer_unexpected", type(message.msg).__name__)
        elif isinstance(message, PeerDown):
            if self.up:
                self.flow.on_node_down(message.node, now)

    def housekeeping(self, now: float) -> None:
        self.flow.expire(now)

    def going_down(self, message: GoDown) -> None:
        self.flow.drop_all(self.clock())  # Done for replies in flight ...
        for dest, msg in message.then_send:  # ... before the token's GoingDown
            self.peers.send(dest, msg)

    def _client(self, addr: Addr, msg: Message, now: float) -> None:
        if self.refused(self.client_tp, addr, msg, self.view, self.up):
            return
        if isinstance(msg, (EncryptRequest, EncryptOffer)):
            self.flow.on_request(addr, msg, now)
        else:
            self.count("client_unexpected", type(msg).__name__)

    def publish(self) -> None:
        in_flight = self.pool.in_flight() if self.pool is not None else 0
        figures = (in_flight, self.flow.counters.served, len(self.flow.cache))
        if figures == self.published:
            return
        if self.published is None or self.published[0] != in_flight:
            self.tell("election", Load(in_flight))
        if self.published is None or self.published[1:] != figures[1:]:
            self.tell("supervisor", Snapshot("flow", {"served": figures[1], "cached": figures[2]}))
        self.published = figures
