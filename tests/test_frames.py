"""Wire format, trailers (CRC32 / HMAC), HKDF, nonces, replay window, epoch store and peer guard."""

from __future__ import annotations

import hashlib
import hmac
import random
import zlib

import pytest

from transport import frames as F
from transport.auth import (
    ACCEPT,
    FUTURE,
    NEW_EPOCH,
    RESTARTED,
    STALE,
    MemoryEpochStore,
    PeerAuth,
    PeerGuard,
    SqliteEpochStore,
    boot_epoch,
)
from transport.errors import FrameError
from transport.receiver import DELIVERED, NEW, REPLAY_WINDOW, ReplayWindow

SECRET = b"s" * 32


def _data(framer: F.Framer, payload: bytes = b"hello", **kw: int) -> bytes:
    fields = {
        "sender": 3,
        "type_code": 7,
        "epoch": 123456789,
        "msg_id": 42,
        "frag_index": 2,
        "frag_size": 1400,
        "block_size": 32,
        "total": 4000,
        "seq": 9,
        "nonce": 11,
        "echo": 12,
    }
    fields.update(kw)
    return F.pack(framer, F.DATA, flags=F.FLAG_ACK_NOW, payload=payload, **fields)


def test_header_is_56_bytes_and_default_datagram_fits_1472() -> None:
    assert F.HEADER_SIZE == 56
    framer = F.HmacFramer(F.derive_peer_key(SECRET))
    d = _data(framer, b"x" * 1400)
    assert len(d) == 1472 == F.MAX_UDP_PAYLOAD


def test_pack_parse_round_trip_exact_fields() -> None:
    for framer in (F.CrcFramer(), F.HmacFramer(F.derive_peer_key(SECRET))):
        h, payload = F.parse(framer, _data(framer))
        assert payload == b"hello"
        assert h == F.Header(
            F.DATA, F.FLAG_ACK_NOW, 3, 7, 123456789, 42, 2, 1400, 32, 4000, 9, 11, 12
        )


def test_crc_trailer_is_crc32_of_header_and_payload() -> None:
    d = _data(F.CrcFramer())
    assert int.from_bytes(d[-4:], "little") == zlib.crc32(d[:-4])
    assert zlib.crc32(d) == 0x2144DF1C  # the residue the receiver checks
    assert d[:2] == b"VS" and d[2] == F.VERSION


def test_hmac_tag_is_truncated_hmac_sha256_with_hkdf_key() -> None:
    key = F.derive_peer_key(SECRET)
    # RFC 5869 HKDF with empty salt, computed with the stdlib only
    prk = hmac.digest(b"\0" * 32, SECRET, "sha256")
    okm = hmac.digest(prk, F.PEER_INFO + b"\x01", "sha256")
    assert key == okm
    d = _data(F.HmacFramer(key))
    assert d[-16:] == hmac.new(key, d[:-16], hashlib.sha256).digest()[:16]


