"""A deterministic fake network for pure `Endpoint`s (tests and what-if runs; no sockets, no clock).

`Net` holds endpoints by address and a heap of datagrams in flight. Each direction (src, dst) has
an `Impairment`: a loss model (Bernoulli, bursts, Gilbert-Elliott), duplication, one-way delay with
jitter (FIFO: jitter never reorders unless `reorder` holds a datagram back), bit flips and an
optional `cut(now, data) -> bool` filter (blackholes, "drop every ACK"). Time jumps to the next
arrival or endpoint deadline; all randomness comes from one seeded `random.Random`.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from config import TransportConfig
from transport.endpoint import Delivered, Endpoint, Event
from transport.frames import fragment_count
from transport.sender import Addr, SendDone, SendFailed


class Bernoulli:
    """Each datagram lost independently with probability p."""

    def __init__(self, p: float) -> None:
        self.p = p

    def lost(self, rng: random.Random) -> bool:
        return rng.random() < self.p


class Bursty:
    """Losses start with probability p and continue with probability `cont`, at most `max_burst`
    datagrams in a row."""

    def __init__(self, p: float, cont: float = 0.5, max_burst: int = 3) -> None:
        self.p, self.cont, self.max_burst = p, cont, max_burst
        self._run = 0

    def lost(self, rng: random.Random) -> bool:
        if 0 < self._run < self.max_burst and rng.random() < self.cont:
            self._run += 1
            return True
        self._run = 1 if rng.random() < self.p else 0
        return self._run == 1


class GilbertElliott:
    """Two-state channel: good (loss `loss_good`) and bad (loss `loss_bad`)."""

    def __init__(self, p_gb: float, p_bg: float, loss_bad: float = 0.5, loss_good: float = 0.0):
        self.p_gb, self.p_bg, self.loss_bad, self.loss_good = p_gb, p_bg, loss_bad, loss_good
        self.bad = False

    def lost(self, rng: random.Random) -> bool:
        if rng.random() < (self.p_bg if self.bad else self.p_gb):
            self.bad = not self.bad
        return rng.random() < (self.loss_bad if self.bad else self.loss_good)


@dataclass
class Impairment:
    """What one direction does to datagrams (seconds for times, probabilities in [0, 1])."""

    loss: Bernoulli | Bursty | GilbertElliott | None = None
    duplicate: float = 0.0
    delay: float = 0.005
    jitter: float = 0.0
    fifo: bool = True  # False: jitter reorders freely (shuffle within the jitter span)
    reorder: float = 0.0  # probability of holding a datagram back by `reorder_delay`
    reorder_delay: float = 0.02
    corrupt: float = 0.0  # probability of flipping one random bit
    cut: Callable[[float, bytes], bool] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"sent": 0, "lost": 0, "flipped": 0})


class Net:
    """Endpoints on a fake network. `on_datagram(dst, ep)` runs after every datagram delivered
    (limit checks at every step)."""

    def __init__(self, rng: random.Random, start: float = 0.0) -> None:
        self.rng = rng
        self.now = start
        self.endpoints: dict[Addr, Endpoint] = {}
        self.impairments: dict[tuple[Addr, Addr], Impairment] = {}
        self.events: dict[Addr, list[Event]] = {}
        self.on_datagram: Callable[[Addr, Endpoint], None] | None = None
        self.tap: Callable[[Addr, Addr, bytes], None] | None = None
        self._heap: list[tuple[float, int, Addr, Addr, bytes]] = []
        self._seq = 0
        self._last: dict[tuple[Addr, Addr], float] = {}

    def add(self, addr: Addr, ep: Endpoint) -> Endpoint:
        self.endpoints[addr] = ep
        self.events[addr] = []
        return ep

    def impair(self, src: Addr, dst: Addr, imp: Impairment) -> Impairment:
        self.impairments[(src, dst)] = imp
        return imp

    def inject(self, src: Addr, dst: Addr, data: bytes, at: float | None = None) -> None:
        """Put a datagram on the wire as if `src` sent it (seen by `tap`, no impairment)."""
        if self.tap is not None:
            self.tap(src, dst, data)
        self._push(self.now if at is None else at, src, dst, data)

    def _push(self, at: float, src: Addr, dst: Addr, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, src, dst, data))

    def _transmit(self, src: Addr, dst: Addr, data: bytes) -> None:
        if self.tap is not None:
            self.tap(src, dst, data)
        imp = self.impairments.get((src, dst))
        if imp is None:
            self._push(self.now, src, dst, data)
            return
        rng = self.rng
        imp.counts["sent"] += 1
        if (imp.cut is not None and imp.cut(self.now, data)) or (imp.loss and imp.loss.lost(rng)):
            imp.counts["lost"] += 1
            return
        copies = 2 if imp.duplicate and rng.random() < imp.duplicate else 1
        for _ in range(copies):
            d = data
            if imp.corrupt and rng.random() < imp.corrupt:
                bit = rng.randrange(len(d) * 8)
                b = bytearray(d)
                b[bit // 8] ^= 1 << (bit % 8)
                d = bytes(b)
                imp.counts["flipped"] += 1
            at = self.now + imp.delay + (rng.random() * imp.jitter if imp.jitter else 0.0)
            if imp.reorder and rng.random() < imp.reorder:
                at += imp.reorder_delay
            elif imp.fifo:
                at = max(at, self._last.get((src, dst), at))
                self._last[(src, dst)] = at
            self._push(at, src, dst, d)

    def flush(self) -> None:
        """Collect what every endpoint wants to send now and put it on the wire."""
        for addr, ep in self.endpoints.items():
            for dst, data in ep.datagrams_to_send(self.now):
                self._transmit(addr, dst, data)
            evs = ep.pop_events()
            if evs:
                self.events[addr].extend(evs)

    def next_time(self) -> float | None:
        """When `step` acts next: the earliest arrival or endpoint deadline (None: nothing)."""
        times = [ep.next_deadline() for ep in self.endpoints.values()]
        nxt = min((t for t in times if t is not None), default=None)
        if self._heap and (nxt is None or self._heap[0][0] <= nxt):
            nxt = self._heap[0][0]
        return nxt

    def step(self) -> bool:
        """Advance to the next arrival or deadline and process it. False when nothing is left."""
        self.flush()
        nxt = self.next_time()
        if nxt is None:
            return False
        self.now = max(self.now, nxt)
        while self._heap and self._heap[0][0] <= self.now:
            _, _, src, dst, data = heapq.heappop(self._heap)
            ep = self.endpoints.get(dst)
            if ep is not None:
                ep.datagram_received(src, data, self.now)
                persist_epochs(ep)  # what transport.udp does before it acts on the turn
                if self.on_datagram is not None:
                    self.on_datagram(dst, ep)
        self.flush()
        return True

    def advance(self, t: float) -> None:
        """Process every arrival and deadline up to `t`, then set the clock to `t` (a caller
        that acts at `t`, e.g. sends, sees the network as it is then)."""
        self.flush()
        while (nxt := self.next_time()) is not None and nxt <= t:
            self.step()
        self.now = max(self.now, t)

    def run(self, until: Callable[[], bool] | None = None, max_time: float = 3600.0) -> None:
        """Step until `until()` holds, nothing is left, or `max_time` (fake seconds) passed."""
        while (until is None or not until()) and self.now < max_time:
            if not self.step():
                return


# ------------------------------------------------------------------ helpers for tests
BULK_TYPE = 1  # fake codec: a bulk type (body up to max_message)
CONTROL_TYPE = 2  # fake codec: a control type (body up to 64 KiB)
CONTROL_LIMIT = 64 * 1024


def fake_max_body(type_code: int, max_message: int) -> int:
    """The codec's `max_body` for two fake types; raises KeyError for any other type."""
    if type_code == BULK_TYPE:
        return max_message
    if type_code == CONTROL_TYPE:
        return CONTROL_LIMIT
    raise KeyError(f"unknown message type {type_code}")


