"""Wire format of one datagram: fixed binary header + payload + trailer (CRC32 or HMAC tag).

Layout (network byte order, `HEADER.size` = 56 bytes)::

    magic    2s  b"VS"
    version  B   1
    kind     B   DATA=1 ACK=2 PROBE=3 ECHO=4 REJECT=5
    flags    B   DATA: ACK_NOW (ask for an ACK of this fragment's block at once), ACKS (ACK
                 records follow the fragment); ACK: COMPLETE
    sender   B   node id of the sender (peer sockets, authenticated); 0 for clients
    type     H   message type code (DATA: of the message; ACK: echoed)
    epoch    Q   DATA: sender's boot epoch (ms, wall clock); ACK/REJECT: the epoch of the data concerned
    msg_id   I   message id, per sender and epoch
    index    I   DATA: fragment index; ACK: index of the fragment that triggered the ACK
                 (field `frag_index` of Header)
    frag     H   DATA: fragment size used by the sender (bytes); ACK: how late (0.1 ms units) the
                 receiver saw a fragment come after a later transmission of the message (0: no
                 reordering seen; the sender's reordering window, transport.reorder); 0 otherwise
    block    H   DATA: block size used by the sender (fragments); ACK: how long the receiver held
                 the ACK back (0.1 ms units, rounded down; the sender takes it off its RTT
                 sample); 0 otherwise
    total    Q   DATA: total message length (bytes); ACK: fragments [0, total) are all held
    seq      I   DATA: per-destination transmission number; ACK: the seq of the trigger fragment
    nonce    Q   the sender's nonce for the destination (anti-amplification; 0 = none)
    echo     Q   the last nonce received from the destination (0 = none)

ACK payload: `start` (u32, a multiple of 8) then a little-endian bitmap of at most 64 bytes
(bit j = fragment start + j held), usually starting at the first fragment still missing, so one
ACK describes a whole window; empty with the COMPLETE flag. PROBE / ECHO / REJECT: no payload.

Piggybacked ACKs: a DATA datagram with the ACKS flag carries, after its fragment (whose length
the header implies: min(frag, total - index * frag)), one or more ACK records for the
destination, each `ACK_RECORD` (32 bytes: flags, type, epoch, msg_id, index, frag, block,
total (u32), seq, then the length of its payload, u8) and that payload: the fields of an ACK
frame without the ones the DATA header already says (sender, nonce, echo). Records fill at most
the room the fragment leaves below the sender's full fragment size, so the datagram is never
larger than a full DATA datagram. A DATA datagram whose records are truncated or malformed is
dropped whole (`bad_datagrams`), like any bad field.

Trailer: `CrcFramer` appends CRC32 (4 bytes, little-endian) over header + payload (client sockets:
corruption is counted, never delivered; checked as one crc32 over the whole datagram, which gives
the CRC-32 residue 0x2144DF1C when intact); `HmacFramer` appends HMAC-SHA256 truncated to 16 bytes keyed with
`HKDF(cluster.secret, info=b"veilshare peer v1")` (peer sockets), checked with compare_digest
before anything else is looked at. With the default fragment size 1400 a datagram is at most
1400 + 56 + 16 = 1472 bytes: it fits a 1500-byte IPv4 path without IP fragmentation.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from typing import NamedTuple, Protocol, cast

try:
    from _hashlib import hmac_new as _openssl_hmac  # what hmac.new wraps, without the wrapper
except ImportError:  # a Python built without OpenSSL
    _openssl_hmac = None  # type: ignore[assignment]

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transport.errors import FrameError

MAGIC = b"VS"
VERSION = 1

DATA = 1
ACK = 2
PROBE = 3
ECHO = 4
REJECT = 5
KINDS = frozenset((DATA, ACK, PROBE, ECHO, REJECT))

FLAG_ACK_NOW = 0x01  # DATA: acknowledge this fragment's block now
FLAG_ACKS = 0x02  # DATA: ACK records follow the fragment (piggybacked ACKs)
FLAG_COMPLETE = 0x01  # ACK: the whole message was delivered

HEADER = struct.Struct("!2sBBBBHQIIHHQIQQ")
HEADER_SIZE = HEADER.size  # 56
FIELDS = struct.Struct("!BBBHQIIHHQIQQ")  # HEADER after magic and version
PREFIX = MAGIC + bytes([VERSION])
CRC_RESIDUE = 0x2144DF1C  # crc32(m + crc32(m) as 4 little-endian bytes)
MAX_UDP_PAYLOAD = 1472  # IPv4 on a 1500-byte MTU path
PEER_INFO = b"veilshare peer v1"
MAX_ACK_BITMAP = 64  # bytes: an ACK describes at most 512 fragments
_U32 = 0xFFFFFFFF


class Header(NamedTuple):
    """One parsed header (see the module docstring for the meaning of each field per kind)."""

    kind: int
    flags: int
    sender: int
    type_code: int
    epoch: int
    msg_id: int
    frag_index: int
    frag_size: int
    block_size: int
    total: int
    seq: int
    nonce: int
    echo: int


class Framer(Protocol):
    """Seals (appends the trailer) and opens (checks and strips it) datagrams."""

    trailer: int

    def seal(self, header: bytes, payload: bytes | memoryview) -> bytes:
        """The datagram: header + payload + the trailer computed over both."""

    def tag(self, header: bytes, payload: bytes | memoryview) -> bytes:
        """The trailer of header + payload (seal without joining: a gathered send)."""

    def check(self, data: bytes) -> bool:
        """True if the trailer of `data` matches the bytes before it."""


CRC = struct.Struct("<I")  # the CRC32 trailer (little-endian)


class CrcFramer:
    """CRC32 trailer: catches corruption on unauthenticated sockets (not an authenticator)."""

    trailer = 4

    def seal(self, header: bytes, payload: bytes | memoryview) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(header))
        return b"".join((header, payload, CRC.pack(crc)))

    def tag(self, header: bytes, payload: bytes | memoryview) -> bytes:
        return CRC.pack(zlib.crc32(payload, zlib.crc32(header)))

    def check(self, data: bytes) -> bool:
        return zlib.crc32(data) == CRC_RESIDUE


class HmacFramer:
    """HMAC-SHA256/128 trailer keyed with `derive_peer_key(secret)` (peer sockets).

    The keyed state (the inner and outer hashes after the key blocks) is computed once; each
    tag and check copies it and hashes only the datagram. Measured for 60-byte and 1.4 KB
    datagrams: the one-shot `hmac.digest` redoes the key setup on every call (OpenSSL 3) and
    takes 1.4-3x the time of a copy of OpenSSL's keyed HMAC object; Python's `hmac.HMAC`
    wrapper around that object adds 15-60 %."""

    trailer = 16

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("HMAC key must be at least 16 bytes")
        self._key = key
        self._keyed = _keyed_hmac(key)

    def seal(self, header: bytes, payload: bytes | memoryview) -> bytes:
        return b"".join((header, payload, self.tag(header, payload)))

    def tag(self, header: bytes, payload: bytes | memoryview) -> bytes:
        mac = self._keyed.copy()
        mac.update(header)
        mac.update(payload)
        return mac.digest()[:16]

    def check(self, data: bytes) -> bool:
        view = memoryview(data)
        mac = self._keyed.copy()
        mac.update(view[:-16])
        return hmac.compare_digest(mac.digest()[:16], view[-16:])


def _keyed_hmac(key: bytes) -> _Mac:
    """OpenSSL's HMAC-SHA256 object keyed with `key` (the standard library's `hmac` module is a
    Python wrapper around it; without OpenSSL, that wrapper)."""
    if _openssl_hmac is not None:
        try:
            return cast(_Mac, _openssl_hmac(key, digestmod="sha256"))
        except ValueError:  # an OpenSSL without HMAC-SHA256 (FIPS oddities): the wrapper below
            pass
    return hmac.new(key, digestmod=hashlib.sha256)


class _Mac(Protocol):
    def copy(self) -> _Mac: ...

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class DatagramRun:
    """DATA datagrams to one address kept as their parts, three per datagram: header, payload
    (a view of the message body, not a copy) and trailer. The socket layer hands the parts of
    up to a GSO batch to one sendmsg and the kernel copies them once; joining each datagram
    first cost about half of the sender's CPU per datagram. Every datagram is `seg` bytes but
    the last, which may be shorter (the rule of a GSO send)."""

    __slots__ = ("count", "nbytes", "parts", "seg")

    def __init__(self, parts: list[bytes | memoryview], seg: int, nbytes: int) -> None:
        self.parts = parts
        self.seg = seg
        self.nbytes = nbytes
        self.count = len(parts) // 3

    def datagrams(self) -> list[bytes]:
        """Each datagram joined (for callers that want plain bytes)."""
        p = self.parts
        return [b"".join(p[k : k + 3]) for k in range(0, len(p), 3)]


def derive_peer_key(secret: bytes) -> bytes:
    """HKDF-SHA256(secret, salt=None, info=b"veilshare peer v1") -> 32-byte HMAC key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PEER_INFO)
    return hkdf.derive(secret)


