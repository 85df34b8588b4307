"""ElectionCore's bound Elections (the default): each node's first Election is its vote for the top
key among the nodes it counted live, so the top wins one link delay after the last Election."""

import random
from typing import Any

import pytest
from cloud_sim import ElectionCluster
from test_election import BASE, A, core_with_peers_up, outcome, won_events

from actors.core.election import ASK, Lost, Won
from codec.messages import Claim, Election, ElectionOk

ALL = 1 << 1 | 1 << 2 | 1 << 3  # the binding of a node that counted nodes 1, 2, 3 live


def test_the_top_wins_on_the_elections_alone_one_link_delay_after_the_last() -> None:
    c = ElectionCluster()
    prios = {1: BASE, 2: BASE + 300, 3: BASE + 100}
    for i in c.ids:
        c.start(i, "u#1", prios[i])
    c.run_for(A)
    assert outcome(c, "u#1") == ([2], {1: 2, 3: 2})
    assert [e for _, e in c.rec[2].events] == [Won("u#1")]
    assert c.rec[2].won["u#1"] <= 0.0008  # one link delay (the fake net's longest), not two
    c.run()  # no Done here: nothing else is ever sent, no vote, no Claim, no Coordinator
    assert c.net.sent == 6


def test_a_bound_voter_votes_only_for_its_top_once_it_knows_every_key() -> None:
    core = core_with_peers_up()  # node 1, nodes 2 and 3 up
    core.start("u#1", BASE, 0.0)
    # node 3 claims before node 1 knows node 2's key: no vote yet (node 2 may be the top)
    assert core.on_message(3, Claim(rid="u#1", node=3, round=5), 0.001).sends == []
    assert core.counters["claim_refused_bound"] == 1
    out = core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 5, round=5, bind=ALL),
                          0.002)
    assert [m for _, m in out.sends if isinstance(m, ElectionOk)] == []
    # node 2's key comes, lower: node 3 is the top, and it asked already: the vote goes now
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 1, round=9, bind=ALL),
                          0.003)
    assert (3, ElectionOk(rid="u#1", node=1, round=5)) in out.sends
    assert Lost("u#1", 3) in out.events
    # a Claim of node 2 (not the top) never gets it
    out = core.on_message(2, Claim(rid="u#1", node=2, round=9), 0.004)
    assert [m for _, m in out.sends if isinstance(m, ElectionOk)] == []


def test_a_bound_voter_whose_top_never_asked_sends_no_vote() -> None:
    core = core_with_peers_up()
    core.start("u#1", BASE, 0.0)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 5, round=5, bind=ALL), 0.001)
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE + 1, round=9, bind=ALL),
                          0.002)
    assert out.sends == [] and out.events == [Lost("u#1", 3)]  # its Election was the vote


def test_the_top_counts_a_binding_only_when_it_knows_every_key_it_names() -> None:
    core = core_with_peers_up(ids=(1, 2, 3, 4))  # node 4 never heard: majority 3 of 4
    core.start("u#1", BASE + 9, 0.0)
    # node 2 counted node 4 live when it started: node 1 has no key of 4 (it may be the top)
    core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=3, bind=ALL | 1 << 4),
                    0.001)
    out = core.on_message(3, Election(rid="u#1", node=3, priority=BASE, round=4, bind=ALL), 0.002)
    # node 3's binding counts, node 2's does not: 2 of the 3 needed. Every peer is bound, so
    # none votes unasked: claim at once, no answer timeout
    assert Won("u#1") not in out.events
    assert (2, Claim(rid="u#1", node=1, round=core._rids["u#1"].round)) in out.sends
    out = core.on_message(2, ElectionOk(rid="u#1", node=2, round=core._rids["u#1"].round), 0.003)
    assert out.events == [Won("u#1")]


def test_a_binding_that_names_a_higher_key_is_no_vote() -> None:
    core = core_with_peers_up()
    core.start("u#1", BASE + 1, 0.0)
    core.on_message(3, Election(rid="u#1", node=3, priority=BASE + 5, round=4, bind=ALL), 0.001)
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=3, bind=ALL), 0.002)
    assert Won("u#1") not in out.events and Lost("u#1", 3) in out.events


