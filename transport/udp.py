"""The transport over a real UDP socket: `Transport` (the thread-safe handle every actor uses) and
`TransportActor` (its delivery side).

Threads, and what runs where:
- reader thread: select() on the socket and a wake-up socketpair, with the timeout of the core's
  next deadline (RTO, send deadlines, idle partials, held-back policy datagrams), but while the
  socket was busy lately (I/O in the last ACTIVE_S) never longer than the horizon (the RTO
  floor, 20 ms): a send() then pokes the sleeping reader (the wake-up byte) only when the new
  message's first deadline (its RTO, at least the floor) is more than POKE_SLACK_S earlier
  than the reader's wake-up, which the horizon makes rare. In the common case the peer's ACK
  wakes the reader anyway, and the poke was one more wake-up of a sleeping thread (issue 19:
  ~2 per request and node). The price: a lost datagram or ACK is retransmitted at most
  POKE_SLACK_S (5 ms) after its deadline (any send whose deadline is earlier than that still
  pokes), and a busy-lately reader with nothing due wakes every horizon for up to ACTIVE_S.
  While datagrams move at least POLL_MIN_EVENTS times per POLL_RATE_S (`TrafficRate`: an
  exchange of requests, not an idle cloud's heartbeats), after a turn or a send moved
  datagrams the reader polls the socket without sleeping until transport.poll_after_io_us
  (2 ms) have passed since, yielding its CPU between two polls (`Reactor._wait`): the answer
  of an exchange (a peer's Election, the ACKs of a client's request) mostly comes within that,
  and is then read without a wake-up of a sleeping thread, which costs 0.5 ms and more on this
  VM (issue 19, seventeenth session: 3 nodes, 6 clients, median of eight `benchmarks.cloud`
  runs 379 -> 427 images/s; the 1-client p50 moved less, 3.75 -> 3.45 ms). It drains up to
  DRAIN_BATCH datagrams, feeds them to the pure `Endpoint` under one lock, sends what the core
  asks for (at most CHUNK DATA datagrams per turn; after a full CHUNK it polls the socket without
  sleeping, so ACKs are read between chunks) and resolves send futures. Per-datagram work never
  leaves this thread.
- the reader thread is a `Reactor`: the transport's own, or one shared by several transports (a
  node's client and peer sockets): one select() on all their sockets, then each one's turn as
  above, then its timer sources (the node's ticker) once due (see `Reactor`).
- caller threads: `send()` encodes the message, hands it to the core under the lock and sends
  the first FIRST_CHUNK itself (a small message leaves at once); the reader thread sends the rest.
  One thread, not two, then sends a large message: a caller thread pumping chunks starved the
  reader of the GIL, and ACKs waited up to the 5 ms switch interval (the window stalled full).
  The window paces sending; the socket buffers are raised but never relied on. A send lock
  keeps datagrams in the core's order.
- `TransportActor` (Pykka): decodes each whole message once and gives it to the subscribers
  (`actor_ref.tell(Delivery)`, or a call of a callable), and runs `on_done` callbacks. Slow
  subscribers therefore never stall the socket.
- small messages (at most INLINE_MAX bytes of fragments) skip that hop: the thread that
  completed them (the reader) decodes them and tells the subscribing actors (or calls the
  callables subscribed `quick=True`) itself, when the delivery thread has nothing left to run
  (so messages and send outcomes keep the order they happened in) and no slow callable
  subscribes to their type; `on_done` callbacks of `send(quick_done=True)` likewise. A small
  request then costs one thread wake-up (its owner's) instead of two.
Every OSError of send/receive/select is counted (`oserrors`) and the thread goes on; no peer
input reaches an actor as an exception. With `recv_errors=True` the reader also drains the
socket's ICMP error queue: a destination that answered port unreachable (no process listens
there: a peer killed while its host stays up) is counted (`refused`) and handed to the
`on_refused` callbacks on the delivery thread, after the messages of the same reader turn.
Socket I/O (buffers, IP_PMTUDISC_DO, UDP GSO/GRO batching with fallback, the error queue) is in
`transport.sockets`.

A `LossPolicy` (argument, else the VEILSHARE_LOSS_POLICY environment variable) impairs incoming
datagrams: seeded drop, duplicate, delay, reorder, bit flips.
"""

from __future__ import annotations

import logging
import math
import os
import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pykka

from config import TransportConfig
from transport.auth import (
    EpochStore,
    MemoryEpochStore,
    PeerAuth,
    PeerGuard,
    SqliteEpochStore,
    boot_epoch,
)
from transport.endpoint import Delivered, Endpoint, Event
from transport.errors import MessageRejected, SendError, TransportError
from transport.frames import DatagramRun
from transport.future import SendFuture
from transport.mailbox import QuickInboxActor
from transport.policy import LossPolicy, PolicyGate
from transport.sender import SendDone
from transport.sockets import DatagramSocket, canonical_address
from transport.traffic import TrafficRate

