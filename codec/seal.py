"""The sealed-image format: a payload and a grant hidden in the low bits of a cover PNG.

Callers: actors/node/encoder.py (seal, in the node's encoder pool), the client (unseal to view,
regrant to share, read_header for the inbox), tests and benchmarks/seal.py.

Layout. The image is 8-bit RGB. Its channel samples are taken in a fixed order, R G B of each
pixel, pixels left to right, rows top to bottom; each sample carries its low bits, most
significant bit first. Samples 0 .. HEADER_SAMPLES-1 always carry HEADER_BITS = 2 bits each, so
a reader finds the header (and in it the payload's bits per channel) without knowing the config.
The payload follows at `bits` (1..4, seal.bits_per_channel) per sample: 1, 2 and 4 bits pack one
byte into 8, 4 or 2 samples; 3 bits pack 3 bytes into 8 samples (a last short group is padded
with zero bytes). Samples after the payload keep the cover with its low max(bits, 2) bits cleared.

Header (HEADER_BYTES = 4166 bytes, big endian):
    0  8  magic b"VEILSEAL"
    8  1  format version (1)
    9  1  bits per channel of the payload, 1..4
   10  1  flags, 0 (bit 0 is reserved for "payload is AEAD ciphertext", RELIABILITY 5)
   11  1  reserved, 0
   12  8  payload length in bytes
   20 32  SHA-256 of the payload
   52  2  grant length in bytes (0: no grant)
   54 4096 grant (`Grant.to_bytes`), zero padded: a FIXED region, so `regrant` rewrites only
          header pixels and never moves the payload
 4150 16  SHA-256 of bytes 0..4149, truncated: any flipped bit in the header is detected
The checksums detect damage, not forgery: anyone can recompute them. Tamper evidence comes from
signing the grant (`Grant.blob`, a later issue).

Limits (checked before any pixel is decoded): the payload is at most `max_payload` bytes (the
transport's max_message by default); a PNG to unseal may have at most `max_cover_pixels` pixels,
the size of the tier a `max_payload` payload would get, so bombs are refused from the IHDR.
Only the rows that hold the header, then the payload, are ever inflated (see codec.png).
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from codec import images, png
from codec.covers import CoverSet, Prepared, prepare_image
from codec.errors import SealError
from codec.grant import BLOB_MAX, MAX_VIEWS, Grant
from config import SealConfig, TransportConfig

__all__ = ["BLOB_MAX", "MAX_VIEWS", "Grant", "Header", "SealError", "Sealed", "read_header", "regrant",
           "seal", "unseal"]

MAGIC = b"VEILSEAL"
VERSION = 1
HEADER_BITS = 2
GRANT_CAPACITY = 4096
_FIXED = struct.Struct(">8sBBBBQ32sH")
_CHECK = 16
HEADER_BYTES = _FIXED.size + GRANT_CAPACITY + _CHECK
HEADER_SAMPLES = HEADER_BYTES * 8 // HEADER_BITS
DEFAULT_MAX_PAYLOAD = TransportConfig().max_message
_GROUPS = {1: (1, 8), 2: (1, 4), 3: (3, 8), 4: (1, 2)}  # bits -> (bytes, samples) per group
_TIER_RE = re.compile(r"([1-9][0-9]{0,5})x([1-9][0-9]{0,5})")


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed, checked header."""

    bits: int
    length: int
    checksum: bytes
    grant: Grant | None


@dataclass(frozen=True, slots=True)
class Sealed:
    """What unseal returns: the payload bytes exactly as sealed, and the grant (None if none)."""

    payload: bytes
    grant: Grant | None
    bits: int
    width: int
    height: int