def test_an_election_lost_for_good_is_asked_for_again_and_answered() -> None:
    c = ElectionCluster()
    asks = []
    send = c.net.send
    dropped = {(3, 1)}

    def lossy(src: int, dst: int, msg, now: float) -> None:
        if isinstance(msg, Election) and (src, dst) in dropped:
            dropped.discard((src, dst))  # node 3's first Election to node 1 never arrives
            return
        if isinstance(msg, Election) and msg.bind & ASK:
            asks.append((src, dst))
        send(src, dst, msg, now)

    c.net.send = lossy
    for i, prio in ((1, BASE), (2, BASE + 1), (3, BASE + 5)):
        c.start(i, "u#1", prio)
    c.run()
    assert asks == [(1, 3)]  # node 1 lacked node 3's key: it asked node 3 once
    assert outcome(c, "u#1") == ([3], {1: 3, 2: 3})


def test_a_node_without_its_copy_abstains_for_a_bound_peer_and_keeps_key_0() -> None:
    c = ElectionCluster()
    c.start(2, "u#1", BASE)
    c.start(3, "u#1", BASE + 1)
    c.run_for(A / 2)  # node 1's copy is late: after the grace (A / 10) it abstains
    assert outcome(c, "u#1") == ([3], {2: 3})
    c.start(1, "u#1", BASE + 100)  # its copy came: it follows, it does not take part with 100
    c.run()
    assert outcome(c, "u#1") == ([3], {1: 3, 2: 3})


def test_a_peer_silent_for_half_the_failure_timeout_is_left_out_of_the_binding() -> None:
    """A paused node (no heartbeat, no answer) is up for the failure timeout (1 s). Bound to it,
    the others would hold every request until it is declared down; left out after half of
    that, they elect without it at once (the answer timeout, 0.3 s, was the unbound wait)."""
    c = ElectionCluster()
    c.hb_alive = {1, 2}
    c.silent.add(3)
    c.run_for(0.6)  # node 3 last heard at 0: still up, but silent for more than 0.5 s
    assert c.members[1].state_of(3, c.now) == "up"
    t0 = c.now
    c.start(1, "u#1", BASE + 1)
    c.start(2, "u#1", BASE)
    c.run_for(0.05)
    assert outcome(c, "u#1") == ([1], {2: 1})
    assert c.rec[1].won["u#1"] - t0 <= 0.0008  # one link delay: node 2's Election
    assert c.cores[1]._rids["u#1"].bound == 1 << 1 | 1 << 2


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("ceilings", [False, True])
def test_copies_that_come_late_or_never_still_elect_one_winner(seed: int, ceilings: bool) -> None:
    """Each node gets its copy of a request at once, up to 100 ms late (past the abstention
    grace) or never (the client's datagrams to it lost); 5 % of peer messages are lost for good.
    Every request some node started gets exactly one Won, and every node that started it ends
    following that winner. (With ceilings, priorities at a node's ceiling or a job below.)"""
    rng = random.Random(seed)
    c = ElectionCluster(seed=seed, loss=0.05, ceilings=ceilings)
    prios = (BASE, BASE, BASE - 100) if ceilings else (BASE, BASE + 1, BASE + 2)
    starts = []
    for k in range(20):
        rid = f"s{seed}#{k}"
        t0 = rng.uniform(0.0, 0.5)
        for i in c.ids:
            late = rng.choice((0.0, 0.0, rng.uniform(0.0, 0.1), None))
            if late is not None:
                starts.append((t0 + late, rid, i, rng.choice(prios)))
    started: dict[str, set[int]] = {}
    for t, rid, i, prio in sorted(starts):
        c.run_for(max(0.0, t - c.now))
        c.start(i, rid, prio)
        started.setdefault(rid, set()).add(i)
    c.run()
    for rid, nodes in started.items():
        winners = won_events(c, rid)
        assert len(winners) == 1, (rid, winners)
        for i in nodes - set(winners):
            assert c.cores[i].winner(rid) == winners[0], (rid, i)


