"""Cover tiers: choosing, scaling and caching the default images that carry sealed payloads.

Callers: codec.seal (every seal), benchmarks/seal.py. The art lives in default_images/ as
cover_<W>x<H>.png (drawn by default_images/draw.py).

Tier ladder (`CoverSet.tiers`). The first tier is the configured minimum size
(seal.min_cover_width x seal.min_cover_height); then every base file at least that big; then,
past the largest base, sizes that grow by GROWTH (x1.25 per side, x1.56 in pixels) without end.
A payload gets the smallest tier whose capacity holds it, so there is no fixed upper size but
the caller's payload limit. A tier that is not a base file is scaled (Lanczos) from the smallest
base at least as big, else from the largest one, a strip of rows at a time.

Memory (benchmarks/memory.py). A tier of at most `raw_tier_bytes` (RAW_TIER_BYTES, 16 MiB) of
rows keeps them raw (the tiers of small images and photos, up to 2500x1875: the fastest seal). A
bigger tier is *compact*: it is made strip by strip (a base file copied, or scaled from its box
of the base, Lanczos, STRIP_BYTES of rows at a time), each band compressed as its rows arrive,
and only the bands are kept; a seal inflates the bands that hold its rows, one slice at a time
(`Prepared.masked`). The bands are the rows with their low bits cleared, exactly what the seal
ORs the payload into, so both paths give the same file (tests/test_cover_bands.py). The largest
accepted image (31.4 MiB) gets the 9535x7152 tier: 195 MiB of raw rows, 2 MiB of bands. The
payload's samples are packed one slice of rows at a time (`Prepared.encode` takes a function of
the row range), and the file is written into one buffer as its pieces come (`png.assemble`), so
a seal holds the payload, the file, and a few MiB of slices.

Cache. Scaling costs 70-250 ms, so it is done once per tier and kept: `Prepared` holds, for one
number of cleared low bits, the cover's raw rows (filter byte 0 at the head of each row) or
none (compact), and the rows cut in bands (`band_tops`: about FIRST_BAND_BYTES at the top, each
next band twice as big up to BAND_BYTES), each compressed on its own
(filter None, LZ77) at TAIL_LEVEL (6: within 5% of level 9's size at a third of its time on
this art). A raw tier compresses a band the first time a seal needs it, or, for the bands a
payload of that tier can use, all at once when a node warms the tier at start
(`codec.seal.warm`); a compact tier has them all from its build (1.5 s for the largest). A
seal compresses only its own rows (and the rest of their band) and reuses the cached bands after
them, Adler-32 included. Small bands at the top keep that rest small: a 4 KB seal compresses its
18 rows and 6 more (24 rows, 46 KB), not the 68 of one 128 KiB band. The header's unused grant
room is samples of 0, so those rows are cover rows and are compressed as such (filter None, LZ77),
not Huffman-coded with the payload: with both, the 4 KB seal went from 0.79-1.06 ms to 0.57-0.60
ms and its file from 21.9 to 18.7 KB (`python -m benchmarks.seal`, old and new in turn).
The cache is an LRU bounded by `cache_bytes` (default 512 MiB); a tier bigger than that is built
for one use and dropped. Thread-safe: the node's encoder pool seals from several threads; one
tier is never built twice at once.

Parallel deflate. A payload of more than PIECE_BYTES of rows is compressed in pieces of that
size, each an independent deflate run (filter Up continued from the row above it), on the
deflate threads of codec.png (zlib and numpy release the GIL), and so are the bands a seal or a
warm-up compresses. A 1.66 MB photo, with a second core free: 39 ms instead of 67 ms of wall
time (best of 8), the same ~57 ms of CPU; with both cores busy, no gain. Smaller seals stay on
the calling thread. The piece size, not the thread count, decides the file's bytes.
"""

from __future__ import annotations

import bisect
import itertools
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from codec import heap, png
from codec.errors import SealError

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "default_images"
GROWTH = 1.25
BAND_BYTES = 128 * 1024
FIRST_BAND_BYTES = 16 * 1024  # the first band's size; each next one is twice as big, to BAND_BYTES
SLICE_BYTES = 1024 * 1024  # rows handed to zlib at a time when sealing
PIECE_BYTES = 2 * 1024 * 1024  # payload rows compressed as one piece (pieces run in parallel)
TAIL_LEVEL = 6
RAW_TIER_BYTES = 16 * 1024 * 1024  # bigger tiers are kept as compressed bands only
_FILE_RE = re.compile(r"cover_([1-9][0-9]{0,4})x([1-9][0-9]{0,4})\.png")
_BASE_MAX_PIXELS = 16_000_000


