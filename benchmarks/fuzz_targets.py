"""The four TI-9 fuzz targets as plain functions of one input (bytes -> outcome label).

Callers: `benchmarks.fuzz` (atheris drives them) and `tests/test_fuzz_corpus.py` (replays the
committed corpus without atheris). `run(target, data)` returns "ok" or the name of the allowed
exception the input raised; anything else propagates: an exception outside `ALLOWED[target]`, or
`InvariantBroken` when a checked property fails. A hang is an input taking over 1 s.

- frames: `transport.frames.parse` (CRC and HMAC framers) and `parse_ack`. The first byte picks the
  mode; modes 1 and 3 append a correct CRC / tag so the header checks are reached, and a frame
  that parses must re-pack to the same bytes. Allowed: FrameError.
- fragments: an `Endpoint` (plain client socket, node client socket with address validation, or
  peer socket with `PeerGuard`) fed a script of datagram batches, raw or built by `frames.pack`
  from fuzzed fields with a correct trailer, with `datagrams_to_send` / `pop_events` as time
  moves. Nothing may raise; after every batch held_bytes <= max_reassembly_bytes, and every
  delivered body fits its type's limit.
- messages: `codec.messages.decode(type_code, body)`; a decoded message must survive
  encode -> decode unchanged. Allowed: DecodeError.
- unseal: `codec.seal.unseal` on raw bytes, or on a PNG built from fuzzed fields (IHDR, colour
  type, row filters, chunk layout, a header with a correct or fuzzed checksum). Allowed: SealError.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from codec import messages as M
from codec import png
from codec import seal as S
from codec.errors import DecodeError
from config import TransportConfig
from transport import frames as F
from transport.auth import MemoryEpochStore, PeerAuth, PeerGuard
from transport.endpoint import Delivered, Endpoint
from transport.errors import FrameError


class InvariantBroken(Exception):
    """A fuzzed input broke a property the target checks (not an exception of the code under test)."""


RAW = 0xF0  # selector bytes >= RAW mean "a raw value follows" (Reader.pick, fuzz_messages)


class Reader:
    """Consumes a fuzz input front to back; reads past the end give zeros (never raises)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size).ljust(size, b"\0"), "big")

    def pick(self, options: tuple[int, ...], size: int) -> int:
        """Mostly one of `options`; a selector byte from RAW up reads a raw `size`-byte value."""
        sel = self.uint(1)
        return options[sel % len(options)] if sel < RAW else self.uint(size)

    def rare(self) -> bool:
        """True for a selector byte from RAW up (the unusual branch; zeros take the usual one)."""
        return self.uint(1) >= RAW


SECRET = b"fuzz-secret-fuzz-secret-fuzz-sec"  # 32 bytes: the peer key of the fragments target
PEER_KEY = F.derive_peer_key(SECRET)
WALL_MS = 1_800_000_000_000  # the PeerGuard's wall clock (ms) in the fragments target


# ---- frames --------------------------------------------------------------------------------------
def fuzz_frames(data: bytes) -> None:
    """Mode byte: 0 CRC raw, 1 CRC with a correct CRC, 2 HMAC raw, 3 HMAC with a correct tag,
    4 parse_ack. Raises FrameError (allowed) or InvariantBroken."""
    mode, body = (data[0] % 5, data[1:]) if data else (0, b"")
    if mode == 4:
        start, bitmap = F.parse_ack(body)
        if start % 8 or len(bitmap) > F.MAX_ACK_BITMAP:
            raise InvariantBroken(f"parse_ack accepted start {start}, {len(bitmap)} B bitmap")
        return
    framer: F.Framer = F.CrcFramer() if mode < 2 else F.HmacFramer(PEER_KEY)
    if mode in (1, 3) and len(body) >= F.HEADER_SIZE:
        body = framer.seal(body[: F.HEADER_SIZE], body[F.HEADER_SIZE :])
    header, payload = F.parse(framer, body)
    again = F.pack(framer, **header._asdict(), payload=payload)
    if again != body:
        raise InvariantBroken("a parsed frame does not re-pack to the same bytes")