def test_a_node_that_abstained_answers_an_ask_at_once_with_key_0() -> None:
    core = core_with_peers_up()  # node 1 never gets its copy of u#1
    out = core.on_message(2, Election(rid="u#1", node=2, priority=BASE, round=3, bind=ALL), 0.0)
    assert out.sends == []  # its copy may still come: the grace first
    out = core.on_tick(core.abstain_grace_s)
    assert [(d, m.priority) for d, m in out.sends] == [(2, 0)]  # abstained, to the bound peer
    # node 3 (its copy came late: it elects with key 0 too) lacks our key and asks
    out = core.on_message(3, Election(rid="u#1", node=3, priority=0, round=4, bind=ALL | ASK),
                          core.abstain_grace_s + 0.3)
    assert [(d, type(m), m.priority) for d, m in out.sends] == [(3, Election, 0)]  # at once


def _rejoin_then_cut(p2: int, p3: int, n3_sees: bool) -> tuple[list[int], list[int]]:
    """Node 1 (the top key) has just come back: node 2 (and node 3 unless `n3_sees`) still holds
    it unreachable when a request comes, and hears it again a moment later. Then node 1's link
    goes down (TN-4). Returns who won before the cut, and who of nodes 2 and 3 won after it."""
    c = ElectionCluster()
    c.run_for(0.5)
    for n in (2,) if n3_sees else (2, 3):
        c.see_down(n, 1)
    for node, prio in ((1, BASE + 300), (2, p2), (3, p3)):
        c.start(node, "u#1", prio)
    c.run_for(0.0005)
    for n in (2, 3):
        c.members[n].heard_from(1, c.now)
    c.run_for(0.3)
    first = sorted(n for n in c.ids if "u#1" in c.rec[n].won)
    c.silent.add(1)  # its link is down: it neither sends nor heartbeats
    c.hb_alive.discard(1)
    for n in (2, 3):
        c.see_down(n, 1)
    before = {n: len(c.rec[n].events) for n in (2, 3)}
    c.run_for(5.0)
    after = [n for n in (2, 3) if any(isinstance(e, Won) for _, e in c.rec[n].events[before[n]:])]
    return first, after


@pytest.mark.parametrize(("p2", "p3"), [(BASE + 50, BASE + 100), (BASE + 100, BASE + 50)])
@pytest.mark.parametrize("n3_sees", [True, False])
def test_a_request_as_the_top_rejoins_then_its_link_goes_down_is_served_once(
    p2: int, p3: int, n3_sees: bool
) -> None:
    """The window of a TN-4 failure not yet explained (twelfth session's note): a request comes
    just as the top rejoins, so one node binds it and another does not. One winner before the
    cut: node 1 if a majority (node 1 and node 3) counted it, else the top of nodes 2 and 3;
    after node 1's link goes down, node 1's request is served again by exactly one of them."""
    first, after = _rejoin_then_cut(p2, p3, n3_sees)
    top_of_23 = 2 if p2 > p3 else 3
    assert first == ([1] if n3_sees else [top_of_23])
    assert after == ([top_of_23] if n3_sees else [])  # the one that won before keeps it


