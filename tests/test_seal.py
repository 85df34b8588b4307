"""codec.seal / codec.covers / codec.png: round trips, the visible picture, regrant, bad input.

RELIABILITY 6.3 TI-4 and TI-5 for the sealed-image side; DESIGN "Sealed-image format".
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imagefix import MiB, exotic_files, jpeg_claiming, peak_rss_growth, zero_png
from PIL import Image

from codec import png
from codec import seal as S
from codec.covers import DEFAULT_DIR, CoverSet
from codec.seal import Grant, SealError
from config import SealConfig

GRANT = Grant("alice", "bob", "pic.jpg", 3)


@pytest.fixture(scope="module")
def covers() -> CoverSet:
    return CoverSet()


def cfg(bits: int = 2, **kw: int) -> SealConfig:
    return SealConfig(bits_per_channel=bits, **kw)


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def pixels(data: bytes) -> np.ndarray:
    """A PNG decoded by Pillow as any viewer would: (h, w, 3) int16."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def reencode(arr: np.ndarray, mode: str = "RGB", **save: object) -> bytes:
    """Pixels saved by Pillow's encoder (adaptive filters): a sealed image re-saved by a tool."""
    out = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).convert(mode).save(out, format="PNG", **save)
    return out.getvalue()


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def build(parts: list[tuple[bytes, bytes]]) -> bytes:
    return png.SIGNATURE + b"".join(b"".join(png.chunk(t, d)) for t, d in parts)


# ---- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_round_trip_at_tier_boundaries(bits: int, covers: CoverSet) -> None:
    c = cfg(bits)
    cap = S.capacity(640, 480, bits)
    for n, size in [
        (0, (640, 480)),
        (1, (640, 480)),
        (2, (640, 480)),
        (3, (640, 480)),
        (4096, (640, 480)),
        (cap, (640, 480)),
        (cap + 1, (1024, 768)),
    ]:
        p = payload(n, n)
        got = S.unseal(S.seal(p, grant=GRANT, cfg=c, covers=covers), cfg=c, covers=covers)
        assert got.payload == p and got.grant == GRANT and got.bits == bits
        assert (got.width, got.height) == size, n


def test_capacity_formula_is_exact() -> None:
    # one more sample group than the header plus payload fits: capacity is the largest fit
    for bits in (1, 2, 3, 4):
        cap = S.capacity(640, 480, bits)
        assert S.HEADER_SAMPLES + S.payload_samples(cap, bits) <= 640 * 480 * 3
        assert S.HEADER_SAMPLES + S.payload_samples(cap + 1, bits) > 640 * 480 * 3


@settings(max_examples=25, derandomize=True, deadline=None)
@given(p=st.binary(max_size=70_000), bits=st.integers(1, 4))
def test_round_trip_property(p: bytes, bits: int) -> None:
    sealed = S.seal(p, cfg=cfg(bits))
    assert S.unseal(sealed, cfg=cfg(bits)).payload == p


@settings(max_examples=60, derandomize=True, deadline=None)
@given(p=st.binary(max_size=100), bits=st.integers(1, 4))
def test_pack_unpack_inverse(p: bytes, bits: int) -> None:
    out = np.full(S.payload_samples(len(p), bits), 0xFF, dtype=np.uint8)
    S.pack(np.frombuffer(p, dtype=np.uint8), bits, out)
    assert int(out.max(initial=0)) < (1 << bits)
    noisy = out | np.uint8(0xFF ^ ((1 << bits) - 1))  # high bits must not matter
    assert S.unpack(noisy, bits, len(p)) == p


def test_pack_bit_order_is_msb_first() -> None:
    out = np.zeros(8, dtype=np.uint8)
    S.pack(np.frombuffer(b"\xa5\x0f\xf0", dtype=np.uint8), 3, out)
    # 0xa50ff0 = 101 001 010 000 111 111 110 000
    assert out.tolist() == [5, 1, 2, 0, 7, 7, 6, 0]


