"""EncryptFlowActor: the encrypt flow of one node (request cache, who seals, the reply, Done).

Owns the pure core `actors.core.encrypt_flow.EncryptService` and the `EncoderPool` it seals on.
- client EncryptRequest or EncryptOffer -> cache it, `StartElection` to the ElectionActor;
  won an offer -> FetchPayload to the client, whose EncryptRequest then comes to us alone;
- `Won` -> seal on the pool (only the winner looks at the payload), or, for a payload up to
  SEAL_HERE_MAX, on this actor's own thread once the current message is handled (a SealJob told
  to itself: ~0.4-0.7 ms of CPU, while the pool's round trip cost two thread wake-ups and two
  `Load` messages to the election per request); `Lost` -> wait for Done. The ElectionActor tells
  Won through a `DirectEntry`: handled on its thread while this actor is idle (actors.direct);
  when that thread is the node's reader (`after_turn`: `Reactor.defer` accepts), the SealJob is
  not told to our sleeping thread but handed to the entry once the reader's turn is over (its
  ACKs and election messages sent): sealed there, without a wake-up. On this 2-core VM the
  wake cost more than it saved: the woken thread wanted the GIL the reader held, and py-spy
  (`benchmarks.profile_nodes --gil`) found the GIL's holder in that `tell` 20 % of the time;
  `PeerDown` -> re-elect what the fallen winner held;
- a seal's result -> EncryptReply to the client; its acknowledgement (or failure) -> Done to the
  peers, `ForgetElection` (settled when the client's transport acknowledged the reply). The
  outcome (`SendResult`) comes through the DirectEntry too: handled on the client transport's
  thread that learned it while this actor is idle, one wake-up of it less per reply;
- peer Done or DoneBatch -> drop the cached copies. Our own Dones are held `election.done_hold_ms`
  (0, off, by default: the duplicates below were measured with 50 ms, the CPU gain was not)
  from the first one, or until DONE_HOLD_MAX are held, then leave as one DoneBatch
  (issue 19: one Done to each peer per request won, 0.68 messages per request and node at one
  client back to back, plus their ACKs; about half that with the hold, `benchmarks.msg_count`;
  more clients fill a hold faster). The timer is the supervisor's Ticker (`later`: no thread of its own, and an
  idle cloud still sends them); without one (or a hold of 0) they wait only for the messages
  already in the mailbox (none: they leave at the end of the message that made them; on the
  node's reader the PeerLink holds them to the end of its turn, with its election messages). What the hold costs: the peers keep their cached copy (and their
  election state) up to the hold longer; a winner killed inside the hold, after its reply left,
  is re-elected by its peers and the request answered twice (a simulated failure, `GoDown`,
  and stopping the node send the held Dones first); the peers' election resends (a vote every
  2 answer timeouts, 600 ms) stay well behind a 50 ms hold;
- `GoDown` -> keep nothing, Done first for replies in flight, then the failure token's own sends
  (GoingDown).
The pool's load goes to the ElectionActor (`Load`, for the election priority) whenever it changes.
Served and cached counts are written into `figures`, the supervisor's status figures (a dict the
supervisor reads when it answers `status`; one item write is atomic): they change twice per
request on every node, and a `Snapshot` message each time was two of a node's ~12 actor
messages per request (issue 19, `python -m benchmarks.msg_count`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.core.encrypt_flow import EncryptService
from actors.direct import DirectActor, DirectEntry
from actors.node.base import PeerLink, ServicePartActor
from actors.node.encoder import EncoderPool, Sealed, SealJob
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
    StartElection,
    Won,
)
from codec import images, seal
from codec.messages import (
    DONE_BATCH_MAX,
    Done,
    DoneBatch,
    EncryptOffer,
    EncryptRequest,
    ErrorReply,
    Message,
)
from config import Config
from transport.udp import Transport

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _FlushDones:
    """Sent to ourselves when the first Done is held (by the timer; without a hold, behind the
    messages waiting in the mailbox, if any: see `_dones_after_message`): every message that
    was waiting before it has been handled, so the Dones they produced leave together. `gen`: the hold it ends (one flushed early by DONE_HOLD_MAX or GoDown
    leaves a stale timer, ignored)."""

    gen: int


Later = Callable[[float, Callable[[], None]], None]  # (delay_s, fn): fn() on a timer thread
DONE_HOLD_MAX = 64  # Dones held at most: a full hold leaves at once (one ~4 KB DoneBatch)


def _tell_if_alive(ref: pykka.ActorRef[Any] | DirectEntry, message: Any) -> None:
    """A timer's or a deferred tell (see `after_turn`): an actor stopped meanwhile drops it
    (its held Dones left in on_stop)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