@pytest.mark.parametrize(("p2", "p3"), [(BASE + 300, BASE + 50), (BASE + 50, BASE + 300)])
def test_a_peer_that_voted_while_pending_and_restarts_gets_a_bound_voters_answer(
    p2: int, p3: int
) -> None:
    """The TN-4 failure of the twelfth session (2 of ~70 runs, carol#14 never answered), found on
    the fake network: node 1 (the top) has just come back, and nodes 2 and 3 still hold it
    unreachable. Node 3 starts the request bound to {2, 3} and waits for node 2's key; node 2's
    copy comes late, after node 1's Claim, so node 2 votes for node 1 while pending and, at its
    start, follows it without sending an Election. Node 1 wins; its link goes down before node
    3 asks node 2 for its key. Node 2 restarts with a new round and needs an answer from node 3
    for its quorum; node 3 learns node 2's key from that Election and, bound, follows the top of
    {2, 3} without a word. Before the fix, with node 2 the top of {2, 3}, node 2 waited in
    NoMajority for good and nobody answered the request again."""
    c = ElectionCluster()
    c.net.delay = (5e-4, 5e-4)
    c.run_for(0.5)
    for viewer, gone in ((2, 1), (3, 1), (1, 2)):
        c.see_down(viewer, gone)
    c.start(1, "u#1", BASE + 300)
    c.start(3, "u#1", p3)  # bound to {2, 3}: node 1 is down in its view
    c.members[2].heard_from(1, c.now)
    c.members[1].heard_from(2, c.now)
    c.run_for(0.002)  # node 1's Election and Claim reach node 2, still without its copy
    c.members[3].heard_from(1, c.now)
    c.start(2, "u#1", p2)  # it voted for node 1 while pending: it follows it, no Election
    c.run_for(0.05)
    assert won_events(c, "u#1") == [1]
    assert c.rec[2].lost["u#1"] == 1
    assert c.cores[3].state_of("u#1") == "electing"  # bound, node 2's key still missing
    c.silent.add(1)  # node 1's link goes down (TN-4) before node 3 asks node 2 for its key
    c.hb_alive.discard(1)
    for n in (2, 3):
        c.see_down(n, 1)
    c.run_for(5.0)
    top = 2 if p2 > p3 else 3
    assert won_events(c, "u#1") == [1, top]  # served again, once, by the top of {2, 3}
    other = 5 - top
    assert c.cores[other].winner("u#1") == top


def _rejoin_window(seed: int) -> list[int]:
    """TN-4's window with random timing: node 1 has just come back and some views still hold a
    link down (node 2 sees node 1 down; node 3 too, and node 1 nodes 2 or 3, at random); the
    three copies of a request and the heals of those views come in random order within a few
    ms, on random link delays; node 1's link goes down 50-400 ms later, and nodes 2 and 3 see
    it within 200 ms. Returns who of nodes 2 and 3 won, over the whole run."""
    rng = random.Random(seed)
    c = ElectionCluster(seed=seed)
    c.net.delay = (rng.uniform(1e-4, 5e-4), rng.uniform(6e-4, 5e-3))
    c.run_for(0.5)
    downs = [(2, 1)]
    downs += [v for v, p in (((3, 1), 0.5), ((1, 2), 0.5), ((1, 3), 0.3)) if rng.random() < p]
    for viewer, gone in downs:
        c.see_down(viewer, gone)
    prios = {1: BASE + rng.choice([50, 100, 300, 300]),
             2: BASE + rng.choice([50, 100, 300]), 3: BASE + rng.choice([50, 100, 300])}
    steps: list[tuple[float, int, int]] = [(rng.uniform(0, 3e-3), n, 0) for n in (1, 2, 3)]
    steps += [(rng.uniform(0, 6e-3), viewer, gone) for viewer, gone in downs]
    t0 = c.now
    for at, node, gone in sorted(steps):
        c.run_for(max(0.0, t0 + at - c.now))
        if gone:
            c.members[node].heard_from(gone, c.now)
        else:
            c.start(node, "u#1", prios[node])
    c.run_for(rng.uniform(0.05, 0.4))
    c.silent.add(1)
    c.hb_alive.discard(1)
    cut_at = c.now
    seen = sorted((rng.uniform(0, 0.2), n) for n in (2, 3))
    for after, n in seen:
        c.run_for(max(0.0, cut_at + after - c.now))
        c.see_down(n, 1)
    c.run_for(5.0)
    return [n for n in won_events(c, "u#1") if n != 1]


def test_requests_in_the_rejoin_window_are_served_once_by_the_nodes_that_stay() -> None:
    """1,200 random runs of `_rejoin_window` (before the fix of the test above, 3 of them ended
    with nobody of nodes 2 and 3 serving the request): every one is served by exactly one of
    them (before the cut, or after it, once node 1 is down)."""
    bad = {seed: won for seed in range(1200) if len(won := _rejoin_window(seed)) != 1}
    assert not bad, bad


