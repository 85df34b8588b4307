"""ElectionCore: bully election per request id, on a fake network of 3 cores with a fake clock."""

import collections
import random
from typing import Any

import pytest
from cloud_sim import ElectionCluster

from actors.core.election import (
    ElectionCore,
    Lost,
    NoMajority,
    Probe,
    Restart,
    Won,
    priority,
    tie_hash,
)
from actors.core.membership import CloudCoreError, Membership, Output
from codec.messages import Claim, Coordinator, Election, ElectionOk, GoingDown

A = 0.3  # answer timeout, seconds
BASE = priority(0, 0, 0.0, 2)
TOP = BASE  # the ceiling of a node of 2 slots: with ceilings, no key of such a node is above it


def outcome(c: ElectionCluster, rid: str) -> tuple[list[int], dict[int, int]]:
    """(nodes that consider themselves winner, {loser: the winner it follows})."""
    winners = [i for i in c.ids if c.cores[i].state_of(rid) == "won"]
    losers = {
        i: w for i in c.ids if c.cores[i].state_of(rid) == "lost" and (w := c.cores[i].winner(rid))
    }
    return winners, losers


def test_all_up_one_winner_the_highest_priority_without_waiting_a_timeout() -> None:
    c = ElectionCluster(bind=False)
    prios = {1: BASE, 2: BASE + 300, 3: BASE + 100}
    for i in c.ids:
        c.start(i, "u#1", prios[i])
    c.run_for(A)  # less than the voters' resend (2 A)
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})
    assert [e for _, e in c.rec[2].events] == [Won("u#1")]
    assert [e for _, e in c.rec[1].events] == [Lost("u#1", 2)]
    # decided as soon as the last answer arrived: a few link delays (<= 0.8 ms each), not A
    assert c.rec[2].won["u#1"] < 0.002
    # 6 Elections and 2 unasked votes: no Claim round (the old core sent 2 Claims and 2 votes)
    assert c.net.sent == 8
    assert c.rec[2].won["u#1"] <= 2 * 0.0008  # two link delays: an Election, then a vote
    # no Done in this test: each voter resends its vote once, the winner answers Coordinator
    # once and the voter acknowledges it; then nothing more is sent
    c.run()
    assert c.net.sent == 8 + 3 * 2
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})


def test_staggered_starts_still_elect_one_winner() -> None:
    c = ElectionCluster(bind=False)
    c.start(3, "u#1", BASE)
    c.run_for(0.1)  # 1 and 2 got the request 100 ms later than 3
    c.start(1, "u#1", BASE + 5)
    c.start(2, "u#1", BASE + 1)
    c.run()
    assert outcome(c, "u#1") == ([1], {2: 1, 3: 1})
    assert c.rec[1].won["u#1"] < 0.1 + 0.002


def test_a_silent_higher_node_costs_exactly_one_answer_timeout() -> None:
    c = ElectionCluster(bind=False)
    c.silent.add(3)  # alive by heartbeat, but says nothing in elections
    for i, p in ((1, BASE), (2, BASE + 100), (3, BASE + 900)):
        c.start(i, "u#1", p)
    c.run()
    assert c.cores[2].state_of("u#1") == "won" and c.cores[1].winner("u#1") == 2
    # one answer timeout, then the claim's round trip to node 1 (two link delays <= 0.8 ms)
    assert A < c.rec[2].won["u#1"] <= A + 0.0016
    assert c.rec[1].lost["u#1"] == 2


def test_a_node_that_never_got_the_request_is_waited_for_once() -> None:
    c = ElectionCluster(bind=False)
    c.start(1, "u#1", BASE)
    c.start(2, "u#1", BASE)
    c.run_for(1.0)
    winners, losers = outcome(c, "u#1")
    assert len(winners) == 1 and set(losers) == {1, 2} - set(winners)
    assert A < c.rec[winners[0]].won["u#1"] <= A + 0.0016  # the timeout, then the claim's round trip
    # node 3 kept the keys it heard, took no part, and learnt the winner: no election of its own
    assert c.cores[3].state_of("u#1") == "pending"
    c.start(3, "u#1", BASE + 10_000)  # its copy of the request arrives late, with a higher priority
    c.run()
    assert outcome(c, "u#1") == (winners, {**losers, 3: winners[0]})  # the first coordinator stays


@pytest.mark.parametrize("bind", [True, False])  # bound Elections, or unasked votes only
def test_concurrent_elections_for_different_requests_do_not_interfere(bind: bool) -> None:
    c = ElectionCluster(bind=bind, seed=4)
    rng = random.Random(4)
    expected = {}
    for n in range(60):
        rid = f"u#{n}"
        prios = {i: BASE + rng.randrange(0, 500) for i in c.ids}
        expected[rid] = max(c.ids, key=lambda i: (prios[i], tie_hash(rid, i), i))
        for i in rng.sample(c.ids, 3):
            c.start(i, rid, prios[i])
        c.run_for(rng.uniform(0.0, 0.0005))  # interleave the elections
    c.run()
    for rid, winner in expected.items():
        others = {i: winner for i in c.ids if i != winner}
        assert outcome(c, rid) == ([winner], others), rid


def test_the_tie_hash_is_computed_once_per_request_and_node_and_orders_that_request() -> None:
    """Each core keeps tie_hash(rid, node) of a request it elects (`_tie_of`): asked at most
    once per core, request and node, and never another request's value (equal loads: the
    tie hash alone picks the winner, here node 1 for u#1 and node 3 for u#2)."""
    table = {("u#1", 1): 30, ("u#1", 2): 20, ("u#1", 3): 10,
             ("u#2", 1): 10, ("u#2", 2): 20, ("u#2", 3): 30}
    calls: collections.Counter[tuple[str, int]] = collections.Counter()

    def tie(rid: str, node: int) -> int:
        calls[(rid, node)] += 1
        return table[(rid, node)]

    c = ElectionCluster(tie_hash=tie)
    for rid, top in (("u#1", 1), ("u#2", 3)):
        for i in c.ids:
            c.start(i, rid, BASE)
        c.run()
        assert outcome(c, rid) == ([top], {i: top for i in c.ids if i != top}), rid
    assert set(calls) == set(table)
    assert max(calls.values()) <= len(c.ids)  # once per core
    for i in c.ids:
        c.cores[i].forget("u#1")
    c.start(1, "u#1", BASE + 100)  # a new entry: the request is elected again, hashed again
    c.start(2, "u#1", BASE)
    c.start(3, "u#1", BASE + 100)
    c.run()
    assert outcome(c, "u#1") == ([1], {2: 1, 3: 1})  # u#1's order: 1 before 3


def test_equal_loads_spread_over_the_nodes() -> None:
    c = ElectionCluster()
    n = 3000
    for k in range(n):
        for i in c.ids:
            c.start(i, f"carol#{k}", BASE)
    c.run()
    wins = {i: len(c.rec[i].won) for i in c.ids}
    assert sum(wins.values()) == n
    for i in c.ids:
        assert 0.25 * n <= wins[i] <= 0.42 * n, wins