__all__ = [
    "Delivery",
    "EpochStore",
    "LossPolicy",
    "MemoryEpochStore",
    "PeerAuth",
    "SendError",
    "SqliteEpochStore",
    "Transport",
    "TransportActor",
    "TransportError",
]

log = logging.getLogger(__name__)
Addr = tuple[str, int]
DRAIN_BATCH = 128  # datagrams per select(): small enough that ACKs leave promptly
CHUNK = 128  # DATA datagrams built per core-lock hold: sending starts before a window is built
# bytes of fragments (count x the first's size) up to which a message is decoded on the reader
# thread: join and decode take ~14 us at 60 KB here, while a hand-over to the delivery thread
# is one more thread wake-up (the node's sealed reply to a small image, ~22 KB, went through
# it on the client: issue 19); larger messages go there, so a large transfer's ACKs never wait
INLINE_MAX = 64 * 1024
MAX_CANONICAL = 4096  # destination addresses whose canonical form is remembered
FIRST_CHUNK = 32  # DATA datagrams send() builds itself: the wire (and the peer) start sooner
# the reader's sleep and the poke (see the module docstring): a deadline up to POKE_SLACK_S
# earlier than the sleeping reader's wake-up is met that late instead of poking; while the
# socket had I/O in the last ACTIVE_S the reader sleeps at most the horizon (the RTO floor)
POKE_SLACK_S = 0.005
ACTIVE_S = 0.1
# the reader polls after datagrams moved (transport.poll_after_io_us) only while they move at
# least POLL_MIN_EVENTS times per POLL_RATE_S (200 a second): an exchange of requests, not the
# heartbeats of an idle cloud (15 a second and node), whose polls cost an idle node 27 -> 67 ms
# of CPU a second
POLL_RATE_S = 0.1
POLL_MIN_EVENTS = 20


Outbox = list[tuple[Addr, bytes | DatagramRun]]


def _datagrams(out: Outbox) -> int:
    """How many datagrams `out` holds."""
    n = 0
    for _, d in out:  # (a loop: a comprehension is one more function call per turn)
        n += 1 if isinstance(d, bytes) else d.count
    return n


@dataclass(frozen=True, slots=True)
class Delivery:
    """One whole message from `addr`, delivered once."""

    addr: Addr
    msg: Any


class Codec(Protocol):
    """What the transport needs of a codec (codec.messages by default)."""

    def encode(self, msg: Any) -> bytes: ...
    def decode(self, type_code: int, body: bytes) -> Any: ...
    def max_body(self, type_code: int, max_message: int) -> int: ...


Handler = Any  # pykka.ActorRef[Any] | Callable[[Delivery], None]
OnDone = Callable[[SendError | None], None]


# a whole message for the delivery thread (addr, type_code, parts: its fragments, joined there):
# the core's Delivered event itself, handed on as it is (no copy per message)
_Deliver = Delivered


@dataclass(frozen=True, slots=True)
class _Call:
    fn: OnDone
    err: SendError | None
    quick: bool = False  # send(quick_done=True): may run on the reader thread (see _dispatch)


@dataclass(frozen=True, slots=True)
class _Refused:
    addrs: tuple[Addr, ...]  # destinations that answered ICMP port unreachable


@dataclass(frozen=True, slots=True)
class _Batch:
    """What one turn of the reader (or a sender's pump) hands to the delivery thread: messages
    and send outcomes in the order they happened, one actor message for all of them."""

    items: list[_Deliver | _Call]


class _ConfiguredCodec:
    """codec.messages with the limits of this transport's config: control bodies up to
    `control_max_body`, bulk bodies up to `max_message` (checked before buffering and again
    when decoding)."""

    def __init__(self, messages: Any, cfg: TransportConfig) -> None:
        self._m = messages
        self._cfg = cfg

    def encode(self, msg: Any) -> bytes:
        return bytes(self._m.encode(msg))

    def max_body(self, type_code: int, max_message: int) -> int:
        return int(self._m.max_body(type_code, max_message, control_max=self._cfg.control_max_body))

    def decode(self, type_code: int, body: bytes) -> Any:
        return self._m.decode(type_code, body, self._cfg.max_message,
                              control_max=self._cfg.control_max_body)


