"""Compact cover tiers (codec.covers, issue 15 item 4: a node's memory for one request): a tier
bigger than `raw_tier_bytes` is kept only as its compressed bands and its rows are inflated band
by band when a seal needs them. Sealing through such a tier gives the same bytes as the whole-
image path (raw rows), which gives the same bytes as the code before compact tiers."""

from __future__ import annotations

import hashlib
import io
import itertools
import random

import numpy as np
import pytest
from PIL import Image

from codec import covers as C
from codec import png
from codec import seal as S
from codec.covers import CoverSet, band_tops
from config import SealConfig, TransportConfig

pytestmark = pytest.mark.timeout(300)
GRANT = S.Grant("alice", "bob", "pic.jpg", 3)
_TOPS = band_tops(480, 1 + 3 * 640)  # the bands of the 640x480 tier
_TWO_BANDS = (_TOPS[2] * 3 * 640 - S.HEADER_SAMPLES) // 4  # payload rows end on a band edge

# (payload bytes, sha256 prefix of the sealed PNG, sha256 prefix of its decoded RGB pixels), bits
# 2. The pixels are those the code from 31356e7 (before compact tiers) to 16104c1 made; the file
# bytes changed once since, with the band ladder and the blank header rows (smaller files).
GOLDEN = [
    (4096, "d624d6e69c6cefee", "1a400e0c31c0a052"),
    (_TWO_BANDS, "7f0bf7dc23662753", "82065d2bfd5a6078"),
    (_TWO_BANDS + 1, "dcdb9d072fcfa113", "6dd0371a9ba34b74"),
    (S.capacity(640, 480, 2), "f1be7ef5e01a82ae", "f8d91eebdf8216ba"),  # the first tier, full
    (S.capacity(640, 480, 2) + 1, "8ea01ccc8d91b5a3", "929cdca9d5499b72"),  # the second, 1 B in
    (S.capacity(1024, 768, 2), "4cf2dd2c55f6a8e1", "2cfd9ca11b4098a3"),
    (S.capacity(1024, 768, 2) + 1, "2f76d25a3e2480c6", "6b85659c95e839af"),  # 1600x1200, parallel
    (S.capacity(1600, 1200, 2) + 1, "960433224073ef3f", "f42a9f2090769913"),  # 2000x1500: scaled
]


@pytest.fixture(scope="module")
def raw() -> CoverSet:
    return CoverSet(raw_tier_bytes=1 << 40)


@pytest.fixture(scope="module")
def compact() -> CoverSet:
    return CoverSet(raw_tier_bytes=0)


@pytest.mark.parametrize(("n", "digest", "pixels"), GOLDEN)
def test_band_path_gives_the_bytes_of_the_whole_image_path(
    n: int, digest: str, pixels: str, raw: CoverSet, compact: CoverSet
) -> None:
    data = random.Random(n).randbytes(n)
    whole = S.seal(data, grant=GRANT, covers=raw)
    bands = S.seal(data, grant=GRANT, covers=compact)
    assert bands == whole
    assert hashlib.sha256(whole).hexdigest()[:16] == digest
    with Image.open(io.BytesIO(whole), formats=["PNG"]) as im:  # another decoder than ours
        decoded = np.asarray(im.convert("RGB"))
    assert hashlib.sha256(decoded.tobytes()).hexdigest()[:16] == pixels
    got = S.unseal(bands, covers=compact)
    assert (got.payload, got.grant) == (data, GRANT)
    need = S.HEADER_SAMPLES + S.payload_samples(n, 2)
    tier = compact.pick(need, 640, 480)
    assert compact.prepared(tier, 2).rows is None  # it really went through the bands
    assert raw.prepared(tier, 2).rows is not None


@pytest.mark.parametrize("bits", [1, 3, 4])
def test_band_path_at_other_bits_per_channel(bits: int, raw: CoverSet, compact: CoverSet) -> None:
    c = SealConfig(bits_per_channel=bits)
    for n in (S.capacity(640, 480, bits), S.capacity(640, 480, bits) + 1):
        data = random.Random(n).randbytes(n)
        assert S.seal(data, cfg=c, covers=compact) == S.seal(data, cfg=c, covers=raw)


def test_a_compact_tier_holds_the_masked_rows_of_the_raw_one(compact: CoverSet) -> None:
    """Every row range, across band edges, inflates to the raw tier's rows with the low bits
    cleared; the tier is kept in a small fraction of their size."""
    size = (2000, 1500)  # scaled from 1600x1200, strip by strip in both paths
    rows = compact.tier_rows(size)
    prep = compact.prepared(size, 2)
    assert prep.rows is None and prep.nbytes < rows.nbytes // 10
    masked = rows & np.uint8(0xFC)
    assert np.array_equal(prep.masked(0, size[1]), masked)
    t = prep.tops
    assert t[0] == 0 and t[-1] == size[1] and len(t) == len(prep.bands) + 1
    edges = [(0, 1), (t[1] - 1, t[1] + 1), (t[1], t[2]), (3, t[5] + 7), (t[-2] - 1, t[-2] + 1)]
    for r0, r1 in [*edges, (size[1] - 1, size[1])]:
        assert np.array_equal(prep.masked(r0, r1), masked[r0:r1])


