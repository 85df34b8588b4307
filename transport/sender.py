"""Sending half of the fragment protocol: a pure state machine (no sockets, threads or clocks).

A message is cut into fragments of `fragment_size` bytes, grouped in blocks of `block_size`.
To a loopback destination (127.0.0.0/8, ::1), when `loopback_fragment_size` is set, fragments
are that big instead: loopback has no 1500-byte MTU (Linux `lo`: 65536), and each datagram
costs a wake-up of the receiving process, which on a one-host cloud is most of a message's cost
(a 22 KB sealed reply is one datagram instead of 17). The receiver takes each message's fragment
size from its header, so the two sizes mix freely. Per destination, at most the bytes of
`window_blocks * block_size` fragments of `fragment_size` are in flight (sent, neither
acknowledged nor declared lost; at least one block); messages to one destination share that window round robin, one
batch of at most a block per turn, retransmissions before new fragments.

Per fragment: acked (bit-packed), transmissions, seq of the first and of the last transmission
(a per-destination counter, echoed by the ACK as "trigger"). An ACK carries the fragments the
receiver holds (cumulative count + a bitmap of up to 512 fragments); a missing fragment in its
range whose last transmission is older than the trigger is declared lost and queued for
retransmission (selective repeat): at once, or, on a path that has shown reordering, when its
reordering window has passed without an ACK of it (`transport.reorder`, counter `reordering`).
The last fragment of each block in a batch asks for an ACK, and so do the last TAIL fragments of
a message's final batch (a lost tail costs no timeout); the first transmission of a one-fragment
message does not, unless its caller waits on the outcome (`send(prompt=True)`): its COMPLETE ACK
may wait up to the peer's ACK delay (`ack_delay_ms`, the same on both ends) for DATA to carry it
(`endpoint`), so while such a message is in flight to a destination its PTO and RTO are that
much longer (QUIC's max_ack_delay; else every held ACK would draw a spurious tail probe).
When the oldest in-flight fragment of a destination is older than the RTO, each block with expired
fragments gets one probe (its highest expired fragment again, ACK_NOW) and the RTO backs off; the
probe's ACK tells what is really missing. Before that, when a destination went quiet (nothing
sent, no new data acknowledged) for a PTO (see rtt: about 2 srtt, no floor; plus the ACK delay
as said above), its newest fragment in flight goes out again with ACK_NOW, at most
MAX_TAIL_PROBES times per quiet spell (a tail loss probe): a lost last fragment or last ACK then costs a PTO, not an RTO. RTT samples come only from
ACKs whose trigger is a first transmission (Karn; the echoed seq makes that exact), less the time
the receiver says it held the ACK back. A message completes on a COMPLETE ACK (or
when every fragment is acknowledged) and fails when no ACK made progress on it for its deadline:
"undelivered" if some fragment never left, else "unacknowledged" (it may have been delivered).
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable
from itertools import pairwise

from config import TransportConfig
from transport.errors import MessageRejected
from transport.frames import FLAG_ACK_NOW, FLAG_COMPLETE, Header
from transport.outgoing import Addr, Outgoing, Path, SendDone, SendFailed
from transport.rtt import RttEstimator

__all__ = ["Addr", "Budget", "Emit", "Outgoing", "SendDone", "SendFailed", "Sender"]

MAX_MSG_ID = 0xFFFFFFFF
_U32 = 0xFFFFFFFF
MAX_IDLE_DESTS = 4096  # idle destinations (RTT state) kept, oldest forgotten first
RECENT_DONE = 4096  # finished message ids remembered (late ACKs are not "bad")
TAIL = 3  # fragments asking for an ACK at the end of a message's last batch
MAX_TAIL_PROBES = 2  # per quiet spell of a destination (reset by an ACK of new data)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z (a host name is not resolved: False)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


# emit(out, indices, seq0, flags): the endpoint builds and queues the DATA datagrams of
# fragments indices[k] with seq seq0 + k and flags[k], in that order.
Emit = Callable[[Outgoing, list[int], int, list[int]], None]
# budget(addr) -> bytes that may still be sent to addr (None: unlimited).
Budget = Callable[[Addr], int | None]


class Sender:
    """All outgoing messages of one socket. Driven by `transport.endpoint.Endpoint`."""

    COUNTERS = ("data_sent", "retransmits", "probes", "timeouts", "bad_acks", "late_acks",
                "sent_ok", "send_failed", "reordering")  # fmt: skip

    def __init__(self, cfg: TransportConfig, overhead: int, emit: Emit,
                 counters: dict[str, int], ack_delay_s: float | None = None) -> None:  # fmt: skip
        self._cfg = cfg
        self._fs = cfg.fragment_size
        self._lo_fs = cfg.loopback_fragment_size
        self._bs = cfg.block_size
        self._window = cfg.window_blocks * cfg.block_size
        self._overhead = overhead
        # the peer's ACK delay (None: the configured one; 0: never let it hold an ACK back)
        self._ack_delay = cfg.ack_delay_ms / 1000 if ack_delay_s is None else ack_delay_s
        self._emit = emit
        self.counters = counters
        for k in self.COUNTERS:
            counters.setdefault(k, 0)
        self._next_handle = 1
        self._next_id = 1
        self._outs: dict[int, Outgoing] = {}
        self._bulk = 0  # messages of more than one fragment in _outs
        self._by_id: dict[tuple[Addr, int], Outgoing] = {}
        self._dests: dict[Addr, Path] = {}
        self._busy: dict[Addr, Path] = {}
        self._deadlines: list[tuple[float, int]] = []
        self._done: OrderedDict[tuple[Addr, int], None] = OrderedDict()  # recently finished
        self._trigger: tuple[int, float | None, float] = (0, None, 0.0)  # of the ACK being applied
        self.events: list[SendDone | SendFailed] = []

    def progress(self) -> tuple[int, int]:
        """(bytes acknowledged, bytes in all) over the messages being sent (progress bars)."""
        done = total = 0
        for out in self._outs.values():
            size = len(out.body)
            total += size
            done += min(size, out.n_acked * out.fs)
        return done, total

    def rtt(self, addr: Addr) -> RttEstimator:
        """The RTT estimator of `addr` (created on first use)."""
        return self._dest(addr).rtt

    def has_work(self, addr: Addr) -> bool:
        """True while some message to `addr` is neither acknowledged nor failed."""
        return addr in self._busy

    def bulk_pending(self) -> bool:
        """True while some message of more than one fragment is being sent."""
        return self._bulk > 0

    def pending(self) -> int:
        """Messages not yet acknowledged nor failed."""
        return len(self._outs)

    def send(self, addr: Addr, type_code: int, epoch: int, body: bytes, now: float,
             deadline_s: float | None = None, prompt: bool = False) -> int:  # fmt: skip
        """Queue `body` for `addr`; returns the handle named by SendDone/SendFailed. `prompt`:
        the caller waits on the outcome, so even a one-fragment message asks for its ACK now
        (no ACK delay at the peer)."""
        if self._next_id > MAX_MSG_ID:
            raise MessageRejected("message id space of this epoch exhausted; restart")
        deadline = self._cfg.send_deadline_s if deadline_s is None else deadline_s
        handle = self._next_handle
        self._next_handle += 1
        dest = self._dest(addr)
        out = Outgoing(handle, addr, type_code, epoch, self._next_id, body, dest.fs, now,
                       deadline, prompt)  # fmt: skip
        self._next_id += 1
        self._outs[handle] = out
        self._bulk += out.count > 1
        self._by_id[(addr, out.msg_id)] = out
        self._enqueue(dest, out)
        heapq.heappush(self._deadlines, (now + deadline, handle))
        return handle

    def _dest(self, addr: Addr) -> Path:
        dest = self._dests.get(addr)
        if dest is None:
            if len(self._dests) >= MAX_IDLE_DESTS:
                for a, d in list(self._dests.items())[: MAX_IDLE_DESTS // 4]:
                    if a not in self._busy:
                        del self._dests[a]
            rtt = RttEstimator(self._cfg.rto_floor_ms / 1000, self._cfg.rto_ceiling_ms / 1000)
            fs = self._fs
            if self._lo_fs and is_loopback(addr[0]):
                fs = self._lo_fs
            # the same bytes in flight as the configured window of fragment_size fragments
            window = max(self._bs, self._window * self._fs // fs)
            dest = self._dests[addr] = Path(addr, rtt, fs, window)
        return dest

    def _enqueue(self, dest: Path, out: Outgoing) -> None:
        if not out.queued:
            out.queued = True
            dest.queue.append(out)
            self._busy[dest.addr] = dest

    # ----------------------------------------------------------------- acknowledgements
    def on_ack(self, addr: Addr, h: Header, start: int, bitmap: bytes, now: float) -> bool:
        """Apply one ACK from `addr` (bitmap of fragments start, start+1, ...; see frames).
        False (and `bad_acks`) if it matches no message of ours."""
        out = self._by_id.get((addr, h.msg_id))
        if out is None or out.epoch != h.epoch or out.type_code != h.type_code:
            self.counters["late_acks" if (addr, h.msg_id) in self._done else "bad_acks"] += 1
            return False
        i = h.frag_index
        if i >= out.count or out.tx[i] == 0:
            self.counters["bad_acks"] += 1
            return False
        dest = self._dests[addr]
        trigger = dest.seq - (((dest.seq - h.seq - 1) & _U32) + 1)
        first = out.first_seq[i] == trigger
        if first and not out.is_acked(i):  # less the time the receiver held the ACK back
            dest.rtt.sample(now - out.first_sent[i] - h.block_size / 10_000)
        if h.flags & FLAG_COMPLETE:
            self._finish(out, dest, SendDone(out.handle))
            return True
        self._trigger = (trigger, dest.inflight.get((out.handle, i)), now)
        if h.frag_size:  # the receiver saw reordering (in 0.1 ms): wait at least that long
            dest.reorder.reported(h.frag_size / 10_000, dest.rtt.srtt or 0.0)
        if self._mark(out, dest, h.total, start, bitmap, trigger, i if first else out.count):
            out.last_progress = dest.last_progress = dest.last_active = now
            dest.probes = 0
            dest.rtt.progress()
        if out.n_acked == out.count:
            self._finish(out, dest, SendDone(out.handle))
        elif out.retx:
            self._enqueue(dest, out)
        return True

    def _mark(self, out: Outgoing, dest: Path, cum: int, start: int, bitmap: bytes,
              trigger: int, scan_to: int) -> bool:  # fmt: skip
        """Mark acknowledged fragments, declare lost the missing ones sent before the trigger
        (only below `scan_to`: after a first transmission nothing later was sent earlier).
        True if anything new was acknowledged."""
        before = out.n_acked
        cum = min(cum, out.next_new)
        if cum > out.cum:
            self._ack_all(out, dest, range(out.cum, cum))
            out.cum = cum
        end = min(start + 8 * len(bitmap), out.next_new)
        if end <= start:
            return out.n_acked > before
        width = end - start
        mask = (1 << width) - 1
        held = int.from_bytes(bitmap, "little") & mask
        have = int.from_bytes(out.acked[start >> 3 : (end + 7) >> 3], "little") & mask
        new = held & ~have
        if new:
            fresh = []
            while new:
                low = new & -new
                fresh.append(start + low.bit_length() - 1)
                new ^= low
            self._ack_all(out, dest, fresh)
        if scan_to > start:
            holes = mask & ~(held | have)
            if scan_to < end:
                holes &= (1 << (scan_to - start)) - 1
            if holes:
                self._holes(out, dest, start, holes, trigger)
        return out.n_acked > before

    def _holes(self, out: Outgoing, dest: Path, start: int, holes: int, trigger: int) -> None:
        """Fragments start + k (bit k of `holes`) are missing from an ACK that transmission
        `trigger` caused: those sent before it are lost, at once or, on a path seen to
        reorder, when the reordering window has passed (transport.reorder)."""
        last_seq, inflight, handle, retx = out.last_seq, dest.inflight, out.handle, out.retx
        reo = dest.reorder
        window = reo.window(dest.rtt.min)
        _, trigger_sent, now = self._trigger
        while holes:
            low = holes & -holes
            i = start + low.bit_length() - 1
            holes ^= low
            seq = last_seq[i]
            if seq >= trigger:
                continue
            key = (handle, i)
            sent = inflight.get(key)
            if sent is None:
                continue
            if window:  # lost a window after this ACK, less what it was sent before the trigger
                base = now - (max(0.0, trigger_sent - sent) if trigger_sent is not None else 0.0)
                if base + window > now:
                    reo.suspect(key, seq, base, base + window)
                    continue
            del inflight[key]
            retx.append(i)
            reo.declared_lost(key, seq, now)

    def _ack_all(self, out: Outgoing, dest: Path, indices: Iterable[int]) -> None:
        """Mark fragments `indices` acknowledged (those not yet) and out of flight; a fragment
        declared lost may show that the path reorders (transport.reorder)."""
        acked, pop, handle = out.acked, dest.inflight.pop, out.handle
        marks = dest.reorder.marks
        n = 0
        for i in indices:
            bit = 1 << (i & 7)
            if not acked[i >> 3] & bit:
                acked[i >> 3] |= bit
                n += 1
                pop((handle, i), None)
                if marks and (handle, i) in marks:
                    self._evidence(out, dest, i)
        out.n_acked += n

    def _evidence(self, out: Outgoing, dest: Path, i: int) -> None:
        """A suspected or declared-lost fragment turned out held: reordering, maybe."""
        trigger, _, now = self._trigger
        rtt, reo = dest.rtt, dest.reorder
        if reo.acked((out.handle, i), trigger, now, rtt.srtt or 0.0, reo.window(rtt.min)):
            self.counters["reordering"] += 1

    def _finish(self, out: Outgoing, dest: Path, event: SendDone | SendFailed) -> None:
        handle, inflight = out.handle, dest.inflight
        if out.count <= len(inflight):  # a busy peer link, or a lone fragment: by index
            for i in range(out.count):
                inflight.pop((handle, i), None)
        else:
            for key in [k for k in inflight if k[0] == handle]:
                del inflight[key]
        if out.queued:
            dest.queue.remove(out)
            out.queued = False
        del self._outs[handle]
        self._bulk -= out.count > 1
        del self._by_id[(out.addr, out.msg_id)]
        self._done[(out.addr, out.msg_id)] = None
        if len(self._done) > RECENT_DONE:
            self._done.popitem(last=False)
        if not dest.inflight and not dest.queue:
            self._busy.pop(dest.addr, None)
        reo = dest.reorder
        if reo.marks:
            reo.forget(handle)
        if dest.lazy:
            dest.lazy.discard(handle)
        if not dest.inflight and reo.heap:
            reo.clear()
        self.counters["sent_ok" if isinstance(event, SendDone) else "send_failed"] += 1
        self.events.append(event)

    def _fail(self, out: Outgoing, reason: str) -> None:
        kind = "undelivered" if out.next_new < out.count else "unacknowledged"
        self._finish(out, self._dests[out.addr], SendFailed(out.handle, kind, reason))

    def abort(self, addr: Addr, epoch: int, reason: str) -> None:
        """Fail every message to `addr` sent under `epoch` (the peer restarted and refused it)."""
        for out in [o for o in self._outs.values() if o.addr == addr and o.epoch == epoch]:
            self._fail(out, reason)

    # ----------------------------------------------------------------- timers and sending
    def poll(self, now: float, budget: Budget | None = None, limit: int | None = None) -> None:
        """Run due timers (deadlines, RTO probes), then fill the windows (calls `emit`) with at
        most `limit` new transmissions (None: as many as the windows allow)."""
        if self._deadlines and self._deadlines[0][0] <= now:
            self._expire(now)
        if not self._busy:
            return
        left = limit
        for dest in list(self._busy.values()):
            heap = dest.reorder.heap
            if heap and heap[0][0] <= now:
                self._declare_due(dest, now)
            if dest.inflight:
                if next(iter(dest.inflight.values())) + self._rto(dest) <= now:
                    self._timeout(dest, now, budget)
                elif (probe := self._probe_due(dest)) is not None and probe <= now:
                    self._tail_probe(dest, now, budget)
            if dest.queue and len(dest.inflight) < dest.window and (left is None or left > 0):
                sent = self._fill(dest, now, budget, left)
                left = None if left is None else left - sent

    def _declare_due(self, dest: Path, now: float) -> None:
        """Suspected holes whose reordering window has passed are lost, if their transmission is
        still the last one and still unacknowledged."""
        reo = dest.reorder
        for key, seq in reo.pop_due(now, reo.window(dest.rtt.min)):
            out = self._outs.get(key[0])
            if out is None or key not in dest.inflight:  # finished, or acknowledged meanwhile
                continue
            del dest.inflight[key]
            out.retx.append(key[1])
            reo.declared_lost(key, seq, now)
            self._enqueue(dest, out)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, handle = heapq.heappop(self._deadlines)
            out = self._outs.get(handle)
            if out is None:
                continue
            base = out.last_progress
            if out.next_new == 0:  # nothing sent yet: waiting for the window; the path counts
                base = max(base, self._dests[out.addr].last_progress)
            due = base + out.deadline_s
            if due > now:
                heapq.heappush(self._deadlines, (due, handle))
            else:
                self._fail(out, f"no acknowledgement for {out.deadline_s:g} s")

    def _timeout(self, dest: Path, now: float, budget: Budget | None) -> None:
        """RTO fired: one probe per block with expired fragments, back off."""
        rto = self._rto(dest)
        expired: list[tuple[int, int]] = []
        for key, t in dest.inflight.items():
            if t + rto > now:  # the same test as in poll(): no float mismatch
                break
            expired.append(key)
        if not expired:
            return
        dest.rtt.timeout()
        self.counters["timeouts"] += 1
        probes: dict[tuple[int, int], int] = {}
        for key in expired:
            del dest.inflight[key]
            handle, i = key
            group = (handle, i // self._bs)
            probes[group] = max(probes.get(group, -1), i)
        for key in expired:
            if probes[(key[0], key[1] // self._bs)] != key[1]:
                dest.inflight[key] = now  # not resent: its timer restarts, the probe tells
        allow = budget(dest.addr) if budget is not None else None
        for (handle, _), i in probes.items():
            out = self._outs[handle]
            size = self._overhead + len(out.body[i * out.fs : (i + 1) * out.fs])
            if allow is not None:
                if size > allow:
                    dest.inflight[(handle, i)] = now
                    continue
                allow -= size
            self.counters["probes"] += 1
            self._transmit(out, dest, [i], [FLAG_ACK_NOW], now)

    def _rto(self, dest: Path) -> float:
        """The RTO of `dest`, plus the peer's ACK delay while an ACK may be held back."""
        return dest.rtt.rto + self._ack_delay if dest.lazy else dest.rtt.rto

    def _probe_due(self, dest: Path) -> float | None:
        """When the tail probe of `dest` is due (None: none is armed): a PTO after it went quiet,
        plus the peer's ACK delay while an ACK may be held back (QUIC's max_ack_delay)."""
        pto = dest.rtt.pto
        if pto is None or dest.probes >= MAX_TAIL_PROBES:
            return None
        return dest.last_active + pto + (self._ack_delay if dest.lazy else 0.0)

    def _tail_probe(self, dest: Path, now: float, budget: Budget | None) -> None:
        """Nothing sent or acknowledged for a PTO: send the newest fragment in flight again with
        ACK_NOW. Its ACK tells what is held, so a lost tail (or a lost last ACK) costs a PTO,
        not the RTO with its floor. No backoff, nothing declared lost; a spurious probe costs
        one datagram and one ACK."""
        dest.probes += 1
        dest.last_active = now
        key = next(reversed(dest.inflight))
        out = self._outs[key[0]]
        if budget is not None:
            allow = budget(dest.addr)
            size = self._overhead + len(out.body[key[1] * out.fs : (key[1] + 1) * out.fs])
            if allow is not None and size > allow:
                return
        del dest.inflight[key]
        self.counters["probes"] += 1
        self._transmit(out, dest, [key[1]], [FLAG_ACK_NOW], now)

    def _fill(self, dest: Path, now: float, budget: Budget | None, limit: int | None) -> int:
        """Send batches round robin while the window has room and `limit` allows; returns the
        number of fragments sent."""
        allow = budget(dest.addr) if budget is not None else None
        queue = dest.queue
        total = 0
        while queue and len(dest.inflight) < dest.window and (limit is None or total < limit):
            out = queue[0]
            room = min(self._bs, dest.window - len(dest.inflight))
            if limit is not None:
                room = min(room, limit - total)
            batch, first_new = self._batch(out, room)
            sent, allow = self._send_batch(out, dest, batch, now, allow)
            total += sent
            if sent < len(batch):  # budget exhausted: put the rest back, untouched
                out.retx.extendleft(reversed(batch[sent:first_new]))
                if first_new < len(batch):
                    out.next_new = batch[max(sent, first_new)]
                queue.rotate(-1)
                break
            if out.has_work():
                queue.rotate(-1)
            else:
                queue.popleft()
                out.queued = False
        if not dest.inflight and not dest.queue:
            self._busy.pop(dest.addr, None)
        return total

    def _batch(self, out: Outgoing, room: int) -> tuple[list[int], int]:
        """Up to `room` fragments: retransmissions first, then new ones (starting at the
        returned position in the list)."""
        batch: list[int] = []
        acked = out.acked
        while out.retx and len(batch) < room:
            i = out.retx.popleft()
            if not acked[i >> 3] >> (i & 7) & 1:
                batch.append(i)
        first_new = len(batch)
        n_new = min(room - first_new, out.count - out.next_new)
        if n_new > 0:
            batch.extend(range(out.next_new, out.next_new + n_new))
            out.next_new += n_new
        return batch, first_new

    def _send_batch(self, out: Outgoing, dest: Path, batch: list[int], now: float,
                    allow: int | None) -> tuple[int, int | None]:  # fmt: skip
        """Transmit `batch` (ACK_NOW on the last fragment of each block in it) within `allow`
        bytes; returns (fragments sent, bytes still allowed)."""
        bs = self._bs
        n = len(batch)
        last_batch = out.next_new == out.count
        tail = n - TAIL if last_batch else n - 1  # these ask for an ACK
        # The last few retransmissions of a multi-block message go out twice: losing a lone
        # straggler (or its ACK) would otherwise cost a whole RTO at the end of a transfer.
        copies = 2 if last_batch and 0 < n <= TAIL and out.count > bs and out.tx[batch[-1]] else 1
        if allow is None:  # the common case: no per-fragment budget checks
            ack = FLAG_ACK_NOW
            if n == 1:  # (a lone fragment is the last of its block and of the batch)
                flags = [ack]
            else:
                flags = [ack if i // bs != j // bs else 0 for i, j in pairwise(batch)]
                flags.append(ack)
                for k in range(max(tail, 0), n):
                    flags[k] = ack
            if out.count == 1 and not out.tx[0] and self._ack_delay and not out.prompt:  # its
                flags[0] = 0  # ACK may wait for DATA to carry it (receiver: AckOrder.delay_ok)
                dest.lazy.add(out.handle)
        else:
            flags, allow = self._budgeted(out, batch, tail, copies, allow)
        sent = len(flags)
        batch = batch[:sent]
        if copies > 1:
            batch = [i for i in batch for _ in range(copies)]
            flags = [f for f in flags for _ in range(copies)]
        if batch:
            self._transmit(out, dest, batch, flags, now)
        return sent, allow

    def _budgeted(self, out: Outgoing, batch: list[int], tail: int, copies: int,
                  allow: int) -> tuple[list[int], int]:  # fmt: skip
        """Flags of the leading fragments of `batch` that fit in `allow` bytes (the last of them
        asks for an ACK when the budget stops the batch), and the bytes still allowed."""
        bs, body, fs, overhead = self._bs, out.body, out.fs, self._overhead
        flags: list[int] = []
        for k, i in enumerate(batch):
            ask = k >= tail or batch[k + 1] // bs != i // bs
            size = copies * (overhead + len(body[i * fs : (i + 1) * fs]))
            if size > allow:
                break
            allow -= size
            if not ask:  # the budget stops the batch after this one: it asks for the ACK
                j = batch[k + 1]  # (whose echo validates the address and lifts the budget)
                ask = copies * (overhead + len(body[j * fs : (j + 1) * fs])) > allow
            flags.append(FLAG_ACK_NOW if ask else 0)
        return flags, allow

    def _transmit(self, out: Outgoing, dest: Path, batch: list[int], flags: list[int],
                  now: float) -> None:  # fmt: skip
        """Record and emit one transmission of each fragment of `batch` (consecutive seqs)."""
        seq0 = seq = dest.seq
        tx, first_seq, first_sent, last_seq = out.tx, out.first_seq, out.first_sent, out.last_seq
        inflight, handle = dest.inflight, out.handle
        marks = dest.reorder.marks
        retransmits = 0
        for i in batch:
            t = tx[i]
            if t:
                retransmits += 1
                if dest.lazy:  # sent again with ACK_NOW: acknowledged at once
                    dest.lazy.discard(handle)
                if t < 255:
                    tx[i] = t + 1
                if marks and (handle, i) in marks:
                    dest.reorder.sent_again((handle, i), seq)
            else:
                tx[i] = 1
                first_seq[i] = seq
                first_sent[i] = now
            last_seq[i] = seq
            inflight[(handle, i)] = now
            seq += 1
        dest.seq = seq
        dest.last_active = now
        self.counters["retransmits"] += retransmits
        self.counters["data_sent"] += len(batch)
        self._emit(out, batch, seq0, flags)

    def next_deadline(self) -> float | None:
        """Earliest time `poll` has timer work (seconds), or None."""
        when = self._deadlines[0][0] if self._deadlines else None
        for dest in self._busy.values():  # the minimum kept as it goes: no list per call
            if dest.inflight:
                t = next(iter(dest.inflight.values())) + self._rto(dest)
                if when is None or t < when:
                    when = t
                probe = self._probe_due(dest)
                if probe is not None and probe < when:
                    when = probe
                heap = dest.reorder.heap  # (its next_due, inline)
                if heap and heap[0][0] < when:
                    when = heap[0][0]
        return when