def test_a_node_without_majority_never_wins() -> None:
    c = ElectionCluster()
    c.hb_alive = {2, 3}  # node 1 hears nobody (and nobody hears it)
    for i in c.ids:
        c.net.cut |= {(1, i), (i, 1)}
    c.run_for(2.0)  # node 1's view of 2 and 3 times out
    c.start(1, "u#1", BASE + 1000)
    c.run_for(10.0)
    assert [e for _, e in c.rec[1].events] == [NoMajority("u#1")]
    assert c.cores[1].state_of("u#1") == "electing"
    # 2 and 3 are a majority: they elect one of them
    c.start(2, "u#1", BASE)
    c.start(3, "u#1", BASE + 1)
    c.run_for(1.0)
    assert outcome(c, "u#1")[0] == [3]
    # healed: node 1 joins, learns the coordinator and stands down
    c.hb_alive = set(c.ids)
    c.net.cut.clear()
    c.run_for(2.0)
    assert outcome(c, "u#1") == ([3], {1: 3, 2: 3})
    assert all(not isinstance(e, Won) for _, e in c.rec[1].events)


def test_winner_going_down_makes_the_others_elect_again() -> None:
    c = ElectionCluster()
    for i, p in ((1, BASE), (2, BASE + 1), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run()
    assert outcome(c, "u#1")[0] == [3]
    c.hb_alive = {1, 2}  # node 3 crashes: silent
    c.silent.add(3)
    c.run_for(1.5)
    assert c.cores[2].state_of("u#1") == "won"
    assert [type(e) for _, e in c.rec[2].events] == [Lost, Restart, Won]
    assert c.cores[1].winner("u#1") == 2


def test_peer_down_restarts_at_once_and_forget_drops_the_election() -> None:
    c = ElectionCluster()
    for i, p in ((1, BASE), (2, BASE + 1), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run()
    t0 = c.now
    c.silent.add(3)
    out1 = c.cores[1].peer_down(3, c.now)
    out2 = c.cores[2].peer_down(3, c.now)
    assert Restart("u#1", "node 3 down") in out1.events
    c.members[1].observe(GoingDown(node=3, epoch=1), c.now)
    c.members[2].observe(GoingDown(node=3, epoch=1), c.now)
    c.apply(1, out1)
    c.apply(2, out2)
    c.run()
    assert c.cores[2].state_of("u#1") == "won" and c.rec[2].won["u#1"] - t0 < 0.005
    for i in c.ids:
        c.cores[i].forget("u#1")
        assert c.cores[i].state_of("u#1") is None and c.cores[i].next_deadline() is None


def test_a_winner_gone_seen_by_the_others_a_few_ms_apart_is_replaced_at_once() -> None:
    """Node 1 sees the winner's port closed first and elects again; node 2, which still
    follows the winner, answers it once and is waited for. When node 2 sees it too, a few ms
    later, and starts its own round, node 1 answers again: node 2 wins in a few link delays,
    not after a round timeout without a majority of answers and the 2 x A wait of node 1."""
    c = ElectionCluster(bind=False)
    for i, p in ((1, BASE), (2, BASE + 1), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run()
    assert outcome(c, "u#1")[0] == [3]
    c.hb_alive = {1, 2}  # node 3 is killed
    c.silent.add(3)
    c.see_down(1, 3)
    c.run_for(0.005)  # node 1's Election reached node 2, which still follows node 3
    assert c.cores[1].state_of("u#1") == "waiting" and c.cores[2].state_of("u#1") == "lost"
    t1 = c.now
    c.see_down(2, 3)
    c.run_for(0.1)
    assert c.cores[2].state_of("u#1") == "won" and c.rec[2].won["u#1"] - t1 < 0.005
    assert c.cores[1].winner("u#1") == 2
    assert not any(isinstance(e, NoMajority) for i in (1, 2) for _, e in c.rec[i].events)


def test_a_down_node_takes_no_part() -> None:
    c = ElectionCluster()
    c.members[3].set_self_up(False)
    c.cores[3].clear()
    c.heartbeats()
    assert c.cores[3].start("u#1", BASE + 1000, c.now).sends == []
    c.start(1, "u#1", BASE)
    c.start(2, "u#1", BASE + 1)
    c.run()
    assert outcome(c, "u#1") == ([2], {1: 2})
    assert c.rec[2].won["u#1"] < 0.002  # node 3 is down: nobody waits for it
    assert c.cores[3].state_of("u#1") is None


MODES = ["bind", "unasked", "ceiling"]  # bound Elections; unasked votes only; bound, with ceilings


def cluster(mode: str, **kw: Any) -> ElectionCluster:
    """A cluster in `mode` (MODES). With ceilings the priorities a test gives are mapped to the
    ceiling (even steps above BASE) or a job below it (odd ones): a real priority never exceeds
    the ceiling, and the shortcut needs nodes at it."""
    if mode == "ceiling":
        c = ElectionCluster(ceilings=True, **kw)
        c.prio_map = lambda p: TOP - 100 * ((p - BASE) % 2)
        return c
    return ElectionCluster(bind=mode == "bind", **kw)


def elect_all(c: ElectionCluster, rng: random.Random, rids: list[str], gap_s: float) -> None:
    """Every node starts each rid with a random priority, up to gap_s apart; run to the end."""
    for rid in rids:
        for i in c.ids:
            c.start(i, rid, BASE + rng.randrange(0, 3))
        c.run_for(rng.uniform(0.0, gap_s))
    c.run()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", MODES)
def test_random_message_loss_leaves_at_most_one_coordinator(seed: int, mode: str) -> None:
    c = cluster(mode, seed=seed, loss=0.25)
    rids = [f"dave#{k}" for k in range(80)]
    elect_all(c, random.Random(seed), rids, 0.002)
    for rid in rids:
        winners, losers = outcome(c, rid)
        assert len(winners) == 1, (rid, winners)
        assert losers == {i: winners[0] for i in c.ids if i != winners[0]}, rid
    assert c.net.dropped > 0


def test_messages_from_unknown_or_lying_senders_are_ignored() -> None:
    m = Membership(1, [1, 2, 3], 1.0)
    core = ElectionCore(1, m, A)
    assert not core.on_message(2, Election(rid="u#1", node=3, priority=5, round=1), 0.0)
    assert not core.on_message(7, Coordinator(rid="u#1", node=7, round=1), 0.0)
    assert not core.on_message(2, ElectionOk(rid="u#9", node=2, round=1), 0.0)
    assert core.counters == {"bad_sender": 2}
    assert core.state_of("u#1") is None


def test_pending_elections_are_bounded_and_expire() -> None:
    m = Membership(1, [1, 2, 3], 1.0)
    core = ElectionCore(1, m, A, max_pending=2)
    for k in range(3):
        core.on_message(2, Election(rid=f"u#{k}", node=2, priority=1, round=1), 0.0)
    assert core.counters == {"pending_full": 1}
    assert core.next_deadline() == pytest.approx(20 * A)
    core.on_tick(20 * A)
    assert core.state_of("u#0") is None and core.next_deadline() is None


def test_priority_is_free_capacity_then_load_and_never_above_the_ceiling() -> None:
    assert priority(0, 0, 0.0, 2) > priority(1, 0, 0.0, 2) > priority(1, 1, 0.0, 2)
    assert priority(1, 0, 0.0, 2) > priority(1, 0, 0.5, 2) > priority(1, 0, 9.0, 2)
    assert priority(0, 0, 50.0, 2) > priority(1, 0, 0.0, 2)  # load never outweighs a free slot
    assert priority(10**9, 0, 0.0, 1) == 0
    assert priority(0, 0, 0.0, 4) > priority(0, 0, 0.0, 2)  # a larger pool, a higher ceiling
    for slots in (1, 2, 4):  # idle, no load: the ceiling, and nothing above it
        assert max(priority(j, q, x, slots) for j in range(3) for q in range(3)
                   for x in (0.0, 0.05, 0.5, 50.0)) == priority(0, 0, 0.0, slots)
    assert tie_hash("u#1", 1) == tie_hash("u#1", 1) != tie_hash("u#1", 2)


def test_core_and_membership_must_agree_on_self() -> None:
    with pytest.raises(CloudCoreError):
        ElectionCore(2, Membership(1, [1, 2], 1.0), A)


def won_events(c: ElectionCluster, rid: str) -> list[int]:
    """Every Won(rid) any node emitted during the run (a Won means: this node seals now)."""
    return [i for i in c.ids for _, e in c.rec[i].events if e == Won(rid)]


def test_a_slow_highest_node_and_a_timed_out_one_never_both_seal() -> None:
    # Node 3 has the highest key but what it sends arrives 0.45 s late (more than A): 1 and 2
    # stop waiting for it and 2 claims; 3 hears everyone at once and claims too. Node 1 votes
    # for the first claim it hears (2's), so 3 never gets a majority and yields.
    c = ElectionCluster(bind=False)
    c.net.slow = {(3, 1): 0.45, (3, 2): 0.45}
    for i, p in ((1, BASE), (2, BASE + 100), (3, BASE + 900)):
        c.start(i, "u#1", p)
    c.run()
    assert won_events(c, "u#1") == [2]
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})
    # 3 heard every peer and waited for their unasked votes (which never came: they did not
    # hear 3 in time); 2's claim came first, before 3's own (fallback) claim: 3 voted for it.
    # (Probe events are hints to its caller, no election outcome: see the Probe test)
    assert [e for _, e in c.rec[3].events if not isinstance(e, Probe)] == [Lost("u#1", 2)]


def test_a_slow_highest_node_that_claims_is_refused_by_a_voter_of_the_first_claimant() -> None:
    # As above, and 3 hears 2 late too: it decides on its round timeout and claims at once;
    # node 1 voted for 2's claim (the first it heard) and refuses 3's, so 3 yields.
    c = ElectionCluster(bind=False)
    c.net.slow = {(3, 1): 0.45, (3, 2): 0.45, (2, 3): 0.45}
    for i, p in ((1, BASE), (2, BASE + 100), (3, BASE + 900)):
        c.start(i, "u#1", p)
    c.run()
    assert won_events(c, "u#1") == [2]
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})
    # 3's claim, its answer to 1's Election and its resend: no vote
    assert c.cores[1].counters == {"claim_refused": 3}


