"""The replay window never shifts by a peer-chosen amount (a far message id once cost 1 GiB)."""

import sys
import time

from transport.receiver import DELIVERED, NEW, REPLAY_WINDOW, STALE, ReplayWindow


def test_a_far_message_id_resets_the_window_cheaply() -> None:
    w = ReplayWindow()
    w.mark(5)
    start = time.perf_counter()
    w.mark(2**62)
    assert time.perf_counter() - start < 0.05
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