def pack(
    framer: Framer,
    kind: int,
    *,
    flags: int = 0,
    sender: int = 0,
    type_code: int = 0,
    epoch: int = 0,
    msg_id: int = 0,
    frag_index: int = 0,
    frag_size: int = 0,
    block_size: int = 0,
    total: int = 0,
    seq: int = 0,
    nonce: int = 0,
    echo: int = 0,
    payload: bytes | memoryview = b"",
) -> bytes:
    """One sealed datagram: header + payload + trailer (keyword form, any kind). Field ranges
    are the caller's duty (struct.error on overflow is a programming error, not peer input)."""
    return seal(framer, kind, flags, sender, type_code, epoch, msg_id, frag_index, frag_size,
                block_size, total, seq, nonce, echo, payload)  # fmt: skip


def seal(framer: Framer, kind: int, flags: int, sender: int, type_code: int, epoch: int,
         msg_id: int, frag_index: int, frag_size: int, block_size: int, total: int, seq: int,
         nonce: int, echo: int, payload: bytes | memoryview) -> bytes:  # fmt: skip
    """`pack` with positional fields (the sender's hot path for DATA)."""
    header = HEADER.pack(
        MAGIC, VERSION, kind, flags, sender, type_code, epoch, msg_id, frag_index, frag_size,
        block_size, total, seq & _U32, nonce, echo,
    )  # fmt: skip
    return framer.seal(header, payload)