def test_the_claimant_seals_only_after_a_majority_voted() -> None:
    c = ElectionCluster(bind=False)
    for i, p in ((1, BASE), (2, BASE + 1), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run()
    won_at = c.rec[3].won["u#1"]
    voted_before = [i for i in (1, 2) for t, e in c.rec[i].events if e == Lost("u#1", 3) and t < won_at]
    assert len(voted_before) >= 1  # majority of 3: the claimant and one voter


def test_a_claimants_election_overtaken_by_its_claim_is_no_abdication() -> None:
    """Issue 19, traced under 50 % peer loss with no node down: node 1's round Election to node
    2 was lost and resent and came 500 ms late, after node 1's Claim, which node 2 had voted for.
    Node 2 took it for node 1's abdication, elected again and voted for node 3's Claim, while
    node 1 won with its vote: two winners, two replies. Every round sends its Election before
    its Claim, so the first Election after an early Claim is that round's; a later one is an
    abdication, as before. The same in `pending` (no copy of the request yet)."""
    c = ElectionCluster(bind=False)
    core = c.cores[2]
    core.start("u#1", BASE, c.now)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE, round=2), c.now)
    for rid in ("u#1", "u#2"):  # u#2: pending
        out = core.on_message(1, Claim(rid=rid, node=1, round=4), c.now)
        assert (1, ElectionOk(rid=rid, node=2, round=4)) in out.sends
        out = core.on_message(1, Election(rid=rid, node=1, priority=BASE, round=4), c.now)  # late
        assert out.sends == [] and out.events == []
        out = core.on_message(3, Claim(rid=rid, node=3, round=2), c.now)
        assert out.sends == [] and out.events == []  # our one vote is node 1's
    assert core.counters == {"late_election": 2, "claim_refused": 2}
    assert core.winner("u#1") == 1 and core.state_of("u#2") == "pending"
    # an Election of an older round of node 1 is no abdication either (several rounds overtaken)
    old = Election(rid="u#1", node=1, priority=BASE, round=3)
    assert core.on_message(1, old, c.now).events == []
    new = Election(rid="u#1", node=1, priority=BASE, round=5)  # a new round
    out = core.on_message(1, new, c.now)
    assert Restart("u#1", "winner 1 re-elects") in out.events


@pytest.mark.parametrize("bind", [True, False])  # bound Elections, or unasked votes only
def test_elections_overtaken_by_later_messages_still_elect_one_winner(bind: bool) -> None:
    """The real transport delivers each message on its own: one lost and resent comes after
    later ones on the same link (FakeNet.late). With slow links and late Elections in 400 seeded
    combinations, at most one node wins and every node ends knowing it (the old core: two
    winners in several of them)."""
    for k in range(400):
        rng = random.Random(k)
        c = ElectionCluster(bind=bind, seed=k)
        links = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]
        c.net.slow = {ln: rng.choice([0.05, 0.13, 0.2, 0.3, 0.45, 0.6]) for ln in links
                      if rng.random() < 0.5}
        c.net.late = {(*ln, Election): rng.choice([0.2, 0.35, 0.5, 0.7, 1.0]) for ln in links
                      if rng.random() < 0.4}
        for i in c.ids:
            c.start(i, "u#3", BASE)  # node 3 > 1 > 2 by tie hash
        c.run()
        assert won_events(c, "u#3") in ([1], [2], [3]), (k, c.net.slow, c.net.late)
        (w,), losers = outcome(c, "u#3")
        assert losers == {i: w for i in c.ids if i != w}, k


