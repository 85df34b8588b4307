"""Compact cover tiers (codec.covers, issue 15 item 4: a node's memory for one request): a tier
bigger than `raw_tier_bytes` is kept only as its compressed bands and its rows are inflated band
by band when a seal needs them. Sealing through such a tier gives the same bytes as the whole-
image path (raw rows), which gives the same bytes as the code before compact tiers."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from codec import png
from codec import seal as S
from codec.covers import BAND_BYTES, CoverSet
from config import SealConfig, TransportConfig

pytestmark = pytest.mark.timeout(300)
GRANT = S.Grant("alice", "bob", "pic.jpg", 3)
_BAND = BAND_BYTES // (1 + 3 * 640)  # rows per band of the 640x480 tier
_TWO_BANDS = (2 * _BAND * 3 * 640 - S.HEADER_SAMPLES) // 4  # payload rows end on a band edge

# (payload bytes, sha256 prefix of the sealed PNG made by 31356e7, before compact tiers), bits 2
GOLDEN = [
    (4096, "da50ceb74b4405ff"),
    (_TWO_BANDS, "755c820ea106e7d0"),
    (_TWO_BANDS + 1, "593ca15b39a97101"),
    (S.capacity(640, 480, 2), "55f9671f15584d90"),  # the first tier, full
    (S.capacity(640, 480, 2) + 1, "c6437f2581e748d9"),  # the second, one byte in
    (S.capacity(1024, 768, 2), "564fc3230ca78350"),
    (S.capacity(1024, 768, 2) + 1, "b411816a419af509"),  # 1600x1200, in parallel pieces
    (S.capacity(1600, 1200, 2) + 1, "b77fdc87e47e58b7"),  # 2000x1500: a scaled tier
]


@pytest.fixture(scope="module")
def raw() -> CoverSet:
    return CoverSet(raw_tier_bytes=1 << 40)


@pytest.fixture(scope="module")
def compact() -> CoverSet:
    return CoverSet(raw_tier_bytes=0)


@pytest.mark.parametrize(("n", "digest"), GOLDEN)
def test_band_path_gives_the_bytes_of_the_whole_image_path(
    n: int, digest: str, raw: CoverSet, compact: CoverSet
) -> None:
    data = random.Random(n).randbytes(n)
    whole = S.seal(data, grant=GRANT, covers=raw)
    bands = S.seal(data, grant=GRANT, covers=compact)
    assert bands == whole
    assert hashlib.sha256(whole).hexdigest()[:16] == digest
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
    b = prep.band_rows
    for r0, r1 in [(0, 1), (b - 1, b + 1), (b, 2 * b), (3, 5 * b + 7), (size[1] - 1, size[1])]:
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
