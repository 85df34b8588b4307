"""benchmarks.transport_core runs: a whole window of a 2 MB message goes through the core and
is taken by the receiver without a refused datagram, for both socket kinds."""

from __future__ import annotations

import pytest

from benchmarks import transport_core


@pytest.mark.parametrize("kind", ["client", "peer"])
def test_core_benchmark_moves_a_window_without_refusals(kind: str) -> None:
    send_us, recv_us, n = transport_core.measure(kind, 1)  # raises if a datagram is refused
    assert n == 1024  # window_blocks x block_size of the default config
    assert send_us > 0 and recv_us > 0
