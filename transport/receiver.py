"""Receiving half of the fragment protocol: a pure state machine (no sockets, threads or clocks).

States of one message (sender key, epoch, msg id): unknown -> partial (fragments buffered) ->
delivered (remembered in a 1024-wide `ReplayWindow` per (sender key, epoch)). A partial leaves by
delivery, by idle expiry, or by a conflicting header (dropped and counted).

Rules, checked in this order for each DATA fragment, before anything is allocated:
1. delivered already -> re-acknowledge COMPLETE, never deliver again (duplicates, replays);
   older than the replay window and not partial -> dropped (`dropped_replay`);
2. header sanity (fragment size >= MIN_FRAGMENT, block size 1..512, index < count, payload length
   exactly what the index implies) -> else `bad_datagrams`;
3. header equal to the partial's (type, total, fragment and block size) -> else the partial is
   dropped (`conflicts`, counted in `bad_datagrams` too);
4. limits: total <= max_body(type) (codec limit: control messages are small), partial messages per
   sender, bytes held in reassembly overall -> else `dropped_limit`.
Bytes held are charged per fragment as it arrives (payload + FRAGMENT_OVERHEAD, plus
PARTIAL_OVERHEAD per partial): a claimed total is a promise, not an allocation. `held_bytes` never
exceeds `max_reassembly_bytes`.

An ACK is sent when a new fragment completes its block, the fragment carries ACK_NOW, or it came
after an ACK that a later transmission caused (that ACK reported it missing: the sender may be
about to count it lost). It holds the count of leading fragments all held and a bitmap of up to
512 fragments starting at the first missing one (8-aligned), so one ACK describes the whole window
and a lost ACK costs nothing. It also says how late, at most, a fragment came after a later
transmission of the message (`frames`: the ACK's frag field; 0 on a FIFO path). The COMPLETE ACK
of a one-fragment message that did not ask for an ACK now (`AckOrder.delay_ok`) may be held back
by the endpoint, up to the ACK delay, for DATA to the same address to carry it; every other ACK
(ACK_NOW, a block done, a duplicate, a fragment reported missing) leaves at once.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from config import TransportConfig
from transport.frames import FLAG_ACK_NOW, MAX_ACK_BITMAP, Header, ack_payload, fragment_count

REPLAY_WINDOW = 1024  # message ids remembered per (sender, epoch)
MIN_FRAGMENT = 64  # bytes: bounds the fragment count (and bookkeeping) of a claimed total
MAX_BLOCK = 512  # fragments per block
ACK_SPAN = 8 * MAX_ACK_BITMAP  # fragments described by one ACK
FRAGMENT_OVERHEAD = 64  # bytes charged per buffered fragment on top of its payload
PARTIAL_OVERHEAD = 512  # bytes charged per partial message
MAX_WINDOWS = 65536  # (sender, epoch) replay windows kept, least recently used evicted

NEW, DELIVERED, STALE = 0, 1, 2


class ReplayWindow:
    """Which of the last REPLAY_WINDOW message ids of one (sender, epoch) were delivered
    (RFC 4303 style sliding bitmap). Ids below the window are STALE."""

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = -1
        self.bits = 0  # bit k: id (top - k) delivered

    def check(self, msg_id: int) -> int:
        """NEW, DELIVERED or STALE."""
        if msg_id > self.top:
            return NEW
        back = self.top - msg_id
        if back >= REPLAY_WINDOW:
            return STALE
        return DELIVERED if (self.bits >> back) & 1 else NEW

    def mark(self, msg_id: int) -> None:
        """Remember `msg_id` as delivered (ignored if already below the window)."""
        if msg_id > self.top:
            shift = msg_id - self.top
            if shift >= REPLAY_WINDOW:  # a jump past the whole window: nothing of it stays
                self.bits = 1  # (never shift by a peer-chosen amount: 2**63 bits is 1 GiB)
            else:
                self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.top = msg_id
        elif self.top - msg_id < REPLAY_WINDOW:
            self.bits |= 1 << (self.top - msg_id)


@dataclass(frozen=True, slots=True)
class AckOrder:
    """What the endpoint must acknowledge: COMPLETE, or the held fragments (`payload`: the ACK
    body, see frames.ack_payload). `index` is the fragment that asked for it."""

    complete: bool
    index: int
    cum: int
    payload: bytes
    late: float = 0.0  # reordering seen (seconds, see _Partial.reordered)
    delay_ok: bool = False  # may wait (up to the ACK delay) for DATA to carry it


class _Partial:
    __slots__ = ("ack_seq", "block_size", "blocks", "charged", "count", "cum", "frag_size",
                 "frags", "held", "last", "last_len", "late", "max_seq", "rec_s", "rec_t", "sender",
                 "total", "type_code")  # fmt: skip

    def __init__(self, sender: Hashable, h: Header, count: int, now: float) -> None:
        self.sender = sender
        self.type_code = h.type_code
        self.total = h.total
        self.frag_size = h.frag_size
        self.block_size = h.block_size
        self.count = count
        self.last_len = h.total - (count - 1) * h.frag_size  # length of the last fragment
        self.frags: dict[int, bytes] = {}
        self.held = bytearray((count + 7) >> 3)  # bit i: fragment i held
        self.blocks: dict[int, int] = {}  # block index -> fragments held
        self.charged = PARTIAL_OVERHEAD + len(self.held)
        self.cum = 0
        self.last = now
        self.max_seq = -1  # highest transmission seq received
        self.rec_s = array("q")  # rec_s[k]: the highest seq received by time rec_t[k]
        self.rec_t = array("d")
        self.late = 0.0
        self.ack_seq = -1  # the highest seq that triggered an ACK

    def reordered(self, seq: int, now: float) -> bool:
        """A new fragment with transmission `seq` below the highest received: how long after a
        later transmission it came (a FIFO path never gets here). The sender learns the
        largest such lateness from the ACKs (its reordering window, transport.reorder).
        True if an ACK already reported it missing: the sender may be about to count it lost,
        so it is acknowledged at once."""
        k = bisect_right(self.rec_s, seq)
        if k < len(self.rec_s):
            self.late = max(self.late, now - self.rec_t[k])
        return seq < self.ack_seq

    def ack_body(self, index: int) -> bytes:
        """Bitmap from the first missing fragment (8-aligned); moved up to keep `index` in it."""
        start = self.cum & ~7
        if index >= start + ACK_SPAN:
            start = (index & ~7) - ACK_SPAN + 64
        end = min(self.count, start + ACK_SPAN)
        return ack_payload(start, bytes(self.held[start >> 3 : (end + 7) >> 3]))


class Receiver:
    """Reassembles messages from DATA fragments. Driven by `transport.endpoint.Endpoint`.

    `max_body(type_code, max_message)` is the codec's per-type body limit (raises for unknown
    types). `counters` is shared with the endpoint (keys listed in `COUNTERS`)."""

    COUNTERS = ("delivered", "duplicates", "dup_fragments", "dropped_replay", "dropped_limit",
                "expired", "conflicts", "bad_datagrams")  # fmt: skip

    def __init__(
        self,
        cfg: TransportConfig,
        max_body: Callable[[int, int], int],
        counters: dict[str, int],
    ) -> None:
        self._cfg = cfg
        self._max_body = max_body
        self.counters = counters
        for k in self.COUNTERS:
            counters.setdefault(k, 0)
        self._partials: OrderedDict[tuple[Hashable, int, int], _Partial] = OrderedDict()
        self._per_sender: dict[Hashable, int] = {}
        self._windows: OrderedDict[tuple[Hashable, int], ReplayWindow] = OrderedDict()
        self.held_bytes = 0

    def progress(self) -> tuple[int, int]:
        """(bytes held, bytes announced) over the messages being reassembled (progress bars)."""
        done = total = 0
        for p in self._partials.values():
            total += p.total
            done += min(p.total, len(p.frags) * p.frag_size)
        return done, total

    @property
    def partials(self) -> int:
        """Partial messages currently buffered."""
        return len(self._partials)

    def on_data(
        self, sender: Hashable, h: tuple[int, ...], payload: bytes, now: float
    ) -> tuple[AckOrder | None, list[bytes] | None]:
        """Take one DATA fragment from `sender` (node id or address); `h` is its `Header` (or
        the plain tuple of the same fields, as `frames.FIELDS` unpacks them). Returns the ACK to
        send (or None) and, when this fragment completed the message, its fragments in order
        (else None): joining 20 MB of them is left to whoever decodes, after the ACK is on its
        way. The per-datagram hot path of every transfer: one call, fields unpacked once."""
        _, flags, _, type_code, epoch, msg_id, i, frag_size, block_size, total, _, _, _ = h
        key = (sender, epoch, msg_id)
        p = self._partials.get(key)
        c = self.counters
        if p is None:
            win = self._windows.get((sender, epoch))
            state = NEW if win is None else win.check(msg_id)
            if state == DELIVERED:
                c["duplicates"] += 1
                return AckOrder(True, i, 0, b""), None
            if state == STALE:
                c["dropped_replay"] += 1
                return None, None
            count = self._admit(sender, type_code, total, frag_size, block_size, i, len(payload))
            if count == 0:
                return None, None
            if count == 1:  # a whole message in one datagram: nothing to reassemble or hold
                self._delivered(key)
                return AckOrder(True, i, 1, b"", delay_ok=not flags & FLAG_ACK_NOW), [payload]
            p = self._open(sender, key, Header._make(h), count, now)  # once a message
        elif (total != p.total or type_code != p.type_code or frag_size != p.frag_size
              or block_size != p.block_size):  # fmt: skip
            self._drop(key, p)
            c["conflicts"] += 1
            c["bad_datagrams"] += 1
            return None, None
        elif i >= p.count or len(payload) != (frag_size if i < p.count - 1 else p.last_len):
            c["bad_datagrams"] += 1
            return None, None
        held = p.held
        block_done = False
        if held[i >> 3] >> (i & 7) & 1:
            c["dup_fragments"] += 1
        else:
            charge = len(payload) + FRAGMENT_OVERHEAD
            if self.held_bytes + charge > self._cfg.max_reassembly_bytes:
                c["dropped_limit"] += 1
                return None, None
            p.frags[i] = payload
            held[i >> 3] |= 1 << (i & 7)
            seq = h[10]
            if seq > p.max_seq:  # in order: remember when the highest seq moved
                p.max_seq = seq
                if p.rec_t and p.rec_t[-1] == now:
                    p.rec_s[-1] = seq
                else:
                    p.rec_s.append(seq)
                    p.rec_t.append(now)
            elif p.reordered(seq, now):
                flags |= FLAG_ACK_NOW
            p.charged += charge
            self.held_bytes += charge
            if i == p.cum:
                cum = i + 1
                while cum < p.count and held[cum >> 3] >> (cum & 7) & 1:
                    cum += 1
                p.cum = cum
                if cum == p.count:  # a one-fragment message's ACK may wait unless asked now
                    later = p.count == 1 and not flags & FLAG_ACK_NOW
                    return AckOrder(True, i, cum, b"", delay_ok=later), self._deliver(key, p)
            b = i // block_size
            n = p.blocks.get(b, 0) + 1
            p.blocks[b] = n
            block_done = n == block_size or n == p.count - b * block_size  # last may be short
        if p.last != now:  # partials stay ordered by `last`; one batch shares one `now`
            p.last = now
            self._partials.move_to_end(key)
        if block_done or flags & FLAG_ACK_NOW:
            p.ack_seq = max(p.ack_seq, h[10])
            return AckOrder(False, i, p.cum, p.ack_body(i), p.late), None
        return None, None

    def _admit(self, sender: Hashable, type_code: int, total: int, frag_size: int,
               block_size: int, i: int, length: int) -> int:  # fmt: skip
        """Check the first fragment to come of a new message: its fragment count, or 0 (and the
        counter of why not)."""
        c = self.counters
        cfg = self._cfg
        if frag_size < MIN_FRAGMENT or not 1 <= block_size <= MAX_BLOCK:
            c["bad_datagrams"] += 1
            return 0
        count = fragment_count(total, frag_size)
        if i >= count or length != min(frag_size, total - i * frag_size):
            c["bad_datagrams"] += 1
            return 0
        try:
            limit = min(self._max_body(type_code, cfg.max_message), cfg.max_message)
        except Exception:  # noqa: BLE001 - any codec refusal of a peer's type is counted
            c["bad_datagrams"] += 1
            return 0
        if (
            total > limit
            or self._per_sender.get(sender, 0) >= cfg.max_partial_per_sender
            or self.held_bytes + PARTIAL_OVERHEAD + (count + 7) // 8 + length + FRAGMENT_OVERHEAD
            > cfg.max_reassembly_bytes
        ):
            c["dropped_limit"] += 1
            return 0
        return count

    def _open(
        self, sender: Hashable, key: tuple[Hashable, int, int], h: Header, count: int, now: float
    ) -> _Partial:
        """The partial of an admitted message (`_admit`) of `count` fragments."""
        p = _Partial(sender, h, count, now)
        self._partials[key] = p
        self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        self.held_bytes += p.charged
        return p

    def _deliver(self, key: tuple[Hashable, int, int], p: _Partial) -> list[bytes]:
        frags = p.frags
        body = [frags[k] for k in range(p.count)]
        self._drop(key, p)
        self._delivered(key)
        return body

    def _delivered(self, key: tuple[Hashable, int, int]) -> None:
        """Message `key` is whole: its replay window remembers it, `delivered` counts it."""
        wkey = (key[0], key[1])
        win = self._windows.get(wkey)
        if win is None:
            win = self._windows[wkey] = ReplayWindow()
            if len(self._windows) > MAX_WINDOWS:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(wkey)
        win.mark(key[2])
        self.counters["delivered"] += 1

    def _drop(self, key: tuple[Hashable, int, int], p: _Partial) -> None:
        del self._partials[key]
        self.held_bytes -= p.charged
        n = self._per_sender[p.sender] - 1
        if n:
            self._per_sender[p.sender] = n
        else:
            del self._per_sender[p.sender]

    def expire(self, now: float) -> None:
        """Free partial messages idle for `partial_idle_s` or longer (`expired` counter)."""
        idle = self._cfg.partial_idle_s
        while self._partials:
            key, p = next(iter(self._partials.items()))
            if p.last + idle > now:
                return
            self._drop(key, p)
            self.counters["expired"] += 1

    def next_deadline(self) -> float | None:
        """When the oldest partial expires (seconds, same clock as `now`), or None."""
        if not self._partials:
            return None
        return next(iter(self._partials.values())).last + self._cfg.partial_idle_s

    def forget_sender(self, sender: Hashable, below_epoch: int) -> None:
        """Drop partials and windows of `sender` with an epoch lower than `below_epoch`
        (a peer restarted: its older epochs are refused from now on)."""
        for key in [k for k in self._partials if k[0] == sender and k[1] < below_epoch]:
            self._drop(key, self._partials[key])
        for wkey in [k for k in self._windows if k[0] == sender and k[1] < below_epoch]:
            del self._windows[wkey]
