"""TokenRing: the failure-simulation token, on 3 cores (membership + token) with a fake clock.

TokenCluster (tests/cloud_sim.py) checks the TC-7 invariants at every step: at most one node
down; at most one holder per epoch; each (epoch, seq) held by one node only; a node goes down
only with the newest token; minted epochs only grow and each mint replaces a token whose holder
was frozen or silent to the minter.
"""

import random
from dataclasses import replace

import pytest
from cloud_sim import FAST_FAILURES, TokenCluster

from actors.core.token_ring import Dropped, TokenRing
from actors.core.membership import CloudCoreError, Membership
from codec.messages import PeerHeartbeat, Token, TokenVote

NEVER_DOWN = replace(FAST_FAILURES, mean_up_s=86_400.0)
T = 1.0  # failure timeout of the clusters, seconds


def run(c: TokenCluster, seconds: float) -> None:
    for _ in range(round(seconds / c.dt)):
        c.step()
        c.check()


def run_until(c: TokenCluster, cond: object, limit_s: float = 60.0) -> None:
    for _ in range(round(limit_s / c.dt)):
        if cond():  # type: ignore[operator]
            return
        c.step()
        c.check()
    raise AssertionError("condition not reached")


def holders_in_order(c: TokenCluster, since: tuple[int, int] = (0, -1)) -> list[int]:
    return [c.acquired[k] for k in sorted(c.acquired) if k > since]


