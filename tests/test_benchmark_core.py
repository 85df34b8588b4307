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


def test_transport_benchmark_cpu_figures_per_datagram() -> None:
    from benchmarks.transport import _cpu_figures

    # two runs of a 1000-datagram message: 2 ms and 3 ms of CPU over 2000 datagrams, 10 ms a run
    got = _cpu_figures([0.002, 0.003, 2000], 1000, 0.01)
    assert got == pytest.approx(
        {"wall_us_per_dg": 10.0, "sender_cpu_us_per_dg": 1.0, "receiver_cpu_us_per_dg": 1.5}
    )