def outcomes(events: list[Event]) -> dict[int, Event]:
    """SendDone / SendFailed events by handle."""
    return {e.handle: e for e in events if isinstance(e, (SendDone, SendFailed))}


def delivered(events: list[Event]) -> list[Delivered]:
    return [e for e in events if isinstance(e, Delivered)]


def settle(net: Net, addr: Addr, handles: list[int], max_time: float = 3600.0) -> dict[int, Event]:
    """Run until every handle sent from `addr` is done or failed; return their outcomes."""
    want = set(handles)

    def done() -> bool:
        return want <= outcomes(net.events[addr]).keys()

    net.run(done, max_time=net.now + max_time)
    return {h: e for h, e in outcomes(net.events[addr]).items() if h in want}


@dataclass(frozen=True, slots=True)
class Blob:
    """A bulk message that is just bytes (tests and benchmarks with `BlobCodec`)."""

    TYPE: ClassVar[int] = BULK_TYPE
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A control message that is just bytes (at most CONTROL_LIMIT)."""

    TYPE: ClassVar[int] = CONTROL_TYPE
    data: bytes


class BlobCodec:
    """A codec for `Blob` and `Ping`: the body is the bytes themselves."""

    @staticmethod
    def encode(msg: Blob | Ping) -> bytes:
        return msg.data

    @staticmethod
    def decode(type_code: int, body: bytes) -> Blob | Ping:
        if type_code == BULK_TYPE:
            return Blob(body)
        if type_code == CONTROL_TYPE and len(body) <= CONTROL_LIMIT:
            return Ping(body)
        raise ValueError(f"cannot decode type {type_code}")

    max_body = staticmethod(fake_max_body)


# ------------------------------------------------------------------ one message over a pair
PAIR_A: Addr = ("10.0.0.1", 4001)
PAIR_B: Addr = ("10.0.0.2", 4002)


def pair(cfg: TransportConfig, seed: int) -> tuple[Net, Endpoint, Endpoint]:
    """A `Net` (rng `seed`) with plain Endpoints at PAIR_A (epoch 1, rng `seed`) and PAIR_B
    (epoch 2, rng `seed + 1`). Callers: the TP-2 tests and `benchmarks.transport_seeds`."""
    net = Net(random.Random(seed))
    a = net.add(PAIR_A, Endpoint(cfg, epoch=1, rng=random.Random(seed), max_body=fake_max_body))
    b = net.add(PAIR_B, Endpoint(cfg, epoch=2, rng=random.Random(seed + 1), max_body=fake_max_body))
    return net, a, b


def shuffled(p: float) -> Impairment:
    """Bernoulli loss `p`, 10 % duplicates and a 5-25 ms delay in any order (a shuffle over
    two windows or more): the reordering schedule of TP-2 (tests and benchmarks.transport_seeds)."""
    return Impairment(loss=Bernoulli(p), duplicate=0.1, delay=0.005, jitter=0.02, fifo=False)


def payload(seed: int, size: int) -> bytes:
    """`size` seeded random bytes, none of them zero (a zero-filled gap cannot pass for data)."""
    return random.Random(seed).randbytes(size).replace(b"\x00", b"\x01")


@dataclass(frozen=True, slots=True)
class Transfer:
    """One message sent PAIR_A -> PAIR_B (see `transfer`). Counts are datagrams or events."""

    outcome: Event | None  # SendDone / SendFailed; None if neither came within max_time
    delivered: int  # Delivered events at PAIR_B once the net drained
    late: int  # of those, delivered after the outcome (a failure: only the data still in flight)
    exact: bool  # every delivered body equals the sent one, byte for byte
    data_sent: int  # DATA datagrams PAIR_A sent up to the outcome (first sends and repeats)
    data_after: int  # DATA datagrams PAIR_A sent after the outcome (while the net drained)
    fragments: int
    held_bytes: int  # reassembly bytes PAIR_B still holds once the net drained
    lost: tuple[int, int]  # datagrams lost (data direction, ACK direction)
    sent: tuple[int, int]  # datagrams put on the wire (data direction, ACK direction)

    @property
    def efficiency(self) -> float:
        """Data datagrams sent / fragments (1.0 = nothing repeated)."""
        return self.data_sent / self.fragments

    def problems(self) -> list[str]:
        """What broke TP-2's invariants (exactly once, bit-exact, no delivery after failure,
        nothing held); empty when the message went through cleanly."""
        out: list[str] = []
        if self.outcome is None:
            out.append("no outcome within max_time")
        elif isinstance(self.outcome, SendFailed):
            out.append(f"send failed ({self.outcome.kind}: {self.outcome.reason})")
            if self.late:
                out.append(f"{self.late} delivered after the failure")
            if self.outcome.kind == "undelivered" and self.delivered:
                out.append("delivered though reported undelivered")
        if self.delivered > 1 or (isinstance(self.outcome, SendDone) and self.delivered != 1):
            out.append(f"delivered {self.delivered} times")
        if self.data_after:
            out.append(f"{self.data_after} data datagrams sent after the outcome")
        if not self.exact:
            out.append("a delivered body differs from the one sent")
        if self.held_bytes:
            out.append(f"receiver still holds {self.held_bytes} bytes")
        return out


def transfer(cfg: TransportConfig, seed: int, body: bytes, forward: Impairment,
             backward: Impairment, deadline_s: float = 60.0,
             max_time: float = 3600.0) -> Transfer:  # fmt: skip
    """Send `body` over `pair(cfg, seed)` with `forward` (data) and `backward` (ACK) impairments,
    run until the send is done or failed (at most `max_time` fake seconds), note the data
    datagrams sent, then drain the net and look at what PAIR_B delivered."""
    net, a, b = pair(cfg, seed)
    net.impair(PAIR_A, PAIR_B, forward)
    net.impair(PAIR_B, PAIR_A, backward)
    h = a.send(PAIR_B, BULK_TYPE, body, 0.0, deadline_s=deadline_s)
    outcome = settle(net, PAIR_A, [h], max_time).get(h)
    data_sent = a.stats()["data_sent"]
    at_outcome = len(delivered(net.events[PAIR_B]))
    net.run(max_time=net.now + max_time)
    got = delivered(net.events[PAIR_B])
    return Transfer(
        outcome=outcome,
        delivered=len(got),
        late=len(got) - at_outcome,
        exact=all(d.body == body for d in got),
        data_sent=data_sent,
        data_after=a.stats()["data_sent"] - data_sent,
        fragments=fragment_count(len(body), cfg.fragment_size),
        held_bytes=b.stats()["held_bytes"],
        lost=(forward.counts["lost"], backward.counts["lost"]),
        sent=(forward.counts["sent"], backward.counts["sent"]),
    )


def persist_epochs(ep: Endpoint) -> None:
    """Perform the epoch writes the endpoint's guard queued (the effect the core asks for)."""
    if ep.guard is not None:
        for node, epoch in ep.guard.take_writes():
            ep.guard.auth.epoch_store.put(node, epoch)