WARM_SIZES = (4096, 2 * 1024 * 1024)  # covers of small images and of a photo, prepared at start
SEAL_HERE_MAX = 16 * 1024  # payload bytes sealed on the flow actor's thread (see the docstring)


class EncryptFlowActor(DirectActor, ServicePartActor):
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
        figures: dict[str, Any] | None = None,
        entry: DirectEntry | None = None,
        later: Later | None = None,
        after_turn: Callable[[Callable[[], None]], bool] | None = None,
    ) -> None:
        super().__init__(node_id, client_tp, peers, view, clock=clock)
        self.direct_init(entry)  # the ElectionActor's Won starts the seal on its thread
        self.entry = entry  # the outcomes of our client sends come back through it too
        self.dones_due = False  # a Done is held without a timer: it leaves after this message
        self.cfg = cfg
        self.pool = pool
        self.figures = figures if figures is not None else {}  # see the module docstring
        self.published: tuple[int, int, int] | None = None
        self.dones: list[Done] = []  # held: sent by _FlushDones (see the module docstring)
        self.dones_gen = 0  # the hold now (see _FlushDones)
        self.later = later
        self.after_turn = after_turn
        self.done_hold_s = cfg.election.done_hold_ms / 1000
        self.flow = EncryptService(
            node_id=node_id,
            send_client=self._send_reply,
            send_peers=self._to_peers,
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
            send_refusal=self._refuse_id,
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
        self._flush_dones()  # the node stops: its held Dones leave now, not never
        if self.pool is not None:
            self.pool.stop()

    # ---- sends -----------------------------------------------------------------------------------
    def _send_reply(self, addr: Addr, msg: Message, rid: str) -> None:
        self._send_client(addr, msg, f"reply:{rid}")

    def _send_client(self, addr: Addr, msg: Message, key: str) -> None:
        # the outcome is handled on the thread that learned it while we are idle (our entry),
        # else it waits in the mailbox: a wake-up of this actor less per reply
        tell = self.entry.tell if self.entry is not None else self.actor_ref.tell
        self.client_tp.send(addr, msg, on_done=lambda err: tell(SendResult(key, err)),
                            quick_done=True)  # it never waits: may run on the reader thread

    def _refuse_id(self, addr: Addr, msg: Message) -> None:
        """A copy of a request id from another client, or of one known only as answered
        (EncryptService `id_in_use`): counted on the node's figures like every refused input,
        logged with the reason, and answered."""
        assert isinstance(msg, ErrorReply), msg
        self.count("id_in_use", f"{msg.rid} from {addr[0]}:{addr[1]}: {msg.message}")
        self.client_tp.send(addr, msg)

    def _to_peers(self, msg: Message) -> None:
        """The flow's peer messages are all Done: held (see the module docstring), then one
        Done, or one DoneBatch per DONE_BATCH_MAX."""
        assert isinstance(msg, Done), msg
        self.dones.append(msg)
        if len(self.dones) >= DONE_HOLD_MAX:
            self._flush_dones()
        elif len(self.dones) == 1:
            if self.later is None or self.done_hold_s <= 0:
                self.dones_due = True  # see handle
            else:
                flush, me = _FlushDones(self.dones_gen), self.actor_ref
                self.later(self.done_hold_s, lambda: _tell_if_alive(me, flush))

    def _flush_dones(self) -> None:
        self.dones_gen += 1
        self.dones_due = False
        dones, self.dones = self.dones, []
        for i in range(0, len(dones), DONE_BATCH_MAX):  # on the node's reader: held by the
            part = dones[i:i + DONE_BATCH_MAX]  # PeerLink to the turn's end (`turn`), see there
            if len(part) == 1:
                self.peers.send_all(part[0], turn=True)
                continue
            self.peers.send_all(DoneBatch(node=self.node_id,
                                          acked=tuple(d.rid for d in part if d.acked),
                                          unacked=tuple(d.rid for d in part if not d.acked)),
                                turn=True)

    def _submit(self, rid: str, data: bytes) -> None:
        assert self.pool is not None
        if len(data) <= SEAL_HERE_MAX:  # sealed by us, after the message being handled
            job = SealJob(rid, data)
            entry, after = self.entry, self.after_turn
            # on the reader's thread: sealed there once its turn is over, no wake-up (docstring)
            if (self.in_direct and entry is not None and after is not None
                    and after(lambda: _tell_if_alive(entry, job))):
                return
            self.actor_ref.tell(job)
        else:
            self.pool.submit(rid, data)

    def _seal_here(self, job: SealJob) -> Sealed | None:
        """Seal a small payload on this thread (the job gives its payload up: pykka keeps our
        last message until the next one comes)."""
        assert self.pool is not None
        payload, job.payload = job.payload, None
        if payload is None:
            return None
        return self.pool.seal_here(job.rid, payload)

    # ---- dispatch --------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        try:
            return super().handle(message)
        finally:
            if self.dones_due:
                self._dones_after_message()

    def _dones_after_message(self) -> None:
        """Without a hold, the Dones held leave once every message waiting in the mailbox now
        has been handled: at once when it is empty, else after a `_FlushDones` told behind
        them (the same as telling it always, without a message to ourselves per request)."""
        self.dones_due = False
        if self.actor_inbox.empty():
            self._flush_dones()
        else:
            self.actor_ref.tell(_FlushDones(self.dones_gen))

    def serve(self, message: Any) -> None:
        now = self.clock()
        if isinstance(message, ClientIn):
            self._client(message.addr, message.msg, now)
        elif isinstance(message, Won):
            if self.up:
                self.flow.on_won(message.rid)
        elif isinstance(message, Lost):
            self.flow.on_lost(message.rid, message.winner)
        elif isinstance(message, SealJob):
            sealed = self._seal_here(message)
            if sealed is not None:
                self.flow.on_sealed(sealed.rid, sealed.png, sealed.ms, sealed.error)
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
        elif isinstance(message, _FlushDones):
            if message.gen == self.dones_gen:
                self._flush_dones()
        elif isinstance(message, PeerIn):
            msg = message.msg
            if isinstance(msg, Done):
                if self.up:
                    self.flow.on_done(msg.rid, msg.acked, now)
            elif isinstance(msg, DoneBatch):
                if self.up:
                    for rid in msg.acked:
                        self.flow.on_done(rid, True, now)
                    for rid in msg.unacked:
                        self.flow.on_done(rid, False, now)
            else:
                self.count("peer_unexpected", type(message.msg).__name__)
        elif isinstance(message, PeerDown):
            if self.up:
                self.flow.on_node_down(message.node, now)

    def housekeeping(self, now: float) -> None:
        self.flow.expire(now)

    def going_down(self, message: GoDown) -> None:
        self.flow.drop_all(self.clock())  # Done for replies in flight ...
        self._flush_dones()
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
            self.figures["served"], self.figures["cached"] = figures[1:]
        self.published = figures
