"""The replay window never shifts by a peer-chosen amount (a far message id once cost 1 GiB)."""

import sys
import tracemalloc
from collections.abc import Callable

from transport.receiver import DELIVERED, NEW, REPLAY_WINDOW, STALE, ReplayWindow


def peak_bytes_of(fn: Callable[[], object]) -> int:
    """Peak bytes Python allocated while `fn()` ran (tracemalloc: a count, not a clock)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_a_far_message_id_resets_the_window_cheaply() -> None:
    w = ReplayWindow()
    w.mark(5)
    # shifting the bitmap by the gap would allocate gap / 8 bytes: 8 MiB here, 512 PiB below
    assert peak_bytes_of(lambda: w.mark(5 + 2**26)) < 4096
    assert peak_bytes_of(lambda: w.mark(2**62)) < 4096
    assert sys.getsizeof(w.bits) < 1024
    assert w.check(2**62) == DELIVERED and w.check(5) == STALE
    assert w.check(2**62 - 1) == NEW


def test_window_keeps_the_last_ids_within_its_width() -> None:
    w = ReplayWindow()
    for i in range(0, 3 * REPLAY_WINDOW, 3):
        w.mark(i)
    top = 3 * REPLAY_WINDOW - 3
    assert w.check(top) == DELIVERED and w.check(top - 3) == DELIVERED
    assert w.check(top - 1) == NEW
    assert w.check(top - REPLAY_WINDOW) == STALE