def test_a_node_left_top_of_its_binding_gets_a_claimants_answer_after_its_restart() -> None:
    """Found by a fuzz of asymmetric views (thirteenth session): node 1 starts a request while
    node 3 is still down in its view, so it binds its vote to {1, 2}. Node 2, the top, wins, then
    goes down. Node 3 sees it first, elects again and claims; node 1 sees it later, elects again,
    and is now the top of what is left of its binding: it refuses node 3's Claim. Node 3 answers
    node 1's Election with its Claim, never an Election, so node 1 had no answer for its quorum
    and never claimed, and node 3 never got a vote: nobody served the request until node 3's
    claim expired (pending_ttl_s, 6 s). Now a node's Election after a restart asks (ASK) for
    answers, which node 3 gives whatever its state: node 1 claims too, and the claim order leaves
    one of them, within a few answer timeouts."""
    c = ElectionCluster()
    c.net.delay = (5e-4, 5e-4)
    c.run_for(0.5)
    c.see_down(1, 3)
    c.start(1, "u#1", BASE + 50)  # bound to {1, 2}
    c.members[1].heard_from(3, c.now)
    c.start(3, "u#1", BASE + 100)
    c.start(2, "u#1", BASE + 300)  # the top
    c.run_for(0.05)
    assert won_events(c, "u#1") == [2]
    assert c.rec[1].lost["u#1"] == 2 and c.rec[3].lost["u#1"] == 2
    c.silent.add(2)  # node 2 goes down after it won (its reply lost with it)
    c.hb_alive.discard(2)
    cut = c.now
    c.see_down(3, 2)
    c.run_for(0.05)  # node 3 elects again and claims before node 1 sees node 2 gone
    c.see_down(1, 2)
    c.run_for(10.0)
    after = [n for n in won_events(c, "u#1") if n != 2]
    assert len(after) == 1, c.rec  # served again, once
    (when,) = [t for n in (1, 3) for t, e in c.rec[n].events if e == Won("u#1")]
    # fake time: a few answer timeouts (0.3 s each), not the 6 s of an expired claim
    assert when - cut < 2.0, when - cut


def _views_window(seed: int) -> list[tuple[str, object]]:
    """Asymmetric views at random (thirteenth session): each directed view "a sees b down" holds
    with probability 0.3 when three requests come, and heals within 6 ms; each node gets each
    copy with probability 0.95, in random order, on random link delays; 0-400 ms later one node
    at random (or none) goes silent, and the others notice within 200 ms. Returns the requests
    that went wrong: not served by exactly one node that stays, or served again more than 2 s
    (fake time) after the cut. A request only one node that stays has a copy of waits for the
    client's retry (not modelled): left out."""
    rng = random.Random(seed)
    c = ElectionCluster(seed=seed)
    c.net.delay = (rng.uniform(1e-4, 5e-4), rng.uniform(6e-4, 5e-3))
    c.run_for(0.5)
    downs = [(a, b) for a in c.ids for b in c.ids if a != b and rng.random() < 0.3]
    for viewer, gone in downs:
        c.see_down(viewer, gone)
    rids = [f"r#{k}" for k in range(3)]
    copies = {rid: {n for n in c.ids if rng.random() < 0.95} for rid in rids}
    steps: list[tuple[float, int, str, int]] = [
        (rng.uniform(0, 4e-3), n, rid, BASE + rng.choice([50, 100, 300]))
        for rid in rids for n in sorted(copies[rid])
    ]
    steps += [(rng.uniform(0, 6e-3), viewer, "", gone) for viewer, gone in downs]
    t0 = c.now
    for at, node, rid, arg in sorted(steps):
        c.run_for(max(0.0, t0 + at - c.now))
        if rid:
            c.start(node, rid, arg)
        else:
            c.members[node].heard_from(arg, c.now)
    c.run_for(rng.uniform(0.0, 0.4))
    victim = rng.choice([0, *c.ids])
    cut = c.now
    if victim:
        c.silent.add(victim)
        c.hb_alive.discard(victim)
        for after, n in sorted((rng.uniform(0, 0.2), n) for n in c.ids if n != victim):
            c.run_for(max(0.0, cut + after - c.now))
            c.see_down(n, victim)
    c.run_for(8.0)
    wrong: list[tuple[str, object]] = []
    for rid in rids:
        if len(copies[rid] - {victim}) < 2:
            continue
        wins = [(t, n) for n in c.ids if n != victim for t, e in c.rec[n].events if e == Won(rid)]
        if len(wins) != 1:
            wrong.append((rid, wins))
        elif victim and wins[0][0] > cut + 2.0:
            wrong.append((rid, f"served {wins[0][0] - cut:.1f} s after the cut"))
    return wrong


