"""transport.traffic.TrafficRate: when a reader's traffic is busy enough to poll after it (pure,
driven with made-up times)."""

from __future__ import annotations

from transport.traffic import TrafficRate

B, N = 0.1, 20  # (as transport.udp: POLL_RATE_S, POLL_MIN_EVENTS)


def burst(rate: TrafficRate, at: float, n: int) -> None:
    for k in range(n):
        rate.moved(at + k * 1e-5)


def test_sparse_traffic_is_never_busy() -> None:
    rate = TrafficRate(B, N)
    assert not rate.busy(0.0)  # nothing moved yet
    for k in range(100):  # an idle cloud's heartbeats: one every 67 ms
        rate.moved(k * 0.067)
        assert not rate.busy(k * 0.067)


def test_a_burst_is_busy_from_its_nth_event_in_its_bucket() -> None:
    rate = TrafficRate(B, N)
    burst(rate, 1.0, N - 1)
    assert not rate.busy(1.001)
    rate.moved(1.002)
    assert rate.busy(1.002) and rate.busy(1.099)


def test_a_busy_bucket_keeps_the_next_one_busy_from_its_first_event() -> None:
    rate = TrafficRate(B, N)
    burst(rate, 1.0, N)
    rate.moved(1.15)  # the next bucket starts, with one event
    assert rate.busy(1.15) and rate.busy(1.24)
    rate.moved(1.26)  # and the one after: its predecessor had one event, not busy
    assert not rate.busy(1.26)


def test_a_quiet_bucket_between_ends_it() -> None:
    rate = TrafficRate(B, N)
    burst(rate, 1.0, N)
    assert rate.busy(1.19)
    assert not rate.busy(1.21)  # nothing moved for a whole bucket
    rate.moved(1.35)  # the busy bucket ended 0.25 s ago, not just before this one
    assert not rate.busy(1.35)