def test_a_voter_refuses_a_second_claimant_while_the_first_is_up() -> None:
    c = ElectionCluster()
    core = c.cores[1]
    out = core.on_message(2, Claim(rid="u#1", node=2, round=3), c.now)
    assert out.sends == [(2, ElectionOk(rid="u#1", node=1, round=3))]
    assert core.on_message(3, Claim(rid="u#1", node=3, round=7), c.now).sends == []  # 2 is up
    assert core.counters == {"claim_refused": 1}
    c.hb_alive = {1, 3}  # 2 stops: once it is no longer up, its vote is free
    c.run_for(1.5)
    out = core.on_message(3, Claim(rid="u#1", node=3, round=7), c.now)
    assert out.sends == [(3, ElectionOk(rid="u#1", node=1, round=7))]
    core.start("u#1", BASE, c.now)
    assert core.winner("u#1") == 3


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("mode", MODES)
def test_late_and_lost_messages_never_make_two_nodes_seal(seed: int, mode: str) -> None:
    # Delays up to 1.5 answer timeouts and 10 % loss: nodes time out on peers that are only
    # slow and several claim; with no node down, exactly one node ever emits Won per request.
    c = cluster(mode, seed=seed, loss=0.1)
    c.net.delay = (0.0002, 1.5 * A)
    rids = [f"erin#{k}" for k in range(60)]
    elect_all(c, random.Random(seed), rids, 0.05)
    for rid in rids:
        winners = won_events(c, rid)
        assert len(winners) == 1, (rid, winners)
        assert outcome(c, rid) == (winners, {i: winners[0] for i in c.ids if i != winners[0]}), rid


def test_a_node_that_missed_coordinator_and_done_cannot_win_on_answers_of_an_earlier_round() -> None:
    """Commit 79dd941 (the TN-5 stale keys run of tests/net without root): node 1 never hears a
    Claim or a Coordinator (nor the Done that follows). It waits for the winner, times out and restarts
    with the winner suspected. Its peers have forgotten the request (Done): they answer nothing,
    so node 1 has no answer of this round and must not win. The keys it heard in the first
    round are no evidence for the new one (with them it won and served the request a second
    time)."""
    c = ElectionCluster(bind=False)
    c.net.deaf_to.add((1, Coordinator))
    c.net.deaf_to.add((1, Claim))  # no vote either: node 2's vote makes 3's majority
    # node 1 does not hear node 2's Election either: without every live peer's answer it
    # waits for 3 instead of voting for it unasked (an unasked vote would make it follow 3)
    c.net.cut.add((2, 1))
    for i, prio in ((1, BASE), (2, BASE), (3, BASE + 300)):
        c.start(i, "u#1", prio)
    c.run_for(0.1)  # a few link delays: 3 won, 2 follows it, 1 still waits for a Coordinator
    assert outcome(c, "u#1") == ([3], {2: 3})
    assert c.cores[1].state_of("u#1") == "waiting"
    for i in (2, 3):  # the winner replied and said Done: its peers that heard it forget
        c.cores[i].forget("u#1")
    c.net.cut.clear()
    c.run_for(20 * A)  # node 1 restarts (no coordinator) and decides again every answer timeout
    assert "u#1" not in c.rec[1].won, c.rec[1].events
    assert any(isinstance(e, Restart) for _, e in c.rec[1].events)  # it did run a new round
    assert [e for _, e in c.rec[1].events if isinstance(e, NoMajority)] == [NoMajority("u#1")]


def drop_first(c: ElectionCluster, losses: set[tuple[int, int, type]]) -> None:
    """The first message of each (src, dst, type) in `losses` is lost; everything else arrives."""
    send = c.net.send
    left = set(losses)

    def lossy(src: int, dst: int, msg, now: float) -> None:
        if (src, dst, type(msg)) in left:
            left.discard((src, dst, type(msg)))
            c.net.sent += 1
            c.net.dropped += 1
            return
        send(src, dst, msg, now)

    c.net.send = lossy


def test_the_top_wins_on_unasked_votes_and_sends_no_claim() -> None:
    c = ElectionCluster(bind=False, seed=3)
    claims: list[tuple[int, int]] = []
    send = c.net.send
    c.net.send = lambda s, d, m, t: (claims.append((s, d)) if isinstance(m, Claim) else None,
                                     send(s, d, m, t))[1]
    for i, p in ((1, BASE + 7), (2, BASE), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run_for(A)
    assert won_events(c, "u#1") == [1] and claims == []
    # each voter voted once, before the win (Lost is its vote), and the win came with a vote
    for i in (2, 3):
        assert [e for _, e in c.rec[i].events] == [Lost("u#1", 1)]
    assert min(c.rec[i].events[0][0] for i in (2, 3)) < c.rec[1].won["u#1"]


def test_the_top_claims_after_one_answer_timeout_when_the_unasked_votes_are_lost() -> None:
    c = ElectionCluster(bind=False)
    drop_first(c, {(2, 1, ElectionOk), (3, 1, ElectionOk)})
    for i, p in ((1, BASE + 7), (2, BASE), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run_for(3 * A)
    assert won_events(c, "u#1") == [1]
    # the Claim leaves one answer timeout after the decision; the voters answer it at once
    assert A < c.rec[1].won["u#1"] <= A + 0.004
    assert outcome(c, "u#1") == ([1], {2: 1, 3: 1})


def test_a_top_that_heard_nobody_wins_on_the_resent_unasked_votes() -> None:
    # Every message to node 1 in the first round is lost: it has no answer and cannot decide.
    # Its peers heard it and voted unasked; they resend the vote after 2 answer timeouts, and
    # a vote is an answer: node 1 then has its quorum and its majority.
    c = ElectionCluster(bind=False)
    drop_first(c, {(2, 1, Election), (3, 1, Election), (2, 1, ElectionOk), (3, 1, ElectionOk)})
    for i, p in ((1, BASE + 7), (2, BASE), (3, BASE + 2)):
        c.start(i, "u#1", p)
    c.run_for(2 * A + 0.01)
    assert won_events(c, "u#1") == [1]
    assert [e for _, e in c.rec[1].events] == [NoMajority("u#1"), Won("u#1")]
    assert 2 * A < c.rec[1].won["u#1"]
    assert outcome(c, "u#1") == ([1], {2: 1, 3: 1})


def core_with_peers_up(*, bind: bool = True, ids: tuple[int, ...] = (1, 2, 3), slots: int = 0,
                       **kw: Any) -> ElectionCore:
    """Node 1's core among `ids`, having heard a heartbeat of nodes 2 and 3 at time 0 (saying a
    pool of `slots`); `kw`: more ElectionCore arguments."""
    m = Membership(1, ids, 1.0)
    for p in (2, 3):
        hb = Membership(p, ids, 1.0).heartbeat(load=0, token_epoch=0, token_holder=0,
                                                slots=slots)
        m.observe(hb, 0.0)
    return ElectionCore(1, m, A, bind=bind, **kw)


def round_to(out: Output, dest: int) -> int:
    """The round of the last Election or Claim in `out` to `dest`: the round its vote carries."""
    return [m.round for d, m in out.sends if d == dest and isinstance(m, (Election, Claim))][-1]


def test_an_unasked_vote_is_not_counted_after_the_top_restarted() -> None:
    """A vote given for the first round may arrive after the top restarted (its voter then
    re-elects when our new Election comes): it carries the old round and counts for nothing."""
    core = core_with_peers_up(bind=False)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 50, round=1), 0.0)
    first = round_to(core.start("u#1", BASE + 10, 0.0), 2)  # 3 is higher: wait for its Claim
    assert core.state_of("u#1") == "waiting"
    out = core.on_tick(2 * A)  # 3 never claimed: restart with 3 suspected
    assert Restart("u#1", "no coordinator") in out.events and round_to(out, 2) > first
    out = core.on_message(2, ElectionOk(rid="u#1", node=2, round=first), 2 * A)  # first round's
    assert out.events == [] and core.state_of("u#1") == "electing"
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=1), 2 * A)
    # 2 answered this round: node 1 decides and claims (the stale vote was not kept)
    assert core.state_of("u#1") == "claiming" and Won("u#1") not in out.events
    claim = round_to(out, 2)
    assert (2, Claim(rid="u#1", node=1, round=claim)) in out.sends
    assert core.on_message(2, ElectionOk(rid="u#1", node=2, round=first), 2 * A).events == []
    out = core.on_message(2, ElectionOk(rid="u#1", node=2, round=claim), 2 * A)
    assert out.events == [Won("u#1")]
    assert core.counters == {"stale_vote": 2}


