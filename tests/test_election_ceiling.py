"""ElectionCore with ceilings (what the election actor runs): a key not heard yet is bounded by
(its node's ceiling, its tie hash, its node), the ceiling being the priority of that node's pool
(as its heartbeats say) idle on an idle host, so the top of a binding can win on the first
binding it counts instead of waiting for the last node's Election."""

import random

import pytest
from cloud_sim import ElectionCluster
from test_election import A, core_with_peers_up, outcome, won_events

from actors.core.election import Lost, Probe, priority
from actors.node.election_actor import _hosts
from codec.messages import Claim, Coordinator, Election, ElectionOk
from config import NodeConfig

TIE = {1: 10, 2: 30, 3: 20}  # tie hash order 2 > 3 > 1, the same for every rid
CEILING = priority(0, 0, 0.0, 2)  # of a node of 2 slots (the clusters here)
JOB = priority(1, 0, 0.0, 2)  # one job in flight: below the ceiling


def tied(rid: str, node: int) -> int:
    return TIE[node]


def started(c: ElectionCluster, prios: dict[int, int], rid: str = "u#1") -> None:
    for i in c.ids:
        c.start(i, rid, prios[i])


def test_all_at_the_ceiling_the_top_wins_on_the_first_binding_not_the_last_election() -> None:
    # node 3's Elections take 50 ms; node 2 (the top tie hash) counts node 1's binding at once
    c = ElectionCluster(ceilings=True, tie_hash=tied)
    c.net.slow = {(3, 2): 0.05, (3, 1): 0.05}
    started(c, {1: CEILING, 2: CEILING, 3: CEILING})
    c.run_for(0.002)
    assert won_events(c, "u#1") == [2]
    assert c.rec[2].won["u#1"] <= 0.0008  # node 1's Election, one fast link delay
    assert c.cores[1].winner("u#1") == 2  # node 1 knows the top too: 3's bound is below 2's key
    c.run()
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})
    # node 3's Election reached a winner and a loser: its binding was its vote, and neither
    # answered it (no Coordinator, no second Election, no Probe of the winner)
    assert c.net.sent == 6
    assert not [e for i in c.ids for _, e in c.rec[i].events if isinstance(e, Probe)]


def test_a_node_below_the_ceiling_with_a_higher_tie_hash_is_waited_for() -> None:
    # node 3 outranks node 2 by tie hash, so until its key comes it may be the top; it comes
    # with a job in flight: node 2 wins then, one slow link delay later
    c = ElectionCluster(ceilings=True, tie_hash=lambda rid, node: {1: 10, 2: 20, 3: 30}[node])
    c.net.slow = {(3, 2): 0.05, (3, 1): 0.05}
    started(c, {1: CEILING, 2: CEILING, 3: JOB})
    c.run_for(0.01)
    assert won_events(c, "u#1") == []
    c.run()
    assert won_events(c, "u#1") == [2]
    assert c.rec[2].won["u#1"] >= 0.05
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})


@pytest.mark.parametrize("slots3", [4, 0])  # a larger pool; a pool size its heartbeat did not say
def test_a_node_whose_keys_may_be_above_the_top_is_waited_for(slots3: int) -> None:
    c = ElectionCluster(ceilings=True, tie_hash=tied)  # tie hash order 2 > 3 > 1
    c.slots[3] = slots3
    c.heartbeats()
    c.net.slow = {(3, 2): 0.05, (3, 1): 0.05}
    started(c, {1: CEILING, 2: CEILING, 3: JOB})  # node 3 has a job: below node 2 in the end
    c.run_for(0.01)
    assert won_events(c, "u#1") == []  # its bound is above node 2's key: it must be heard
    c.run()
    assert won_events(c, "u#1") == [2] and c.rec[2].won["u#1"] >= 0.05


def test_a_node_with_a_larger_idle_pool_wins_on_the_first_binding() -> None:
    # node 1 has 4 slots (tests/net TN-4 gives node 1 twice the slots so that it wins): above the
    # ceiling of the 2-slot nodes whatever the tie hashes, it wins without node 3's Election
    c = ElectionCluster(ceilings=True, tie_hash=tied)
    c.slots[1] = 4
    c.heartbeats()
    c.net.slow = {(3, 2): 0.05, (3, 1): 0.05}
    started(c, {1: priority(0, 0, 0.0, 4), 2: CEILING, 3: CEILING})
    c.run_for(0.002)
    assert won_events(c, "u#1") == [1]
    c.run()
    assert outcome(c, "u#1") == ([1], {2: 1, 3: 1}) and c.net.sent == 6