def test_requests_under_asymmetric_views_are_served_once_and_soon_by_the_nodes_that_stay() -> None:
    """600 random runs of `_views_window`. Before the restart's ASK, 52 of them went wrong: 57
    requests served 6.0-6.5 s after the cut (a claim had to expire, pending_ttl_s), and one never
    (a bound voter's silence)."""
    bad = {seed: w for seed in range(600) if (w := _views_window(seed))}
    assert not bad, bad


def _one_way_window(seed: int) -> tuple[list[tuple[str, list[int]]], bool]:
    """One or two directed links fail for 0.2-2 s while four requests come (thirteenth session):
    what they carry arrives after the heal, as the transport's resends would, and their
    heartbeats are lost meanwhile (the views follow them); the winner says Done at once, and a
    node that got it answers later election messages with Done (`done_on_win`). Returns the
    requests (with two copies or more) not won exactly once, and whether a node was judged down
    (its peer's failure detector called it down or unreachable)."""
    rng = random.Random(seed)
    c = ElectionCluster(seed=seed)
    c.track_transitions = True
    judged: list[int] = []  # a node's failure detector called a peer not up, at some moment
    for m in c.members.values():
        def up_peers(now: float, m: Any = m, up: Any = m.up_peers) -> Any:
            peers = up(now)
            if len(peers) < len(m.peer_ids):
                judged.append(m.self_id)
            return peers

        def state_of(node: int, now: float, m: Any = m, state: Any = m.state_of) -> Any:
            s = state(node, now)
            if s != "up" and node != m.self_id:
                judged.append(m.self_id)
            return s
        m.up_peers = up_peers  # type: ignore[method-assign]
        m.state_of = state_of  # type: ignore[method-assign]
    c.done_on_win = True
    c.net.delay = (rng.uniform(1e-4, 5e-4), rng.uniform(6e-4, 5e-3))
    c.run_for(0.5)
    links = [(a, b) for a in c.ids for b in c.ids if a != b]
    failed_for = rng.uniform(0.2, 2.0)
    for link in rng.sample(links, rng.choice([1, 1, 2])):
        c.net.held[link] = c.now + failed_for
        c.hb_cut.add(link)
    steps: list[tuple[float, int, str]] = [(failed_for, 0, "")]
    copies: dict[str, set[int]] = {}
    for k in range(4):
        rid, t0 = f"r#{k}", rng.uniform(0, 2.5)
        copies[rid] = {n for n in c.ids if rng.random() < 0.95}
        steps += [(t0 + rng.uniform(0, 3e-3), n, rid) for n in sorted(copies[rid])]
    base = c.now
    for at, node, rid in sorted(steps):
        c.run_for(max(0.0, base + at - c.now))
        if rid:
            c.start(node, rid, BASE + rng.choice([50, 100, 300]))
        else:
            c.hb_cut.clear()
    c.run_for(10.0)
    wrong = [(rid, won) for rid in copies if len(copies[rid]) >= 2
             if len(won := won_events(c, rid)) != 1]
    return wrong, bool(judged)


def test_one_way_link_failures_leave_every_request_served_and_once_if_nobody_was_judged_down(
) -> None:
    """400 random runs of `_one_way_window`: every request is served, and served once unless a
    node was judged down. A node judged down while it was alive (its two links out failed, or
    two nodes lost each other) may serve a request its peers serve too: the case the design
    accepts (under 1 % with a node down or suspected; 3 of these 400 runs). In 154 of them
    nobody was judged down. The code before this session passes too: this guards the restart's
    ASK (a duplicate or an unserved request under one-way failures would show here)."""
    unserved: dict[int, object] = {}
    twice: dict[int, object] = {}
    for seed in range(400):
        wrong, judged = _one_way_window(seed)
        if any(not won for _, won in wrong):
            unserved[seed] = wrong
        elif wrong and not judged:
            twice[seed] = wrong
    assert not unserved and not twice, (unserved, twice)