def test_a_refused_claimant_gets_the_vote_as_soon_as_the_first_claimant_goes_down() -> None:
    """Failover: node 1 has no copy of the request yet (pending) and voted for 2's claim; 3's
    claim is refused while 2 is up. 2 is killed: node 1 votes for 3 at once, not when 3
    resends its Claim an answer timeout later; only once, and never for a claimant not up."""
    core = core_with_peers_up()
    assert core.on_message(2, Claim(rid="u#1", node=2, round=4), 0.0).sends == [
        (2, ElectionOk(rid="u#1", node=1, round=4))]
    assert core.on_message(3, Claim(rid="u#1", node=3, round=9), 0.0).sends == []
    assert core.counters == {"claim_refused": 1}
    out = core.peer_down(2, 0.01)
    assert out.sends == [(3, ElectionOk(rid="u#1", node=1, round=9))]
    assert core.peer_down(2, 0.02).sends == []  # voted: nothing more
    out = core.on_message(3, Claim(rid="u#1", node=3, round=9), 0.03)  # its resend: same vote
    assert out.sends == [(3, ElectionOk(rid="u#1", node=1, round=9))]


def test_a_top_waiting_for_unasked_votes_claims_at_once_when_a_peer_goes_down() -> None:
    """Failover: node 1 is the top, heard every peer, and waits (an answer timeout at most) for
    the unasked votes instead of claiming. Node 3 is killed before its vote left: node 1 asks
    node 2 at once with a Claim, and wins on its vote."""
    core = core_with_peers_up()
    core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=1), 0.0)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 1, round=1), 0.0)
    out = core.start("u#1", BASE + 50, 0.0)
    assert core.state_of("u#1") == "claiming"
    assert not any(isinstance(m, Claim) for _, m in out.sends)  # waiting for unasked votes
    first = round_to(out, 2)
    core.m.refused(3, 0.01)  # its port is closed: the membership says so first
    out = core.peer_down(3, 0.01)
    # a new round: a vote node 3 sent before it died (resent by its transport) never counts
    new = round_to(out, 2)
    assert out.sends == [(2, Claim(rid="u#1", node=1, round=new))] and new > first
    out = core.on_message(2, ElectionOk(rid="u#1", node=2, round=new), 0.011)
    assert out.events == [Won("u#1")]


def test_a_voter_waiting_for_the_top_votes_at_once_when_the_silent_peer_goes_down() -> None:
    """Failover (the chaos SIGKILL): node 3 was frozen, then killed, before its Election left.
    Node 1 heard the top (node 2) but not node 3, so it waits for node 2's Claim; node 2, once
    it sees node 3 gone, decides and (before) waited an answer timeout for unasked votes that
    nobody sent. Node 1 votes for node 2 as soon as node 3 goes down."""
    core = core_with_peers_up(bind=False)
    core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 50, round=6), 0.0)
    out = core.start("u#1", BASE, 0.0)
    assert core.state_of("u#1") == "waiting" and out.events == []
    core.m.refused(3, 0.01)
    out = core.peer_down(3, 0.01)
    assert out.sends == [(2, ElectionOk(rid="u#1", node=1, round=6))]
    assert out.events == [Lost("u#1", 2)] and core.winner("u#1") == 2


def test_a_top_that_decides_because_the_silent_peer_went_down_claims_at_once() -> None:
    """The same failover from the top's side: node 1 is the top, heard node 2 and not node 3.
    Node 3 goes down: node 1 decides at once and sends its Claim at once (node 2, waiting for
    node 1, may not have seen node 3 go down yet and would not vote unasked)."""
    core = core_with_peers_up()
    core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=1), 0.0)
    out = core.start("u#1", BASE + 50, 0.0)
    assert core.state_of("u#1") == "electing" and out.events == []
    core.m.refused(3, 0.01)
    out = core.peer_down(3, 0.01)
    assert core.state_of("u#1") == "claiming"
    new = round_to(out, 2)
    assert out.sends == [(2, Claim(rid="u#1", node=1, round=new))]
    out = core.on_message(2, ElectionOk(rid="u#1", node=2, round=new), 0.011)
    assert out.events == [Won("u#1")]


def test_a_peer_killed_before_its_elections_left_costs_no_answer_timeout() -> None:
    """Both sides together on the fake network: node 3 is silent from the start (frozen, then
    killed), nodes 1 and 2 elect; both see node 3's port closed at the same moment. The top
    wins a few link delays later, not an answer timeout later; one winner."""
    c = ElectionCluster(bind=False)
    c.silent.add(3)
    c.start(1, "u#1", BASE)
    c.start(2, "u#1", BASE + 50)
    c.run_for(0.01)
    assert c.cores[2].state_of("u#1") == "electing" and c.cores[1].state_of("u#1") == "waiting"
    c.hb_alive = {1, 2}
    t0 = c.now
    for i in (1, 2):
        c.members[i].refused(3, t0)
        c.apply(i, c.cores[i].peer_down(3, t0))
    c.run_for(A)
    assert outcome(c, "u#1") == ([2], {1: 2})
    assert c.rec[2].won["u#1"] - t0 < 0.005