@pytest.mark.parametrize("bits", [2, 4])
def test_round_trip_20_mb(bits: int, covers: CoverSet) -> None:
    p = os.urandom(20_000_000)
    got = S.unseal(S.seal(p, cfg=cfg(bits), covers=covers), cfg=cfg(bits), covers=covers)
    assert got.payload == p
    assert got.width * got.height > 1600 * 1200  # scaled up past the largest base file


def test_seal_is_deterministic_warm_or_cold(covers: CoverSet) -> None:
    p = payload(300_000, 7)
    a = S.seal(p, grant=GRANT, covers=covers)
    assert S.seal(p, grant=GRANT, covers=covers) == a
    assert S.seal(p, grant=GRANT, covers=CoverSet()) == a


def test_payload_rows_in_parallel_pieces_decode_to_the_same_pixels(
    covers: CoverSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large seal compresses its payload rows in independent pieces on the deflate threads:
    the file stays one valid PNG (zlib, CRCs, Adler-32 over all rows) whose pixels are exactly
    those of the same seal made in one piece, and it unseals to the payload."""
    import codec.covers as covers_mod

    p = payload(1_500_000, 11)
    monkeypatch.setattr(covers_mod, "PIECE_BYTES", 1 << 40)
    whole = S.seal(p, grant=GRANT, covers=covers)
    runs: list[tuple[int, set[str]]] = []
    real = png.stream_pieces

    def spy(jobs: list[Any], parallel: bool = True) -> Iterator[png.Piece]:
        names: set[str] = set()

        def named(job: Any) -> Any:
            return lambda: (names.add(threading.current_thread().name), job())[1]

        out = list(real([named(j) for j in jobs], parallel))
        runs.append((len(jobs), names))
        return iter(out)

    monkeypatch.setattr(png, "stream_pieces", spy)
    monkeypatch.setattr(covers_mod, "PIECE_BYTES", 256 * 1024)
    split = S.seal(p, grant=GRANT, covers=covers)
    assert runs[0][0] >= 20  # 6 MB of payload rows in 256 KB pieces, plus the rest of the band
    assert runs[0][1] and all(n.startswith("deflate") for n in runs[0][1])
    assert split != whole  # other deflate blocks...
    assert np.array_equal(pixels(split), pixels(whole))  # ...the same picture
    with Image.open(io.BytesIO(split), formats=["PNG"]) as im:
        im.verify()
    assert zlib.decompress(b"".join(body for kind, body in chunks(split) if kind == b"IDAT"))
    got = S.unseal(split, covers=covers)
    assert (got.payload, got.grant) == (p, GRANT)
    runs.clear()  # a small payload (one piece) is compressed on the caller's thread
    assert S.unseal(S.seal(payload(4096, 1), covers=covers), covers=covers).payload == payload(
        4096, 1
    )
    assert runs and runs[0][1] == {threading.current_thread().name}


@pytest.mark.parametrize("warm_size", [4096, 2 * MiB])
def test_warm_compresses_every_cover_band_a_seal_of_the_tier_uses(warm_size: int) -> None:
    """warm() (the node's encoder pool at start) leaves nothing of the tier for a first seal to
    compress but its own rows, whatever the payload's size in that tier: the smallest and the
    largest payload that get the tier reuse the warmed bands and fill none. Bands above the
    smallest such payload's rows are never used, so they are not compressed."""
    cs, c = CoverSet(), cfg()
    tier = S.warm(cs, c, warm_size)
    prep = cs.prepared(tier, 2)
    room = S.capacity(*tier, 2)
    lo, hi = 0, room  # the smallest payload that gets this tier (tiers grow with the payload)
    while lo < hi:
        mid = (lo + hi) // 2
        need = S.HEADER_SAMPLES + S.payload_samples(mid, 2)
        if cs.pick(need, c.min_cover_width, c.min_cover_height) == tier:
            hi = mid
        else:
            lo = mid + 1
    smallest = lo
    first = prep.band_of((S.HEADER_SAMPLES + S.payload_samples(smallest, 2)) // (3 * tier[0]))
    assert all(b is not None for b in prep.bands[first:])
    assert warm_size == 4096 or all(b is None for b in prep.bands[: first - 1])  # not needed
    before = list(prep.bands)
    for n in (smallest, room):
        sealed = S.seal(payload(n, 5), covers=cs)
        assert cs.builds == 1
        assert all(a is b for a, b in zip(before, prep.bands, strict=True))
        assert S.unseal(sealed, covers=cs).payload == payload(n, 5)


def test_cover_bands_are_compressed_once_when_seals_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads need the same uncompressed bands at once (a seal racing the warm-up): each
    band is compressed once, the others wait for it, and all get the same pieces."""
    cs = CoverSet()
    prep = cs.prepared((640, 480), 2)
    calls: list[int] = []
    real = png.compress_rows

    def slow(slices: Any, level: int, *, up: bool, prev: Any = None) -> png.Piece:
        if not up:
            calls.append(level)
            time.sleep(0.02)  # widen the window in which an unlocked fill would race
        return real(slices, level, up=up, prev=prev)

    monkeypatch.setattr(png, "compress_rows", slow)
    start = threading.Barrier(4)
    got: list[list[png.Piece]] = []

    def need_all() -> None:
        start.wait()
        got.append(prep._bands_from(0))

    threads = [threading.Thread(target=need_all) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == len(prep.bands)
    assert len(got) == 4 and all(g == got[0] for g in got)
    assert all(b is not None for b in prep.bands)


# ---- the visible picture -----------------------------------------------------------------------
def test_picture_does_not_depend_on_payload(covers: CoverSet) -> None:
    a = pixels(S.seal(payload(150_000, 1), covers=covers))
    b = pixels(S.seal(payload(150_000, 2), covers=covers))
    diff = np.abs(a - b)
    assert diff.max() <= 3 and diff.mean() <= 1.5
    assert diff.max() > 0  # the payloads differ, so some pixel does


@pytest.mark.parametrize("bits", [1, 2])
def test_viewer_sees_the_cover(bits: int, covers: CoverSet) -> None:
    sealed = S.seal(payload(100_000, 3), grant=GRANT, cfg=cfg(bits), covers=covers)
    with Image.open(io.BytesIO(sealed)) as im:  # any format: as a viewer would
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (640, 480))
        im.verify()
    cover = np.asarray(covers.load_base((640, 480))).astype(np.int16)
    assert np.abs(pixels(sealed) - cover).max() <= 3


def test_cover_art_names_the_client() -> None:
    sizes = sorted(int(p.stem.split("_")[1].split("x")[0]) for p in DEFAULT_DIR.glob("cover_*.png"))
    assert sizes == [640, 1024, 1600]
    assert sum(p.stat().st_size for p in DEFAULT_DIR.glob("*.png")) < 400_000
    assert "Veilshare client" in (DEFAULT_DIR / "draw.py").read_text()


# ---- grants and regrant ------------------------------------------------------------------------
def test_regrant_changes_only_the_grant_and_header_pixels(covers: CoverSet) -> None:
    p = payload(100_000, 4)
    sealed = S.seal(p, grant=GRANT, covers=covers)
    new = Grant("alice", "carol", "pic.jpg", 0, blob=b"sig" * 100)
    again = S.regrant(sealed, new, covers=covers)
    got = S.unseal(again, covers=covers)
    assert got.payload == p and got.grant == new
    changed = np.flatnonzero((pixels(sealed) != pixels(again)).reshape(-1))
    assert changed.size > 0 and changed.max() < S.HEADER_SAMPLES
    assert S.unseal(S.regrant(again, None, covers=covers), covers=covers).grant is None
    assert S.read_header(again, covers=covers).grant == new


def test_grant_bytes_round_trip_and_limits() -> None:
    big = Grant("a" * 64, "b" * 64, "c" * 64, S.MAX_VIEWS, blob=b"x" * S.BLOB_MAX)
    assert len(big.to_bytes()) <= S.GRANT_CAPACITY
    assert Grant.from_bytes(big.to_bytes()) == big
    bads: list[dict[str, Any]] = [
        {"views": -1},
        {"views": True},
        {"views": 2**31},
        {"views": 1.0},
        {"owner": "../x"},
        {"image": ".hidden"},
        {"borrower": ""},
        {"blob": b"x" * (S.BLOB_MAX + 1)},
    ]
    fields: dict[str, Any] = {"owner": "alice", "borrower": "bob", "image": "p.png", "views": 1}
    for bad in bads:
        with pytest.raises(SealError, match="grant"):
            Grant(**(fields | bad))
    raw = GRANT.to_bytes()
    for broken in [raw[:-1], raw + b"\0", b"\x02" + raw[1:], b"", raw[:3]]:
        with pytest.raises(SealError, match="grant"):
            Grant.from_bytes(broken)


# ---- covers: ladder and cache ------------------------------------------------------------------
def test_tier_ladder(covers: CoverSet) -> None:
    def first(n: int, w: int, h: int) -> list[tuple[int, int]]:
        it = covers.tiers(w, h)
        return [next(it) for _ in range(n)]

    assert first(5, 640, 480) == [(640, 480), (1024, 768), (1600, 1200), (2000, 1500), (2500, 1875)]
    assert first(3, 800, 600) == [(800, 600), (1024, 768), (1600, 1200)]
    assert first(2, 2000, 2000) == [(2000, 2000), (2500, 2500)]


def test_minimum_cover_size_is_respected() -> None:
    got = S.unseal(
        S.seal(b"x", cfg=cfg(2, min_cover_width=800, min_cover_height=600)),
        cfg=cfg(2, min_cover_width=800, min_cover_height=600),
    )
    assert (got.width, got.height) == (800, 600)


def test_tiers_are_built_once_and_cached() -> None:
    cs = CoverSet()
    for i in range(3):
        S.seal(payload(10, i), covers=cs)
    threads = [
        threading.Thread(target=S.seal, args=(payload(300_000, i),), kwargs={"covers": cs})
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cs.builds == 2  # 640x480 and 1600x1200, even with four threads at once


def test_cache_is_bounded() -> None:
    cs = CoverSet(cache_bytes=2 * MiB)
    S.seal(b"", covers=cs)
    S.seal(payload(300_000), covers=cs)  # 1600x1200 raw rows alone are 5.8 MB: not kept
    S.seal(b"", covers=cs)
    S.seal(payload(300_000), covers=cs)
    assert cs.builds == 3


def test_explicit_covers(covers: CoverSet) -> None:
    own = Image.new("RGB", (200, 100), (10, 200, 30))
    got = S.unseal(S.seal(b"hello", cover=own, covers=covers), covers=covers)
    assert (got.payload, got.width, got.height) == (b"hello", 200, 100)
    got = S.unseal(S.seal(b"hello", cover="1024x768", covers=covers), covers=covers)
    assert (got.width, got.height) == (1024, 768)
    for bad in ["1000x1000", "huge", "0x0", "640x480"]:
        with pytest.raises(SealError, match="cover"):
            S.seal(payload(300_000), cover=bad, covers=covers)
    with pytest.raises(SealError, match="does not fit"):
        S.seal(payload(20_000), cover=own, covers=covers)


def test_missing_cover_art_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SealError, match="no cover art"):
        CoverSet(tmp_path)
    with pytest.raises(SealError, match="no cover art"):
        CoverSet(tmp_path / "absent")


# ---- files re-saved by other tools (the Pillow path) ------------------------------------------
def test_resaved_with_filters_or_alpha_still_unseals(covers: CoverSet) -> None:
    p = payload(50_000, 5)
    arr = pixels(S.seal(p, grant=GRANT, covers=covers))
    for data in (reencode(arr), reencode(arr, "RGBA"), reencode(arr, compress_level=9)):
        rows = zlib.decompress(b"".join(d for t, d in chunks(data) if t == b"IDAT"))
        filters = set(rows[:: 1 + 640 * len(Image.open(io.BytesIO(data)).mode)][:480])
        assert filters - {0, 2}, "Pillow must have used other filters for this test to mean much"
        got = S.unseal(data, covers=covers)
        assert (got.payload, got.grant) == (p, GRANT)


def test_interlaced_and_other_kinds_refused(covers: CoverSet) -> None:
    sealed = S.seal(b"abc", covers=covers)
    parts = chunks(sealed)
    interlaced = build([(b"IHDR", parts[0][1][:12] + b"\x01"), *parts[1:]])
    with pytest.raises(SealError, match="interlaced"):
        S.unseal(interlaced, covers=covers)
    with pytest.raises(SealError, match="8-bit RGB"):
        S.unseal(reencode(pixels(sealed), "L"), covers=covers)


# ---- bad input (TI-4, TI-5) --------------------------------------------------------------------
def flip(sealed: bytes, sample: int) -> bytes:
    arr = pixels(sealed).reshape(-1)
    arr[sample] ^= 1
    return reencode(arr.reshape(480, 640, 3))


def test_flipped_bits_are_detected(covers: CoverSet) -> None:
    sealed = S.seal(payload(100_000, 6), grant=GRANT, covers=covers)
    cases = {
        0: "no Veilshare header",
        40: "header checksum",
        200: "header checksum",
        S.HEADER_SAMPLES - 1: "header checksum",
        S.HEADER_SAMPLES: "payload checksum",
        S.HEADER_SAMPLES + 4 * 99_999 + 3: "payload checksum",
    }
    for sample, reason in cases.items():
        with pytest.raises(SealError, match=reason):
            S.unseal(flip(sealed, sample), covers=covers)


def with_header(sealed: bytes, length: int) -> bytes:
    """The sealed image with a header (valid checksum) that claims `length` payload bytes."""
    head = S._header_bytes(2, length, b"\0" * 32, None)
    arr = pixels(sealed).reshape(-1).astype(np.uint8)
    fresh = np.empty(S.HEADER_SAMPLES, dtype=np.uint8)
    S.pack(np.frombuffer(head, dtype=np.uint8), 2, fresh)
    arr[: S.HEADER_SAMPLES] = arr[: S.HEADER_SAMPLES] & 0xFC | fresh
    return reencode(arr.reshape(480, 640, 3))


def test_header_claims_are_checked_before_reading(covers: CoverSet) -> None:
    sealed = S.seal(b"tiny", covers=covers)
    with pytest.raises(SealError, match="over the limit"):
        S.unseal(with_header(sealed, 4 * 1024**3), covers=covers)
    with pytest.raises(SealError, match="holds at most"):
        S.unseal(with_header(sealed, 10 * MiB), covers=covers)
    with pytest.raises(SealError, match="over the limit"):
        S.seal(b"x" * 101, max_payload=100, covers=covers)


@pytest.mark.parametrize(
    "side,reason", [(6000, "no Veilshare header"), (12000, "over the limit of")]
)
def test_decompression_bombs(side: int, reason: str, covers: CoverSet) -> None:
    bomb = zero_png(side)
    assert len(bomb) < 500_000
    with pytest.raises(SealError, match=reason):
        S.unseal(bomb, covers=covers)
    errors: list[Exception] = []

    def attempt() -> None:
        try:
            S.unseal(bomb, covers=covers)
        except SealError as exc:
            errors.append(exc)

    assert peak_rss_growth(attempt) <= 32 * MiB and len(errors) == 1


def test_limit_comes_from_config(covers: CoverSet) -> None:
    small = S.max_cover_pixels(cfg(2), 4 * MiB, covers)
    big = S.max_cover_pixels(cfg(1), 64 * MiB, covers)
    assert 4 * MiB * 8 / 6 < small < 4 * MiB * 8 / 6 * 1.6
    assert 64 * MiB * 8 / 3 < big < 64 * MiB * 8 / 3 * 1.6
    with pytest.raises(SealError, match="over the limit of"):
        S.unseal(zero_png(6000), max_payload=4 * MiB, covers=covers)


def test_not_png_and_truncated(covers: CoverSet) -> None:
    sealed = S.seal(payload(100_000), covers=covers)
    parts = chunks(sealed)
    idat = [i for i, (t, _) in enumerate(parts) if t == b"IDAT"]
    cut = build(parts[: idat[1]] + [(b"IDAT", parts[idat[1]][1][:500]), (b"IEND", b"")])
    cases = {
        b"": "not a PNG",
        b"hello": "not a PNG",
        jpeg_claiming(65500, 65500): "JPEG",
        sealed[: len(sealed) // 2]: "truncated PNG",
        sealed[:20]: "truncated PNG",
        cut: "truncated PNG image data",
        build([(b"IHDR", parts[0][1]), (b"IEND", b"")]): "no image data",
        build([parts[0], (b"ABCD", b""), *parts[1:]]): "unknown critical chunk",
        sealed[:8] + sealed[16:]: "first chunk is not IHDR",
    }
    for data, reason in cases.items():
        with pytest.raises(SealError, match=reason):
            S.unseal(data, covers=covers)


def test_huge_ztxt(covers: CoverSet) -> None:
    p = payload(1000)
    sealed = S.seal(p, covers=covers)
    parts = chunks(sealed)
    bulky = (b"zTXt", b"Comment\0\0" + os.urandom(200_000))
    with pytest.raises(SealError, match="ancillary"):
        S.unseal(build([parts[0], bulky, *parts[1:]]), covers=covers)
    # 64 MB of text compressed to ~62 KB: never inflated, the payload still reads
    bomb = (b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 64_000_000, 9))
    assert len(bomb[1]) < png.ANCILLARY_MAX
    data = build([parts[0], bomb, *parts[1:]])
    got: list[bytes] = []
    assert peak_rss_growth(lambda: got.append(S.unseal(data, covers=covers).payload)) <= 32 * MiB
    assert got == [p]


def test_exotic_formats_renamed_png_never_reach_their_plugins(
    covers: CoverSet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    Image.init()
    calls: list[str] = []
    for fmt in ("PSD", "EPS", "PDF", "FITS", "JPEG2000", "DDS"):
        if fmt in Image.OPEN:  # PDF has no reader: nothing to guard
            _factory, accept = Image.OPEN[fmt]
            monkeypatch.setitem(Image.OPEN, fmt, (lambda *a, f=fmt: calls.append(f), accept))
    for fmt, data in exotic_files().items():
        (tmp_path / f"{fmt}.png").write_bytes(data)
        with pytest.raises(SealError, match="not a PNG"):
            S.unseal((tmp_path / f"{fmt}.png").read_bytes(), covers=covers)
    assert calls == []


def test_exotic_fixtures_are_real() -> None:
    # the fixtures above are files Pillow's own plugins would take (else the test proves little)
    for fmt, data in exotic_files().items():
        if fmt in ("PDF", "EPS"):  # Pillow writes these but reads PDF never, EPS via Ghostscript
            assert data[:4] in (b"%PDF", b"%!PS", b"\xc5\xd0\xd3\xc6")
            continue
        with Image.open(io.BytesIO(data)) as im:
            assert im.format in (fmt, "JPEG2000") and im.size == (16, 16)


def test_checksums_in_header_match_payload(covers: CoverSet) -> None:
    p = payload(5000)
    header = S.read_header(S.seal(p, grant=GRANT, covers=covers), covers=covers)
    assert header.checksum == hashlib.sha256(p).digest()
    assert (header.length, header.bits, header.grant) == (5000, 2, GRANT)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_mutated_files_raise_only_seal_error(edits: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(MUTATED_BASE)
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    try:
        got = S.unseal(bytes(data))
    except SealError:
        return
    assert got.payload == MUTATED_PAYLOAD  # a change the format ignores (CRC, unread tail)


MUTATED_PAYLOAD = payload(3000, 9)
MUTATED_BASE = S.seal(MUTATED_PAYLOAD, grant=GRANT)