# ---- fragments -----------------------------------------------------------------------------------
CFG = TransportConfig(
    fragment_size=64, block_size=4, window_blocks=2, rto_floor_ms=5, rto_ceiling_ms=200,
    send_deadline_s=2.0, max_message=4096, control_max_body=512, max_partial_per_sender=4,
    max_reassembly_bytes=8192, partial_idle_s=1.0,
)  # fmt: skip
HERE = ("127.0.0.1", 47301)
PEER = ("127.0.0.1", 47302)  # node 2, the configured peer of the fuzzed node 1
OTHER = ("127.0.0.1", 47303)  # an address that is no configured peer
ADDRS = (PEER, OTHER, ("::1", 47302))
TYPES = (1, 13, 0)  # EncryptRequest (bulk), Ack (control), unknown
MAX_OPS = 64


def _max_body(type_code: int, max_message: int) -> int:
    return M.max_body(type_code, max_message, control_max=CFG.control_max_body)


def _endpoint(mode: int) -> Endpoint:
    """0 plain client socket, 1 node client socket (address validation), 2 peer socket."""
    if mode < 2:
        return Endpoint(CFG, epoch=WALL_MS, rng=random.Random(1), max_body=_max_body,
                        validate_addresses=mode == 1)  # fmt: skip
    auth = PeerAuth(SECRET, 1, {1: HERE, 2: PEER}, MemoryEpochStore())
    guard = PeerGuard(auth, lambda: WALL_MS)
    return Endpoint(CFG, epoch=WALL_MS, rng=random.Random(1), max_body=_max_body, guard=guard)


class _Script:
    """State of one fragments input: the endpoint, the clock and the nonces it told us."""

    def __init__(self, r: Reader) -> None:
        self.r = r
        self.ep = _endpoint(r.uint(1) % 3)
        self.now = 0.0
        self.nonces: dict[tuple[str, int], int] = {}
        self.ep.send(PEER, 1, bytes(range(200)), self.now)  # outgoing state for ACKs to hit
        self.flush(0)

    def flush(self, advance_ms: int) -> None:
        """Move the clock, run the timers, learn the nonces the endpoint sends, check events."""
        self.now += advance_ms / 1000
        for addr, dgram in self.ep.datagrams_to_send(self.now):
            h, _ = F.parse(self.ep.framer, dgram)
            self.nonces[addr] = h.nonce
        for ev in self.ep.pop_events():
            if not isinstance(ev, Delivered):
                continue
            if len(ev.body) > _max_body(ev.type_code, CFG.max_message):
                raise InvariantBroken(f"delivered {len(ev.body)} B of type {ev.type_code}")
        self.check()

    def check(self) -> None:
        held = self.ep.stats()["held_bytes"]
        if held > CFG.max_reassembly_bytes:
            raise InvariantBroken(f"held_bytes {held} over {CFG.max_reassembly_bytes}")

    def built(self) -> bytes:
        """A datagram with a correct trailer; fields fuzzed around the interesting values."""
        r, addr = self.r, ADDRS[0]
        fields: dict[str, Any] = {
            "flags": r.uint(1), "sender": r.pick((2, 1, 0), 1), "type_code": r.pick(TYPES, 2),
            "epoch": r.pick((WALL_MS, WALL_MS - 1, WALL_MS + 1, WALL_MS + 30_001, 0), 8),
            "msg_id": r.pick((0, 1, 2, 1023, 1024), 4),
            "frag_index": r.pick((0, 1, 2, 3, 4), 4), "frag_size": r.pick((64, 63, 65, 0), 2),
            "block_size": r.pick((4, 1, 512, 513, 0), 2),
            "total": r.pick((64, 200, 256, 512, 4096, 4097, 0), 8), "seq": r.uint(4),
            "nonce": r.pick((0, 1), 8), "echo": r.pick((self.nonces.get(addr, 0), 0), 8),
        }  # fmt: skip
        kind = r.pick((F.DATA, F.ACK, F.PROBE, F.REJECT, F.ECHO), 1)
        payload = r.take(r.uint(1))
        return F.pack(self.ep.framer, kind, **fields, payload=payload)

    def step(self, batch: list[tuple[tuple[str, int], bytes]]) -> None:
        op = self.r.uint(1) % 4
        if op == 0:
            batch.append((ADDRS[self.r.uint(1) % len(ADDRS)], self.r.take(self.r.uint(2) % 1500)))
        elif op == 1:
            batch.append((ADDRS[1] if self.r.rare() else ADDRS[0], self.built()))
        else:
            self.ep.datagrams_received(batch, self.now)
            batch.clear()
            self.check()
            if op == 3:
                self.flush(self.r.uint(2))


