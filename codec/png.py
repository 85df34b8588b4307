"""The PNG layer of sealed images: a fast writer for our own files and a bounded reader for any PNG.

Callers: codec.covers (writes sealed PNGs from a prepared cover), codec.seal (reads them back).

Writer. A sealed PNG is 8-bit RGB, not interlaced. Its zlib stream is cut into `Piece`s, each a
raw deflate stream of whole rows ended by a sync flush, so pieces are compressed on their own and
the cover rows after a payload can be cached (codec.covers):
  IDAT(78 01) [payload rows] [rest of their band] [cached cover bands ...] IDAT(03 00 + adler32)
that is a zlib header, non-final deflate blocks, one final empty block and the Adler-32 of all
rows, combined from per-piece checksums (`adler32_combine`) so cached rows are never re-read.
Pieces are independent, so `compress_pieces` compresses several at once on a small thread pool.

Choice of filter, strategy and level (`python -m benchmarks.seal --compare`: the 7.6 MB of rows
that carry a 1.9 MB JPEG at 2 bits per channel, 2000x1500 tier, on the 2-core reference machine):
  Pillow's encoder (adaptive filters), level 1      261 ms   3.31 MB   (level 6: ~5x slower)
  zlib level 0 (stored)                               2 ms   7.56 MB   (4x the payload)
  filter None, level 1, default strategy            103 ms   3.29 MB   (level 6: ~10x slower)
  filter None, Huffman-only                          65 ms   4.20 MB
  filter Up, level 1, default strategy              103 ms   3.36 MB
  filter Up, Huffman-only                            65 ms   2.78 MB   <- payload rows
Payload rows carry random low bits under a flat cover: LZ77 finds almost no matches there, so
its search is wasted time and its short matches waste bits; filter Up (each byte minus the one
above, one numpy subtraction) turns a flat area into 7 small values that Huffman coding alone
packs in under 3 bits per byte. So payload rows use Up + Z_HUFFMAN_ONLY, for which zlib's level
only matters as 0 (store: fastest, 4x larger) or not. Cover rows without payload use filter None
and LZ77, where long matches shrink a flat band ~100x: at seal.zlib_level (default 1, the
fastest that still finds them) for the rest of the payload's band, at TAIL_LEVEL for the bands
codec.covers caches.

Reader. `parse` walks the chunks with limits before anything is decoded: the signature, IHDR
(8-bit RGB or RGBA, no interlace), the pixel count against the caller's limit, truncation, unknown
critical chunks, and at most ANCILLARY_MAX bytes of ancillary chunks (text chunks are skipped,
never inflated). `read_samples` returns only the first `count` channel samples: rows are inflated
with an output bound (zlib max_length), so a decompression bomb costs at most what was asked for.
Rows with filters other than None and Up (a file re-saved by another tool), or RGBA files, are
decoded by Pillow instead, with
formats=["PNG"], the bomb warning as an error, and a copy of the file whose IHDR claims only the
rows needed, so that path is bounded the same way.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from codec.errors import SealError
from codec.images import open_image, sniff

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" flag; (0x78 * 256 + 0x01) % 31 == 0
FINAL_BLOCK = b"\x03\x00"  # a final, empty, fixed-Huffman deflate block
ANCILLARY_MAX = 64 * 1024  # bytes of ancillary chunks (text, ...) a sealed image may carry
INFLATE_STEP = 8 * 1024 * 1024  # bytes inflated per zlib call
_MOD_ADLER = 65521
_IHDR = struct.Struct(">IIBBBBB")
_KNOWN_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


# ---- writer --------------------------------------------------------------------------------------
def chunk(ctype: bytes, data: bytes | memoryview) -> list[bytes | memoryview]:
    """One PNG chunk as three parts (length+type, data, CRC), to be joined by the caller."""
    crc = zlib.crc32(data, zlib.crc32(ctype))
    return [struct.pack(">I", len(data)) + ctype, data, struct.pack(">I", crc)]


def ihdr(width: int, height: int) -> list[bytes | memoryview]:
    """The IHDR chunk of an 8-bit RGB, non-interlaced PNG."""
    return chunk(b"IHDR", _IHDR.pack(width, height, 8, 2, 0, 0, 0))


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A+B from adler32(A), adler32(B) and len(B), from the checksum's definition:
    a = 1 + sum of bytes, b = sum of the running a's (both mod 65521)."""
    a1, b1 = adler1 & 0xFFFF, adler1 >> 16
    a2, b2 = adler2 & 0xFFFF, adler2 >> 16
    a = (a1 + a2 - 1) % _MOD_ADLER
    b = (b1 + b2 + (len2 % _MOD_ADLER) * (a1 - 1)) % _MOD_ADLER
    return (b << 16) | a