def test_streamed_pieces_are_the_listed_pieces_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    parts = [rng.integers(0, 256, (40, 1 + 300), dtype=np.uint8) for _ in range(6)]
    jobs = [lambda p=p: png.compress_rows([p], 1, up=True) for p in parts]
    listed = png.compress_pieces(jobs)
    streamed = list(png.stream_pieces(jobs))
    assert [(p.idat, p.adler, p.length) for p in streamed] == [
        (p.idat, p.adler, p.length) for p in listed
    ]
    joined = png.assemble(100, 240, listed)
    assert png.assemble(100, 240, iter(streamed)) == joined
    monkeypatch.setattr(png, "STREAM_MIN_BYTES", 0)  # the large-file path: one buffer, no join
    assert png.assemble(100, 240, iter(streamed)) == joined
    assert len(joined) < png.size_bound(100, 240)


def test_the_largest_accepted_image_seals_through_a_compact_tier() -> None:
    """The tier of the largest accepted image (9535x7152, 195 MiB of raw rows) is cached as a
    few MiB of bands, and a seal through it unseals to the payload."""
    cfg, limit = SealConfig(), TransportConfig().max_message
    n = S.max_image_bytes(cfg, limit)
    covers = CoverSet()
    data = random.Random(7).randbytes(n)
    sealed = S.seal(data, covers=covers, max_payload=limit)
    assert len(sealed) <= limit - S.REPLY_OVERHEAD
    (prep,) = covers._cache.values()
    assert (prep.width, prep.height, prep.rows) == (9535, 7152, None)
    assert prep.nbytes < 8 * 1024 * 1024
    assert S.unseal(sealed, covers=covers, max_payload=limit).payload == data


@pytest.mark.parametrize(("height", "stride"), [(480, 1921), (1500, 6001), (7152, 28606), (3, 10)])
def test_bands_start_small_and_double_up_to_band_bytes(height: int, stride: int) -> None:
    """The band ladder: about FIRST_BAND_BYTES first, each next band twice as big until
    BAND_BYTES, at least one row each, and together exactly the tier's rows."""
    t = band_tops(height, stride)
    assert t[0] == 0 and t[-1] == height
    sizes = [b - a for a, b in itertools.pairwise(t)]
    assert all(s >= 1 for s in sizes)
    for i, rows in enumerate(sizes[:-1]):  # the last one ends at the height
        assert rows == max(1, min(C.BAND_BYTES, C.FIRST_BAND_BYTES << i) // stride)
    assert 0 < sizes[-1] <= max(1, C.BAND_BYTES // stride)


def test_a_small_seal_compresses_its_rows_and_the_rest_of_a_small_band(
    raw: CoverSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4 KB seal on a warmed tier compresses its own rows and the rest of the band they end
    in: less than twice its rows (a 128 KiB band would be 68 rows against its 18)."""
    data = random.Random(1).randbytes(4096)
    S.seal(data, covers=raw)  # the tier and its bands are ready
    prep = raw.prepared((640, 480), 2)
    used = -(-(S.HEADER_SAMPLES + S.payload_samples(4096, 2)) // (3 * 640))
    rows: list[int] = []
    real = png.compress_rows

    def counting(slices, level, *, up, prev=None):  # type: ignore[no-untyped-def]
        parts = list(slices)
        rows.append(sum(len(p) for p in parts))
        return real(iter(parts), level, up=up, prev=prev)

    monkeypatch.setattr(png, "compress_rows", counting)
    sealed = S.seal(data, covers=raw)
    assert sum(rows) == prep.tops[prep.band_of(used - 1) + 1] < 2 * used
    assert S.unseal(sealed, covers=raw).payload == data


@pytest.mark.parametrize("blank", [(0, 0), (1, 8), (0, 12), (3, 12), (5, 2), (-4, 99)])
def test_the_blank_rows_change_the_compression_never_the_pixels(
    blank: tuple[int, int], raw: CoverSet
) -> None:
    """`Prepared.encode`'s blank range only chooses how rows are compressed: any range, even
    one whose rows carry samples, gives the same pixels."""
    prep = raw.prepared((640, 480), 2)
    rng = np.random.default_rng(4)
    stream = rng.integers(0, 4, (12, 3 * 640), dtype=np.uint8)
    stream[1:8] = 0  # what the seal calls blank: no samples there

    def samples(r0: int, r1: int) -> np.ndarray:
        return stream[r0:r1].copy()

    sealed = prep.encode(samples, 12, 1, blank)
    with Image.open(io.BytesIO(sealed), formats=["PNG"]) as im:
        got = np.asarray(im.convert("RGB")).reshape(480, 3 * 640)
    want = prep.masked(0, 480)[:, 1:]
    want[:12] |= stream
    assert np.array_equal(got, want)
    if blank == (1, 8):  # the true blank rows cost less than Huffman coding them
        assert len(sealed) < len(prep.encode(samples, 12, 1))