def test_token_is_minted_once_and_visits_every_node_in_turn() -> None:
    c = TokenCluster(0, cfg=NEVER_DOWN)
    run(c, 20.0)
    assert [(node, epoch) for _, node, epoch in c.mints] == [(1, 1)]
    order = holders_in_order(c)
    assert len(order) >= 30
    assert order == [1, 2, 3] * (len(order) // 3) + [1, 2, 3][: len(order) % 3]
    assert c.downs == []


def test_ring_skips_an_unreachable_node_and_takes_it_back() -> None:
    c = TokenCluster(1, cfg=replace(NEVER_DOWN, token_hold_s=2.0))
    run_until(c, lambda: c.rings[3].holding and c.rings[3].seq > 2)
    mark = (c.rings[3].epoch, c.rings[3].seq)
    c.freeze(2, 12.0)
    run(c, 11.0)
    assert holders_in_order(c, mark) == [1, 3, 1, 3, 1]
    run(c, 10.0)
    assert 2 in holders_in_order(c, mark)
    assert len(c.mints) == 1


def test_holder_goes_down_comes_back_and_passes_only_after_sync() -> None:
    cfg = replace(FAST_FAILURES, mean_up_s=0.1, max_down_s=3.0)
    c = TokenCluster(2, cfg=cfg, sync_delay_s=2.0)
    run_until(c, lambda: bool(c.downs))
    t_down, node, _ = c.downs[0]
    others = [i for i in c.ids if i != node]
    assert c.rings[node].status().down and c.rings[node].status().down_since == t_down
    assert not c.members[node].self_up
    run(c, 0.04)
    assert c.rings[node].phase == "down"
    assert all(c.members[i].state_of(node, c.now) == "down" for i in others)
    run_until(c, lambda: c.rings[node].phase == "syncing")
    seen = len(c.acquired)
    run(c, 1.9)  # the sync takes 2 s: the token stays
    assert c.rings[node].holding and c.rings[node].status().syncing
    assert len(c.acquired) == seen
    assert all(c.members[i].state_of(node, c.now) == "up" for i in others)
    run(c, 0.2)
    assert not c.rings[node].holding and len(c.acquired) == seen + 1
    assert c.rings[node].status().down_since == 0.0


def test_nobody_goes_down_while_another_node_is_unreachable() -> None:
    cfg = replace(FAST_FAILURES, mean_up_s=0.1, max_down_s=0.5)
    c = TokenCluster(3, cfg=cfg)
    run_until(c, lambda: len(c.downs) >= 3 and c.rings[3].phase == "up" and not c.rings[3].holding)
    t0 = c.now
    c.freeze(3, 20.0)
    run(c, 20.0)
    during = [d for d in c.downs if t0 + T + 0.2 < d[0] < t0 + 20.0]
    assert during == []
    run(c, 10.0)
    assert any(d[0] > t0 + 20.0 for d in c.downs)


def test_a_down_node_comes_back_early_when_another_becomes_unreachable() -> None:
    cfg = replace(FAST_FAILURES, mean_up_s=0.1, max_down_s=60.0)
    c = TokenCluster(4, cfg=cfg)
    run_until(c, lambda: bool(c.downs))
    t_down, node, _ = c.downs[0]
    other = next(i for i in c.ids if i != node)
    c.freeze(other, 30.0)  # a real crash while `node` simulates one
    run_until(c, lambda: c.rings[node].phase != "down", limit_s=T + 1.0)
    assert c.now - t_down < T + 1.0  # not the up to 60 s it drew
    assert c.rings[node].counters.get("early_come_up") == 1


def test_lost_token_is_replaced_once_by_the_next_node() -> None:
    c = TokenCluster(4, cfg=NEVER_DOWN)
    run_until(c, lambda: c.rings[2].holding and c.rings[2].seq > 3)
    epoch = c.rings[2].epoch
    c.freeze(2, 5.0)
    run(c, 15.0)
    assert [(node, e) for _, node, e in c.mints[1:]] == [(3, epoch + 1)]
    assert all(r.epoch == epoch + 1 for r in c.rings.values())
    assert sum(r.holding for r in c.rings.values()) == 1


def test_a_node_cut_off_never_mints_and_drops_its_stale_token() -> None:
    c = TokenCluster(5, cfg=replace(NEVER_DOWN, token_hold_s=3.0))
    run_until(c, lambda: c.rings[1].holding and c.rings[1].seq > 3)
    epoch = c.rings[1].epoch
    c.net.cut |= {(1, 2), (1, 3), (2, 1), (3, 1)}
    run(c, 20.0)
    assert [(node, e) for _, node, e in c.mints[1:]] == [(2, epoch + 1)]
    # without a majority it releases the token (I5: one holder in every sample, even while cut)
    assert not c.rings[1].holding and c.rings[1].epoch == epoch
    assert c.rings[1].counters.get("released_no_majority") == 1
    assert c.rings[1].phase == "up"
    c.net.cut.clear()
    run(c, 2.0)
    assert not c.rings[1].holding and c.rings[1].epoch == epoch + 1
    assert sum(r.holding for r in c.rings.values()) == 1


def hb(node: int, token_epoch: int = 0, holder: int = 0) -> PeerHeartbeat:
    return PeerHeartbeat(
        node=node,
        epoch=1,
        state="up",
        load=0,
        token_epoch=token_epoch,
        token_holder=holder,
        digest=b"",
    )


def _ring(node: int = 2) -> tuple[TokenRing, Membership]:
    m = Membership(node, [1, 2, 3], T)
    for peer in (1, 3):
        if peer != node:
            m.observe(hb(peer), 0.0)
    return TokenRing(node, [1, 2, 3], FAST_FAILURES, random.Random(0), membership=m, now=0.0), m


def test_stale_token_is_dropped_and_answered_with_the_newer_one() -> None:
    r, _ = _ring()
    r.on_message(1, Token(epoch=5, holder=1, seq=3), 0.1)
    assert (r.epoch, r.seq, r.holder, r.holding) == (5, 3, 1, False)
    out = r.on_message(3, Token(epoch=4, holder=2, seq=9), 0.2)  # an old pass to us
    assert not r.holding
    assert out.sends == [(3, Token(epoch=5, holder=1, seq=3))]
    assert r.counters == {"stale_token": 1}
    out = r.on_message(1, Token(epoch=5, holder=2, seq=4), 0.3)  # a real pass
    assert r.holding and [d for d, _ in out.sends] == [1, 3]
    out = r.on_message(1, Token(epoch=6, holder=3, seq=0), 0.4)  # a newer epoch elsewhere
    assert not r.holding and Dropped(5) in out.events


def test_a_vote_is_given_once_per_epoch_and_only_when_the_token_is_lost() -> None:
    r, m = _ring()
    r.on_message(1, Token(epoch=2, holder=1, seq=0), 0.1)  # holder 1, last heard at 0.0
    for k in range(2, 11):  # ticks every 0.1 s (a longer gap would be a stall); node 3 heartbeats
        m.observe(hb(3, 2, 1), k / 10)
        assert r.on_tick(k / 10).sends == []
    out = r.on_message(3, TokenVote(epoch=3, candidate=3, voter=3), 1.0)
    assert out.sends == []  # holder 1 heard 1.0 s ago: not lost yet, no vote
    out = r.on_tick(1.1)  # now it is: join node 3's proposal rather than make another
    assert out.sends == [
        (1, TokenVote(epoch=3, candidate=3, voter=2)),
        (3, TokenVote(epoch=3, candidate=3, voter=2)),
    ]
    assert r.on_message(1, TokenVote(epoch=3, candidate=2, voter=1), 1.15).sends == []
    assert r.on_message(3, TokenVote(epoch=3, candidate=3, voter=1), 1.15).sends == []
    assert r.counters == {"bad_sender": 1}
    assert r.on_tick(1.2).sends == []  # one round at a time


def test_the_candidate_mints_only_with_a_majority_of_votes() -> None:
    r, m = _ring(1)
    r.on_message(2, Token(epoch=2, holder=3, seq=0), 0.1)  # holder 3, never heard: lost at 1.0
    m.observe(hb(2, 2, 3), 0.9)
    for k in range(2, 11):
        assert r.on_tick(k / 10).sends == []
    out = r.on_tick(1.05)  # proposes the first up node after 3 in id order (wrapping): itself
    assert out.sends == [
        (2, TokenVote(epoch=3, candidate=1, voter=1)),
        (3, TokenVote(epoch=3, candidate=1, voter=1)),
    ]
    assert not r.holding  # its own vote is 1 of the 2 needed
    out = r.on_message(2, TokenVote(epoch=3, candidate=1, voter=2), 1.06)
    assert r.holding and (r.epoch, r.seq) == (3, 0)
    assert out.sends == [(2, Token(epoch=3, holder=1, seq=0)), (3, Token(epoch=3, holder=1, seq=0))]
    assert [type(e).__name__ for e in out.events] == ["Minted"]


def test_a_holder_goes_down_only_when_every_peer_names_it_holder() -> None:
    cfg = replace(FAST_FAILURES, mean_up_s=0.1, token_hold_s=5.0)
    m = Membership(2, [1, 2, 3], T)
    r = TokenRing(2, [1, 2, 3], cfg, random.Random(1), membership=m, now=0.0)

    def beat(t: float, holder: int) -> None:
        for peer in (1, 3):
            m.observe(hb(peer, 7, holder), t)
            r.on_message(peer, hb(peer, 7, holder), t)

    beat(0.0, 1)
    r.on_message(1, Token(epoch=7, holder=2, seq=4), 0.05)
    assert r.holding and r.down_at is not None
    t = 0.1
    while t < 2.0:  # the peers still name node 1: no going down
        beat(t, 1)
        assert not r.on_tick(t).events
        t += 0.1
    beat(t, 2)  # now they do: down at the next retry (every failure_timeout / 4)
    out = r.on_tick(t + 0.1)
    out.extend(r.on_tick(t + 0.2))
    out.extend(r.on_tick(t + 0.3))
    assert r.status().down and [type(e).__name__ for e in out.events] == ["WentDown"]
    assert [d for d, _ in out.sends] == [1, 3] and not m.self_up


@pytest.mark.parametrize("ids", [(1,), (1, 2)])
def test_fewer_than_three_nodes_never_go_down(ids: tuple[int, ...]) -> None:
    c = TokenCluster(6, ids=ids, cfg=replace(FAST_FAILURES, mean_up_s=0.1))
    run(c, 20.0)
    assert c.downs == [] and len(c.acquired) >= (1 if len(ids) == 1 else 20)


def test_disabled_ring_is_inert() -> None:
    m = Membership(1, [1, 2, 3], T)
    r = TokenRing(
        1, [1, 2, 3], replace(FAST_FAILURES, enabled=False), random.Random(0), membership=m, now=0.0
    )
    assert not r.on_tick(100.0) and r.next_deadline() is None
    assert not r.on_message(2, Token(epoch=1, holder=1, seq=0), 1.0)
    assert r.status().holder == 0 and not r.status().holding


def test_ring_and_membership_must_agree() -> None:
    with pytest.raises(CloudCoreError):
        TokenRing(
            1,
            [1, 2],
            FAST_FAILURES,
            random.Random(0),
            membership=Membership(1, [1, 2, 3], T),
            now=0.0,
        )


LOSS = (0.0, 0.05, 0.1, 0.2, 0.3)


@pytest.mark.parametrize("seed", range(10))
def test_tc7_seeded_loop_with_loss_and_freezes(seed: int) -> None:
    """TC-7: 100,000 steps of 20 ms; each 1 s round may freeze a random node for 0.2-3 s."""
    c = TokenCluster(seed, loss=LOSS[seed % len(LOSS)])
    rng = random.Random(seed)
    for step in range(100_000):
        if step % 50 == 0 and rng.random() < 0.3 and not any(c.frozen(i) for i in c.ids):
            c.freeze(rng.choice(c.ids), rng.uniform(0.2, 3.0))
        c.step()
        c.check()
    assert len(c.mints) >= 50 and len(c.downs) >= 100  # the run exercised both
    assert (c.net.dropped > 0) == (LOSS[seed % len(LOSS)] > 0)


def test_a_holder_goes_down_only_with_fresh_word_from_every_peer() -> None:
    """Rule 2 with confirm_within_s: a peer last heard longer ago than that (a crash or a cut
    the failure detector has not called yet) keeps the holder up."""
    m = Membership(1, (1, 2, 3), 1.0, epoch=1)
    ring = TokenRing(1, (1, 2, 3), replace(FAST_FAILURES, mean_up_s=1e-9), random.Random(1),
                     membership=m, now=0.0, confirm_within_s=0.4)
    ring.listen_until = 0.0
    ring._acquire(5, 0, 0.0)  # holding epoch 5, and a failure moment right away
    for node, at in ((2, 0.0), (3, 0.5)):
        m.on_heartbeat(node, at, "up", 1, token_epoch=5, token_holder=1)
    assert not ring._all_confirm(0.55)  # node 2 last heard 0.55 s ago: not fresh
    m.on_heartbeat(2, 0.5, "up", 1, token_epoch=5, token_holder=1)
    assert ring._all_confirm(0.55)
    assert m.state_of(2, 0.95) == "up" and not ring._all_confirm(0.95)  # up, yet not fresh