def fuzz_fragments(data: bytes) -> None:
    """Byte 0: endpoint mode; then ops (raw datagram, built datagram, deliver the batch, deliver
    and advance the clock). Raises only InvariantBroken (any other exception is a finding)."""
    r = Reader(data)
    script = _Script(r)
    batch: list[tuple[tuple[str, int], bytes]] = []
    for _ in range(MAX_OPS):
        if not r.left():
            break
        script.step(batch)
    script.ep.datagrams_received(batch, script.now)
    script.check()
    script.flush(int(CFG.partial_idle_s * 1000) + 1)  # every partial expires, timers fire


# ---- messages ------------------------------------------------------------------------------------
CODES = tuple(sorted(M.MESSAGE_TYPES))


def fuzz_messages(data: bytes) -> None:
    """Byte 0 picks a registered type (or, from 0xF0 up, two raw code bytes follow); the rest is
    the body. Raises DecodeError (allowed) or InvariantBroken."""
    r = Reader(data)
    sel = r.uint(1)
    code = CODES[sel % len(CODES)] if sel < RAW else r.uint(2)
    msg = M.decode(code, data[r.pos :])
    canonical = M.encode(msg)
    if M.decode(code, canonical) != msg or M.encode(M.decode(code, canonical)) != canonical:
        raise InvariantBroken(f"type {code}: decode(encode(msg)) differs from msg {msg!r:.200}")


# ---- unseal --------------------------------------------------------------------------------------
_FIXED = struct.Struct(">8sBBBBQ32sH")  # the header's fixed part (codec.seal module docstring)


def _header(r: Reader, payload: bytes, bits: int) -> bytes:
    """HEADER_BYTES of a sealed header, each field valid or fuzzed; checksums right or wrong."""
    magic = r.take(8) if r.rare() else S.MAGIC
    digest = r.take(32).ljust(32, b"\0") if r.rare() else hashlib.sha256(payload).digest()
    grant = r.take(r.uint(2) % 300)
    fixed = _FIXED.pack(
        magic.ljust(8, b"\0"), r.pick((S.VERSION,), 1), r.pick((bits,), 1),
        r.pick((0,), 1), r.pick((0,), 1), r.pick((len(payload),), 8), digest,
        r.pick((len(grant),), 2),
    )  # fmt: skip
    body = fixed + grant.ljust(S.GRANT_CAPACITY, b"\0")[: S.GRANT_CAPACITY]
    check = r.take(16).ljust(16, b"\0") if r.rare() else hashlib.sha256(body).digest()[:16]
    return body + check