def test_a_top_waiting_for_unasked_votes_answers_a_lower_claim_with_its_own() -> None:
    """Two claimants: node 1 is the top and waits for unasked votes; node 2 claims (it saw node
    1's abstention first). Node 2 never votes unasked: node 1 answers its Claim with its own at
    once, node 2 yields, node 1 wins, instead of both waiting an answer timeout."""
    m = Membership(1, [1, 2, 3], 1.0)
    for p in (2, 3):
        m.observe(Membership(p, [1, 2, 3], 1.0).heartbeat(load=0, token_epoch=0,
                                                           token_holder=0), 0.0)
    core = ElectionCore(1, m, A, bind=False, tie_hash=lambda rid, node: 100 - node)  # claim order 1 > 2 > 3
    core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=1), 0.0)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE, round=1), 0.0)
    out = core.start("u#1", BASE, 0.0)
    r = round_to(out, 2)
    assert core.state_of("u#1") == "claiming" and out.sends == [
        (2, Election(rid="u#1", node=1, priority=BASE, round=r)),
        (3, Election(rid="u#1", node=1, priority=BASE, round=r))]  # no Claim: unasked votes
    out = core.on_message(2, Claim(rid="u#1", node=2, round=1), 0.001)
    assert out.sends == [(2, Claim(rid="u#1", node=1, round=r))]
    assert core.on_message(2, ElectionOk(rid="u#1", node=2, round=r), 0.002).events == [Won("u#1")]


def test_an_abstention_then_a_real_election_costs_no_answer_timeout() -> None:
    """After a simulated failure node 3 abstains (priority 0) on node 1's Election, which came
    before node 3's copy of the request, late (after the grace); node 2 is down. Node 1 claims
    at once; node 3 then elects with its real key, higher than node 1's, and waits for unasked
    votes. One winner, node 3, a few link delays later (it was one answer timeout: both
    claimants waited)."""
    rid = next(r for r in (f"u#{i}" for i in range(100)) if tie_hash(r, 3) > tie_hash(r, 1))
    c = ElectionCluster(bind=False)
    c.members[2].set_self_up(False)
    c.cores[2].clear()
    c.heartbeats()
    c.cores[3].abstain_until = 10.0
    c.start(1, rid, BASE)
    for _ in range(1000):  # node 3 had no copy within the grace: it abstained, node 1 claims
        c.run_for(0.0001)  # (steps shorter than a link delay: its Claim is still on the way)
        if c.cores[1].state_of(rid) == "claiming":
            break
    assert c.cores[3].state_of(rid) == "pending" and c.cores[1].state_of(rid) == "claiming"
    assert c.now > c.cores[3].abstain_grace_s
    c.start(3, rid, BASE)
    t0 = c.now
    c.run_for(A)
    assert outcome(c, rid) == ([3], {1: 3})
    assert c.rec[3].won[rid] - t0 < 0.01


def test_a_lost_node_probes_its_winner_when_another_peer_re_elects() -> None:
    """Failover: node 1 voted for 3; node 2 saw 3 die (its port answered unreachable) and sends a
    new round's Election. Node 1 answers it and asks its caller to probe 3 now (a heartbeat, which
    a killed process's port answers at once) rather than learn it at its next heartbeat; once per
    peer while lost, and never for the winner's own new round (that is a restart)."""
    core = core_with_peers_up()
    # 3's round 1: its Election, then its Claim
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 9, round=1), 0.0)
    core.on_message(3, Claim(rid="u#1", node=3, round=1), 0.0)
    core.start("u#1", BASE, 0.0)
    assert core.winner("u#1") == 3
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 1, round=2), 0.05)
    assert out.events == [Probe(3)]
    assert out.sends == [(2, Election(rid="u#1", node=1, priority=BASE, round=round_to(out, 2)))]
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 1, round=3), 0.06)
    assert out.events == []
    out = core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 9, round=2), 0.07)
    assert Probe(3) not in out.events and core.state_of("u#1") != "lost"


def test_a_node_without_a_copy_abstains_only_within_its_window_and_never_to_an_abstention() -> None:
    core = core_with_peers_up()
    core.abstain_until = 1.0
    grace = core.abstain_grace_s
    assert grace == A / 10
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=1), 0.5)
    assert out.sends == []  # our copy may still come
    assert core.on_message(3, Election(rid="u#1", node=3, priority=0, round=1), 0.5).sends == []
    assert core.next_deadline() == 0.5 + grace
    assert core.on_tick(0.5 + grace / 2).sends == []
    out = core.on_tick(0.5 + grace)  # no copy: the request was missed, abstain
    assert out.sends == [(2, Election(rid="u#1", node=1, priority=0, round=0))]
    assert core.state_of("u#1") == "pending"
    assert core.on_tick(0.5 + 2 * grace).sends == []  # once per Election
    assert core.on_message(3, Election(rid="u#2", node=3, priority=BASE, round=1), 1.0).sends == []
    assert core.on_tick(1.0 + grace).sends == []  # the window is over
    core.start("u#3", BASE, 0.5)  # with a copy: a real Election, no abstention
    out = core.on_message(2, Election(rid="u#3", node=2, priority=BASE + 1, round=1), 0.5)
    assert not any(isinstance(m, Election) and m.priority == 0 for _, m in out.sends)


def test_a_fresh_request_in_the_abstention_window_gets_a_real_answer_when_its_copy_comes() -> None:
    """After a restart, a peer's Election often comes a few ms before our own copy of a fresh
    request. We no longer abstain at once (the peer would claim at once, whatever the loads):
    the copy comes within the grace and we take part with our real key, never abstaining."""
    core = core_with_peers_up(bind=False)
    core.abstain_until = 10.0
    assert core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 1, round=1),
                           0.0).sends == []  # fmt: skip
    out = core.start("u#1", BASE + 50, 0.005)  # our copy, 5 ms later
    r = round_to(out, 2)
    assert out.sends == [(2, Election(rid="u#1", node=1, priority=BASE + 50, round=r)),
                         (3, Election(rid="u#1", node=1, priority=BASE + 50, round=r))]
    later = core.on_tick(core.abstain_grace_s + 0.001).sends + core.on_tick(1.0).sends
    assert not any(isinstance(m, Election) and m.priority == 0 for _, m in later)


def test_no_unasked_vote_for_a_refused_claimant_that_is_down_too() -> None:
    core = core_with_peers_up()
    core.on_message(2, Claim(rid="u#1", node=2, round=1), 0.0)
    core.on_message(3, Claim(rid="u#1", node=3, round=1), 0.0)  # refused
    core.m.refused(3, 0.005)  # its port is closed: unreachable at once
    assert core.peer_down(2, 0.01).sends == []


