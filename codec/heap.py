"""Giving freed heap memory back to the operating system after a large seal's transients.

Callers: codec.covers (after building a compact cover tier) and actors/node/encoder.py (before and
after sealing a large payload). Why (benchmarks/memory.py): glibc's malloc raises its mmap
threshold up to 32 MiB once large blocks were freed, so later multi-MiB transients (a tier's
strips, the 23,000 fragments of a 31 MiB request) come from the heap; small long-lived blocks
(cached cover bands, ...) pin it, so the freed space stays resident. For the largest accepted
image that was 70 MiB after a tier build and 47 MiB after the request's fragments, each beside
the next stage's own memory. `malloc_trim(0)` returns free pages of every arena (glibc 2.8 or
newer; a few ms for a heap of 100 MiB). Where the C library has no malloc_trim (musl, macOS)
`trim()` does nothing and says so with False: the figures there are the allocator's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_MIN_BYTES = 4 * 1024 * 1024  # callers trim around work on payloads at least this big


def _find() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        fn = getattr(ctypes.CDLL(name), "malloc_trim")
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_malloc_trim = _find()


def trim() -> bool:
    """Give free heap pages back to the OS; False when this C library cannot."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def available() -> bool:
    return _malloc_trim is not None