@dataclass(slots=True)
class Prepared:
    """One tier ready to seal: raw cover rows plus the tail bands cached with `clear_bits` low
    bits cleared (the sealer's max(bits, header bits))."""

    width: int
    height: int
    clear_bits: int
    rows: np.ndarray | None  # (height, 1 + 3*width) uint8, column 0 zero; None: compact tier
    tops: tuple[int, ...]  # band i is rows tops[i]..tops[i + 1] (band_tops)
    tail_level: int
    bands: list[png.Piece | None] = field(default_factory=list)  # compressed on first use
    nbytes: int = 0
    fill_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def samples(self) -> int:
        return 3 * self.width * self.height

    def keep_mask(self) -> np.uint8:
        return np.uint8(0xFF ^ ((1 << self.clear_bits) - 1))

    def band_of(self, row: int) -> int:
        """The band that holds `row` (0 <= row < height)."""
        return bisect.bisect_right(self.tops, row) - 1

    def masked(self, r0: int, r1: int) -> np.ndarray:
        """Cover rows r0..r1 with their low `clear_bits` cleared, as a new (r1 - r0, 1 + 3*width)
        uint8 array: cut from the raw rows, or, for a compact tier, inflated from the cached
        bands that hold them (the bands are exactly these masked rows, filter None)."""
        if self.rows is not None:
            return self.rows[r0:r1] & self.keep_mask()
        out = np.empty((r1 - r0, 1 + 3 * self.width), dtype=np.uint8)
        for i in range(self.band_of(r0), self.band_of(r1 - 1) + 1):
            top = self.tops[i]
            lo, hi = max(r0, top), min(r1, self.tops[i + 1])
            out[lo - r0 : hi - r0] = self._inflate(i)[lo - top : hi - top]
        return out

    def _inflate(self, i: int) -> np.ndarray:
        """The raw rows of cached band i of a compact tier."""
        piece = self.bands[i]
        if piece is None:  # never: a compact tier is built with every band
            raise SealError("internal error: a band of a compact cover tier is missing")
        dec = zlib.decompressobj(-15)
        raw = b"".join([dec.decompress(part) for part in piece.idat[1::3]])
        if len(raw) != piece.length:
            raise SealError("internal error: a band of a compact cover tier does not inflate")
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 1 + 3 * self.width)

    def encode(
        self,
        samples: Callable[[int, int], np.ndarray],
        used: int,
        level: int,
        blank: tuple[int, int] = (0, 0),
    ) -> bytes:
        """The sealed PNG: the first `used` rows get `samples(r0, r1)` ((r1 - r0, 3*width) uint8,
        each < 2**clear_bits, made one slice at a time so the whole stream never exists at once)
        OR-ed into the cover's cleared low bits. Those rows are compressed now at zlib `level`
        (filter Up, Huffman-only), in pieces of about PIECE_BYTES compressed at once on several
        threads (codec.png.compress_pieces; `samples` must be safe to call from them), then the
        cover rows up to the end of that band (filter None, LZ77); the cached bands follow.
        `blank`: rows r0..r1 among the first `used` whose samples are all zero (the unused
        grant room of the header): they are cover rows, compressed as such (filter None, LZ77,
        about 5x faster there than Huffman coding and ~15x smaller). Any range gives the same
        pixels; only the compression of those rows depends on it."""
        nband = self.band_of(used - 1) + 1
        stride = 1 + 3 * self.width

        def slices(start: int, stop: int) -> Iterator[np.ndarray]:
            for r0 in range(start, stop, max(1, SLICE_BYTES // stride)):
                part = self.masked(r0, min(stop, r0 + max(1, SLICE_BYTES // stride)))
                if r0 < used:
                    part[:, 1:] |= samples(r0, r0 + len(part))
                yield part

        def payload(start: int, stop: int) -> Callable[[], png.Piece]:
            if start == 0:
                above = None
            else:
                above = self.masked(start - 1, start)[0, 1:] | samples(start - 1, start)[0]
            return lambda: png.compress_rows(slices(start, stop), level, up=True, prev=above)

        def cover(start: int, stop: int) -> Callable[[], png.Piece]:
            return lambda: png.compress_rows(slices(start, stop), level, up=False)

        step = max(1, PIECE_BYTES // stride)

        def payload_pieces(start: int, stop: int) -> list[Callable[[], png.Piece]]:
            return [payload(r0, min(stop, r0 + step)) for r0 in range(start, stop, step)]

        b0, b1 = max(0, blank[0]), min(used, blank[1])
        if b1 <= b0:  # no blank rows
            b0 = b1 = 0
        # rows 0..b0, the blank rows b0..b1, then b1..used
        jobs = [*payload_pieces(0, b0), *([cover(b0, b1)] if b1 > b0 else []),
                *payload_pieces(b1, used)]
        parallel = used > step  # a payload under PIECE_BYTES is sealed on the caller's thread
        fresh_end = self.tops[nband]
        if fresh_end > used:
            jobs.append(cover(used, fresh_end))
        pieces = png.stream_pieces(jobs, parallel)  # written out one by one as they come
        rest = self._bands_after(nband)  # taken once the pieces are out
        return png.assemble(self.width, self.height, itertools.chain(pieces, rest))

    def _bands_after(self, first: int) -> Iterator[png.Piece]:
        yield from self._bands_from(first)

    def warm_bands(self, samples: int = 0) -> None:
        """Compress now (a node warming its covers at start) every cached band that a seal of
        more than `samples` channel samples may use, so that no such seal compresses a cover
        band. A tier's smallest seal is one sample more than the tier below it holds."""
        row = samples // (3 * self.width)
        self._bands_from(self.band_of(row) if row < self.height else len(self.bands))

    def _bands_from(self, first: int) -> list[png.Piece]:
        """Cached bands first.. (those never used before are compressed now, on the deflate
        threads, by one thread at a time: a seal that needs bands while the warm-up compresses
        them waits for them instead of compressing them a second time)."""

        def band(i: int) -> Callable[[], png.Piece]:
            rows = (self.tops[i], self.tops[i + 1])
            return lambda: png.compress_rows([self.masked(*rows)], self.tail_level, up=False)

        if any(b is None for b in self.bands[first:]):
            with self.fill_lock:
                missing = [i for i in range(first, len(self.bands)) if self.bands[i] is None]
                pieces = png.compress_pieces([band(i) for i in missing])
                for i, piece in zip(missing, pieces, strict=True):
                    self.bands[i] = piece
        out = self.bands[first:]
        if any(b is None for b in out):  # never: each missing band was filled just above
            raise SealError("internal error: a cover band was not compressed")
        return cast(list[png.Piece], out)


def _prepare(
    rows: np.ndarray, width: int, height: int, clear_bits: int, tail_level: int
) -> Prepared:
    tops = band_tops(height, rows.shape[1])
    bands: list[png.Piece | None] = [None] * (len(tops) - 1)
    # compressed flat cover bands are a few % of the raw rows: count them at 1/8
    return Prepared(
        width,
        height,
        clear_bits,
        rows,
        tops,
        tail_level,
        bands,
        rows.nbytes + rows.nbytes // 8,
    )


def _compact(
    strips: Iterator[np.ndarray], width: int, height: int, clear_bits: int, tail_level: int
) -> Prepared:
    """A compact tier: every band compressed as the rows arrive strip by strip (on the deflate
    threads), no raw rows kept. The bands are the same bytes `_prepare`'s tier would compress."""
    stride = 1 + 3 * width
    tops = band_tops(height, stride)
    keep = np.uint8(0xFF ^ ((1 << clear_bits) - 1))
    bands: list[png.Piece | None] = []
    carry = np.empty((0, stride), dtype=np.uint8)
    for strip in strips:
        rows = np.concatenate([carry, strip]) if len(carry) else strip
        cut, at = [], 0
        for i in range(len(bands), len(tops) - 1):  # the whole bands these rows complete
            n = tops[i + 1] - tops[i]
            if n > len(rows) - at:
                break
            cut.append(rows[at : at + n])
            at += n
        if cut:
            bands += png.compress_pieces([_band_job(c, keep, tail_level) for c in cut])
        carry = rows[at:].copy()
    if len(carry) or len(bands) != len(tops) - 1:
        raise SealError(f"internal error: a {width}x{height} cover tier has {len(bands)} bands")
    nbytes = sum(len(part) for piece in bands if piece for part in piece.idat)
    return Prepared(width, height, clear_bits, None, tops, tail_level, bands, nbytes)


def band_tops(height: int, stride: int) -> tuple[int, ...]:
    """The first row of each band of a tier with `height` rows of `stride` bytes, and `height`
    at the end: the first band about FIRST_BAND_BYTES of rows, each next one twice as big up to
    BAND_BYTES (at least a row each). A seal compresses the rest of the band its payload ends in,
    which is then never much more than the payload's own rows (a 4 KB seal: 6 rows, not 50),
    while a big tier keeps few bands."""
    tops, size = [0], FIRST_BAND_BYTES
    while tops[-1] < height:
        tops.append(min(height, tops[-1] + max(1, size // stride)))
        size = min(BAND_BYTES, 2 * size)
    return tuple(tops)


def _band_job(rows: np.ndarray, keep: np.uint8, level: int) -> Callable[[], png.Piece]:
    return lambda: png.compress_rows([rows & keep], level, up=False)


STRIP_BYTES = 8 * 1024 * 1024  # a tier is made (copied or scaled) this many bytes at a time


def _image_strips(image: Image.Image) -> Iterator[np.ndarray]:
    """An RGB image as PNG raw rows with filter byte 0, (rows, 1 + 3*width) uint8, in strips of
    about STRIP_BYTES (a whole-image numpy copy, and an RGB conversion of an image that is RGB
    already, each doubled the peak memory of preparing a large tier: benchmarks/memory.py)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    step = max(1, STRIP_BYTES // (3 * w))
    for y in range(0, h, step):
        strip = np.asarray(image.crop((0, y, w, min(h, y + step))))
        rows = np.zeros((len(strip), 1 + 3 * w), dtype=np.uint8)
        rows[:, 1:] = strip.reshape(len(strip), 3 * w)
        yield rows


def _scaled_strips(source: Image.Image, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """`source` scaled to `size` (Lanczos) as raw rows, a strip of about STRIP_BYTES of output
    rows at a time, each from its box of the source: no full-size scaled image ever exists (for
    the largest tier that image was 273 MB: benchmarks/memory.py). The strips are cut at the
    same rows whatever the caller keeps of them, so the tier's pixels never depend on it."""
    w, h = size
    scale = source.height / h
    step = max(1, STRIP_BYTES // (3 * w))
    for y in range(0, h, step):
        y1 = min(h, y + step)
        box = (0.0, y * scale, float(source.width), y1 * scale)
        strip = np.asarray(source.resize((w, y1 - y), Image.Resampling.LANCZOS, box=box))
        rows = np.zeros((y1 - y, 1 + 3 * w), dtype=np.uint8)
        rows[:, 1:] = strip.reshape(y1 - y, 3 * w)
        yield rows


def _gather(strips: Iterator[np.ndarray], width: int, height: int) -> np.ndarray:
    """The strips written into one (height, 1 + 3*width) array, the only full-size copy."""
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    y = 0
    for strip in strips:
        rows[y : y + len(strip)] = strip
        y += len(strip)
    return rows


def raw_rows(image: Image.Image) -> np.ndarray:
    """An RGB image as PNG raw rows with filter byte 0: (height, 1 + 3*width) uint8."""
    return _gather(_image_strips(image), image.width, image.height)


def prepare_image(image: Image.Image, clear_bits: int, tail_level: int) -> Prepared:
    """A caller-supplied cover (not cached)."""
    return _prepare(raw_rows(image), image.width, image.height, clear_bits, tail_level)


class CoverSet:
    """The tier ladder over one directory of base covers, with the LRU cache of prepared tiers."""

    def __init__(
        self,
        directory: Path = DEFAULT_DIR,
        cache_bytes: int = 512 * 1024 * 1024,
        tail_level: int = TAIL_LEVEL,
        raw_tier_bytes: int = RAW_TIER_BYTES,
    ) -> None:
        """`raw_tier_bytes`: tiers with at most this many bytes of rows keep them raw (fast to
        seal), bigger ones are kept compact (see the module docstring)."""
        self.directory = directory
        self.raw_tier_bytes = raw_tier_bytes
        self.cache_bytes = cache_bytes
        self.tail_level = tail_level
        self.bases = self._scan(directory)
        self._lock = threading.Lock()
        self._building: dict[tuple[int, int, int], threading.Lock] = {}
        self._cache: OrderedDict[tuple[int, int, int], Prepared] = OrderedDict()
        self.builds = 0  # tiers prepared so far (tests check that the cache works)

    @staticmethod
    def _scan(directory: Path) -> tuple[tuple[int, int], ...]:
        try:
            names = [p.name for p in directory.iterdir()]
        except OSError as exc:
            raise SealError(f"no cover art: cannot list {directory} ({exc.strerror})") from None
        sizes = sorted((int(m[1]), int(m[2])) for n in names if (m := _FILE_RE.fullmatch(n)))
        if not sizes:
            raise SealError(f"no cover art: no cover_<W>x<H>.png in {directory}")
        return tuple(sorted(sizes, key=lambda s: (s[0] * s[1], s)))

    def tiers(self, min_width: int, min_height: int) -> Iterator[tuple[int, int]]:
        """The ladder, smallest first, without end (see the module docstring)."""
        current = (min_width, min_height)
        yield current
        for size in self.bases:
            if (
                size[0] >= min_width
                and size[1] >= min_height
                and size[0] * size[1] > (current[0] * current[1])
            ):
                current = size
                yield current
        while True:
            current = (round(current[0] * GROWTH), round(current[1] * GROWTH))
            yield current

    def pick(self, samples: int, min_width: int, min_height: int) -> tuple[int, int]:
        """The smallest tier with at least `samples` channel samples."""
        return self.pick_with_below(samples, min_width, min_height)[0]

    def pick_with_below(
        self, samples: int, min_width: int, min_height: int
    ) -> tuple[tuple[int, int], int]:
        """`pick`, and the channel samples of the tier below it (0 for the first tier): a
        payload gets this tier only when it needs more than those."""
        below = 0
        for w, h in self.tiers(min_width, min_height):
            if 3 * w * h >= samples:
                return (w, h), below
            below = 3 * w * h
        raise AssertionError("unreachable: the ladder has no end")

    def prepared(self, size: tuple[int, int], clear_bits: int) -> Prepared:
        """The tier `size` with `clear_bits` cleared, from the cache or built now (once)."""
        key = (size[0], size[1], clear_bits)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None:
                return hit
            prep = self.build(size, clear_bits)
            with self._lock:
                self.builds += 1
                self._building.pop(key, None)
                if prep.nbytes <= self.cache_bytes:
                    self._cache[key] = prep
                    self._evict()
            return prep

    def _evict(self) -> None:
        total = sum(p.nbytes for p in self._cache.values())
        while total > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            total -= old.nbytes

    def load_base(self, size: tuple[int, int]) -> Image.Image:
        """One base file, checked to be the PNG of the size its name says."""
        path = self.directory / f"cover_{size[0]}x{size[1]}.png"
        try:
            with Image.open(path, formats=["PNG"]) as im:
                if im.size != size or size[0] * size[1] > _BASE_MAX_PIXELS:
                    raise SealError(f"cover {path} is {im.size[0]}x{im.size[1]}, not as named")
                return im.convert("RGB")
        except (OSError, ValueError, SyntaxError) as exc:
            if isinstance(exc, SealError):
                raise
            raise SealError(f"cover {path} cannot be read ({exc})") from None

    def tier_strips(self, size: tuple[int, int]) -> Iterator[np.ndarray]:
        """The cover at `size` as PNG raw rows, strip by strip: a base file, or the smallest
        base at least as big (else the largest) scaled to it (`_scaled_strips`)."""
        if size in self.bases:
            return _image_strips(self.load_base(size))
        bigger = [b for b in self.bases if b[0] >= size[0] and b[1] >= size[1]]
        return _scaled_strips(self.load_base(bigger[0] if bigger else self.bases[-1]), size)

    def tier_rows(self, size: tuple[int, int]) -> np.ndarray:
        """The cover at `size` as one array of PNG raw rows (`raw_rows`)."""
        return _gather(self.tier_strips(size), *size)

    def build(self, size: tuple[int, int], clear_bits: int) -> Prepared:
        """Tier `size` prepared now, uncached: raw rows up to `raw_tier_bytes`, else compact."""
        w, h = size
        if (1 + 3 * w) * h <= self.raw_tier_bytes:
            return _prepare(self.tier_rows(size), w, h, clear_bits, self.tail_level)
        prep = _compact(self.tier_strips(size), w, h, clear_bits, self.tail_level)
        heap.trim()  # the strips' heap holes, pinned by the bands just made (codec.heap)
        return prep