@pytest.mark.parametrize("openssl", [True, False])
def test_hmac_keyed_state_is_reused_without_leaking_between_datagrams(
    openssl: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One framer tags and checks many datagrams from its precomputed keyed state (OpenSSL's
    HMAC object, or the stdlib wrapper where that is missing): every tag is the HMAC of that
    datagram alone, whatever came before."""
    if not openssl:
        monkeypatch.setattr(F, "_openssl_hmac", None)
    key = F.derive_peer_key(SECRET)
    framer = F.HmacFramer(key)
    for n in (0, 1, 63, 64, 65, 1400, 1400, 5):
        header, body = bytes([n % 256]) * 56, memoryview(bytes(range(256)) * 6)[:n]
        d = framer.seal(header, body)
        assert d[-16:] == hmac.new(key, header + bytes(body), hashlib.sha256).digest()[:16]
        assert framer.tag(header, body) == d[-16:]
        assert framer.check(d)
        assert not framer.check(d[:-1] + bytes([d[-1] ^ 0x80]))
        assert not F.HmacFramer(bytes(32)).check(d)


@pytest.mark.parametrize("framer", [F.CrcFramer(), F.HmacFramer(F.derive_peer_key(SECRET))])
def test_every_single_bit_flip_is_refused(framer: F.Framer) -> None:
    d = _data(framer, b"payload-bytes")
    for bit in range(len(d) * 8):
        b = bytearray(d)
        b[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            F.parse(framer, bytes(b))


def test_wrong_key_missing_and_truncated_tag_refused() -> None:
    good = F.HmacFramer(F.derive_peer_key(SECRET))
    other = F.HmacFramer(F.derive_peer_key(b"t" * 32))
    d = _data(good)
    for bad in (_data(other), d[:-16], d[:-1], _data(F.CrcFramer())):
        with pytest.raises(FrameError):
            F.parse(good, bad)


def test_bad_magic_version_kind_and_short_refused() -> None:
    framer = F.CrcFramer()
    d = _data(framer)
    header, payload = d[: F.HEADER_SIZE], d[F.HEADER_SIZE : -4]
    for offset, value in ((0, ord("X")), (2, 9), (3, 99)):
        b = bytearray(header)
        b[offset] = value
        with pytest.raises(FrameError):  # a valid CRC over a bad header
            F.parse(framer, framer.seal(bytes(b), payload))
    for n in range(F.HEADER_SIZE + 4):
        with pytest.raises(FrameError):
            F.parse(framer, bytes(d[:n]))


def test_random_bytes_never_parse() -> None:
    rng = random.Random(5)
    framer = F.CrcFramer()
    for _ in range(2000):
        with pytest.raises(FrameError):
            F.parse(framer, rng.randbytes(rng.randrange(0, 1500)))


def test_ack_payload_round_trip_and_limits() -> None:
    body = F.ack_payload(16, b"\x0b\xff")
    assert body == b"\x00\x00\x00\x10\x0b\xff"
    assert F.parse_ack(body) == (16, b"\x0b\xff")
    assert F.parse_ack(b"") == (0, b"")
    for bad in (b"\x00\x00\x00", F.ack_payload(8, b"\xff" * 65), F.ack_payload(3, b"\x01")):
        with pytest.raises(FrameError):
            F.parse_ack(bad)


def test_address_nonce_depends_on_key_and_address_and_is_never_zero() -> None:
    k1, k2 = b"a" * 16, b"b" * 16
    a, b = ("127.0.0.1", 1000), ("127.0.0.1", 1001)
    assert F.address_nonce(k1, a) == F.address_nonce(k1, a)
    assert F.address_nonce(k1, a) != F.address_nonce(k1, b)
    assert F.address_nonce(k1, a) != F.address_nonce(k2, a)
    assert F.address_nonce(k1, a) != 0


def test_fragment_count() -> None:
    assert [F.fragment_count(n, 10) for n in (0, 1, 9, 10, 11, 20, 21)] == [1, 1, 1, 1, 2, 2, 3]


def test_replay_window_marks_slides_and_refuses_old() -> None:
    w = ReplayWindow()
    assert w.check(5) == NEW
    w.mark(5)
    assert w.check(5) == DELIVERED and w.check(4) == NEW
    w.mark(3)
    assert w.check(3) == DELIVERED
    w.mark(5 + REPLAY_WINDOW - 1)
    assert w.check(5) == DELIVERED  # still inside
    assert w.check(4) == 2  # STALE: fell out of the window
    w.mark(5 + REPLAY_WINDOW)
    assert w.check(5) == 2 and w.check(6) == NEW


def test_sqlite_epoch_store_persists_highest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "epochs.db"
    s = SqliteEpochStore(path)
    assert s.get(2) is None
    s.put(2, 100)
    s.put(2, 50)
    s.close()
    s2 = SqliteEpochStore(path)
    assert s2.get(2) == 100
    s2.close()


def test_boot_epoch_is_wall_clock_and_strictly_increasing() -> None:
    store = MemoryEpochStore()
    assert boot_epoch(store, 1, 1000) == 1000
    assert boot_epoch(store, 1, 900) == 1001  # clock went back: still above the last one
    assert boot_epoch(store, 1, 5000) == 5000
    assert store.get(1) == 5000


def _guard(store: MemoryEpochStore, wall: list[int]) -> PeerGuard:
    auth = PeerAuth(SECRET, 1, {1: ("127.0.0.1", 5001), 2: ("127.0.0.1", 5002)}, store)
    return PeerGuard(auth, lambda: wall[0])


def test_peer_guard_address_and_epoch_rules() -> None:
    store = MemoryEpochStore()
    wall = [1_000_000]
    g = _guard(store, wall)
    assert g.sender_ok(("127.0.0.1", 5002), 2)
    assert not g.sender_ok(("127.0.0.1", 5003), 2)  # another port
    assert not g.sender_ok(("127.0.0.1", 5002), 3)  # another node id
    assert not g.sender_ok(("127.0.0.1", 5001), 1)  # ourselves
    assert g.check_epoch(2, 1_000_000 + 30_001) == FUTURE
    assert g.check_epoch(2, 500) == NEW_EPOCH
    assert store.get(2) is None  # the guard does no I/O: it queues the write for its caller
    assert g.take_writes() == [(2, 500)] and g.take_writes() == []
    store.put(2, 500)
    assert g.check_epoch(2, 500) == ACCEPT
    assert g.check_epoch(2, 600) == NEW_EPOCH and g.take_writes() == [(2, 600)]
    store.put(2, 600)
    assert g.check_epoch(2, 500) == STALE
    # after our restart the stored epoch is known but its replay window is not
    g2 = _guard(store, wall)
    assert g2.check_epoch(2, 500) == STALE
    assert g2.check_epoch(2, 600) == RESTARTED
    assert g2.check_epoch(2, 700) == NEW_EPOCH
    assert g2.take_writes() == [(2, 700)]
    assert g2.next_epoch(1_000_000) == 1_000_001 and g2.take_writes() == [(1, 1_000_001)]


def test_peer_auth_refuses_short_secret_and_bad_id() -> None:
    with pytest.raises(ValueError):
        PeerAuth(b"short", 1, {})
    with pytest.raises(ValueError):
        PeerAuth(SECRET, 0, {})