def test_a_node_that_yielded_releases_a_late_vote() -> None:
    core = core_with_peers_up(bind=False)
    first = round_to(core.start("u#1", BASE, 0.0), 3)
    core.on_message(2, Claim(rid="u#1", node=2, round=1), 0.0)  # node 1 votes for 2
    assert core.winner("u#1") == 2
    out = core.on_message(3, ElectionOk(rid="u#1", node=3, round=first), 0.0)  # 3 voted for us
    # released: an Election of a round 3 has not seen, which 3 takes for our abdication
    r = round_to(out, 3)
    assert out.sends == [(3, Election(rid="u#1", node=1, priority=BASE, round=r))] and r > first
    assert core.counters == {"vote_released": 1}
    assert core.on_message(2, ElectionOk(rid="u#1", node=2, round=1), 0.0).sends == []  # winner's


def test_after_a_restart_a_vote_counts_only_from_a_peer_that_answered_the_new_round() -> None:
    """A vote sent (or resent) before our new round's Election reached its voter may have been
    given up since (the voter re-elects on that Election): it is not counted until the voter's
    answer of the new round came, which follows any such vote on its link."""
    core = core_with_peers_up(bind=False)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 50, round=1), 0.0)
    core.start("u#1", BASE + 10, 0.0)  # 3 is higher: wait for its claim
    assert Restart("u#1", "no coordinator") in core.on_tick(2 * A).events  # 3 suspected
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=1), 2 * A)
    r = round_to(out, 3)
    assert core.state_of("u#1") == "claiming"
    assert (3, Claim(rid="u#1", node=1, round=r)) in out.sends
    out = core.on_message(3, ElectionOk(rid="u#1", node=3, round=r), 2 * A)  # 3 did not answer
    assert out.events == [] and core.state_of("u#1") == "claiming"  # this round
    assert core.counters == {"vote_before_answer": 1}
    assert core.on_message(2, ElectionOk(rid="u#1", node=2, round=r), 2 * A).events == [Won("u#1")]


def test_the_top_claims_at_once_when_a_peer_abstained() -> None:
    """A peer without a copy of the request (it restarted and missed it) answers with an
    Election of priority 0 and never votes unasked: the top claims at once instead of waiting
    an answer timeout for votes that cannot come."""
    core = core_with_peers_up()
    core.start("u#1", BASE, 0.0)
    core.on_message(2, Election(rid="u#1", node=2, priority=0, round=0), 0.001)
    out = core.on_message(3, Election(rid="u#1", node=3, priority=0, round=0), 0.001)
    assert core.state_of("u#1") == "claiming"
    r = round_to(out, 2)
    assert [d for d, m in out.sends if m == Claim(rid="u#1", node=1, round=r)] == [2, 3]
    assert core.on_message(2, ElectionOk(rid="u#1", node=2, round=r), 0.002).events == [Won("u#1")]


@pytest.mark.parametrize("bind", [True, False])  # bound Elections, or unasked votes only
def test_a_node_frozen_then_killed_amid_elections_is_replaced_within_a_few_link_delays(bind: bool) -> None:
    """The chaos SIGKILL on the fake network, 40 seeds: 12 requests start on every node over
    30 ms; the victim is frozen (silent) at a random moment among them, then killed; each
    survivor sees its port closed at its own moment, up to 50 ms apart. Every request gets
    exactly one winner among the survivors, at most 20 ms after the later survivor saw the
    kill (it was one answer timeout, 300 ms, for a request whose Elections the victim never
    sent)."""
    for seed in range(40):
        rng = random.Random(seed)
        c = ElectionCluster(bind=bind, seed=seed)
        c.net.delay = (0.0002, 0.003)
        victim = rng.choice(c.ids)
        survivors = [i for i in c.ids if i != victim]
        rids = [f"u#{k}" for k in range(12)]
        freeze_at = rng.uniform(0.0, 0.02)
        for t, rid, i in sorted((rng.uniform(0, 0.03), rid, i) for rid in rids for i in c.ids):
            if t >= freeze_at and victim not in c.silent:
                c.run_for(max(0.0, freeze_at - c.now))
                c.silent.add(victim)
            c.run_for(max(0.0, t - c.now))
            if not (i == victim and victim in c.silent):
                c.start(i, rid, BASE + rng.randrange(3))
        c.silent.add(victim)
        c.hb_alive = set(survivors)
        kill_at = c.now + 0.001
        for i, off in sorted(((i, rng.uniform(0.0, 0.05)) for i in survivors),
                             key=lambda x: x[1]):
            c.run_for(max(0.0, kill_at + off - c.now))
            c.see_down(i, victim)
        seen = c.now  # the later survivor saw the kill
        c.run_for(3 * A)
        for rid in rids:
            wins = [(t, i) for i in survivors for t, e in c.rec[i].events if e == Won(rid)]
            assert len(wins) == 1, (seed, rid, wins)
            assert wins[0][0] - seen <= 0.02, (seed, rid, wins[0][0] - seen)


def test_a_vote_resent_from_before_a_partition_does_not_count_after_the_heal() -> None:
    """TN-5 (traced with DEBUG node logs): node 1's input from its peers is cut for 10 s. Its
    peers voted for it unasked (node 1 had the top key) and resent the vote; their transports
    resend the last copy for 5 s more. Node 1 saw both peers unreachable. At the heal it sent
    them its Election again, which node 2 took for an abdication: node 2 elected again and
    voted for node 3. Then the old copy of node 2's vote arrived and node 1 won with it: two
    winners, two replies. The vote carries the round it was given for; a peer that went down
    or unreachable gets a new round, and a vote of an earlier one counts for nothing."""
    x = core_with_peers_up(bind=False)
    out = x.start("u#1", BASE + 50, 0.0)
    first = round_to(out, 2)
    stale = ElectionOk(rid="u#1", node=2, round=first)  # node 2's unasked vote, not delivered
    cut = Output()
    for p in (2, 3):  # the cut: node 1 hears nobody; the failure detector says so
        x.m.refused(p, 1.0)
        cut.extend(x.peer_down(p, 1.0))
    assert cut.events == [NoMajority("u#1")] and x.state_of("u#1") == "electing"
    for p in (2, 3):  # the heal: their heartbeats come again
        hb = Membership(p, [1, 2, 3], 1.0).heartbeat(load=0, token_epoch=0, token_holder=0)
        x.m.observe(hb, 10.0)
    out = x.on_tick(10.0)
    again = round_to(out, 2)
    assert again > first
    assert (2, Election(rid="u#1", node=1, priority=BASE + 50, round=again)) in out.sends
    out = x.on_message(2, stale, 10.001)  # the old copy: node 2 may have voted for 3 since
    assert out.events == [] and x.state_of("u#1") == "electing"
    assert x.counters == {"stale_vote": 1}
    # node 2 answers the new round and votes for node 1 in it: that vote counts
    x.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=7), 10.002)
    assert x.on_message(2, ElectionOk(rid="u#1", node=2, round=again), 10.003).events == []
    assert x.on_tick(10.0 + A).events == [Won("u#1")]  # node 3 silent: decided on the timeout


