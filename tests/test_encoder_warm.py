"""The node's encoder pool warms its covers at start (actors/node/encrypt_actor.WARM_SIZES): the
first photo-sized and the first small seal after a start find their tier built and every cover
band of it compressed, so they pay only for their own rows (issue 19)."""

from __future__ import annotations

import queue
import time

import pytest

import config
from actors.node.encoder import EncoderPool, Sealed
from actors.node.encrypt_actor import WARM_SIZES
from codec import seal

pytestmark = pytest.mark.timeout(120)
PHOTO = 1_945_177  # benchmarks.cloud.photo_jpeg(): the "1.9 MB photo" of the benchmark


def test_a_request_right_after_start_does_not_queue_behind_the_warm_up() -> None:
    """The first encoder warms the covers at start; the least busy encoder takes a job, and
    among equally idle ones the last, so the first request is sealed beside the warm-up."""
    cfg = config.load()
    out: queue.Queue[Sealed] = queue.Queue()
    pool = EncoderPool(2, cfg.seal, cfg.transport.max_message, out.put, warm=WARM_SIZES)
    try:
        pool.submit("first", b"f" * 4800)
        assert pool._where == {"first": 1}
        pool.submit("second", b"s" * 4800)  # encoder 1 has one in flight: encoder 0 now
        assert pool._where == {"first": 1, "second": 0}
        assert {out.get(timeout=60).rid, out.get(timeout=60).rid} == {"first", "second"}
    finally:
        pool.stop()


def test_first_seals_after_start_hit_the_warmed_covers() -> None:
    cfg = config.load()
    out: queue.Queue[Sealed] = queue.Queue()
    pool = EncoderPool(2, cfg.seal, cfg.transport.max_message, out.put, warm=WARM_SIZES)
    try:
        covers = pool.covers
        clear = max(cfg.seal.bits_per_channel, seal.HEADER_BITS)
        tiers, firsts = [], []  # the tiers, and the first band a seal in each may use
        for size in (4800, PHOTO):
            need = seal.HEADER_SAMPLES + seal.payload_samples(size, cfg.seal.bits_per_channel)
            tier, below = covers.pick_with_below(
                need, cfg.seal.min_cover_width, cfg.seal.min_cover_height
            )
            tiers.append(tier)
            firsts.append(below // (3 * tier[0]))
        deadline = time.monotonic() + 60  # warming runs on the first encoder's thread
        while time.monotonic() < deadline and covers.builds < len(WARM_SIZES):
            time.sleep(0.01)
        assert covers.builds == len(WARM_SIZES)
        preps = [covers.prepared(t, clear) for t in tiers]

        def warmed_up() -> bool:
            return all(
                b is not None
                for p, row in zip(preps, firsts, strict=True)
                for b in p.bands[p.band_of(row) :]
            )

        while time.monotonic() < deadline and not warmed_up():
            time.sleep(0.01)
        assert warmed_up()
        warmed = [list(p.bands) for p in preps]
        pool.submit("photo", bytes(range(256)) * (PHOTO // 256))
        pool.submit("small", b"s" * 4800)
        assert pool._where == {"photo": 1, "small": 0}
        results = [out.get(timeout=60), out.get(timeout=60)]
        assert all(r.png is not None and r.error is None for r in results)
        assert covers.builds == len(WARM_SIZES)  # no tier built for the requests
        for p, bands in zip(preps, warmed, strict=True):
            assert all(a is b for a, b in zip(bands, p.bands, strict=True))  # bands reused
    finally:
        pool.stop()
