"""The embedded cloud's restart rule for a node that exits (actors.backoff): pure, fake clock."""

from __future__ import annotations

import pytest

from actors.backoff import RestartBackoff


def crash_loop(b: RestartBackoff, node: int, times: int, now: float = 0.0,
               runs_for: float = 0.5) -> list[tuple[float, int, bool]]:
    """Start the node, let it crash `runs_for` s later, restart it when told; (delay, step,
    announce) per crash."""
    out = []
    for _ in range(times):
        b.started(node, now)
        now += runs_for
        r = b.exited(node, now)
        assert r.node == node and r.at == pytest.approx(now + r.delay_s)
        out.append((r.delay_s, r.step, r.announce))
        now = r.at
    return out


def test_a_node_that_keeps_crashing_waits_longer_each_time_up_to_the_cap() -> None:
    b = RestartBackoff(base_s=1.0, factor=2.0, max_s=30.0, stable_s=10.0)
    got = crash_loop(b, 1, 9)
    assert [d for d, _, _ in got] == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert [s for _, s, _ in got] == [0, 1, 2, 3, 4, 5, 5, 5, 5]


def test_each_back_off_step_is_announced_once() -> None:
    b = RestartBackoff()
    got = crash_loop(b, 1, 12)
    assert [a for _, _, a in got] == [True] * 6 + [False] * 6
    assert b.step(1) == 5


def test_a_crash_after_a_long_run_starts_over_and_is_announced() -> None:
    b = RestartBackoff(base_s=1.0, max_s=30.0, stable_s=10.0)
    crash_loop(b, 2, 4)  # steps 0..3, at t = 0 .. 17
    b.started(2, 100.0)
    r = b.exited(2, 100.0 + 10.0)  # ran stable_s: not a crash loop
    assert (r.delay_s, r.step, r.announce, r.at) == (1.0, 0, True, 111.0)
    b.started(2, 111.0)
    r = b.exited(2, 111.0 + 9.99)  # again soon after starting: the back-off grows again
    assert (r.delay_s, r.step, r.announce) == (2.0, 1, True)


def test_nodes_back_off_independently() -> None:
    b = RestartBackoff()
    crash_loop(b, 1, 5)
    assert crash_loop(b, 3, 2) == [(1.0, 0, True), (2.0, 1, True)]
    assert (b.step(1), b.step(2), b.step(3)) == (4, 0, 1)


def test_a_node_never_seen_starting_counts_as_a_quick_crash() -> None:
    b = RestartBackoff()
    assert b.exited(7, 50.0).delay_s == 1.0
    assert b.exited(7, 51.0).delay_s == 2.0


@pytest.mark.parametrize("kw", [{"base_s": 0}, {"factor": 0.5}, {"max_s": 0.5},
                                {"stable_s": 0}])
def test_nonsense_settings_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="back-off"):
        RestartBackoff(**kw)