class TransportActor(QuickInboxActor):
    """Delivery side of one Transport: decode once, hand to subscribers, run callbacks."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self._t = transport

    def on_start(self) -> None:
        self._t._actor_thread = threading.current_thread()

    def on_receive(self, message: Any) -> Any:
        try:
            for item in message.items if isinstance(message, _Batch) else (message,):
                try:
                    if isinstance(item, _Deliver):
                        self._t._deliver([item])
                    elif isinstance(item, _Call):
                        item.fn(item.err)
                    elif isinstance(item, _Refused):
                        for fn in self._t._on_refused:
                            for addr in item.addrs:
                                fn(addr)
                except Exception:  # a subscriber's bug must not stop delivery (nor the batch)
                    self._t._count("subscriber_errors")
                    log.exception("transport %s: subscriber failed", self._t.name)
        finally:
            self._t._ran += 1  # (only this thread writes it) see Transport._dispatch
        return None


class Transport:
    """Thread-safe handle of one UDP socket (see module docstring). Build with `start`."""

    def __init__(self, sock: DatagramSocket, ep: Endpoint, codec: Codec, *, name: str,
                 gate: PolicyGate | None, reactor: Reactor | None = None) -> None:  # fmt: skip
        self.name = name
        self._sock = sock
        self._ep = ep
        self._codec = codec
        self._gate = gate
        self._lock = threading.Lock()  # the core, counters, subscribers
        self._send_lock = threading.Lock()  # order of datagrams on the wire (see _pump)
        self._closed = threading.Event()
        self._pending: dict[int, tuple[pykka.Future[None], OnDone | None, bool]] = {}
        self._subs: list[tuple[Handler, frozenset[int] | None, bool, bool]] = []  # see subscribe
        self._canonical: dict[Addr, Addr] = {}  # (see _canonical_address)
        self._hand_lock = threading.Lock()
        self._handed = 0  # actor messages told to the delivery thread (under _hand_lock)
        self._ran = 0  # ... and run by it (written by the delivery thread only)
        self._extra = {"oserrors": 0, "bad_messages": 0, "subscriber_errors": 0,
                       "internal_errors": 0, "refused": 0}  # fmt: skip
        self._on_refused: list[Callable[[Addr], None]] = []
        self._refused: list[Addr] = []  # (reader thread) refused in this turn
        self._sleep_until = 0.0
        self._last_io = -math.inf  # (under the lock) when a turn or send() last moved datagrams
        self._horizon = ep.cfg.rto_floor_ms / 1000  # the reader's longest sleep while busy
        self._more = False  # (reader thread) the last pump filled a CHUNK: more may be due now
        # (under the lock) the core's next deadline as the last _pump computed it: every change
        # of the core's state (send, datagrams_received) is followed by a _pump in the same hold
        self._ep_deadline: float | None = None
        self._io = False  # (reader thread) the last turn received or sent datagrams
        self._spin_s = ep.cfg.busy_poll_us / 1e6
        self._poll_s = ep.cfg.poll_after_io_us / 1e6  # (see the module docstring)
        # (under the lock) whether datagrams move often enough to poll after them
        self._rate = TrafficRate(POLL_RATE_S, POLL_MIN_EVENTS)
        # the reader thread: a reactor of its own, or one shared with other transports
        self._reactor = reactor if reactor is not None else Reactor(name)
        self._actor_thread: threading.Thread | None = None
        self._epoch_writes: list[tuple[int, int]] = []  # (send lock) queued by the guard
        self.address: Addr = sock.address
        self.epoch = ep.epoch
        self._actor = TransportActor.start(self)
        self._reader = self._reactor.thread
        try:
            self._reactor.add(self)
        except TransportError:  # a shared reactor whose thread has ended
            self._actor.stop()
            sock.close()
            raise

    @classmethod
    def start(
        cls,
        bind: Addr,
        cfg: TransportConfig,
        *,
        codec: Codec | None = None,
        auth: PeerAuth | None = None,
        validate_addresses: bool = False,
        policy: LossPolicy | None = None,
        name: str = "",
        sock_wrapper: Callable[[Any], Any] | None = None,
        batching: bool = True,
        recv_errors: bool = False,
        reactor: Reactor | None = None,
    ) -> Transport:
        """Bind `bind` (port 0: any) and start the reader and delivery threads.
        `codec` defaults to codec.messages; `policy` to LossPolicy.from_env();
        `sock_wrapper(sock)` may wrap sendto/sendmsg/recvfrom/recvmsg (fault injection in tests);
        `batching=False` turns UDP GSO/GRO off (one syscall per datagram); `recv_errors=True`
        reads the ICMP errors our datagrams drew (Linux; see `on_refused`)."""
        if codec is None:
            from codec import messages as default_codec

            codec = _ConfiguredCodec(default_codec, cfg)
        if policy is None:
            policy = LossPolicy.from_env()
        wall_ms = int(time.time() * 1000)
        guard = None
        epoch = wall_ms
        if auth is not None:
            guard = PeerGuard(auth, lambda: int(time.time() * 1000))
            epoch = boot_epoch(auth.epoch_store, auth.self_id, wall_ms)
        rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        # ACKs are held back (ack_delay_ms) on peer sockets only: a client waits on the ACK of
        # its one-fragment request (its upload phase), a node's peer messages are not waited on
        ep = Endpoint(cfg, epoch=epoch, rng=rng, max_body=codec.max_body, guard=guard,
                      validate_addresses=validate_addresses, ack_delay=guard is not None)  # fmt: skip
        sock = DatagramSocket(bind, cfg.socket_buffer, wrap=sock_wrapper, batching=batching,
                              recv_errors=recv_errors)
        gate = None
        if policy is not None:
            gate = PolicyGate(policy)
            log.warning("transport %s: loss policy %s", name, policy.spec())
        return cls(sock, ep, codec, name=name or f"{bind[0]}:{bind[1]}", gate=gate,
                   reactor=reactor)

    # ----------------------------------------------------------------- public API
    def send(self, addr: Addr, msg: Any, *, deadline_s: float | None = None,
             on_done: OnDone | None = None, quick_done: bool = False,
             prompt: bool = False) -> pykka.Future[None]:  # fmt: skip
        """Send `msg` to `addr`. The future resolves None once the peer acknowledged the whole
        message, or fails with SendError (kind "unacknowledged", "undelivered" or "rejected").
        `on_done(error_or_None)` runs on the delivery thread when the outcome is known;
        `quick_done=True` promises it never blocks nor waits for this transport (it tells an
        actor): it may then run on the thread that learned the outcome (the reader, or a caller
        of send() whose turn ran a timer), which saves the delivery thread's wake-up.
        `deadline_s`: silence after which the send fails (default transport.send_deadline_s).
        `prompt=True`: the caller waits on the outcome; without it the peer may hold the ACK of
        a one-fragment message up to transport.ack_delay_ms for DATA to carry it, and the
        future resolves that much later (transport.endpoint)."""
        return self.send_many([(addr, msg, on_done)], deadline_s=deadline_s,
                              quick_done=quick_done, prompt=prompt)[0]

    def send_many(self, items: Sequence[tuple[Addr, Any, OnDone | None]], *,
                  deadline_s: float | None = None,
                  quick_done: bool = False, prompt: bool = False) -> list[pykka.Future[None]]:  # fmt: skip
        """`send` of each (addr, msg, on_done) of `items`, in order, under one hold of the core's
        lock, with their first datagrams leaving in one pass and at most one wake-up of the
        reader; a message object given several times is encoded once. A client's request to
        every node leaves at once: the spread of its copies is what the nodes' election waits
        for, and a reader woken by the first copy took the GIL from the other two (issue 19)."""
        futs: list[pykka.Future[None]] = []
        staged: list[tuple[pykka.Future[None], OnDone | None, Addr, int, bytes]] = []
        refused: list[tuple[pykka.Future[None], OnDone | None, SendError]] = []
        bodies: dict[int, bytes] = {}  # id(msg) -> body (the messages live through this call)
        for addr, msg, on_done in items:
            fut: pykka.Future[None] = SendFuture()
            futs.append(fut)
            try:
                body = bodies.get(id(msg))
                if body is None:
                    body = bodies[id(msg)] = self._codec.encode(msg)
                dest = (self._canonical.get(addr) if type(addr) is tuple else None
                        ) or self._canonical_address(addr)  # fmt: skip
                staged.append((fut, on_done, dest, msg.TYPE, body))
            except Exception as exc:  # noqa: BLE001 - the caller's message or address is refused
                refused.append((fut, on_done, SendError("rejected", f"cannot send {msg!r}: {exc}")))
        limit = FIRST_CHUNK * max(1, len(staged))
        now = time.monotonic()
        with self._lock:
            for fut, on_done, dest, type_code, body in staged:
                if self._closed.is_set():
                    refused.append((fut, on_done, SendError("rejected", "transport stopped")))
                    continue
                try:
                    handle = self._ep.send(dest, type_code, body, now, deadline_s, prompt)
                    self._pending[handle] = (fut, on_done, quick_done)
                except MessageRejected as exc:
                    refused.append((fut, on_done, SendError("rejected", exc.reason)))
            self._moved(now)
            out, events, poke = self._pump(now, limit)
        self._flush(out, events)
        for fut, on_done, err in refused:
            self._resolve(fut, on_done, err)
        if poke or _datagrams(out) >= limit:  # the reader thread sends the rest
            self._poke()
        return futs

    def _canonical_address(self, addr: Addr) -> Addr:
        """canonical_address, remembered (a node sends to the same few addresses all the time;
        parsing an IP literal each time was a visible share of a small message's cost)."""
        dest = canonical_address(addr, self._sock.family)
        if len(self._canonical) >= MAX_CANONICAL:
            self._canonical.clear()
        self._canonical[(addr[0], addr[1])] = dest
        return dest

    def subscribe(
        self,
        handler: Handler,
        types: tuple[type[Any], ...] | None = None,
        *,
        quick: bool = False,
        batches: bool = False,
    ) -> Callable[[], None]:
        """Deliver every whole message (of `types`, default all) to `handler`: an actor ref gets
        `tell(Delivery)` (from the delivery thread, or for a small message from the reader
        thread), a callable is called on the delivery thread (keep it quick). `quick=True`
        promises that the callable never blocks nor waits for this transport (it only counts
        and tells actors): it may then be called on the reader thread too, like an actor ref.
        `batches=True` (a quick callable): called with a list of Deliveries instead, the
        messages of one reader turn in order (so it can tell each actor once per turn).
        Returns a function that undoes the subscription."""
        codes = None if types is None else frozenset(int(t.TYPE) for t in types)
        entry = (handler, codes, quick or batches or isinstance(handler, pykka.ActorRef), batches)
        with self._lock:
            self._subs = [*self._subs, entry]

        def unsubscribe() -> None:
            with self._lock:
                self._subs = [s for s in self._subs if s is not entry]

        return unsubscribe

    def on_refused(self, fn: Callable[[Addr], None]) -> None:
        """Call `fn(addr)` on the delivery thread (keep it quick) for each destination that
        answered ICMP port unreachable to a datagram we sent (only with `recv_errors`)."""
        with self._lock:
            self._on_refused = [*self._on_refused, fn]

    def progress(self) -> tuple[int, int]:
        """(bytes done, bytes in all) of the messages being sent or received now."""
        with self._lock:
            return self._ep.progress()

    def stats(self) -> dict[str, int]:
        """Counters: the core's (see transport.endpoint) plus oserrors, bad_messages (bodies the
        codec refused), subscriber_errors, internal_errors, refused (ICMP port unreachable, with
        `recv_errors`), policy_* and the socket buffers."""
        with self._lock:
            s = self._ep.stats()
            s.update(self._extra)
            if self._gate is not None:
                s.update(self._gate.counts)
        try:
            s["rcvbuf"], s["sndbuf"] = self._sock.buffers()
        except OSError:
            pass
        s["gso"], s["gro"] = int(self._sock.gso), int(self._sock.gro)
        return s

    def set_policy(self, policy: LossPolicy | None) -> None:
        """Impair incoming datagrams with `policy` from now on (None: none). Datagrams held back
        by the previous policy still come out on time."""
        with self._lock:
            if self._gate is None:
                if policy is None:
                    return
                self._gate = PolicyGate(policy)
            else:
                self._gate.set_policy(policy if policy is not None else LossPolicy())
        log.warning("transport %s: loss policy now %s", self.name,
                    policy.spec() if policy is not None else "off")

    def stop(self) -> None:
        """Stop the threads, close the socket, fail pending sends ("rejected"). Idempotent."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            pending, self._pending = self._pending, {}
        self._reactor.remove(self)  # returns once its thread no longer uses our socket
        for fut, on_done, _ in pending.values():
            self._resolve(fut, on_done, SendError("rejected", "transport stopped"))
        in_actor = threading.current_thread() is self._actor_thread
        self._actor.stop(block=not in_actor)
        self._sock.close()

    # ----------------------------------------------------------------- reader thread
    def _plan(self) -> tuple[float, float]:
        """(reader thread) when the reader must wake at the latest, and how long it may spin."""
        with self._lock:
            now = time.monotonic()
            wake = now if self._more else self._next_wake()
            if now - self._last_io < ACTIVE_S:  # busy lately: see the module docstring
                wake = min(wake, now + self._horizon)
            self._sleep_until = wake
            spin = self._spin_s if self._io and self._ep.bulk_in_progress() else 0.0
            if self._poll_s and self._rate.busy(now):  # poll on (module docstring)
                spin = max(spin, self._last_io + self._poll_s - now)
        return wake, spin

    def _moved(self, now: float) -> None:
        """(under the lock) datagrams moved now: a send, or a reader turn that read or sent."""
        self._last_io = now
        self._rate.moved(now)

    def _turn(self, readable: bool) -> None:
        """(reader thread) one turn after the wait: read, feed the core, send, hand on."""
        batch = self._recv_batch() if readable else []
        now = time.monotonic()
        with self._lock:
            if self._closed.is_set():
                return
            if self._gate is not None:
                batch = self._impair(batch, now)
            if batch:
                self._ep.datagrams_received(batch, now)
            out, events, _ = self._pump(now)
            if batch or out:
                self._moved(now)
        self._flush(out, events)
        if self._refused:  # after this turn's messages (a peer's last words come first)
            self._hand(_Refused(tuple(self._refused)))  # counted, like every delivery-thread item
            self._refused = []
        self._more = _datagrams(out) >= CHUNK  # the windows may allow more: read ACKs, send on
        self._io = bool(batch or out)

    def _recv_batch(self) -> list[tuple[Addr, bytes]]:
        batch, errors = self._sock.recv(DRAIN_BATCH)
        refused, other = self._sock.queued_errors()
        if errors or other:
            self._count("oserrors", errors + other)
        if refused:
            self._count("refused", len(refused))
            self._refused = refused
        return batch

    def _impair(self, batch: list[tuple[Addr, bytes]], now: float) -> list[tuple[Addr, bytes]]:
        gate = self._gate
        assert gate is not None
        out = gate.due(now)
        for addr, data in batch:
            out.extend(gate.admit(addr, data, now))
        return out

    def _next_wake(self) -> float:
        times = [t for t in (self._ep_deadline,
                             self._gate.next_time() if self._gate else None) if t is not None]  # fmt: skip
        return min(times) if times else float("inf")

    def _pump(self, now: float, limit: int = CHUNK) -> tuple[Outbox, list[Event], bool]:
        """(under the lock) datagrams (at most `limit` DATA) and events due now, and whether the
        reader must wake up (the next deadline is more than POKE_SLACK_S before its). Takes the send lock, which `_flush` releases: datagrams leave in the
        order the core made them even when two threads pump (a reordered burst looks like loss)."""
        out = self._ep.gathered_to_send(now, limit)
        events = self._ep.pop_events()
        deadline = self._ep_deadline = self._ep.next_deadline()
        self._send_lock.acquire()
        guard = self._ep.guard
        if guard is not None:
            self._epoch_writes = guard.take_writes()
        return out, events, deadline is not None and deadline < self._sleep_until - POKE_SLACK_S

    def _flush(self, out: Outbox, events: list[Event]) -> None:
        try:
            self._persist_epochs()  # before anything of a new epoch is acknowledged or delivered
            errors = self._sock.send(out) if out else 0  # lost datagrams: the core resends
        finally:
            self._send_lock.release()
        if errors:
            self._count("oserrors", errors)
        work: list[_Deliver | _Call] = []  # for the delivery thread, in the order of the events
        for ev in events:
            if isinstance(ev, Delivered):  # isinstance, not type() is: mypy narrows the rest
                work.append(ev)
                continue
            entry = self._pending.pop(ev.handle, None)
            if entry is not None:
                err = None if isinstance(ev, SendDone) else SendError(ev.kind, ev.reason)
                self._resolve(entry[0], entry[1], err, work, entry[2])
        if work:
            self._dispatch(work)

    def _dispatch(self, work: list[_Deliver | _Call]) -> None:
        """Run the leading items of `work` that may run on this thread (small messages
        whose subscribers are all quick, `quick_done` callbacks), if the delivery thread has
        run everything it was given (else they would overtake it); the rest goes to the
        delivery thread, one actor message for all of it (one wake-up per turn, not one per
        message)."""
        i, n = 0, len(work)
        if self._handed == self._ran:
            run: list[_Deliver] = []  # consecutive messages: decoded and handed on together
            while i < n:
                item = work[i]
                if isinstance(item, _Call):
                    if not item.quick:
                        break
                    if run:
                        self._deliver(run)
                        run = []
                    self._call(item.fn, item.err)
                elif len(item.parts) * len(item.parts[0]) <= INLINE_MAX and self._quick(item):
                    run.append(item)
                else:
                    break
                i += 1
            if run:
                self._deliver(run)
        if i < n:
            self._hand(work[i] if i == n - 1 else _Batch(work[i:]))

    def _quick(self, d: _Deliver) -> bool:
        """Whether every subscriber that gets `d` may be run on the calling thread."""
        for _, codes, quick, _ in self._subs:
            if not quick and (codes is None or d.type_code in codes):
                return False
        return True

    def _hand(self, message: _Deliver | _Call | _Batch | _Refused) -> None:
        """Tell the delivery thread (counted: see _dispatch)."""
        if not self._actor.is_alive():  # stopped: nobody to deliver to
            return
        with self._hand_lock:
            self._handed += 1
            try:
                self._actor.tell(message)
            except pykka.ActorDeadError:  # stopped meanwhile
                self._handed -= 1

    def _persist_epochs(self) -> None:
        """(send lock held) Write the epochs the guard queued in the last pump."""
        writes, self._epoch_writes = self._epoch_writes, []
        guard = self._ep.guard
        if guard is None:
            return
        for node, epoch in writes:
            guard.auth.epoch_store.put(node, epoch)

    def _resolve(
        self,
        fut: pykka.Future[None],
        on_done: OnDone | None,
        err: SendError | None,
        work: list[_Deliver | _Call] | None = None,
        quick: bool = False,
    ) -> None:
        """Settle `fut`; `on_done` runs on the delivery thread (appended to `work`, the caller's
        batch for it, if given)."""
        if err is None:
            fut.set(None)
        else:
            fut.set_exception((SendError, err, None))
        if on_done is None:
            return
        if work is not None:
            work.append(_Call(on_done, err, quick))
        else:
            self._hand(_Call(on_done, err))

    def _poke(self) -> None:
        self._reactor.poke()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._extra[key] = self._extra.get(key, 0) + n

    # ----------------------------------------------------------------- delivery thread
    def _deliver(self, items: list[_Deliver]) -> None:
        """Decode `items` and hand them to the subscribers, in order (on the delivery thread,
        or small messages on the thread that completed them: see _dispatch). A
        subscriber of `batches` gets all of its messages of `items` in one call."""
        got: list[tuple[int, Delivery]] = []
        for d in items:
            parts = d.parts
            try:
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()  # pykka keeps the last batch until the next one: not its fragments
                got.append((d.type_code, Delivery(d.addr, self._codec.decode(d.type_code, body))))
            except Exception:  # noqa: BLE001 - the codec refused a peer's body: counted
                self._count("bad_messages")
        if not got:
            return
        for handler, codes, _, batches in self._subs:
            mine = [x for t, x in got if codes is None or t in codes]
            if not mine:
                continue
            if batches:
                self._call(handler, mine)
            else:
                call = handler.tell if isinstance(handler, pykka.ActorRef) else handler
                for x in mine:
                    self._call(call, x)

    def _call(self, handler: Callable[[Any], None], arg: Any) -> None:
        """handler(arg); an exception (a subscriber's bug, a stopped actor) is counted and
        logged, never raised into the reader or delivery thread."""
        try:
            handler(arg)
        except Exception:
            self._count("subscriber_errors")
            log.exception("transport %s: subscriber %r failed", self.name, handler)


class TimerSource(Protocol):
    """Periodic work a Reactor runs on its thread between turns (a node's ticker)."""

    def next_due(self) -> float:
        """When `fire` is due next (time.monotonic(); inf: not now)."""
        ...

    def fire(self, now: float) -> None: ...


class Reactor:
    """One reader thread for several transports: a node's client and peer sockets (issue 19).

    Each turn it asks every transport when it must wake at the latest (`Transport._plan`), sleeps
    in one select() on all their sockets and one shared wake-up socketpair (a send() that pokes
    its reader writes there), then gives each transport its turn (`Transport._turn`) in the order
    they were added: read, feed the core, send, hand on. A transport that filled a CHUNK asks for
    the next turn at once, and the others are polled in between, so a bulk transfer on one socket
    does not starve the other. What one reader per socket cost: every request woke both readers
    of a node in turn, and the two took the GIL from each other.

    A transport joins with `Transport.start(..., reactor=r)` and leaves with its `stop()`, which
    returns once the thread no longer uses its socket. The thread starts with the first
    transport and ends (closing the wake-up pair) when the last one has left; a reactor is not
    reused. Timer sources (`add_timer`) run on the same thread after the turns once due, and
    their due time bounds the sleep: a node's ticker rides on the wake-ups its sockets cause
    instead of waking a thread of its own every period. Work handed on by a turn can run there
    too, after the turns and timers (`defer`): the winner's seal of a small image, instead of a
    wake-up of the flow actor's thread."""

    def __init__(self, name: str) -> None:
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self._cond = threading.Condition()  # guards _tps, _turns and _state
        self._tps: list[Transport] = []
        self._timers: list[TimerSource] = []
        self._deferred: deque[Callable[[], None]] = deque()  # run after this turn (defer)
        self._deferred_first: deque[Callable[[], None]] = deque()  # defer(first=True)
        self._turns = 0  # turns begun (see remove)
        self._state = "new"  # new | running | ended
        self.thread = threading.Thread(target=self._run, name=f"transport-{name}", daemon=True)

    def add(self, tp: Transport) -> None:
        with self._cond:
            if self._state == "ended":
                raise TransportError("reactor: its thread has ended (every transport left)")
            self._tps.append(tp)
            start, self._state = self._state == "new", "running"
        if start:
            self.thread.start()
        else:
            self.poke()

    def add_timer(self, source: TimerSource) -> None:
        """Run `source.fire(now)` on this thread whenever `source.next_due()` has passed (from
        the first transport's joining: the thread runs while transports do)."""
        with self._cond:
            self._timers.append(source)
        self.poke()

    def remove_timer(self, source: TimerSource) -> None:
        """No more fires of `source` after the current turn."""
        with self._cond:
            if source in self._timers:
                self._timers.remove(source)

    def remove(self, tp: Transport) -> None:
        """`tp` leaves; returns once the thread's current turn (which may still select on its
        socket) is over, so the caller may close the socket. From the thread itself: at once
        (the turn skips a closed transport, and the next one leaves it out)."""
        with self._cond:
            if tp in self._tps:
                self._tps.remove(tp)
            turns = self._turns
        if threading.current_thread() is self.thread:
            return
        self.poke()
        with self._cond:
            self._cond.wait_for(lambda: self._turns > turns or self._state == "ended", 5.0)

    def defer(self, fn: Callable[[], None], *, first: bool = False) -> bool:
        """On this reactor's thread: run `fn` there once the current turn is over (every
        transport's datagrams read, handed on and sent) and return True; from any other thread
        return False and do nothing (the caller does the work its own way). `first=True`: ahead
        of the timers and of every ordinary one not yet started (a node's election messages: the
        peers wait for them, not for its ticks or a seal; a tick tells actors whose threads
        then want the GIL)."""
        if threading.current_thread() is not self.thread:
            return False
        (self._deferred_first if first else self._deferred).append(fn)
        return True

    def poke(self) -> None:
        """Write the wake-up byte that ends the thread's select()."""
        try:
            self.wake_w.send(b"\0")
        except OSError:  # full (a wake-up is already pending) or closed
            pass

    def _run(self) -> None:
        while True:
            with self._cond:
                self._turns += 1
                self._cond.notify_all()
                tps, timers = list(self._tps), list(self._timers)
                if not tps:
                    self._state = "ended"
                    self.wake_r.close()
                    self.wake_w.close()
                    return
            try:
                self._iterate(tps, timers)
            except Exception:  # a bug must not stop the sockets: log, go on
                log.exception("reactor %s: iteration failed", self.thread.name)
                time.sleep(0.01)

    @staticmethod
    def _wait(fds: list[int], timeout: float | None, spin: float) -> list[int]:
        """select() on `fds`; first poll without sleeping for up to `spin` seconds (busy poll:
        in a bulk transfer the next datagram is due within microseconds, and in an exchange of
        small messages within a millisecond or two, while waking a thread that slept costs
        far more here: 0.5 ms and more on this VM). Between two polls the thread yields its
        CPU (`sched_yield`): whatever else is ready to run there, another thread of this
        process or another process, runs first, so a poll only takes time nobody wanted."""
        if spin > 0 and timeout != 0.0:
            until = time.monotonic() + min(spin, timeout if timeout is not None else spin)
            while True:
                ready, _, _ = select.select(fds, [], [], 0)
                if ready or time.monotonic() >= until:
                    return list(ready)
                os.sched_yield()
        ready, _, _ = select.select(fds, [], [], timeout)
        return list(ready)

    def _iterate(self, tps: list[Transport], timers: Sequence[TimerSource] = ()) -> None:
        wake, spin = math.inf, 0.0
        for tp in tps:
            try:
                w, sp = tp._plan()
            except Exception:  # as a failing turn: count, log, try it again a little later
                tp._count("internal_errors")
                log.exception("transport %s: reader plan failed", tp.name)
                w, sp = time.monotonic() + 0.01, 0.0
            wake = min(wake, w)
            spin = max(spin, sp)
        for source in timers:
            wake = min(wake, source.next_due())
        for tp in tps:  # a send() pokes only for a deadline before the one we sleep to
            tp._sleep_until = wake
        fds = [tp._sock.fileno() for tp in tps]
        fds.append(self.wake_r.fileno())
        try:
            timeout = None if wake == math.inf else max(0.0, wake - time.monotonic())
            ready = self._wait(fds, timeout, spin)
        except (OSError, ValueError):  # a socket closed under us: the next turn leaves it out
            for tp in tps:
                if not tp._closed.is_set():
                    tp._count("oserrors")
            time.sleep(0.001)
            return
        finally:
            # awake: before sleeping again each transport takes its next deadline under its
            # lock (_plan), so a send() from now on needs no wake-up byte (see _pump's poke)
            for tp in tps:
                tp._sleep_until = -math.inf
        if fds[-1] in ready:
            try:
                while self.wake_r.recv(4096):
                    pass
            except OSError:
                pass
        for tp, fd in zip(tps, fds):
            if tp._closed.is_set():
                continue
            try:
                tp._turn(fd in ready)
            except Exception:  # a failing turn: count, log, the other transports go on
                tp._count("internal_errors")
                log.exception("transport %s: reader turn failed", tp.name)
        self._run_deferred(first_only=True)  # what peers wait for goes before the timers
        if timers:
            now = time.monotonic()
            for source in timers:
                if source.next_due() <= now:
                    try:
                        source.fire(now)
                    except Exception:  # a bug must not stop the sockets: log, go on
                        log.exception("reactor %s: timer %r failed", self.thread.name, source)
        self._run_deferred()

    def _run_deferred(self, first_only: bool = False) -> None:
        """The functions `defer` took this turn (and those they defer in turn): the `first`
        ones in order, then (unless `first_only`) the others in order, a `first` one deferred
        meanwhile next."""
        first, rest = self._deferred_first, self._deferred
        while first or (rest and not first_only):
            fn = first.popleft() if first else rest.popleft()
            try:
                fn()
            except Exception:  # a bug must not stop the sockets: log, go on
                log.exception("reactor %s: deferred %r failed", self.thread.name, fn)