def test_a_winners_reintroduction_after_a_partition_makes_its_voter_elect_again() -> None:
    """The voter's side of the same heal: node 2 voted for node 1 in round r; node 1's Election
    of a newer round is an abdication (node 2 elects again and can vote for another claimant),
    so node 1 must never count node 2's vote of round r again (test above)."""
    v = ElectionCluster(bind=False).cores[2]
    v.on_message(1, Election(rid="u#1", node=1, priority=BASE + 50, round=3), 0.0)
    v.on_message(3, Election(rid="u#1", node=3, priority=BASE, round=1), 0.0)
    out = v.start("u#1", BASE, 0.0)
    assert (1, ElectionOk(rid="u#1", node=2, round=3)) in out.sends  # unasked, for round 3
    out = v.on_message(1, Election(rid="u#1", node=1, priority=BASE + 50, round=4), 10.0)
    assert Restart("u#1", "winner 1 re-elects") in out.events
    out = v.on_message(3, Claim(rid="u#1", node=3, round=2), 10.001)
    assert (3, ElectionOk(rid="u#1", node=2, round=2)) in out.sends and v.winner("u#1") == 3


@pytest.mark.parametrize("seed", [*range(60), 346, 1367])  # 346, 1367: found in 2,400
@pytest.mark.parametrize("mode", MODES)
def test_a_node_whose_input_is_cut_for_10_s_then_healed_leaves_one_winner(seed: int, mode: str) -> None:
    """TN-5 on the fake network, 62 seeds: node X hears nothing for 10 s (its heartbeats and
    Elections still reach its peers, which keep it up); what its peers send it meanwhile is
    resent as the real transport does, and what was sent within 5 s of the heal arrives after
    it, in any order. Requests start on every node around the cut, X with the top key of most;
    another node goes down for a while near the cut (the failure token: it keeps nothing) and
    comes back; the client resends what nobody answered every 2 s. A winner says Done at once
    and answers a later election message of the request with Done (the node actors). Exactly
    one node wins each request, and nobody is left electing. (A property of the whole core under
    this fault; the interleaving of the traced TN-5 failure is the deterministic test above:
    these seeds, 300 tried, also pass with the round checks removed.)"""
    rng = random.Random(seed)
    c = cluster(mode, seed=seed)
    c.track_transitions = True
    c.done_on_win = True
    x = rng.choice(c.ids)
    third = rng.choice([i for i in c.ids if i != x])
    c.run_for(1.0)
    t_cut, cut_s = c.now, 10.0
    rids = [f"t{seed}#{k}" for k in range(8)]
    prios = {rid: {i: BASE + rng.randrange(3) + (3 if i == x and rng.random() < 0.75 else 0)
                   for i in c.ids} for rid in rids}  # fmt: skip
    down_at = t_cut + rng.uniform(-0.5, 1.0)
    up_at = down_at + rng.uniform(0.5, 2.0)
    starts = [(t_cut + rng.uniform(0.0, 0.05), "start", rid, i) for rid in rids for i in c.ids]
    faults = [(t_cut, "cut", "", 0), (down_at, "down", "", 0), (up_at, "up", "", 0),
              (t_cut + cut_s, "heal", "", 0)]  # fmt: skip
    retries = [(t_cut + 2.0 * k, "retry", "", 0) for k in range(1, 8)]
    events = sorted(starts + faults + retries)
    for t, what, rid, i in events:
        c.run_for(max(0.0, t - c.now))
        if what == "start":
            c.start(i, rid, prios[rid][i])
        elif what == "cut":
            c.hb_deaf = {x}
            c.net.held = {(p, x): t_cut + cut_s for p in c.ids if p != x}
        elif what == "down":
            c.members[third].set_self_up(False)
            c.cores[third].clear()
            c.hb_alive.discard(third)
        elif what == "up":
            c.members[third].set_self_up(True)
            c.hb_alive.add(third)
            c.heartbeats()
        elif what == "heal":
            c.hb_deaf = set()
        else:  # the client resends each request nobody answered to every node
            for r in rids:
                if not won_events(c, r):
                    for n in c.ids:
                        if c.members[n].self_up:
                            c.start(n, r, prios[r][n])
    c.run_for(3 * A)
    c.run()
    for rid in rids:
        assert len(set(won_events(c, rid))) == 1, (seed, x, third, rid, won_events(c, rid))
        left = {i: c.cores[i].state_of(rid) for i in c.ids}
        assert not {"electing", "waiting", "claiming"} & set(left.values()), (seed, rid, left)


def test_after_a_restart_a_vote_for_the_current_round_counts() -> None:
    """A peer that yielded to an earlier Claim of ours and heard our new round since votes for
    it while we elect (not claim): that vote is an answer and a vote. Before rounds, votes
    counted in `electing` only in the first round, and a node that every peer had voted for
    after its restart, and that none answered with an Election, elected for ever (the TN-5
    fault on the fake network, seed 346)."""
    core = core_with_peers_up(bind=False)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 50, round=1), 0.0)
    core.start("u#1", BASE + 10, 0.0)  # 3 is higher: wait for its Claim
    out = core.on_tick(2 * A)  # none: restart with 3 suspected
    assert Restart("u#1", "no coordinator") in out.events
    r = round_to(out, 2)
    out = core.on_message(2, ElectionOk(rid="u#1", node=2, round=r), 2 * A + 0.001)
    assert out.events == [Won("u#1")]


def test_a_claim_of_a_round_its_claimant_has_left_gets_no_vote() -> None:
    """A Claim resent before a partition arrives after its heal, when its claimant already
    elects in a newer round (it gave that claim up): following it would leave this node lost to
    a node that is not claiming, which may follow this node in turn (two nodes each waiting for
    the other: the TN-5 fault on the fake network, seed 1367). The claim of the current round
    gets the vote."""
    core = core_with_peers_up(bind=False)
    core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 50, round=9), 0.0)
    core.start("u#1", BASE, 0.0)  # 2 is higher: node 1 waits for its Claim
    out = core.on_message(2, Claim(rid="u#1", node=2, round=4), 0.001)  # of an older round
    assert out.sends == [] and out.events == [] and core.state_of("u#1") == "waiting"
    assert core.counters == {"stale_claim": 1}
    out = core.on_message(2, Claim(rid="u#1", node=2, round=9), 0.002)
    assert out.sends == [(2, ElectionOk(rid="u#1", node=1, round=9))]
    assert out.events == [Lost("u#1", 2)]