def _up_filtered(part: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """Rows with PNG filter Up (2): each byte minus the one above (mod 256); `prev` is the row
    above the first one (None: zeros, as for the first row of an image)."""
    out = np.empty_like(part)
    out[:, 0] = 2
    np.subtract(part[1:, 1:], part[:-1, 1:], out=out[1:, 1:])
    if prev is None:
        out[0, 1:] = part[0, 1:]
    else:
        np.subtract(part[0, 1:], prev, out=out[0, 1:])
    return out


@dataclass(slots=True)
class Piece:
    """An independent run of rows: IDAT chunk parts, and the Adler-32 and length of its rows."""

    idat: list[bytes | memoryview]
    adler: int
    length: int


def compress_rows(
    slices: Iterable[np.ndarray], level: int, *, up: bool, prev: np.ndarray | None = None
) -> Piece:
    """Compress consecutive row slices ((r, 1 + 3*width) uint8, column 0 ignored) as one raw
    deflate piece ended by a sync flush. up=True: filter Up and Huffman-only coding (payload rows:
    random low bits under a cover, see benchmarks/seal.py); up=False: filter None and zlib's
    default strategy (flat cover rows, where LZ77 matches pay). `prev`: the samples of the row
    above the first one (filter Up of a piece that does not start the image; None: zeros)."""
    strategy = zlib.Z_HUFFMAN_ONLY if up else zlib.Z_DEFAULT_STRATEGY
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    piece = Piece([], 1, 0)
    for part in slices:
        if up:
            rows, prev = _up_filtered(part, prev), part[-1, 1:]
        else:
            rows = np.array(part, dtype=np.uint8)
            rows[:, 0] = 0
        data = rows.reshape(-1).data
        piece.adler = zlib.adler32(data, piece.adler)
        piece.length += len(data)
        out = comp.compress(data)
        if out:
            piece.idat += chunk(b"IDAT", out)
    piece.idat += chunk(b"IDAT", comp.flush(zlib.Z_SYNC_FLUSH))
    return piece


def assemble(width: int, height: int, pieces: Iterable[Piece]) -> bytes:
    """The whole PNG: signature, IHDR, the zlib header, the pieces (rows top to bottom, all
    `height` of them), the final block with the combined Adler-32, IEND.

    A file that may be STREAM_MIN_BYTES or more (`size_bound`) is written into one buffer as the
    pieces come (an iterator: each is dropped once copied), whose bytes are returned without a
    copy: the file exists once, not beside a joined copy of its parts (45 MiB for the largest
    accepted image: benchmarks/memory.py). The buffer starts as `size_bound` zero bytes: calloc
    of that size is a fresh mmap whose pages cost nothing until written, and the buffer never
    grows by realloc (which left heap holes of about the file's size in a node); it is cut to
    the file at the end. Smaller files are joined from their parts at once (no zeroing of a
    heap block, the speed of the small-image and photo seals)."""
    parts = _file_parts(width, height, pieces)
    if size_bound(width, height) < STREAM_MIN_BYTES:
        return b"".join(parts)
    out = io.BytesIO(bytes(size_bound(width, height)))  # the only reference: written in place
    for part in parts:
        out.write(part)
    out.truncate(out.tell())
    return out.getvalue()


STREAM_MIN_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold: bigger callocs are mmaps


def _file_parts(width: int, height: int, pieces: Iterable[Piece]) -> Iterator[bytes | memoryview]:
    yield SIGNATURE
    yield from [*ihdr(width, height), *chunk(b"IDAT", ZLIB_HEADER)]
    adler = 1
    for piece in pieces:
        yield from piece.idat
        adler = adler32_combine(adler, piece.adler, piece.length)
    yield from [*chunk(b"IDAT", FINAL_BLOCK + struct.pack(">I", adler)), *chunk(b"IEND", b"")]


def size_bound(width: int, height: int) -> int:
    """More bytes than any PNG `assemble` writes for the size (a larger one would still be
    written: the buffer grows): raw rows compressed at worst grow by deflate's stored-block
    overhead (5 bytes per 16 KiB), plus 12 bytes per IDAT chunk, one per zlib output of a
    slice of at least one row, plus a few per piece and band."""
    raw = (1 + 3 * width) * height
    return raw + raw // 1024 + 32 * height + 4096


def compress_pieces(jobs: list[Callable[[], Piece]], parallel: bool = True) -> list[Piece]:
    """Run independent piece compressions (`compress_rows` calls), in order of the list. With
    `parallel` and more than one, they run on the shared pool of DEFLATE_THREADS threads (zlib
    and numpy release the GIL, so a large seal uses every core); small work stays on the caller's
    thread, where it costs less than waking a thread. The pieces, and so the PNG, do not depend
    on the threads."""
    return list(stream_pieces(jobs, parallel))


def stream_pieces(jobs: list[Callable[[], Piece]], parallel: bool = True) -> Iterator[Piece]:
    """`compress_pieces` as an iterator: each piece is yielded, in order, as soon as it and the
    ones before it are done, and no longer held here once yielded."""
    if len(jobs) <= 1 or not parallel:
        for job in jobs:
            yield job()
        return
    futures: list[Future[Piece] | None] = [_deflate_pool().submit(job) for job in jobs]
    for i, future in enumerate(futures):
        assert future is not None
        futures[i] = None
        yield future.result()


DEFLATE_THREADS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _deflate_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(DEFLATE_THREADS, thread_name_prefix="deflate")
        return _pool


def row_slices(rows: np.ndarray, step_bytes: int = 1 << 20) -> Iterator[np.ndarray]:
    """`rows` (height, stride) cut into slices of about `step_bytes`."""
    step = max(1, step_bytes // rows.shape[1])
    for r0 in range(0, rows.shape[0], step):
        yield rows[r0 : r0 + step]


# ---- reader --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PngInfo:
    """What `parse` found: the IHDR fields and the IDAT chunk data (views into the file)."""

    width: int
    height: int
    color_type: int  # 2 RGB, 6 RGBA
    idat: tuple[memoryview, ...]

    @property
    def row_samples(self) -> int:
        """Channel samples per row that carry data: R, G, B of each pixel (alpha is skipped)."""
        return 3 * self.width


def _check_ihdr(body: bytes, max_pixels: int) -> tuple[int, int, int]:
    width, height, depth, color, comp, filt, interlace = _IHDR.unpack(body)
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        raise SealError(f"PNG has an invalid size {width}x{height}")
    if width * height > max_pixels:
        raise SealError(
            f"PNG of {width}x{height} pixels is over the limit of {max_pixels} pixels "
            f"(refused before decoding)"
        )
    if depth != 8 or color not in (2, 6):
        raise SealError(
            f"not a sealed image: sealed images are 8-bit RGB PNGs, this one has bit "
            f"depth {depth} and colour type {color}"
        )
    if comp != 0 or filt != 0:
        raise SealError(f"PNG uses unknown compression {comp} or filter method {filt}")
    if interlace != 0:
        raise SealError("not a sealed image: it is interlaced (sealed images never are)")
    return width, height, color


def parse(data: bytes, max_pixels: int) -> PngInfo:
    """Walk the chunks of `data` and check them (see the module docstring). Decodes no pixels.
    Raises SealError naming the problem."""
    if not data.startswith(SIGNATURE):
        other = sniff(data)
        seen = f" (it looks like {other})" if other and other != "PNG" else ""
        raise SealError(f"not a PNG{seen}")
    view = memoryview(data)
    pos, size, idat, ancillary = 8, len(data), [], 0
    header: tuple[int, int, int] | None = None
    while True:
        if pos + 12 > size:
            raise SealError("truncated PNG: it ends before its IEND chunk")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if length > 2**31 - 1 or end > size:
            raise SealError(f"truncated PNG: chunk {ctype!r} claims {length} bytes past the end")
        body = view[pos + 8 : pos + 8 + length]
        if header is None:
            if ctype != b"IHDR" or length != 13:
                raise SealError("broken PNG: the first chunk is not IHDR")
            if zlib.crc32(body, zlib.crc32(ctype)) != struct.unpack_from(">I", data, end - 4)[0]:
                raise SealError("broken PNG: IHDR checksum mismatch")
            header = _check_ihdr(bytes(body), max_pixels)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
        elif not ctype.isalpha():
            raise SealError(f"broken PNG: bad chunk type {ctype!r}")
        elif ctype[0] & 0x20 == 0 and ctype not in _KNOWN_CRITICAL:
            raise SealError(f"PNG has an unknown critical chunk {ctype.decode('ascii')}")
        elif ctype != b"PLTE":
            ancillary += length
            if ancillary > ANCILLARY_MAX:
                raise SealError(
                    f"PNG carries over {ANCILLARY_MAX} bytes of ancillary chunks "
                    f"({ctype.decode('ascii')}): not a sealed image"
                )
        pos = end
    if not idat:
        raise SealError("PNG has no image data (IDAT)")
    width, height, color = header
    return PngInfo(width, height, color, tuple(idat))


def _inflate_rows(info: PngInfo, rows: int) -> np.ndarray | None:
    """The first `rows` raw rows (filter byte included) inflated with a bound, or None when the
    file is RGBA or its rows use filters (then Pillow must decode it)."""
    stride = 1 + info.row_samples
    need = rows * stride
    if info.color_type != 2:
        return None
    out = np.empty(need, dtype=np.uint8)
    got, dec = 0, zlib.decompressobj()
    try:
        for part in info.idat:
            buf: bytes | memoryview = part
            while buf and got < need and not dec.eof:
                piece = dec.decompress(buf, min(need - got, INFLATE_STEP))
                out[got : got + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                got += len(piece)
                buf = dec.unconsumed_tail
            if got >= need or dec.eof:
                break
    except zlib.error as exc:
        raise SealError(f"corrupt PNG image data ({exc})") from None
    if got < need:
        raise SealError(f"truncated PNG image data: {got} of the {need} bytes needed")
    raw = out.reshape(rows, stride)
    filters = raw[:, 0]
    if not np.isin(filters, (0, 2)).all():
        return None
    for i in np.flatnonzero(filters[1:] == 2) + 1:  # undo filter Up, one row at a time
        raw[i, 1:] += raw[i - 1, 1:]
    return raw[:, 1:]


def _pillow_rows(info: PngInfo, rows: int) -> np.ndarray:
    """The first `rows` rows decoded by Pillow from a copy whose IHDR claims only those rows."""
    body = _IHDR.pack(info.width, rows, 8, info.color_type, 0, 0, 0)
    parts = [SIGNATURE, *chunk(b"IHDR", body), *chunk(b"IDAT", b"".join(info.idat))]
    parts += chunk(b"IEND", b"")
    try:
        with open_image(b"".join(parts), ["PNG"]) as im:
            im.load()
            arr = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        zlib.error,
        Warning,
        Image.DecompressionBombError,
    ) as exc:
        raise SealError(f"PNG image data does not decode ({exc})") from None
    return arr.reshape(rows, info.row_samples)


def read_samples(info: PngInfo, count: int) -> np.ndarray:
    """The first `count` channel samples (R, G, B, row after row) as a contiguous uint8 array.
    Decodes only the rows that hold them. Raises SealError."""
    rows = -(-count // info.row_samples)
    if rows > info.height:
        raise SealError(
            f"image too small: {count} samples asked, {info.height} rows of "
            f"{info.row_samples} present"
        )
    if rows == 0:
        return np.empty(0, dtype=np.uint8)
    rgb = _inflate_rows(info, rows)
    if rgb is None:
        rgb = _pillow_rows(info, rows)
    return np.ascontiguousarray(rgb).reshape(-1)[:count]
