"""Chaos on loopback (issue 7, TC-1): failures on with a short max_down_s, 4 clients, 500
encrypts, an owner posting updates for an offline borrower, one node SIGKILLed and restarted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from shell_fakes import wait_for

from benchmarks.chaos import run_round

pytestmark = pytest.mark.timeout(420)


def test_chaos_round_loses_nothing_and_answers_everything(tmp_path: Path) -> None:
    r = run_round(tmp_path, clients=4, total=500, updates=8, seed=7)
    print({k: v for k, v in r.items() if k != "log"}, r["log"])
    assert r["failed"] == 0 and r["wrong"] == 0 and r["ok"] == 500
    assert r["accepted_twice"] == 0  # as the clients' homes counted it: one stored per request
    assert r["updates_acked"] == 8 and r["views"] == r["views_expected"]
    assert r["down_or_unreachable_gt1"] == 0
    assert r["two_token_holders"] == 0
    assert 0 <= r["converged_s"] <= 10
    assert any("SIGKILL" in line for line in r["log"]) and any("restarted" in line for line in r["log"])


def test_frozen_token_holder_resumes_under_the_newer_epoch_without_a_second_token(
        tmp_path: Path) -> None:
    import signal
    import time

    from benchmarks.chaos import FAILURES, Sampler
    from benchmarks.localcloud import Cloud

    never_down = {**FAILURES, "mean_up_s": 86_400.0}  # the token moves, nobody goes down
    cloud = Cloud(tmp_path, 3, failures=True, sections={"failures": never_down})
    cloud.start()
    sampler = Sampler(cloud)
    try:
        sampler.start()
        deadline = time.monotonic() + 20
        holder = 0
        while not holder and time.monotonic() < deadline:
            holder = next((r["id"] for r in cloud.status() if r["token"]), 0)
        assert holder, "no token holder appeared"
        cloud.kill(holder, signal.SIGSTOP)
        # past the failure timeout the others mint a newer token: wait for it (no fixed sleep)
        wait_for(lambda: any(r["token"] for r in cloud.status() if r["id"] != holder))
        cloud.kill(holder, signal.SIGCONT)
        # the resumed node answers again and follows the newer token: one holder seen by all
        rows: list[dict[str, Any]] = []

        def one_view() -> bool:
            rows[:] = cloud.status()
            return all(r["state"] != "unreachable" for r in rows) and len(
                {r["token_holder"] for r in rows}) == 1

        wait_for(one_view)
        assert sum(r["token"] for r in rows) <= 1, rows
        assert sampler.violations()["two_token_holders"] == 0
        deadline = time.monotonic() + 10
        while len({r["digest"] for r in cloud.status()}) != 1:
            assert time.monotonic() < deadline, "no convergence within 10 s of SIGCONT"
            time.sleep(0.2)
    finally:
        sampler.stop()
        cloud.stop()


@pytest.mark.parametrize("faults", ["drop", "delay"])
def test_peer_network_faults_lose_nothing(tmp_path: Path, faults: str) -> None:
    """TC-3: the peer sockets drop 50 % of datagrams for 1 s, ten times, then 30 % for 10 s.
    TC-4: they delay every datagram 75 +- 50 ms for 10 s. Failures on, 4 clients, 200 encrypts
    spread over the schedule: none fails, all bit-exact, every update applied once, the nodes
    converge (p99 latency and p50 reported)."""
    r = run_round(tmp_path, clients=4, total=200, updates=5, seed=11, kill=False,
                  peer_faults=faults)  # fmt: skip
    print({k: v for k, v in r.items() if k != "log"}, r["log"])
    assert r["failed"] == 0 and r["wrong"] == 0 and r["ok"] == 200
    assert r["accepted_twice"] == 0  # a second reply is counted, never stored
    # One winner per request (issue 19): a node seals only once a majority voted for its claim,
    # so late or lost peer datagrams no longer make two nodes answer (16-27 duplicates in 200
    # before it).
    assert r["duplicate_replies"] == 0, r["duplicate_replies"]
    assert r["updates_acked"] == 5 and r["views"] == r["views_expected"]
    assert r["two_token_holders"] == 0
    assert 0 <= r["converged_s"] <= 10
    phases = [line for line in r["log"] if line.startswith("peer network:")]
    assert len(phases) == (22 if faults == "drop" else 2), phases  # every phase ran, then clean


def test_failover_is_the_latency_of_the_requests_in_flight_at_the_kill() -> None:
    """Every request sent before a SIGKILL and answered after it counts, however fast its
    failover was (the old figure kept only requests slower than 500 ms, so a failover faster
    than that vanished from the report); requests that ended before or started after do not."""
    from benchmarks.chaos import in_flight

    kill = 1000.0
    rows = [{"started": 999.95, "ms": 120.0},  # in flight, failed over in 70 ms
            {"started": 999.5, "ms": 1100.0},  # in flight, slow
            {"started": 999.0, "ms": 900.0},  # answered 100 ms before the kill
            {"started": 1000.01, "ms": 2000.0}]  # sent after the kill
    assert in_flight(rows, [kill]) == [120.0, 1100.0]
    assert in_flight(rows, []) == []


def test_a_double_holder_counts_only_across_prompt_samples() -> None:
    """The chaos sampler's I5 count (benchmarks.chaos.double_holders): a pair holding in two
    consecutive samples counts; a sample that waited longer than the period for a reply (a
    frozen node's late answer) is left out, so a resumed holder's stale answer plus the next
    sample is not a double, while a pair that holds across it still is."""
    from benchmarks.chaos import double_holders

    def sample(*holders: int) -> list[dict[str, Any]]:
        return [{"id": i, "token": i in holders} for i in (1, 2, 3)]

    p = 0.1
    # before the freeze 1 holds; frozen (0.3 s timeouts), 2 then holds; the late reply of 1
    # (stale: holding) lands in a slow sample, and 8 ms later once more in a prompt one
    frozen = [sample(1), sample(2), sample(2), sample(1, 2), sample(1, 2), sample(3)]
    assert double_holders(frozen, [0.01, 0.3, 0.3, 0.15, 0.01, 0.01], p) == 0
    assert double_holders(frozen, [0.01] * 6, p) == 1  # all prompt: the same pair twice
    lasting = [sample(1, 2), sample(1, 2), sample(1, 2), sample(1, 2)]
    assert double_holders(lasting, [0.01, 0.3, 0.01, 0.01], p) == 2  # across the slow one
    assert double_holders([sample(1, 2), sample(2)], [0.01, 0.01], p) == 0