def test_below_the_ceiling_the_top_waits_for_every_key_as_before() -> None:
    c = ElectionCluster(ceilings=True, tie_hash=tied)
    c.net.slow = {(3, 2): 0.05, (3, 1): 0.05}
    started(c, {1: JOB, 2: JOB, 3: JOB - 100})
    c.run_for(0.01)
    assert won_events(c, "u#1") == []  # node 3's bound (the ceiling) is above node 2's key
    c.run()
    assert won_events(c, "u#1") == [2] and c.rec[2].won["u#1"] >= 0.05


def test_a_top_that_knows_it_is_the_top_without_any_binding_asks_the_silent_ones_again() -> None:
    # node 2's inbound is cut: it is the top by its bound alone, but with no binding counted it
    # neither wins nor decides on its round timeout; it asks again until the answers come
    c = ElectionCluster(ceilings=True, tie_hash=tied)
    c.net.cut = {(1, 2), (3, 2)}
    started(c, {1: CEILING, 2: CEILING, 3: CEILING})
    c.run_for(2 * A)
    assert won_events(c, "u#1") == []
    assert c.cores[2].state_of("u#1") == "electing"
    c.net.cut = set()
    c.run()
    assert won_events(c, "u#1") == [2]
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})


def test_a_priority_above_the_ceiling_turns_the_ceilings_off() -> None:
    core = core_with_peers_up(slots=2, ceilings=True, tie_hash=tied)
    core.start("u#1", CEILING, 0.0)
    core.on_message(2, Election(rid="u#1", node=2, priority=CEILING + 1, round=1, bind=0b1110),
                    0.001)
    assert core.counters["above_ceiling"] == 1 and not core.ceilings
    # node 3's key is now needed: node 2's binding names it, and no bound stands in for it
    out = core.on_message(3, Election(rid="u#1", node=3, priority=CEILING, round=1, bind=0b1110),
                          0.002)
    assert Lost("u#1", 2) in out.events


def test_a_claim_is_voted_for_once_the_bounds_show_its_claimant_is_the_top() -> None:
    core = core_with_peers_up(slots=2, ceilings=True, tie_hash=tied)
    core.start("u#1", CEILING, 0.0)
    # node 2's key at the ceiling with the top tie hash: node 3's bound is below it, so node 1's
    # bound vote is node 2's at once, and node 2's Claim gets the vote without node 3's key
    out = core.on_message(2, Election(rid="u#1", node=2, priority=CEILING, round=4, bind=0b1110),
                          0.001)
    assert out.events == [Lost("u#1", 2)] and out.sends == []
    out = core.on_message(2, Claim(rid="u#1", node=2, round=4), 0.002)
    assert out.sends == [(2, ElectionOk(rid="u#1", node=1, round=4))]
    # a Coordinator of the winner is acknowledged as before
    out = core.on_message(2, Coordinator(rid="u#1", node=2, round=4), 0.003)
    assert out.sends == [(2, ElectionOk(rid="u#1", node=1, round=4))]


@pytest.mark.parametrize("seed", range(10))
def test_five_nodes_with_ceilings_and_loss_elect_one_winner(seed: int) -> None:
    c = ElectionCluster(ids=(1, 2, 3, 4, 5), seed=seed, loss=0.1, ceilings=True)
    c.net.delay = (0.0002, 0.02)
    rng = random.Random(seed)
    rids = [f"f{seed}#{k}" for k in range(40)]
    for rid in rids:
        for i in c.ids:
            c.start(i, rid, rng.choice((CEILING, CEILING, JOB)))
        c.run_for(rng.uniform(0.0, 0.003))
    c.run()
    for rid in rids:
        winners = won_events(c, rid)
        assert len(winners) == 1, (rid, winners)
        assert outcome(c, rid) == (winners, {i: winners[0] for i in c.ids if i != winners[0]})


def test_the_host_load_counts_only_when_the_nodes_are_on_several_hosts() -> None:
    def cfg(*hosts: str) -> list[NodeConfig]:
        return [NodeConfig(i + 1, h, 47101 + 2 * i, 47102 + 2 * i) for i, h in enumerate(hosts)]

    assert _hosts(cfg("127.0.0.1", "127.0.0.1", "127.0.0.1")) == 1
    assert _hosts(cfg("127.0.0.1", "127.0.0.2", "localhost", "::1")) == 1
    assert _hosts(cfg("10.0.0.1", "10.0.0.2", "10.0.0.1")) == 2
    assert _hosts(cfg("10.0.0.1", "127.0.0.1")) == 2