def parse(framer: Framer, data: bytes) -> tuple[Header, bytes]:
    """Check the trailer, then the header; return (header, payload). Raises FrameError."""
    n, trailer = len(data), framer.trailer
    if n < HEADER_SIZE + trailer:
        raise FrameError("short datagram")
    if not framer.check(data):
        raise FrameError("bad checksum or tag")
    if not data.startswith(PREFIX):
        raise FrameError("bad magic or unsupported version")
    header = _new_header(Header, FIELDS.unpack_from(data, 3))  # (always the 13 fields)
    if header.kind not in KINDS:
        raise FrameError(f"unknown kind {header.kind}")
    return header, data[HEADER_SIZE : n - trailer]


_new_header = tuple.__new__  # Header._make without its call and length check


_ACK_START = struct.Struct("!I")


def ack_payload(start: int, bitmap: bytes) -> bytes:
    """ACK body: `start` (multiple of 8) and the bitmap bytes of fragments start, start+1, ..."""
    return _ACK_START.pack(start) + bitmap


def parse_ack(payload: bytes) -> tuple[int, bytes]:
    """(start, bitmap) of an ACK body (b"" for COMPLETE). FrameError if malformed."""
    if not payload:
        return 0, b""
    if len(payload) < 4 or len(payload) > 4 + MAX_ACK_BITMAP:
        raise FrameError("bad ACK bitmap length")
    (start,) = _ACK_START.unpack_from(payload)
    if start % 8:
        raise FrameError("ACK bitmap start not a multiple of 8")
    return start, payload[4:]


ACK_RECORD = struct.Struct("!BHQIIHHIIB")  # a piggybacked ACK's fields, then its payload length
MAX_ACK_PAYLOAD = 4 + MAX_ACK_BITMAP


def ack_record(flags: int, type_code: int, epoch: int, msg_id: int, frag_index: int,
               late: int, delay: int, cum: int, seq: int, payload: bytes) -> bytes:  # fmt: skip
    """One piggybacked ACK (see the module docstring): the ACK frame's fields and payload."""
    return ACK_RECORD.pack(flags, type_code, epoch, msg_id, frag_index, late, delay, cum,
                           seq & _U32, len(payload)) + payload  # fmt: skip


def split_acks(h: Header, payload: bytes) -> tuple[bytes, list[tuple[Header, int, bytes]]]:
    """(fragment, [(ACK header, start, bitmap), ...]) of a DATA datagram with the ACKS flag
    (`parse_ack` done); each ACK header gets the DATA header's sender, nonce and echo.
    FrameError if the fragment length the header implies does not fit or a record is truncated
    or malformed."""
    if h.frag_size == 0 or h.frag_index * h.frag_size > h.total:
        raise FrameError("ACK records after a fragment of unknown length")
    n = min(h.frag_size, h.total - h.frag_index * h.frag_size)
    if len(payload) <= n:
        raise FrameError("ACKS flag without ACK records")
    acks = []
    pos, end, size = n, len(payload), ACK_RECORD.size
    while pos < end:
        if pos + size > end:
            raise FrameError("truncated ACK record")
        (flags, type_code, epoch, msg_id, index, late, delay, cum, seq,
         length) = ACK_RECORD.unpack_from(payload, pos)  # fmt: skip
        pos += size
        if length > MAX_ACK_PAYLOAD or pos + length > end:
            raise FrameError("bad ACK record payload length")
        start, bitmap = parse_ack(payload[pos : pos + length])
        pos += length
        acks.append((Header(ACK, flags, h.sender, type_code, epoch, msg_id, index, late, delay,
                            cum, seq, h.nonce, h.echo), start, bitmap))  # fmt: skip
    return payload[:n], acks


def address_nonce(key: bytes, addr: tuple[str, int]) -> int:
    """A 64-bit nonce for `addr`, keyed so an attacker cannot learn another address's nonce.
    Never 0 (0 means "no nonce")."""
    digest = hashlib.blake2b(f"{addr[0]}|{addr[1]}".encode(), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def fragment_count(total: int, frag_size: int) -> int:
    """Fragments of a `total`-byte message (an empty message still takes one datagram)."""
    return max(1, -(-total // frag_size))