def _rows(r: Reader, samples: np.ndarray, width: int, rgba: bool) -> bytes:
    """Raw PNG rows (filter byte + RGB or RGBA); filter None, a correct Up, or fuzzed bytes."""
    rgb = samples.reshape(-1, 3 * width)
    pix = rgb.reshape(len(rgb), width, 3)
    if rgba:
        alpha = np.full((len(rgb), width, 1), 255, dtype=np.uint8)
        pix = np.concatenate([pix, alpha], axis=2)
    rows = pix.reshape(len(rgb), -1)
    mode = r.uint(1) % 3
    out = np.zeros((len(rows), rows.shape[1] + 1), dtype=np.uint8)
    out[:, 1:] = rows
    if mode == 1:
        out[:, 0] = 2
        out[1:, 1:] = rows[1:] - rows[:-1]
    elif mode == 2:
        filters = np.frombuffer(r.take(len(rows)).ljust(len(rows), b"\0"), dtype=np.uint8)
        out[:, 0] = filters % 6  # 5 is not a PNG filter
    return out.tobytes()


def _sealed_png(r: Reader) -> bytes:
    """A PNG built from fuzzed fields around a well-formed sealed image."""
    payload = r.take(r.uint(2) % 2048)
    bits = (2, 1, 3, 4)[r.uint(1) % 4]
    width = 16 + r.uint(2) % 1024
    need = S.HEADER_SAMPLES + S.payload_samples(len(payload), bits)
    height = -(-need // (3 * width)) + r.uint(1) % 4
    samples = np.zeros(height * 3 * width, dtype=np.uint8)
    S.pack(np.frombuffer(_header(r, payload, bits), dtype=np.uint8), S.HEADER_BITS,
           samples[: S.HEADER_SAMPLES])  # fmt: skip
    S.pack(np.frombuffer(payload, dtype=np.uint8), bits, samples[S.HEADER_SAMPLES : need])
    rgba = r.uint(1) % 4 == 3
    stream = zlib.compress(_rows(r, samples, width, rgba), 1)
    stream = stream[: r.pick((len(stream),), 4)]  # truncated image data, sometimes
    claimed = (r.pick((width,), 4), r.pick((height,), 4))
    ihdr = struct.pack(">IIBBBBB", *claimed, r.pick((8,), 1), 6 if rgba else 2,
                       r.pick((0,), 1), r.pick((0,), 1), r.pick((0,), 1))  # fmt: skip
    cut = r.uint(2) % (len(stream) + 1)
    chunks = [png.chunk(b"IHDR", ihdr)]
    if r.rare():
        chunks.append(png.chunk(r.take(4).ljust(4, b"a"), r.take(r.uint(2))))
    chunks += [png.chunk(b"IDAT", stream[:cut]), png.chunk(b"IDAT", stream[cut:])]
    chunks.append(png.chunk(b"IEND", b""))
    return png.SIGNATURE + b"".join(bytes(p) for c in chunks for p in c)


def fuzz_unseal(data: bytes) -> None:
    """Byte 0 even: unseal the rest as is; odd: unseal a PNG built from the rest. Raises
    SealError (allowed) or InvariantBroken."""
    raw = not data or data[0] % 2 == 0
    image = data[1:] if raw else _sealed_png(Reader(data[1:]))
    sealed = S.unseal(image)
    if hashlib.sha256(sealed.payload).digest() != S.read_header(image).checksum:
        raise InvariantBroken("unseal returned a payload that does not match its checksum")


# ---- registry ------------------------------------------------------------------------------------
TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": fuzz_frames,
    "fragments": fuzz_fragments,
    "messages": fuzz_messages,
    "unseal": fuzz_unseal,
}
ALLOWED: dict[str, tuple[type[Exception], ...]] = {
    "frames": (FrameError,),
    "fragments": (),
    "messages": (DecodeError,),
    "unseal": (S.SealError,),
}


def run(target: str, data: bytes) -> str:
    """Feed one input to `target`: "ok", or the class name of the allowed exception it raised.
    Any other exception (InvariantBroken included) propagates."""
    try:
        TARGETS[target](data)
    except ALLOWED[target] as exc:
        return type(exc).__name__
    return "ok"