# ---- bit packing (vectorised, one numpy pass per sample position of a group) --------------------
def payload_samples(length: int, bits: int) -> int:
    """Channel samples that carry `length` bytes at `bits` per sample (whole groups)."""
    g, k = _GROUPS[bits]
    return -(-length // g) * k


def capacity(width: int, height: int, bits: int) -> int:
    """Largest payload in bytes that a width x height image holds at `bits`."""
    g, k = _GROUPS[bits]
    return max(0, (3 * width * height - HEADER_SAMPLES) // k * g)


def pack(data: np.ndarray, bits: int, out: np.ndarray) -> None:
    """Write the samples of `data` (uint8) into `out` (uint8, payload_samples(len, bits) long)."""
    g, k = _GROUPS[bits]
    groups = -(-len(data) // g)
    if groups == 0:
        return
    word: np.ndarray = data
    if g > 1:
        padded = np.zeros(groups * g, dtype=np.uint8)
        padded[: len(data)] = data
        cols = padded.reshape(groups, g).astype(np.uint32)
        word = cols[:, 0] << 16 | cols[:, 1] << 8 | cols[:, 2]
    grid = out.reshape(groups, k)
    mask = (1 << bits) - 1
    for j in range(k):
        grid[:, j] = (word >> (bits * (k - 1 - j))) & mask


def unpack(samples: np.ndarray, bits: int, length: int) -> bytes:
    """Inverse of pack: `length` bytes from the low `bits` of `samples`."""
    g, k = _GROUPS[bits]
    groups = -(-length // g)
    if groups == 0:
        return b""
    grid = samples[: groups * k].reshape(groups, k)
    mask = (1 << bits) - 1
    dtype = np.uint8 if g == 1 else np.uint32
    word: np.ndarray[Any, Any] = np.zeros(groups, dtype=dtype)
    for j in range(k):
        part: np.ndarray[Any, Any] = (grid[:, j] & mask).astype(dtype)
        word |= part << (bits * (k - 1 - j))
    if g == 1:
        return word[:length].tobytes()
    out = np.empty((groups, g), dtype=np.uint8)
    for i in range(g):
        out[:, i] = word >> (8 * (g - 1 - i)) & 0xFF
    return out.reshape(-1)[:length].tobytes()


# ---- header ------------------------------------------------------------------------------------
def _header_bytes(bits: int, length: int, checksum: bytes, grant: Grant | None) -> bytes:
    raw = grant.to_bytes() if grant is not None else b""
    body = _FIXED.pack(MAGIC, VERSION, bits, 0, 0, length, checksum, len(raw))
    body += raw.ljust(GRANT_CAPACITY, b"\0")
    return body + hashlib.sha256(body).digest()[:_CHECK]


def _parse_header(head: bytes, info: png.PngInfo, max_payload: int) -> Header:
    magic, version, bits, flags, reserved, length, checksum, glen = _FIXED.unpack_from(head)
    if magic != MAGIC:
        raise SealError("no Veilshare header: this PNG is not a sealed image")
    if version != VERSION:
        raise SealError(f"sealed-image format version {version} is not supported (this reads 1)")
    if hashlib.sha256(head[:-_CHECK]).digest()[:_CHECK] != head[-_CHECK:]:
        raise SealError("the sealed header is damaged (header checksum mismatch)")
    if bits not in _GROUPS or flags != 0 or reserved != 0 or glen > GRANT_CAPACITY:
        raise SealError(
            f"sealed header has invalid fields (bits {bits}, flags {flags}, grant length {glen})"
        )
    if length > max_payload:
        raise SealError(
            f"sealed header claims a payload of {length} bytes, over the limit of "
            f"{max_payload} bytes"
        )
    room = capacity(info.width, info.height, bits)
    if length > room:
        raise SealError(
            f"sealed header claims a payload of {length} bytes but a "
            f"{info.width}x{info.height} image holds at most {room}"
        )
    grant_raw = head[_FIXED.size : _FIXED.size + glen]
    if any(head[_FIXED.size + glen : -_CHECK]):
        raise SealError("sealed header has bytes after its grant")
    grant = Grant.from_bytes(grant_raw) if glen else None
    return Header(bits, length, checksum, grant)


# ---- covers and limits -------------------------------------------------------------------------
def max_cover_pixels(cfg: SealConfig, max_payload: int, covers: CoverSet) -> int:
    """Pixels of the tier a `max_payload` payload gets at cfg's bits: the decode limit."""
    need = HEADER_SAMPLES + payload_samples(max_payload, cfg.bits_per_channel)
    w, h = covers.pick(need, cfg.min_cover_width, cfg.min_cover_height)
    return w * h


REPLY_OVERHEAD = 64 * 1024  # a sealed reply's message fields and framing, with room to spare
COVER_BYTES_PER_PIXEL = 0.5  # compressed cover rows per pixel, an upper bound (measured: 0.24)


def sealed_size_bound(length: int, cfg: SealConfig, covers: CoverSet) -> int:
    """An upper bound of the sealed PNG's size for a payload of `length` bytes: the payload's
    bits do not compress (ciphertext), the cover rows around them compress to at most
    COVER_BYTES_PER_PIXEL. Measured for random payloads of 4 KB to 32 MB: 1.44-1.47x the payload,
    under this bound (tests/test_too_large.py checks it at tier edges)."""
    need = HEADER_SAMPLES + payload_samples(length, cfg.bits_per_channel)
    w, h = covers.pick(need, cfg.min_cover_width, cfg.min_cover_height)
    return length + int(COVER_BYTES_PER_PIXEL * w * h) + 4096


def max_image_bytes(cfg: SealConfig, max_message: int, covers: CoverSet | None = None) -> int:
    """The largest payload whose sealed reply still fits a message of `max_message` bytes: what
    the client checks before it uploads and the node before it seals (`too_large` beyond)."""
    covers = covers or CoverSet()
    room = max_message - REPLY_OVERHEAD
    lo, hi = 0, max(0, room)
    while lo < hi:  # the bound grows with the length: the largest length within room
        mid = (lo + hi + 1) // 2
        if sealed_size_bound(mid, cfg, covers) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def warm(covers: CoverSet, cfg: SealConfig, payload_bytes: int = 4096) -> tuple[int, int]:
    """Prepare (and cache in `covers`) the tier a payload of `payload_bytes` gets, with every
    cover band that a payload of that tier may use compressed, so the first seal of any size in
    that tier pays for neither. Returns the tier. Callers: the node's encoder pool."""
    need = HEADER_SAMPLES + payload_samples(payload_bytes, cfg.bits_per_channel)
    size, below = covers.pick_with_below(need, cfg.min_cover_width, cfg.min_cover_height)
    covers.prepared(size, max(cfg.bits_per_channel, HEADER_BITS)).warm_bands(below)
    return size


def _cover(
    cover: Image.Image | str | None, need: int, cfg: SealConfig, limit: int, covers: CoverSet
) -> Prepared:
    clear = max(cfg.bits_per_channel, HEADER_BITS)
    if isinstance(cover, Image.Image):
        if 3 * cover.width * cover.height < need or cover.width * cover.height > limit:
            raise SealError(
                f"cover of {cover.width}x{cover.height} pixels does not fit: "
                f"{need} samples needed, at most {limit} pixels"
            )
        return prepare_image(cover, clear, cfg.zlib_level)
    if cover is None:
        return covers.prepared(covers.pick(need, cfg.min_cover_width, cfg.min_cover_height), clear)
    m = _TIER_RE.fullmatch(cover) if isinstance(cover, str) else None
    size = (int(m[1]), int(m[2])) if m else None
    for tier in covers.tiers(cfg.min_cover_width, cfg.min_cover_height):
        if tier == size and 3 * tier[0] * tier[1] >= need and tier[0] * tier[1] <= limit:
            return covers.prepared(tier, clear)
        if size is None or tier[0] * tier[1] > min(limit, size[0] * size[1]):
            break
    raise SealError(f"cover {cover!r} is not a tier that holds {need} samples")


# ---- public API ----------------------------------------------------------------------------------
def seal(
    payload: bytes,
    *,
    grant: Grant | None = None,
    cover: Image.Image | str | None = None,
    cfg: SealConfig | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    covers: CoverSet | None = None,
) -> bytes:
    """Hide `payload` (and `grant`) in a cover; return the sealed PNG bytes. Deterministic.

    cover: None (the smallest tier that fits), a tier name "WxH" from the ladder, or a PIL image.
    cfg: bits per channel, minimum cover size, zlib level (default: config defaults).
    Raises SealError (payload over max_payload, a cover that does not fit).
    """
    cfg = cfg or SealConfig()
    covers = covers or CoverSet()  # callers that seal often inject one (its tier cache)
    bits = cfg.bits_per_channel
    if len(payload) > max_payload:
        raise SealError(f"payload of {len(payload)} bytes is over the limit of {max_payload}")
    data = np.frombuffer(payload, dtype=np.uint8)
    head = _header_bytes(bits, len(payload), hashlib.sha256(payload).digest(), grant)
    need = HEADER_SAMPLES + payload_samples(len(payload), bits)
    prep = _cover(cover, need, cfg, max_cover_pixels(cfg, max_payload, covers), covers)
    spr = 3 * prep.width
    head_samples = np.zeros(HEADER_SAMPLES, dtype=np.uint8)
    pack(np.frombuffer(head, dtype=np.uint8), HEADER_BITS, head_samples)
    g, k = _GROUPS[bits]

    def samples(r0: int, r1: int) -> np.ndarray:
        """The sample stream's rows r0..r1 (header samples, then the payload's), packed now: the
        whole stream (4 samples per payload byte at 2 bits) is never held at once."""
        lo, hi = r0 * spr, r1 * spr
        out = np.zeros(hi - lo, dtype=np.uint8)
        if lo < HEADER_SAMPLES:
            out[: min(hi, HEADER_SAMPLES) - lo] = head_samples[lo:hi]
        p0, p1 = max(lo, HEADER_SAMPLES) - HEADER_SAMPLES, min(hi, need) - HEADER_SAMPLES
        if p1 > p0:  # whole groups around payload samples p0..p1
            g0, g1 = p0 // k, -(-p1 // k)
            tmp = np.zeros((g1 - g0) * k, dtype=np.uint8)
            pack(data[g0 * g : g1 * g], bits, tmp[: payload_samples(len(data[g0 * g : g1 * g]), bits)])
            at = p0 + HEADER_SAMPLES - lo
            out[at : at + p1 - p0] = tmp[p0 - g0 * k : p1 - g0 * k]
        return out.reshape(r1 - r0, spr)

    # the grant's zero padding (the whole room without a grant) is samples of 0: cover rows
    glen = _FIXED.unpack_from(head)[-1]
    spb = 8 // HEADER_BITS  # header samples per byte
    blank0 = -(-((_FIXED.size + glen) * spb) // spr)  # the first whole row after the grant
    blank1 = (_FIXED.size + GRANT_CAPACITY) * spb // spr  # the end of the last whole row before
    return prep.encode(samples, -(-need // spr), cfg.zlib_level, (blank0, blank1))


def _open(
    data: bytes, cfg: SealConfig | None, max_payload: int, covers: CoverSet | None
) -> tuple[png.PngInfo, Header]:
    cfg = cfg or SealConfig()
    limit = max_cover_pixels(cfg, max_payload, covers or CoverSet())
    info = png.parse(bytes(data), limit)
    if 3 * info.width * info.height < HEADER_SAMPLES:
        raise SealError(f"a {info.width}x{info.height} PNG is too small to be a sealed image")
    head = unpack(png.read_samples(info, HEADER_SAMPLES), HEADER_BITS, HEADER_BYTES)
    return info, _parse_header(head, info, max_payload)


def read_header(
    data: bytes,
    *,
    cfg: SealConfig | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    covers: CoverSet | None = None,
) -> Header:
    """The checked header of a sealed PNG (grant, payload length), decoding only its rows."""
    return _open(data, cfg, max_payload, covers)[1]


def _payload(info: png.PngInfo, header: Header, count: int = 0) -> tuple[bytes, np.ndarray]:
    """The checked payload, and the first max(count, what the payload needs) samples."""
    count = max(count, HEADER_SAMPLES + payload_samples(header.length, header.bits))
    samples = png.read_samples(info, count)
    payload = unpack(samples[HEADER_SAMPLES:], header.bits, header.length)
    if hashlib.sha256(payload).digest() != header.checksum:
        raise SealError("the sealed payload is damaged (payload checksum mismatch)")
    return payload, samples


def unseal(
    data: bytes,
    *,
    cfg: SealConfig | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    covers: CoverSet | None = None,
) -> Sealed:
    """The payload and grant of a sealed PNG, checked against both checksums. Raises SealError.

    cfg and max_payload set the decode limit (see the module docstring); pass the same values as
    the sealer (the cluster config) so that every legitimate seal can be read back.
    """
    info, header = _open(data, cfg, max_payload, covers)
    payload, _ = _payload(info, header)
    return Sealed(payload, header.grant, header.bits, info.width, info.height)


def regrant(
    data: bytes,
    grant: Grant | None,
    *,
    cfg: SealConfig | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    covers: CoverSet | None = None,
) -> bytes:
    """The same sealed image with its grant replaced: only header samples change, the payload
    and every other pixel stay as they are. The input is checked in full first (SealError)."""
    cfg = cfg or SealConfig()
    info, header = _open(data, cfg, max_payload, covers)
    spr, height = 3 * info.width, info.height
    _, samples = _payload(info, header, spr * height)  # one decode of every row, checked
    rows = np.zeros((height, 1 + spr), dtype=np.uint8)
    rows[:, 1:] = samples.reshape(height, spr)
    head_rows = -(-HEADER_SAMPLES // spr)
    fresh = np.empty(HEADER_SAMPLES, dtype=np.uint8)
    head = _header_bytes(header.bits, header.length, header.checksum, grant)
    pack(np.frombuffer(head, dtype=np.uint8), HEADER_BITS, fresh)
    top = rows[:head_rows, 1:].reshape(-1)  # a copy: the view is not contiguous
    top[:HEADER_SAMPLES] = top[:HEADER_SAMPLES] & 0xFC | fresh
    rows[:head_rows, 1:] = top.reshape(head_rows, spr)
    used = -(-(HEADER_SAMPLES + payload_samples(header.length, header.bits)) // spr)
    pieces = [png.compress_rows(png.row_slices(rows[:used]), cfg.zlib_level, up=True)]
    if used < height:
        pieces.append(png.compress_rows(png.row_slices(rows[used:]), cfg.zlib_level, up=False))
    return png.assemble(info.width, height, pieces)


def open_sealed_cover(png_bytes: bytes) -> Image.Image:
    """What a sealed image shows to any viewer: the default image (its cover), as RGB.
    Only PNG is accepted; the pixel limit is the sealed-image limit of the reader."""
    try:
        info = png.parse(bytes(png_bytes), max(1, 64 * 1024 * 1024 // 3 * 4))
    except SealError as exc:
        raise images.ImageError(f"not a sealed image: {exc}") from None
    del info
    return images.to_rgb(images.open_image(png_bytes, ["PNG"]))
