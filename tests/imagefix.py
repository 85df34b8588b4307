"""Image fixtures shared by test_seal.py and test_images.py: bombs, exotic formats, RSS peaks."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable

import psutil
from PIL import Image

from codec import png

MiB = 1024 * 1024


def peak_rss_growth(fn: Callable[[], object]) -> int:
    """Bytes of RSS growth seen while fn runs (a sampler thread; tracemalloc misses Pillow)."""
    proc = psutil.Process()
    base: int = proc.memory_info().rss
    peak, done = [base], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.0005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    end: int = proc.memory_info().rss
    return max(peak[0], end) - base


def zero_png(side: int) -> bytes:
    """A side x side black RGB PNG (6000: ~105 KB, 12000: ~420 KB) built without the pixels:
    one compressed run of 100 zero rows, repeated (each run is an independent deflate piece)."""
    run = 100 * (1 + 3 * side)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = comp.compress(bytes(run)) + comp.flush(zlib.Z_SYNC_FLUSH)
    piece = png.Piece(png.chunk(b"IDAT", data), zlib.adler32(bytes(run)), run)
    return png.assemble(side, side, [piece] * (side // 100))


def jpeg_claiming(w: int, h: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG")
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def exotic_files() -> dict[str, bytes]:
    im = Image.new("RGB", (16, 16), (200, 10, 10))
    out: dict[str, bytes] = {}
    for fmt in ("PDF", "EPS", "JPEG2000", "DDS"):
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        out[fmt] = buf.getvalue()
    psd = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 16, 16, 8, 3) + b"\0" * 12 + b"\0" * 768
    fits = "".join(
        c.ljust(80)
        for c in [
            "SIMPLE  = T",
            "BITPIX  = 8",
            "NAXIS   = 2",
            "NAXIS1  = 16",
            "NAXIS2  = 16",
            "END",
        ]
    )
    out["PSD"] = psd
    out["FITS"] = fits.ljust(2880).encode() + b"\0" * 2880
    return out
