"""One socket's protocol core (sans-IO, after aioquic's connection): datagrams, messages and `now`
in; datagrams to send, events and the next deadline out. No sockets, threads or clocks.

    ep = Endpoint(cfg, epoch=..., rng=random.Random(1), max_body=codec.max_body)
    handle = ep.send(addr, type_code, body, now)       # MessageRejected if refused locally
    ep.datagram_received(addr, data, now)              # never raises for peer input
    ep.datagrams_received([(addr, data), ...], now)    # the same for a batch
    for addr, data in ep.datagrams_to_send(now): ...   # also runs due timers
    ep.next_deadline()                                 # when to call datagrams_to_send again
    ep.pop_events()                                    # Delivered / SendDone / SendFailed

Modes: plain (CRC32 trailer, senders keyed by address), peer (`PeerGuard`: HMAC tag, node id and
configured address, epoch rules; senders keyed by node id) and, on node client sockets,
`validate_addresses`: until an address echoed our nonce for it (carried in every frame we send,
echoed in its ACKs and ECHO frames) we send it at most 3x the bytes received from it; a PROBE
(header only) asks it to echo, and is answered only if it proves it got a datagram of ours.
DATA leaves CONTROL_RESERVE bytes of that budget to PROBEs, and the last fragment that fits asks
for an ACK, so a reply cut short by the budget still gets the client to speak. A client socket
echoes (and tells its nonce) in an ACK only for DATA that echoes its own nonce: data sent to a
spoofed address cannot get that address validated.

ACKs leave at the end of the turn that asked for them (`datagrams_received` holds them until
`gathered_to_send`), and ride on a DATA datagram that turn sends to the same address when its
fragment leaves room (`frames`: the ACKS flag and ACK records). The COMPLETE ACK of a one-fragment
message that did not ask for an ACK now (`receiver.AckOrder.delay_ok`) waits up to
`ack_delay_ms` (on an endpoint made with `ack_delay`, as transport.udp makes peer sockets only)
for such DATA (a request's ACK rides on its answer) before it leaves alone; it
tells how long it was held (the ACK's block field), and senders allow for the delay (`rtt`).
A plain socket's ACK that must not echo (below) never rides, and neither does an ACK to an
address not yet validated (its DATA is sent datagram by datagram within the budget).

Counters (`stats()`): datagrams_in/out, bytes_in/out, bad_datagrams (does not parse, bad CRC or
tag, bad field, unknown type or sender, conflicting header), unknown_sender, dropped_epoch,
dropped_replay, dropped_limit, expired, duplicates, dup_fragments, conflicts, delivered,
bad_acks, late_acks, data_sent, retransmits, probes, timeouts, sent_ok, send_failed, acks_sent,
acks_merged (ACKs of one batch, or held back, replaced by a later ACK of the same message),
acks_carried (ACKs sent as records on DATA, counted in acks_sent too), amp_blocked,
rejects_sent, epoch_rotations; gauges held_bytes, partials, pending.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from config import TransportConfig
from transport import auth as A
from transport import frames as F
from transport.errors import FrameError, MessageRejected
from transport.receiver import AckOrder, Receiver
from transport.sender import Addr, Outgoing, SendDone, Sender, SendFailed

AMPLIFICATION = 3
CONTROL_RESERVE = 256  # bytes of an unvalidated address's budget that DATA leaves to PROBE/ECHO
MAX_ADDR_STATE = 65536  # addresses with amplification / nonce state kept (LRU)


@dataclass(frozen=True, slots=True)
class Delivered:
    """A whole message arrived from `addr` (delivered once per message). `parts`: its fragments
    in order; `body` joins them (the transport does that on its delivery thread, so the reader
    sends the final ACK without first copying the whole message)."""

    addr: Addr
    type_code: int
    parts: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


Event = Delivered | SendDone | SendFailed


class _Lru(OrderedDict[Addr, list[int]]):
    def touch(self, addr: Addr) -> list[int]:
        v = self.get(addr)
        if v is None:
            v = self[addr] = [0, 0]
            if len(self) > MAX_ADDR_STATE:
                self.popitem(last=False)
        else:
            self.move_to_end(addr)
        return v


class Endpoint:
    """Sender + Receiver of one socket with framing, peer authentication and amplification
    limits. Callers: `transport.udp` (real socket) and the pure tests."""

    def __init__(
        self,
        cfg: TransportConfig,
        *,
        epoch: int,
        rng: random.Random,
        max_body: Callable[[int, int], int],
        guard: A.PeerGuard | None = None,
        validate_addresses: bool = False,
        ack_delay: bool = True,
    ) -> None:
        """`ack_delay=False`: this socket neither holds ACKs back nor lets its one-fragment
        messages' ACKs be held (transport.udp: client sockets, whose callers wait on the ACK of
        a one-fragment request)."""
        self.cfg = cfg
        self.epoch = epoch
        self.guard = guard
        self.framer: F.Framer = guard.framer if guard is not None else F.CrcFramer()
        self.self_id = guard.self_id if guard is not None else 0
        self.validate = validate_addresses
        self.plain = guard is None and not validate_addresses  # a client socket
        self.overhead = F.HEADER_SIZE + self.framer.trailer
        self._crc = isinstance(self.framer, F.CrcFramer)  # (_emit: CRC trailers inline)
        self.counters: dict[str, int] = {}
        for k in ("datagrams_in", "datagrams_out", "bytes_in", "bytes_out", "bad_datagrams",
                  "unknown_sender", "dropped_epoch", "acks_sent", "acks_merged", "acks_carried",
                  "amp_blocked", "rejects_sent", "epoch_rotations"):  # fmt: skip
            self.counters[k] = 0
        delay_s = cfg.ack_delay_ms / 1000 if ack_delay else 0.0
        self.sender = Sender(cfg, self.overhead, self._emit, self.counters, delay_s)
        self.receiver = Receiver(cfg, max_body, self.counters)
        self._max_body = max_body
        self._nonce_key = rng.randbytes(16)
        self._nonces: dict[Addr, int] = {}
        self._echo: dict[Addr, int] = {}  # last nonce received from an address
        self._amp = _Lru()  # addr -> [bytes received, bytes sent] (validate mode)
        self._validated: OrderedDict[Addr, None] = OrderedDict()
        self._waiting: dict[Addr, float] = {}  # unvalidated addr with data -> next probe time
        self._dest_epoch: dict[Addr, int] = {}
        self._queue: list[tuple[Addr, bytes | F.DatagramRun]] = []
        self._events: list[Event] = []
        # (addr, epoch, msg id) -> the last ACK the batch being read asked for (_ack)
        self._acks: dict[tuple[Addr, int, int], tuple[Addr, F.Header, AckOrder]] = {}
        # addr -> (epoch, msg id) -> (DATA header, ACK, when asked, when due): ACKs held for
        # DATA to carry them (_hold), the delayable ones until ack_delay_ms has passed
        self._held: dict[Addr, dict[tuple[int, int], tuple[F.Header, AckOrder, float, float]]] = {}
        self._ack_delay = delay_s
        self._now = 0.0  # of the gathered_to_send running (the delay a carried ACK reports)

    # ----------------------------------------------------------------- API
    def send(self, addr: Addr, type_code: int, body: bytes, now: float,
             deadline_s: float | None = None, prompt: bool = False) -> int:  # fmt: skip
        """Queue a message; returns its handle. Raises MessageRejected when it cannot be sent
        (unknown type, body over the type's limit or max_message). `prompt`: the caller waits
        on the outcome (no ACK delay, see Sender.send)."""
        try:
            limit = min(self._max_body(type_code, self.cfg.max_message), self.cfg.max_message)
        except Exception as exc:  # reported to the caller as a rejection
            raise MessageRejected(f"type {type_code} refused by the codec: {exc}") from exc
        if len(body) > limit:
            raise MessageRejected(
                f"body of {len(body)} bytes over the limit {limit} of type {type_code}"
            )
        if not 0 <= type_code <= 0xFFFF:
            raise MessageRejected(f"type code {type_code} out of range")
        epoch = self._dest_epoch.get(addr, self.epoch)
        handle = self.sender.send(addr, type_code, epoch, body, now, deadline_s, prompt)
        if self.validate and addr not in self._validated:
            self._waiting.setdefault(addr, now)
        return handle

    def datagram_received(self, addr: Addr, data: bytes, now: float) -> None:
        """Feed one datagram from `addr`. Bad input is counted and dropped, never raised."""
        self.datagrams_received([(addr, data)], now)

    def datagrams_received(self, batch: Sequence[tuple[Addr, bytes]], now: float) -> None:
        """Feed datagrams in arrival order (the socket layer's batches; lookups done once).
        The ACKs they call for are held to the next `gathered_to_send` (where DATA may carry
        them; see the module docstring), one per message: a later ACK of a message holds
        everything an earlier one of the batch said (the fragments held only grow, and its
        trigger is the newer transmission), so the earlier ones are dropped (counter
        `acks_merged`; a 4-fragment request asked for 3 ACKs in one reader turn)."""
        c = self.counters
        c["datagrams_in"] += len(batch)
        c["bytes_in"] += len(batch[0][1]) if len(batch) == 1 else sum([len(d) for _, d in batch])
        try:
            if self.plain:
                self._plain_received(batch, now)
            else:
                self._framed_received(batch, now)
        finally:
            if self._acks:
                acks, self._acks = self._acks, {}
                for addr, h, ack in acks.values():
                    self._hold(addr, h, ack, now)

    def _framed_received(self, batch: Sequence[tuple[Addr, bytes]], now: float) -> None:
        c = self.counters
        framer, parse, echo = self.framer, F.parse, self._echo
        for addr, data in batch:
            if self.validate and addr not in self._validated:
                self._amp.touch(addr)[0] += len(data)
            try:
                h, payload = parse(framer, data)
                if h.nonce and echo.get(addr) != h.nonce:
                    self._remember_echo(addr, h.nonce)
                self._dispatch(addr, h, payload, now)
            except FrameError:
                c["bad_datagrams"] += 1

    def _plain_received(self, batch: Sequence[tuple[Addr, bytes]], now: float) -> None:
        """A client socket's datagrams: `frames.parse` and `_on_data` inlined (the per-datagram
        hot loop of a large transfer: one call less per layer is ~10 % of the receive cost).
        The same checks in the same order: length, CRC, magic and version, kind."""
        c, echo, events = self.counters, self._echo, self._events
        crc32, residue, prefix, minimum = zlib.crc32, F.CRC_RESIDUE, F.PREFIX, F.HEADER_SIZE + 4
        unpack, make, kinds, end = F.FIELDS.unpack_from, F.Header._make, F.KINDS, -4
        on_data, data_kind, head = self.receiver.on_data, F.DATA, F.HEADER_SIZE
        acks_flag = F.FLAG_ACKS  # DATA carrying ACKs takes _dispatch
        for addr, data in batch:
            if len(data) < minimum or crc32(data) != residue or not data.startswith(prefix):
                c["bad_datagrams"] += 1
                continue
            t = unpack(data, 3)  # the fields of a Header, without building one
            nonce = t[11]
            if nonce and echo.get(addr) != nonce:
                self._remember_echo(addr, nonce)
            if t[0] == data_kind and not t[1] & acks_flag:
                ack, body = on_data(addr, t, data[head:end], now)
                if ack is not None:
                    self._ack(addr, make(t), ack)
                if body is not None:
                    events.append(Delivered(addr, t[3], body))
            elif t[0] in kinds:
                try:
                    self._dispatch(addr, make(t), data[head:end], now)
                except FrameError:
                    c["bad_datagrams"] += 1
            else:
                c["bad_datagrams"] += 1

    def _dispatch(self, addr: Addr, h: F.Header, payload: bytes, now: float) -> None:
        """Every frame but plain-socket DATA: sender checks, validation, kinds."""
        guard = self.guard
        if guard is not None and not guard.sender_ok(addr, h.sender):
            self.counters["unknown_sender"] += 1
            raise FrameError("sender not a configured peer at this address")
        if h.echo and self.validate and h.echo == self._nonce(addr):
            self._set_validated(addr)
        kind = h.kind
        if kind == F.DATA:
            if h.flags & F.FLAG_ACKS:  # all records checked before any is applied
                payload, acks = F.split_acks(h, payload)
                for ack_header, start, bitmap in acks:
                    self.sender.on_ack(addr, ack_header, start, bitmap, now)
            key: Hashable = addr
            if guard is not None:
                verdict = guard.check_epoch(h.sender, h.epoch)
                if verdict != A.ACCEPT and not self._epoch_ok(addr, h, verdict):
                    return
                key = h.sender
            self._on_data(addr, key, h, payload, now)
        elif kind == F.ACK:
            start, bitmap = F.parse_ack(payload)
            self.sender.on_ack(addr, h, start, bitmap, now)
        elif kind == F.PROBE:
            if h.echo == self._nonce(addr):
                self._control(addr, F.ECHO, echo=h.nonce)
        elif kind == F.REJECT:
            self._on_reject(addr, h)

    def datagrams_to_send(self, now: float, limit: int | None = None) -> list[tuple[Addr, bytes]]:
        """Run due timers and return the datagrams to send now, in order: every control frame
        and at most `limit` DATA transmissions (None: all the windows allow). A caller that
        got `limit` of them calls again for the rest (so sending can start sooner)."""
        out: list[tuple[Addr, bytes]] = []
        for addr, d in self.gathered_to_send(now, limit):
            if isinstance(d, bytes):
                out.append((addr, d))
            else:
                out.extend((addr, x) for x in d.datagrams())
        return out

    def gathered_to_send(
        self, now: float, limit: int | None = None
    ) -> list[tuple[Addr, bytes | F.DatagramRun]]:
        """`datagrams_to_send` with DATA left as `frames.DatagramRun`s (the socket layer sends
        their parts without joining them)."""
        rd = self.receiver.next_deadline()
        if rd is not None and rd <= now:
            self.receiver.expire(now)
        self._now = now
        self.sender.poll(now, self._data_budget if self.validate else None, limit)
        if self._waiting:
            self._probe(now)
        if self._held:
            self._release(now)
        out, self._queue = self._queue, []
        if out:
            c = self.counters
            for _, d in out:
                if isinstance(d, bytes):
                    c["datagrams_out"] += 1
                    c["bytes_out"] += len(d)
                else:
                    c["datagrams_out"] += d.count
                    c["bytes_out"] += d.nbytes
        return out

    def next_deadline(self) -> float | None:
        """When `datagrams_to_send` has timer work next (same clock as `now`), or None."""
        when = self.sender.next_deadline()
        t = self.receiver.next_deadline()
        if t is not None and (when is None or t < when):
            when = t
        for t in self._waiting.values():  # unvalidated addresses with data: next PROBE
            if when is None or t < when:
                when = t
        for held in self._held.values():  # ACKs held back: when each is due
            for e in held.values():
                if when is None or e[3] < when:
                    when = e[3]
        return when

    def bulk_in_progress(self) -> bool:
        """True while a message of several fragments is being received or sent (its next
        datagram or ACK is due soon: the socket layer may busy-poll)."""
        return bool(self.receiver.partials) or self.sender.bulk_pending()

    def pop_events(self) -> list[Event]:
        """Events since the last call: Delivered, SendDone, SendFailed."""
        events = self._events
        if self.sender.events:
            events.extend(self.sender.events)
            self.sender.events.clear()
        self._events = []
        return events

    def progress(self) -> tuple[int, int]:
        """(bytes done, bytes in all) of the messages in flight both ways (progress bars)."""
        out_done, out_total = self.sender.progress()
        in_done, in_total = self.receiver.progress()
        return out_done + in_done, out_total + in_total

    def stats(self) -> dict[str, int]:
        """Counters and gauges (see module docstring)."""
        s = dict(self.counters)
        s["held_bytes"] = self.receiver.held_bytes
        s["partials"] = self.receiver.partials
        s["pending"] = self.sender.pending()
        return s

    # ----------------------------------------------------------------- receiving
    def _on_data(self, addr: Addr, key: Hashable, h: F.Header, payload: bytes, now: float) -> None:
        """A DATA fragment from `key` (node id or address) at `addr`: acknowledge, deliver."""
        ack, body = self.receiver.on_data(key, h, payload, now)
        if ack is not None:
            self._ack(addr, h, ack)
        if body is not None:
            self._events.append(Delivered(addr, h.type_code, body))

    def _ack(self, addr: Addr, h: F.Header, ack: AckOrder) -> None:
        """Keep the ACK the receiver asked for (DATA `h` from `addr` triggered it) until the
        end of the batch, in place of an earlier one of the same message (see
        datagrams_received)."""
        key = (addr, h.epoch, h.msg_id)
        if key in self._acks:
            self.counters["acks_merged"] += 1
        self._acks[key] = (addr, h, ack)

    def _hold(self, addr: Addr, h: F.Header, ack: AckOrder, now: float) -> None:
        """Keep the ACK of DATA `h` for DATA to `addr` to carry (see the module docstring): due
        now, or after the ACK delay if it may wait. It replaces a held ACK of the same message
        (which said less) and is due no later than it."""
        key = (h.epoch, h.msg_id)
        held = self._held.get(addr)
        old = held.pop(key, None) if held is not None else None
        if old is not None:
            self.counters["acks_merged"] += 1
        if self.plain and h.echo != self._nonce(addr):  # must not echo: never carried on DATA
            self._send_ack(addr, h, ack, 0.0)
            return
        due = now + self._ack_delay if ack.delay_ok else now
        if old is not None:
            due = min(due, old[3])
        if held is None:
            held = self._held[addr] = {}
        held[key] = (h, ack, now, due)

    def _release(self, now: float) -> None:
        """Send the held ACKs that are due, alone, ahead of what this turn queued."""
        due = None
        for addr, held in self._held.items():
            for key, e in held.items():
                if e[3] <= now:
                    if due is None:
                        due = []
                    due.append((addr, held, key, e))
        if due is None:  # (held ACKs waiting for their delay: nothing to move)
            return
        queued, self._queue = self._queue, []
        for addr, held, key, (h, ack, at, _) in due:
            del held[key]
            if not held:
                del self._held[addr]
            self._send_ack(addr, h, ack, now - at)
        self._queue += queued

    def _riders(self, addr: Addr, room: int) -> bytes:
        """The ACK records of held ACKs to `addr` that fit in `room` bytes (taken from _held),
        for the DATA datagram being built to carry."""
        held = self._held[addr]
        records = []
        for key, (h, ack, at, _) in list(held.items()):
            rec = F.ack_record(F.FLAG_COMPLETE if ack.complete else 0, h.type_code, h.epoch,
                               h.msg_id, ack.index, _late(ack), _held_for(self._now - at),
                               ack.cum, h.seq, ack.payload)  # fmt: skip
            if len(rec) <= room:
                room -= len(rec)
                records.append(rec)
                del held[key]
        if not held:
            del self._held[addr]
        if records:
            self.counters["acks_sent"] += len(records)
            self.counters["acks_carried"] += len(records)
        return b"".join(records)

    def _send_ack(self, addr: Addr, h: F.Header, ack: AckOrder, held_s: float) -> None:
        """Queue the ACK of DATA `h` from `addr`, held back `held_s` seconds."""
        self.counters["acks_sent"] += 1
        nonce = None
        echo = h.nonce
        if self.plain and h.echo != self._nonce(addr):
            # DATA that does not echo our nonce was not sent in answer to us (the request "from"
            # this address may have been spoofed): the ACK neither echoes nor tells our nonce,
            # so it cannot get this address validated by the sender
            nonce = echo = 0
        if nonce is None:
            nonce = self._nonce(addr)
        data = F.seal(self.framer, F.ACK, F.FLAG_COMPLETE if ack.complete else 0, self.self_id,
                      h.type_code, h.epoch, h.msg_id, ack.index, _late(ack), _held_for(held_s),
                      ack.cum, h.seq, nonce, echo, ack.payload)  # fmt: skip
        self._queue_control(addr, data)

    def _epoch_ok(self, addr: Addr, h: F.Header, verdict: int) -> bool:
        if verdict == A.NEW_EPOCH:
            self.receiver.forget_sender(h.sender, h.epoch)
            return True
        if verdict == A.RESTARTED:
            self.counters["rejects_sent"] += 1
            self._control(addr, F.REJECT, epoch=h.epoch, msg_id=h.msg_id)
        c = "dropped_epoch" if verdict == A.FUTURE else "dropped_replay"
        self.counters[c] += 1
        return False

    def _on_reject(self, addr: Addr, h: F.Header) -> None:
        if self.guard is None:
            raise FrameError("REJECT on an unauthenticated socket")
        current = self._dest_epoch.get(addr, self.epoch)
        if h.epoch != current:
            return  # an old REJECT: we already moved on
        self._dest_epoch[addr] = self.guard.next_epoch(current)
        self.counters["epoch_rotations"] += 1
        self.sender.abort(addr, current, "peer restarted and refused our epoch")

    # ----------------------------------------------------------------- sending
    def _emit(self, out: Outgoing, indices: list[int], seq0: int, flags: list[int]) -> None:
        """Queue the DATA datagrams of fragments `indices` (seq seq0 + k, flags[k]): the
        sender's hot path, one call per batch with the per-message fields looked up once."""
        cfg = self.cfg
        fs, bs = out.fs, cfg.block_size
        addr = out.addr
        nonce, echo = self._nonce(addr), self._echo.get(addr, 0)
        body = out.body
        fields = (self.self_id, out.type_code, out.epoch, out.msg_id)
        total = len(body)
        pack, magic, version, data_kind = F.HEADER.pack, F.MAGIC, F.VERSION, F.DATA
        seq = seq0
        if self.validate and addr not in self._validated:  # amplification accounting
            for i, fl in zip(indices, flags):
                header = pack(magic, version, data_kind, fl, *fields, i, fs, bs, total,
                              seq & 0xFFFFFFFF, nonce, echo)  # fmt: skip
                self._push(addr, self.framer.seal(header, body[i * fs : (i + 1) * fs]))
                seq += 1
            return
        # the rest leaves as DatagramRuns (parts, no join), cut after a short last fragment
        sender, type_code, epoch, msg_id = fields
        crc = self._crc
        crc32, crc_pack, tag = zlib.crc32, F.CRC.pack, self.framer.tag
        full = self.overhead + fs
        last_len = total - (out.count - 1) * fs
        short = out.count - 1 if last_len != fs else -1
        ride, last = addr in self._held, indices[-1]  # held ACKs ride on the last datagram
        parts: list[bytes | memoryview] = []
        for i, fl in zip(indices, flags):
            payload: bytes | memoryview = body[i * fs : (i + 1) * fs]
            cut = i == short
            if ride and i == last:  # (which then ends its run: GSO wants only the last shorter)
                ride = False
                riders = self._riders(addr, fs - len(payload))
                if riders:
                    fl |= F.FLAG_ACKS
                    payload = b"".join((payload, riders))
                    cut = True
            header = pack(magic, version, data_kind, fl, sender, type_code, epoch, msg_id, i, fs,
                          bs, total, seq & 0xFFFFFFFF, nonce, echo)  # fmt: skip
            trailer = crc_pack(crc32(payload, crc32(header))) if crc else tag(header, payload)
            parts += (header, payload, trailer)
            seq += 1
            if cut:
                self._run(addr, parts, full, self.overhead + len(payload))
                parts = []
        if parts:
            self._run(addr, parts, full, full)

    def _run(self, addr: Addr, parts: list[bytes | memoryview], full: int, last: int) -> None:
        """Queue `parts` (3 per datagram, each `full` bytes but the last, `last` bytes)."""
        n = len(parts) // 3
        seg = full if n > 1 else last
        self._queue.append((addr, F.DatagramRun(parts, seg, (n - 1) * full + last)))

    def _control(self, addr: Addr, kind: int, nonce: int | None = None, **fields: object) -> None:
        """Queue a header-only (or bitmap) frame, within the amplification budget. `nonce`:
        ours for `addr` unless given."""
        if nonce is None:
            nonce = self._nonce(addr)
        data = F.pack(self.framer, kind, sender=self.self_id, nonce=nonce, **fields)  # type: ignore[arg-type]
        self._queue_control(addr, data)

    def _queue_control(self, addr: Addr, data: bytes) -> None:
        """Queue a sealed control frame, within the amplification budget (else amp_blocked)."""
        budget = self._budget(addr) if self.validate else None
        if budget is not None and len(data) > budget:
            self.counters["amp_blocked"] += 1
            return
        self._push(addr, data)

    def _push(self, addr: Addr, data: bytes) -> None:
        if self.validate and addr not in self._validated:
            self._amp.touch(addr)[1] += len(data)
        self._queue.append((addr, data))

    def _probe(self, now: float) -> None:
        for addr, due in list(self._waiting.items()):
            if addr in self._validated or not self.sender.has_work(addr):
                del self._waiting[addr]
            elif due <= now:
                self._waiting[addr] = now + self.sender.rtt(addr).rto
                self._control(addr, F.PROBE, echo=self._echo.get(addr, 0))

    # ----------------------------------------------------------------- addresses
    def _data_budget(self, addr: Addr) -> int | None:
        """DATA may not use the last CONTROL_RESERVE bytes of the budget: with a reply cut short
        by the budget, a PROBE must still be able to ask the client to echo (else neither side
        would speak again until the send deadline)."""
        budget = self._budget(addr)
        return None if budget is None else max(0, budget - CONTROL_RESERVE)

    def _budget(self, addr: Addr) -> int | None:
        if addr in self._validated:
            return None
        received, sent = self._amp.touch(addr)
        return max(0, AMPLIFICATION * received - sent)

    def _set_validated(self, addr: Addr) -> None:
        if addr not in self._validated:
            self._validated[addr] = None
            if len(self._validated) > MAX_ADDR_STATE:
                self._validated.popitem(last=False)
            self._amp.pop(addr, None)

    def _nonce(self, addr: Addr) -> int:
        n = self._nonces.get(addr)
        if n is None:
            if len(self._nonces) >= 4096:
                self._nonces.clear()
            n = self._nonces[addr] = F.address_nonce(self._nonce_key, addr)
        return n

    def _remember_echo(self, addr: Addr, nonce: int) -> None:
        if len(self._echo) >= MAX_ADDR_STATE:
            self._echo.clear()
        self._echo[addr] = nonce


def _late(ack: AckOrder) -> int:
    """The ACK's frag field: reordering seen, in 0.1 ms units (rounded up)."""
    return min(0xFFFF, math.ceil(ack.late * 10_000))


def _held_for(seconds: float) -> int:
    """The ACK's block field: how long it was held back, in 0.1 ms units (rounded down: the
    sender takes it off an RTT sample, which must not shrink below the real round trip)."""
    return min(0xFFFF, max(0, int(seconds * 10_000)))
