"""Chaos on loopback (issue 7, TC-1): failures on with a short max_down_s, 4 clients, 500
encrypts, an owner posting updates for an offline borrower, one node SIGKILLed and restarted."""

from __future__ import annotations

from datetime import datetime
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
    TC-4: they delay every datagram 75 +- 50 ms for 10 s. Failures on, 4 clients, 500 encrypts
    (TC-1's load) spread over the schedule: none fails, all bit-exact, every update applied
    once, the nodes converge (p99 latency and p50 reported). The round lasts as long as its
    schedule: 500 encrypts took the time 200 did (32 s for drop, 17 s for delay)."""
    r = run_round(tmp_path, clients=4, total=500, updates=5, seed=11, kill=False,
                  peer_faults=faults)  # fmt: skip
    print({k: v for k, v in r.items() if k != "log"}, r["log"])
    assert r["failed"] == 0 and r["wrong"] == 0 and r["ok"] == 500
    assert r["accepted_twice"] == 0  # a second reply is counted, never stored
    # One winner per request (issue 19): a node seals only once a majority voted for its claim,
    # so late or lost peer datagrams no longer make two nodes answer (16-27 duplicates in 200
    # before it) while no node is down or suspected (the one traced, a claimant's Election
    # overtaken by its Claim, is fixed in the core). The failure token takes a node down every
    # few seconds here, and a winner that goes down right after its reply can be re-elected: its
    # peers hear it is down before its Done, lost and resent (traced 4 times in 27 runs of 500);
    # the issue allows under 1 % with a node down.
    dups = [line for line in r["log"] if line.startswith("duplicate reply:")]
    assert r["dups_no_fault"] == 0, dups
    assert 100 * r["duplicate_replies"] < r["requests"], dups
    assert r["updates_acked"] == 5 and r["views"] == r["views_expected"]
    assert r["two_token_holders"] == 0
    assert 0 <= r["converged_s"] <= 10
    phases = [line for line in r["log"] if line.startswith("peer network:")]
    assert len(phases) == (22 if faults == "drop" else 2), phases  # every phase ran, then clean


NODE_LOGS = [
    "2026-12-06 04:05:57,403 node1 DEBUG actors.node.election_actor: start load3#109 priority 7\n"
    "2026-12-06 04:05:57,406 node1 INFO actors.node.token_actor: simulated failure: going down "
    "for 1.0 s\n"
    "2026-12-06 04:06:10,000 node1 INFO actors.node.election_actor: node 3 restarted (new boot "
    "epoch)\n",
    "2026-12-06 04:05:28,690 node2 INFO actors.node.election_actor: node 1: up\n"  # at start
    "2026-12-06 04:05:57,422 node2 INFO actors.node.election_actor: node 1: down\n"
    "2026-12-06 04:05:58,418 node2 INFO actors.node.election_actor: node 1: up\n"
    "2026-12-06 04:05:58,500 node2 INFO actors.node.base: node 2: client_while_down Join\n"
    "2026-12-06 04:06:20,000 node2 INFO actors.node.election_actor: node 3: unreachable\n",
]


def _wall(clock: str) -> float:
    """The wall-clock time of a node log's stamp on NODE_LOGS' day."""
    return datetime.strptime(f"2026-12-06 {clock}", "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_fault_windows_come_from_the_node_logs() -> None:
    """What benchmarks.chaos counts as "a node down or suspected": a node's own simulated
    failure, a peer down or unreachable in any node's view until it is up again in that view,
    a restart seen; other lines (a refusal mentioning a node, the start-up's first "up") are
    no fault."""
    from benchmarks.chaos import fault_windows

    assert fault_windows(NODE_LOGS) == [
        (_wall("04:05:57,406"), _wall("04:05:58,406"), "node 1 down (simulated failure)"),
        (_wall("04:05:57,422"), _wall("04:05:58,418"), "node 2 saw node 1 down"),
        (_wall("04:06:10,000"), _wall("04:06:10,000"), "node 1: node 3 restarted (new boot epoch)"),
        (_wall("04:06:20,000"), float("inf"), "node 2 saw node 3 unreachable"),
    ]


def test_a_duplicate_is_classified_by_the_faults_during_its_request() -> None:
    """The two duplicates traced in issue 19's drop runs: the winner went down (the failure
    token's simulated failure) 3 ms after the request came, its peers re-elected. A duplicate
    whose request saw no fault is the case the issue allows none of."""
    from benchmarks.chaos import classify_duplicates, fault_windows

    faults = fault_windows(NODE_LOGS)
    traced = {"started": _wall("04:05:57,401"), "at": _wall("04:05:57,440")}
    clean = {"started": _wall("04:05:50,000"), "at": _wall("04:05:57,300")}  # ends 106 ms before
    late = {"started": _wall("04:06:30,000"), "at": _wall("04:06:30,100")}
    seen = classify_duplicates([traced, clean, late], faults)
    assert seen == [["node 1 down (simulated failure) from 04:05:57.406",
                     "node 2 saw node 1 down from 04:05:57.422"],
                    [],
                    ["node 2 saw node 3 unreachable from 04:06:20.000"]]


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
