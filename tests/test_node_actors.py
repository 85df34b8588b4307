"""Actor-level tests of the node: each actor started for real (pykka) with a FakeTransport, an
injected fake clock and seeded randomness; no sockets, no wall-clock waits.

ElectionActor, FailureTokenActor: three nodes over a FakeNetwork (tests/node_actor_kit.py).
DirectoryActor, PendingUpdateActor, EncryptFlowActor (with its EncoderActor pool): one actor, its
neighbours replaced by Recorders, its sends read off the FakeTransport.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pykka
import pytest
from fake_transport import FakeTransport
from node_actor_kit import (
    FAST_FAILURES,
    FakeClock,
    FakeCloud,
    FakeReactor,
    Recorder,
    n_node_config,
    recorded,
    three_node_config,
    wait_recorded,
)

from actors.client.keys import ClientKeys
from actors.core.membership import Output
from actors.core.token_ring import TokenStatus
from actors.direct import DirectEntry
from actors.node.base import PeerLink, Wire, initial_view
from actors.node.directory_actor import DirectoryActor
from actors.node.election_actor import ElectionActor
from actors.node.encoder import EncoderActor, EncoderPool, Sealed
from actors.node.encrypt_actor import EncryptFlowActor
from actors.node.pending_actor import REPLICATE_DEFER_S, PendingUpdateActor
from actors.node.pending_store import PendingStore, PinStore
from actors.node.signals import (
    ApplySync,
    ClientIn,
    ClusterView,
    ComeUp,
    ConfirmIds,
    CountersQuery,
    GoDown,
    HandOver,
    Lost,
    PeerIn,
    StartElection,
    StoreUpdate,
    SyncApplied,
    Tick,
    TokenView,
    Won,
)
from actors.node.token_actor import FailureTokenActor
from codec.covers import CoverSet
from codec.messages import (
    Ack,
    ComingUp,
    Done,
    DoneBatch,
    EncryptOffer,
    EncryptReply,
    EncryptRequest,
    ErrorReply,
    FetchPayload,
    ForgetUpdates,
    GoingDown,
    Join,
    JoinReply,
    PeerHeartbeat,
    PostUpdate,
    ReplicateUpdate,
    StateRequest,
    StateSync,
    Token,
)
from codec.records import Update
from tests.imgdata import png_bytes
from transport.errors import SendError

ALICE = ("127.0.0.1", 40001)
ALICE2 = ("127.0.0.1", 40002)


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def up_view(**kw: Any) -> ClusterView:
    base = ClusterView(
        version=1,
        self_up=True,
        majority=True,
        up=frozenset({1, 2, 3}),
        syncing=False,
        token_holder=1,
        holding=False,
        down_since=0.0,
    )
    return replace(base, **kw)


def update(n: int, addressee: str = "bob") -> Update:
    return Update(
        id=f"alice#{n}",
        kind="grant",
        owner="alice",
        borrower="bob",
        image="pic.jpg",
        delta=1,
        addressee=addressee,
        grant=b"\x00signed",
        created=1712.5,
    )


def wired(ref: pykka.ActorRef[Any], **others: pykka.ActorRef[Any]) -> None:
    ref.ask(Wire({**others, "self": ref}))


# ---- ElectionActor ------------------------------------------------------------------------------
@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    c = FakeCloud(three_node_config(), FakeClock())
    yield c
    c.stop()


def connect(cloud: FakeCloud) -> None:
    """Heartbeats for a while: every node sees a majority (and has synced: no peer state
    needed in these tests, so SyncApplied is told as the pending actor would)."""
    cloud.run(1.0)
    for n in cloud.ids:
        cloud.ref(n, "election").ask(SyncApplied(sender=0))
    views = {n: cloud.ref(n, "election").proxy().view.get() for n in cloud.ids}
    assert all(v.majority and v.up == frozenset(cloud.ids) for v in views.values()), views


def outcomes(cloud: FakeCloud, rid: str, nodes: list[int]) -> dict[int, Any]:
    got: dict[int, Any] = {}
    for n in nodes:
        got[n] = wait_recorded(
            cloud.ref(n, "flow"),
            lambda ms: any(isinstance(m, (Won, Lost)) and m.rid == rid for m in ms),
        )
    return {
        n: next(m for m in ms if isinstance(m, (Won, Lost)) and m.rid == rid)
        for n, ms in got.items()
    }


def test_three_election_actors_elect_exactly_one_winner_per_request(cloud: FakeCloud) -> None:
    connect(cloud)
    for i in range(20):
        rid = f"alice#{i}"
        for n in cloud.ids:
            cloud.ref(n, "election").tell(StartElection(rid))
        res = outcomes(cloud, rid, cloud.ids)
        winners = [n for n, m in res.items() if isinstance(m, Won)]
        assert len(winners) == 1, res
        assert all(m.winner == winners[0] for m in res.values() if isinstance(m, Lost))
    won = {n: len(recorded(cloud.ref(n, "flow"), Won)) for n in cloud.ids}
    assert sum(won.values()) == 20
    assert sum(1 for w in won.values() if w) >= 2, won  # the tie hash spreads equal loads


def test_the_election_actor_publishes_a_view_exactly_when_a_field_of_it_changes() -> None:
    """The ClusterView is rebuilt only when what it says changes (it is checked on every tick):
    each field that changes makes a new version with the new value; a tick without a change
    publishes nothing."""
    cfg = three_node_config()
    clock = FakeClock()
    ref = ElectionActor.start(cfg, 1, PeerLink(cfg, 1, FakeTransport()), clock=clock,  # type: ignore[arg-type]
                              boot_epoch=1, loadavg=lambda: 0.0, disk_kept=True)
    flow = Recorder.start()
    wired(ref, flow=flow)

    def views() -> list[ClusterView]:
        ref.ask(CountersQuery())  # what was told before has been handled
        return recorded(flow, ClusterView)

    def hb(node: int) -> PeerIn:
        return PeerIn(node, PeerHeartbeat(node=node, epoch=1, state="up", load=0, token_epoch=0,
                                          token_holder=0, digest=b""))

    try:
        (first,) = views()
        assert (first.version, first.up, first.majority, first.syncing) == (
            1, frozenset({1}), False, True)
        ref.tell(Tick())
        assert len(views()) == 1
        ref.tell(hb(2))
        ref.tell(Tick())  # heard on the next tick
        v = views()[-1]
        assert (v.version, v.up, v.majority) == (2, frozenset({1, 2}), True)
        ref.tell(hb(3))
        ref.tell(Tick())
        assert views()[-1].up == frozenset({1, 2, 3}) and views()[-1].version == 3
        ref.tell(TokenView(epoch=1, holder=2, holding=False, down=False, down_since=0.0))
        assert (views()[-1].token_holder, views()[-1].version) == (2, 4)
        ref.tell(TokenView(epoch=1, holder=1, holding=True, down=False, down_since=0.0))
        assert (views()[-1].token_holder, views()[-1].holding) == (1, True)
        ref.tell(TokenView(epoch=1, holder=1, holding=True, down=False, down_since=5.0))
        assert views()[-1].down_since == 5.0 and views()[-1].version == 6
        ref.tell(SyncApplied(sender=2))
        assert views()[-1].syncing is False and views()[-1].version == 7
        ref.tell(GoDown())
        v = views()[-1]
        assert (v.self_up, v.majority, v.up) == (False, False, frozenset({2, 3}))
        ref.tell(ComeUp())
        assert views()[-1].self_up and views()[-1].up == frozenset({1, 2, 3})
        clock.advance(cfg.election.failure_timeout_ms / 1000 + 0.1)
        ref.tell(hb(2))
        ref.tell(Tick())  # 3 is silent past the failure timeout
        v = views()[-1]
        assert (v.up, v.majority, v.version) == (frozenset({1, 2}), True, 10)
        ref.tell(Tick())
        assert len(views()) == 10
    finally:
        ref.stop()
        flow.stop()


class _StubRing:
    """A token ring whose status the test sets (for the FailureTokenActor's TokenView)."""

    def __init__(self) -> None:
        self.st = TokenStatus(holder=0, epoch=0, seq=-1, holding=False, down=False,
                              down_since=0.0, syncing=False)

    def status(self) -> TokenStatus:
        return self.st

    def on_tick(self, now: float) -> Output:
        return Output()


def test_the_token_actor_tells_a_token_view_exactly_when_a_field_of_it_changes() -> None:
    """Each of epoch, holder, holding and down changing makes a new TokenView to the election;
    down_since alone (the same instant, recomputed in wall-clock seconds) does not."""
    cfg = three_node_config()
    clock = FakeClock()
    ref = FailureTokenActor.start(cfg, 1, PeerLink(cfg, 1, FakeTransport()), clock=clock,  # type: ignore[arg-type]
                                  rng=random.Random(1), boot_epoch=1, failures=False,
                                  wall=lambda: 5000.0)
    election = Recorder.start()
    ring = _StubRing()
    try:
        ref.proxy().ring = ring
        wired(ref, election=election)

        def views_after(**change: Any) -> list[TokenView]:
            ring.st = replace(ring.st, **change)
            ref.ask(Tick())
            return recorded(election, TokenView)

        assert views_after() == [TokenView(epoch=0, holder=0, holding=False, down=False,
                                           down_since=0.0)]
        assert views_after(epoch=3)[-1].epoch == 3
        assert views_after(holder=2)[-1].holder == 2
        assert views_after(holder=1, holding=True)[-1].holding
        assert views_after(holding=False)[-1] == TokenView(epoch=3, holder=1, holding=False,
                                                           down=False, down_since=0.0)
        assert len(views_after(seq=9)) == 5  # not in the view
        last = views_after(down=True, down_since=clock() - 2.0)[-1]
        assert last.down and last.down_since == 5000.0 - 2.0
        assert len(views_after(down_since=clock() - 1.0)) == 6
    finally:
        ref.stop()
        election.stop()


class _PassingRing(_StubRing):
    """A ring that holds the token until a tick, which passes it to node 2."""

    def __init__(self) -> None:
        super().__init__()
        self.st = replace(self.st, epoch=1, holder=1, holding=True)

    def on_tick(self, now: float) -> Output:
        out = Output()
        if self.st.holding:
            self.st = replace(self.st, holder=2, holding=False)
            out.send(2, Token(epoch=1, holder=2, seq=0))
        return out


def test_a_pass_tells_the_supervisor_before_the_token_leaves() -> None:
    """Status queries are answered by the supervisor: the pass's TokenView reaches it straight
    from the token actor, and is in its mailbox before the Token is sent, so a status answered
    after the next holder took the token cannot say this node holds it too (through the
    election's ClusterView it could, long after the pass on a busy host: test_chaos [delay]
    counted the same two holders in 4 samples in a row)."""
    cfg = three_node_config()
    supervisor = Recorder.start()
    seen_at_send: list[list[TokenView]] = []

    class Watching(FakeTransport):
        def send(self, addr: Any, msg: Any, **kw: Any) -> Any:
            if isinstance(msg, Token):
                seen_at_send.append(recorded(supervisor, TokenView))
            return super().send(addr, msg, **kw)

    ref = FailureTokenActor.start(cfg, 1, PeerLink(cfg, 1, Watching()), clock=FakeClock(),  # type: ignore[arg-type]
                                  rng=random.Random(1), boot_epoch=1, failures=False)
    try:
        ref.proxy().ring = _PassingRing()
        wired(ref, supervisor=supervisor)
        ref.ask(Tick())
        (views,) = seen_at_send
        assert views[-1] == TokenView(epoch=1, holder=2, holding=False, down=False,
                                      down_since=0.0)
    finally:
        ref.stop()
        supervisor.stop()


def test_a_silent_peer_is_skipped(cloud: FakeCloud) -> None:
    connect(cloud)
    cloud.silence(3)
    cloud.run(1.5)  # past the failure timeout: 3 is unreachable
    for n in (1, 2):
        assert cloud.ref(n, "election").proxy().view.get().up == frozenset({1, 2})
        cloud.ref(n, "election").tell(StartElection("alice#7"))
    res = outcomes(cloud, "alice#7", [1, 2])  # no clock moves: no wait for the silent node
    assert sorted(type(m).__name__ for m in res.values()) == ["Lost", "Won"]


def test_a_killed_winner_is_replaced_when_its_port_refuses_not_after_the_timeout(
        cloud: FakeCloud) -> None:
    """The winner's process dies (its host up): the next heartbeat to it draws port
    unreachable, so the others re-elect its request at once from their cache, well within the
    1 s failure timeout. A node that only goes silent (a lost host) still takes the timeout."""
    from actors.node.signals import PeerDown

    connect(cloud)
    rid = "alice#40"
    for n in cloud.ids:
        cloud.ref(n, "election").tell(StartElection(rid))
    (winner,) = [n for n, m in outcomes(cloud, rid, cloud.ids).items() if isinstance(m, Won)]
    others = [n for n in cloud.ids if n != winner]
    silent = others[1]
    cloud.kill(winner)
    cloud.run(0.3)  # a heartbeat period and a half: 0.3 s of the 1 s failure timeout
    for n in others:
        assert cloud.ref(n, "election").proxy().view.get().up == frozenset(others)
        assert PeerDown(winner) in recorded(cloud.ref(n, "flow"), PeerDown)
    again = {n: [m for m in wait_recorded(cloud.ref(n, "flow"), lambda ms: sum(
        isinstance(m, (Won, Lost)) and m.rid == rid for m in ms) >= 2)
        if isinstance(m, (Won, Lost)) and m.rid == rid][1] for n in others}
    assert sorted(type(m).__name__ for m in again.values()) == ["Lost", "Won"], again
    new_winner = next(n for n, m in again.items() if isinstance(m, Won))
    assert all(m.winner == new_winner for m in again.values() if isinstance(m, Lost))
    cloud.silence(silent)  # no port unreachable from a silent node: the timeout still holds
    cloud.run(0.5)
    assert cloud.ref(others[0], "election").proxy().view.get().up == frozenset(others)


def test_a_lost_node_probes_the_winner_when_a_peer_re_elects_its_request(
        cloud: FakeCloud) -> None:
    """The winner is killed and only one survivor has noticed (its port refused that survivor's
    datagram); the other still counts it up. The first survivor's new Election makes the second
    probe the winner with a heartbeat at once: refused, so both re-elect now, with no clock
    moving (no heartbeat period waited for)."""
    from actors.node.signals import PeerRefused
    from codec.messages import PeerHeartbeat

    connect(cloud)
    rid = "alice#42"
    for n in cloud.ids:
        cloud.ref(n, "election").tell(StartElection(rid))
    (winner,) = [n for n, m in outcomes(cloud, rid, cloud.ids).items() if isinstance(m, Won)]
    first, second = [n for n in cloud.ids if n != winner]
    beats = len(cloud.tp[second].sends_of(PeerHeartbeat, cloud.cfg.node(winner).peer_addr))
    cloud.kill(winner)
    cloud.ref(first, "election").tell(PeerRefused(winner))
    again = {n: [m for m in wait_recorded(cloud.ref(n, "flow"), lambda ms: sum(
        isinstance(m, (Won, Lost)) and m.rid == rid for m in ms) >= 2)
        if isinstance(m, (Won, Lost)) and m.rid == rid][1] for n in (first, second)}
    assert sorted(type(m).__name__ for m in again.values()) == ["Lost", "Won"], again
    probes = cloud.tp[second].sends_of(PeerHeartbeat, cloud.cfg.node(winner).peer_addr)
    assert len(probes) == beats + 1  # the probe, refused
    assert cloud.ref(second, "election").proxy().counters.get()["probes"] == 1


def test_a_killed_winner_is_replaced_when_the_third_node_never_had_the_request(
        cloud: FakeCloud) -> None:
    """Node 3 missed the request (it was down when the client sent it: it never starts the
    election). When the winner dies, the one node left with a copy needs a majority of answers:
    node 3, back not long ago, abstains (an Election of priority 0) instead of keeping silent,
    so the survivor wins now, not after the client's retry."""
    connect(cloud)
    rid = "alice#41"
    for n in (1, 2):
        cloud.ref(n, "election").tell(StartElection(rid))
    cloud.run(0.1)  # node 3 abstains once its copy has not come within the grace (30 ms)
    (winner,) = [n for n, m in outcomes(cloud, rid, [1, 2]).items() if isinstance(m, Won)]
    survivor = 3 - winner
    cloud.kill(winner)
    cloud.run(0.6)  # within the 1 s failure timeout (a claim node 3 refused is sent again)
    got = wait_recorded(cloud.ref(survivor, "flow"), lambda ms: any(
        isinstance(m, Won) and m.rid == rid for m in ms))
    assert [type(m).__name__ for m in got if isinstance(m, (Won, Lost)) and m.rid == rid] == [
        "Lost", "Won"]
    assert recorded(cloud.ref(3, "flow"), (Won, Lost)) == []  # it had no copy: it never won
    from codec.messages import Election

    abstained = cloud.tp[3].sends_of(Election)
    assert abstained and {s.msg.priority for s in abstained} == {0}


def test_an_abstention_is_never_answered_by_another(cloud: FakeCloud) -> None:
    """Two nodes without a copy, both just back (in their abstention window), would otherwise
    answer each other's priority-0 Election for ever (each answer makes the other's core hold
    the rid as pending again)."""
    from codec.messages import Election

    connect(cloud)
    peer = cloud.cfg.node(2).peer_addr
    cloud.tp[1].deliver(peer, Election(rid="alice#42", node=2, priority=0, round=1))
    cloud.settle()
    assert [s for s in cloud.tp[1].sends_of(Election) if s.msg.rid == "alice#42"] == []
    cloud.tp[1].deliver(peer, Election(rid="alice#43", node=2, priority=5, round=1))  # a real one
    cloud.settle()
    assert [s for s in cloud.tp[1].sends_of(Election) if s.msg.rid == "alice#43"] == []
    cloud.step(0.05)  # past the grace (node 1's copy may come within it): no copy, it abstains
    assert [s for s in cloud.tp[1].sends_of(Election) if s.msg.rid == "alice#42"] == []
    assert [(s.addr, s.msg.priority) for s in cloud.tp[1].sends_of(Election)
            if s.msg.rid == "alice#43"] == [(peer, 0)]


def test_no_winner_without_a_majority(cloud: FakeCloud) -> None:
    connect(cloud)
    cloud.silence(2)
    cloud.silence(3)
    cloud.run(1.5)
    assert not cloud.ref(1, "election").proxy().view.get().majority
    cloud.ref(1, "election").tell(StartElection("alice#9"))
    cloud.run(2.0)  # several answer timeouts
    assert recorded(cloud.ref(1, "flow"), (Won, Lost)) == []


def test_a_peer_that_missed_done_is_told_again(cloud: FakeCloud) -> None:
    from actors.node.signals import ForgetElection

    connect(cloud)
    cloud.ref(1, "election").ask(ForgetElection("alice#3", settled=True))
    before = len(cloud.tp[1].sends_of(Done))
    from codec.messages import Election

    late = Election(rid="alice#3", node=2, priority=5, round=1)
    cloud.tp[1].deliver(cloud.cfg.node(2).peer_addr, late)
    cloud.settle()
    dones = cloud.tp[1].sends_of(Done)[before:]
    assert [(d.addr, d.msg.rid, d.msg.acked) for d in dones] == [
        (cloud.cfg.node(2).peer_addr, "alice#3", True)
    ]


def test_a_bound_first_election_that_crossed_the_done_gets_none_an_ask_does(
    cloud: FakeCloud,
) -> None:
    """With ceilings a winner is often done before the last node starts: that node's first
    Election (bound, no ASK) crossed the Done sent to it, and is not answered with a second one.
    Its ASK (it lacks a key after an answer timeout; a restart asks too) is."""
    from actors.core.election import ASK
    from actors.node.signals import ForgetElection
    from codec.messages import Election

    connect(cloud)
    cloud.ref(1, "election").ask(ForgetElection("alice#3", settled=True))
    n2 = cloud.cfg.node(2).peer_addr
    before = len(cloud.tp[1].sends_of(Done))
    first = Election(rid="alice#3", node=2, priority=5, round=1, bind=0b1110)
    cloud.tp[1].deliver(n2, first)
    cloud.settle()
    assert cloud.tp[1].sends_of(Done)[before:] == []
    assert cloud.ref(1, "election").proxy().counters.get()["done_crossed"] == 1
    cloud.tp[1].deliver(n2, Election(rid="alice#3", node=2, priority=5, round=1,
                                     bind=0b1110 | ASK))
    cloud.settle()
    assert [(d.addr, d.msg) for d in cloud.tp[1].sends_of(Done)[before:]] == [
        (n2, Done(rid="alice#3", node=1, acked=True))
    ]


def state_requests_to(cloud: FakeCloud, node: int) -> set[int]:
    """The peers `node` asked for their state (read off its fake transport)."""
    by_addr = {cloud.cfg.node(n).peer_addr: n for n in cloud.ids}
    return {by_addr[s.addr] for s in cloud.tp[node].sends_of(StateRequest)}


def syncing(cloud: FakeCloud, node: int) -> bool:
    return bool(cloud.ref(node, "election").proxy().view.get().syncing)


def test_a_starting_node_syncs_from_a_majority_not_from_one_peer() -> None:
    """Five nodes (majority 3): node 1 kept its disk, so its own state and two peers' states
    make a majority; one peer's state is not enough (an update acknowledged by nodes 3, 4, 5
    would be missed if node 1 served after merging node 2's state only)."""
    c = FakeCloud(n_node_config(5), FakeClock())
    try:
        c.run(1.0)
        assert state_requests_to(c, 1) == {2, 3, 4, 5}  # every up peer is asked
        c.ref(1, "election").ask(SyncApplied(sender=2))
        c.settle()
        assert syncing(c, 1)
        c.ref(1, "election").ask(SyncApplied(sender=2))  # the same peer twice is one peer
        assert syncing(c, 1)
        c.ref(1, "election").ask(SyncApplied(sender=4))
        c.settle()
        assert not syncing(c, 1)
    finally:
        c.stop()


def test_a_node_on_an_empty_disk_syncs_from_a_majority_of_its_peers() -> None:
    """Three nodes: node 2 lost its data directory, so its own (empty) state counts for
    nothing: it serves only after both peers' states are merged (an update on the disks of
    nodes 2 and 3 was on node 3's only, after the disk was replaced)."""
    c = FakeCloud(three_node_config(), FakeClock(), fresh=frozenset({2}))
    try:
        c.run(1.0)
        assert state_requests_to(c, 2) == {1, 3}
        c.ref(2, "election").ask(SyncApplied(sender=1))
        assert syncing(c, 2)
        c.ref(2, "election").ask(SyncApplied(sender=3))
        assert not syncing(c, 2)
        c.ref(1, "election").ask(SyncApplied(sender=2))  # a node that kept its disk: one peer
        assert not syncing(c, 1)
    finally:
        c.stop()


def test_a_new_cloud_starts_when_the_peers_states_are_empty_too() -> None:
    """Every node of a new cloud starts on an empty data directory: an empty state from a
    majority less one peer is enough (no peer ever accepted a user), so two of three new nodes
    serve without the third; one peer's state with data is not enough (a replaced disk)."""
    c = FakeCloud(three_node_config(), FakeClock(), fresh=frozenset({1, 2, 3}))
    try:
        c.run(1.0)
        c.ref(1, "election").ask(SyncApplied(sender=2, empty=True))
        assert not syncing(c, 1)
        c.ref(2, "election").ask(SyncApplied(sender=1, empty=False))
        assert syncing(c, 2)
        c.ref(2, "election").ask(SyncApplied(sender=3, empty=True))
        assert not syncing(c, 2)
    finally:
        c.stop()


def test_a_sync_asks_again_the_peers_that_have_not_answered() -> None:
    c = FakeCloud(three_node_config(), FakeClock(), fresh=frozenset({2}))
    try:
        c.run(1.0)
        c.ref(2, "election").ask(SyncApplied(sender=1))
        before = len(c.tp[2].sends_of(StateRequest))
        c.run(1.5)  # past SYNC_RETRY_S
        again = c.tp[2].sends_of(StateRequest)[before:]
        assert again and {s.addr for s in again} == {c.cfg.node(3).peer_addr}
    finally:
        c.stop()


# ---- FailureTokenActor ---------------------------------------------------------------------------
def test_failure_token_actors_keep_at_most_one_token() -> None:
    c = FakeCloud(three_node_config(FAST_FAILURES), FakeClock(), failures=True, seed=3)
    holders_seen: set[int] = set()
    downs: list[int] = []

    def check() -> None:
        views = {n: c.ref(n, "token").proxy().view.get() for n in c.ids}
        holding = [n for n, v in views.items() if v is not None and v.holding]
        down = [n for n, v in views.items() if v is not None and v.down]
        assert len(holding) <= 1, views
        assert len(down) <= 1, views
        holders_seen.update(holding)
        downs.extend(down)

    try:
        c.run(1.0)
        for n in c.ids:  # state synced (no peer state in this test)
            c.ref(n, "election").ask(SyncApplied(sender=0))
        c.run(25.0, check=check)
    finally:
        c.stop()
    assert len(holders_seen) >= 2  # the token moves
    assert downs  # a holder went down (FAST_FAILURES: mean up 3 s)


def test_going_down_tells_every_actor_and_the_flow_sends_goingdown() -> None:
    c = FakeCloud(three_node_config(FAST_FAILURES), FakeClock(), failures=True, seed=3)
    try:
        c.run(1.0)
        for n in c.ids:
            c.ref(n, "election").ask(SyncApplied(sender=0))
        went = None
        for _ in range(600):
            c.step(0.05)
            went = next((n for n in c.ids if recorded(c.ref(n, "flow"), GoDown)), None)
            if went is not None:
                break
        assert went is not None, "no node went down in 30 s of fake time"
        (godown,) = recorded(c.ref(went, "flow"), GoDown)
        assert {type(m) for _, m in godown.then_send} == {GoingDown}  # sent by the flow actor
        for name in ("directory", "pending"):
            assert recorded(c.ref(went, name), GoDown)
        assert c.tp[went].sends_of(GoingDown)
        assert not c.ref(went, "election").proxy().view.get().self_up
        c.run(3.0)  # max_down_s 2: back, syncing, ComingUp sent
        assert c.tp[went].sends_of(ComingUp)
        assert c.ref(went, "election").proxy().view.get().syncing
    finally:
        c.stop()


# ---- DirectoryActor ------------------------------------------------------------------------------
@pytest.fixture
def directory(
    tmp_path: Path,
) -> Iterator[tuple[pykka.ActorRef[Any], FakeTransport, FakeTransport, pykka.ActorRef[Any]]]:
    cfg = three_node_config()
    client, peer = FakeTransport(address=cfg.node(1).client_addr), FakeTransport()
    pins = PinStore(tmp_path / "pending.db")
    ref = DirectoryActor.start(
        cfg,
        1,
        client,
        PeerLink(cfg, 1, peer),
        pins,  # type: ignore[arg-type]
        up_view(),
        clock=FakeClock(),
    )
    pending = Recorder.start()
    wired(ref, pending=pending, election=Recorder.start(), supervisor=Recorder.start())
    yield ref, client, peer, pending
    ref.stop()


ALICE_KEYS = ClientKeys(b"a" * 32, bytes(range(32)))


def signed(keys: ClientKeys, rid: str, user: str) -> Join:
    """A client's Join: `keys`' public halves, its proof signed now."""
    return keys.join(rid, user, time.time())


def join(rid: str = "alice#1") -> Join:
    return signed(ALICE_KEYS, rid, "alice")


def test_directory_actor_refuses_a_second_session_of_a_user(directory: Any) -> None:
    ref, client, _peer, pending = directory
    ref.tell(ClientIn(ALICE, join("alice#1")))
    (hand,) = [
        m for m in wait_recorded(pending, lambda ms: len(ms) >= 1) if isinstance(m, HandOver)
    ]
    assert hand.addr == ALICE and hand.user == "alice"
    ref.tell(ClientIn(ALICE2, join("alice#2")))  # the first session's transport acks the probe
    (err,) = client.wait_msg(ErrorReply)
    assert err.rid == "alice#2" and err.code == "already_online" and not err.retryable
    probe = client.sends_of(Ack)[0]
    assert probe.addr == ALICE and probe.deadline_s is not None
    assert len(recorded(pending, HandOver)) == 1


def test_a_dead_first_session_is_replaced(directory: Any) -> None:
    ref, client, _peer, pending = directory
    ref.tell(ClientIn(ALICE, join("alice#1")))
    wait_recorded(pending, lambda ms: len(ms) >= 1)
    client.auto = "fail"  # the old address does not acknowledge the probe
    ref.tell(ClientIn(ALICE2, join("alice#2")))
    got = wait_recorded(pending, lambda ms: len([m for m in ms if isinstance(m, HandOver)]) == 2)
    assert [m.addr for m in got if isinstance(m, HandOver)] == [ALICE, ALICE2]


def test_two_joins_that_find_one_dead_session_do_not_both_replace_it(directory: Any) -> None:
    """Two sessions of alice join while her first one is dead: both joins probe it; the first
    probe's failure lets its join replace the dead session, the second's finds that new,
    live session in the way and is refused. Before, it replaced whatever was there: this node
    accepted both, and with the other nodes split the same way both got a majority
    (test_sessions_cloud saw it once)."""
    ref, client, _peer, pending = directory
    ref.tell(ClientIn(ALICE, join("alice#1")))
    wait_recorded(pending, lambda ms: len(ms) >= 1)
    client.auto = None  # the probes stay open until this test answers them
    alice3 = ("127.0.0.1", 40003)
    ref.tell(ClientIn(ALICE2, join("alice#2")))
    ref.tell(ClientIn(alice3, join("alice#3")))
    probes = client.wait_sent(lambda s: isinstance(s.msg, Ack), count=2)
    assert {p.addr for p in probes} == {ALICE}  # both probe the first session
    for p in probes:  # ... which is dead: neither is acknowledged
        client.complete(p, SendError("unacknowledged", "no acknowledgement for 0.5 s"))
    (err,) = client.wait_msg(ErrorReply)
    assert err.code == "already_online" and err.rid == "alice#3"
    got = wait_recorded(pending, lambda ms: len([m for m in ms if isinstance(m, HandOver)]) >= 2)
    assert [m.addr for m in got if isinstance(m, HandOver)] == [ALICE, ALICE2]
    assert len(recorded(pending, HandOver)) == 2  # (and no third)


def test_a_post_is_checked_then_handed_to_the_pending_actor(directory: Any) -> None:
    ref, client, _peer, pending = directory
    ref.tell(ClientIn(ALICE, join("alice#1")))
    (hand,) = wait_recorded(pending, lambda ms: len(ms) >= 1)
    token = hand.reply.token
    ref.tell(
        ClientIn(ALICE, PostUpdate(rid="alice#2", user="alice", token=bytes(16), update=update(2)))
    )
    (err,) = client.wait_msg(ErrorReply)
    assert err.code == "bad_token" and not err.retryable
    ref.tell(
        ClientIn(ALICE, PostUpdate(rid="alice#3", user="alice", token=token, update=update(3)))
    )
    got = wait_recorded(pending, lambda ms: any(isinstance(m, StoreUpdate) for m in ms))
    (store,) = [m for m in got if isinstance(m, StoreUpdate)]
    assert (store.addr, store.rid, store.update.id) == (ALICE, "alice#3", "alice#3")


def test_a_syncing_node_defers_a_known_session_then_serves_it(directory: Any) -> None:
    ref, client, _peer, pending = directory
    ref.tell(up_view(syncing=True))
    ref.tell(ClientIn(ALICE, join()))
    (err,) = client.wait_msg(ErrorReply)
    assert (err.code, err.retryable) == ("syncing", True)  # not a refusal: the client retries
    assert ref.proxy().counters.get()["client_while_syncing"] == 1
    ref.tell(up_view(syncing=False, version=2))
    ref.tell(ClientIn(ALICE, join()))
    wait_recorded(pending, lambda ms: any(isinstance(m, HandOver) for m in ms))


def test_without_a_majority_state_changes_are_refused_retryably(directory: Any) -> None:
    ref, client, _peer, pending = directory
    ref.tell(up_view(majority=False))
    ref.tell(ClientIn(ALICE, join()))
    (err,) = client.wait_msg(ErrorReply)
    assert (err.code, err.retryable) == ("not_in_majority", True)
    assert recorded(pending, HandOver) == []


def test_state_request_and_sync_go_through_the_pending_actor(directory: Any) -> None:
    ref, _client, _peer, pending = directory
    ref.tell(ClientIn(ALICE, join()))
    wait_recorded(pending, lambda ms: len(ms) >= 1)
    ref.tell(PeerIn(2, StateRequest(node=2)))
    got = wait_recorded(pending, lambda ms: any(type(m).__name__ == "BuildSync" for m in ms))
    build = next(m for m in got if type(m).__name__ == "BuildSync")
    assert build.to == 2 and [e.user for e in build.users] == ["alice"]
    sync = StateSync(node=2, users=(), updates=(update(5),), forgotten=(), digest=b"")
    ref.tell(PeerIn(2, sync))
    got = wait_recorded(pending, lambda ms: any(isinstance(m, ApplySync) for m in ms))
    assert next(m for m in got if isinstance(m, ApplySync)).msg == sync


GINA = ClientKeys(b"S" * 32, b"B" * 32)
GINA_KEYS = (GINA.sign_public, GINA.box_public)
IMPOSTOR = ClientKeys(b"X" * 32, b"Y" * 32)
IMPOSTOR_KEYS = (IMPOSTOR.sign_public, IMPOSTOR.box_public)


def test_pins_travel_with_the_state_sync_and_an_impostor_is_refused(directory: Any) -> None:
    """Node 1 stands for a node whose disk was replaced: it has no pin for gina1 until a peer's
    StateSync brings it; then a Join with fresh keys is refused (keys_changed), the real keys
    are accepted, and its own StateSync to a peer carries the pin on."""
    from actors.node.signals import BuildSync
    from codec.messages import Pin

    ref, client, _peer, pending = directory
    pin = Pin(user="gina1", sign_key=GINA_KEYS[0], box_key=GINA_KEYS[1])
    sync = StateSync(node=2, users=(), updates=(), forgotten=(), digest=b"", pins=(pin,))
    ref.tell(PeerIn(2, sync))
    wait_recorded(pending, lambda ms: any(isinstance(m, ApplySync) for m in ms))
    impostor = signed(IMPOSTOR, "gina1#1", "gina1")
    ref.tell(ClientIn(ALICE2, impostor))
    (err,) = client.wait_msg(ErrorReply)
    assert (err.rid, err.code, err.retryable) == ("gina1#1", "keys_changed", False)
    real = signed(GINA, "gina1#2", "gina1")
    ref.tell(ClientIn(ALICE, real))
    got = wait_recorded(pending, lambda ms: any(isinstance(m, HandOver) for m in ms))
    assert [m.user for m in got if isinstance(m, HandOver)] == ["gina1"]
    ref.tell(PeerIn(3, StateRequest(node=3)))
    got = wait_recorded(pending, lambda ms: any(isinstance(m, BuildSync) for m in ms))
    assert next(m for m in got if isinstance(m, BuildSync)).pins == (pin,)


def test_a_join_is_accepted_only_with_a_proof_of_the_private_signing_key(directory: Any) -> None:
    """Who knows gina1's public keys (the directory lists them) cannot join as gina1: a Join
    with her keys signed by another key, or her own signed Join with an edited field or a stamp
    from long ago, is refused `bad_proof` and counted; her own fresh Join is accepted."""
    from dataclasses import replace as edit

    ref, client, _peer, pending = directory
    forged = edit(signed(IMPOSTOR, "gina1#1", "gina1"), sign_key=GINA_KEYS[0],
                  box_key=GINA_KEYS[1])
    edited = edit(signed(GINA, "gina1#2", "gina1"), rid="gina1#3")
    stale = GINA.join("gina1#4", "gina1", time.time() - 3600)
    for msg in (forged, edited, stale):
        ref.tell(ClientIn(ALICE, msg))
    errs = client.wait_msg(ErrorReply, count=3)
    assert sorted((e.rid, e.code, e.retryable) for e in errs) == [
        ("gina1#1", "bad_proof", False), ("gina1#3", "bad_proof", False),
        ("gina1#4", "bad_proof", False)]
    by_rid = {e.rid: e.message for e in errs}
    assert "not signed by the key it presents" in by_rid["gina1#1"]
    assert "clock" in by_rid["gina1#4"]
    ref.tell(ClientIn(ALICE, signed(GINA, "gina1#5", "gina1")))
    got = wait_recorded(pending, lambda ms: any(isinstance(m, HandOver) for m in ms))
    assert [m.reply.rid for m in got if isinstance(m, HandOver)] == ["gina1#5"]
    assert ref.proxy().counters.get()["directory_refused"] == 3


def test_conflicting_peer_pins_refuse_the_user_until_a_majority_agrees(
    directory: Any, tmp_path: Path
) -> None:
    """Issue 15 item 2, three nodes: node 1 has no pin for gina1; node 2's StateSync pins the
    real keys, node 3's an impostor's. No majority: both Joins are refused (pin_disputed, not
    retryable), counted. Node 3's next sync agrees with node 2: 2 of 3 pin the real keys, node 1
    takes them (on disk too), refuses the impostor (keys_changed) and accepts gina1."""
    from codec.messages import Pin

    ref, client, _peer, pending = directory

    synced: list[int] = []

    def sync(node: int, keys: tuple[bytes, bytes]) -> None:
        pin = Pin(user="gina1", sign_key=keys[0], box_key=keys[1])
        ref.tell(PeerIn(node, StateSync(node=node, users=(), updates=(), forgotten=(),
                                        digest=b"", pins=(pin,))))
        synced.append(node)
        wait_recorded(pending, lambda ms: sum(isinstance(m, ApplySync) for m in ms) >= len(synced))

    sync(2, GINA_KEYS)
    sync(3, IMPOSTOR_KEYS)
    for rid, keys in (("gina1#1", GINA), ("gina1#2", IMPOSTOR)):
        ref.tell(ClientIn(ALICE, signed(keys, rid, "gina1")))
    errs = client.wait_msg(ErrorReply, count=2)
    assert sorted((e.rid, e.code, e.retryable) for e in errs) == [
        ("gina1#1", "pin_disputed", False), ("gina1#2", "pin_disputed", False)]
    assert "no majority" in errs[0].message
    assert ref.proxy().counters.get()["pin_conflict"] == 1
    assert recorded(pending, HandOver) == []
    sync(3, GINA_KEYS)
    impostor = signed(IMPOSTOR, "gina1#3", "gina1")
    ref.tell(ClientIn(ALICE2, impostor))
    (err,) = client.wait_msg(ErrorReply, where=lambda m: m.rid == "gina1#3")
    assert (err.rid, err.code) == ("gina1#3", "keys_changed")
    real = signed(GINA, "gina1#4", "gina1")
    ref.tell(ClientIn(ALICE, real))
    got = wait_recorded(pending, lambda ms: any(isinstance(m, HandOver) for m in ms))
    assert [m.user for m in got if isinstance(m, HandOver)] == ["gina1"]
    assert PinStore(tmp_path / "pending.db").pins()["gina1"] == GINA_KEYS


def test_a_forget_is_honoured_only_from_a_session_this_node_accepted(directory: Any) -> None:
    """gina1's confirmation reached a peer from a session node 1 never accepted (an impostor
    at a node with a replaced disk): node 1 keeps gina1's updates; from gina1's own session
    the forget goes to the pending actor."""
    from actors.node.signals import ForgetIds
    from codec.messages import ForgetUpdates

    ref, _client, _peer, pending = directory
    real = signed(GINA, "gina1#2", "gina1")
    ref.tell(ClientIn(ALICE, real))
    (hand,) = wait_recorded(pending, lambda ms: any(isinstance(m, HandOver) for m in ms))
    from actors.core.directory import token_digest

    session = token_digest(hand.reply.token)
    forged = ForgetUpdates(ids=("alice#1",), user="gina1", session=token_digest(b"f" * 16))
    ref.ask(PeerIn(2, forged))
    assert ref.proxy().counters.get()["forget_refused"] == 1
    assert recorded(pending, ForgetIds) == []
    ref.tell(PeerIn(2, ForgetUpdates(ids=("alice#1",), user="gina1", session=session)))
    got = wait_recorded(pending, lambda ms: any(isinstance(m, ForgetIds) for m in ms))
    assert [(m.user, m.ids) for m in got if isinstance(m, ForgetIds)] == [("gina1", ("alice#1",))]


# ---- PendingUpdateActor --------------------------------------------------------------------------
class GatedStore(PendingStore):
    """A PendingStore whose add() waits for `gate` (the commit is "slow")."""

    gate = threading.Event()

    def add(self, u: Update) -> bool:
        self.gate.wait(10.0)
        return super().add(u)


def start_pending(
    path: Path,
    client: FakeTransport,
    peer: FakeTransport,
    store: PendingStore | None = None,
    view: ClusterView | None = None,
    node: int = 1,
    clock: FakeClock | None = None,
) -> tuple[pykka.ActorRef[Any], Any]:
    cfg = three_node_config()
    ref = PendingUpdateActor.start(
        node,
        client,
        PeerLink(cfg, node, peer),  # type: ignore[arg-type]
        store or PendingStore(path),
        view or up_view(),
        clock=clock or FakeClock(),
    )
    election = Recorder.start()
    wired(ref, election=election, supervisor=Recorder.start())
    return ref, election


def on_disk(path: Path) -> list[str]:
    """Ids committed to the database, read through a connection of our own."""
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        return [r[0] for r in db.execute("SELECT id FROM updates ORDER BY seq")]


def test_pending_actor_acknowledges_only_after_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    client, peer = FakeTransport(), FakeTransport()
    GatedStore.gate = threading.Event()
    ref, _ = start_pending(path, client, peer, GatedStore(path))
    ref.tell(StoreUpdate(ALICE, "alice#2", update(2)))
    assert not client.sends_of(Ack)  # blocked in the commit: nothing acknowledged yet
    assert on_disk(path) == []
    GatedStore.gate.set()
    (ack,) = client.wait_msg(Ack)
    assert ack.rid == "alice#2"
    assert on_disk(path) == ["alice#2"]  # on disk when the Ack left
    assert [s.msg.update.id for s in peer.sends_of(ReplicateUpdate)] == ["alice#2"] * 2


def test_a_new_pending_actor_on_the_same_database_hands_the_update_over_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pending.db"
    client, peer = FakeTransport(), FakeTransport()
    ref, _ = start_pending(path, client, peer)
    ref.ask(StoreUpdate(ALICE, "alice#2", update(2)))
    ref.ask(StoreUpdate(ALICE, "alice#2", update(2)))  # a client retry: stored once
    ref.stop()
    client2 = FakeTransport()
    ref2, _ = start_pending(path, client2, FakeTransport())
    bob = ("127.0.0.1", 40009)
    reply = JoinReply(rid="bob#1", token=bytes(16), updates=())
    ref2.tell(HandOver(bob, "bob", reply))
    (got,) = client2.wait_msg(JoinReply)
    assert [u.id for u in got.updates] == ["alice#2"]
    ref2.tell(ConfirmIds(bob, "bob#2", "bob", ("alice#2", "alice#99"), bytes(16)))
    client2.wait_msg(Ack)
    ref2.tell(HandOver(bob, "bob", replace(reply, rid="bob#3")))
    got2 = client2.wait_msg(JoinReply, count=2)[1]
    assert got2.updates == ()
    assert [s.msg.ids for s in ref2.proxy().peers.get().tp.sends_of(ForgetUpdates)] == [
        ("alice#2",)
    ] * 2


def test_a_nodes_tombstones_are_only_ids_their_addressee_confirmed_from_a_session_it_accepted(
    tmp_path: Path,
) -> None:
    """Issue 15 item 3. Tombstones are made only by ConfirmUpdates (checked against a session
    this node accepted) and a peer's ForgetUpdates (honoured only from such a session too), for
    ids addressed to that user; a StateSync copies tombstones between the authenticated nodes,
    each of which made them under the same two rules. Here node 1 (DirectoryActor and a real
    PendingUpdateActor): a forged peer forget, a confirmation with a wrong token and bob
    confirming carol's update make no tombstone; bob confirming his own does, and the StateSync
    node 1 builds carries exactly that one."""
    from actors.node.pending_actor import PendingUpdateActor
    from codec.messages import ConfirmUpdates, ForgetUpdates

    cfg = three_node_config()
    client, peer = FakeTransport(address=cfg.node(1).client_addr), FakeTransport()
    pending = PendingUpdateActor.start(
        1, client, PeerLink(cfg, 1, peer), PendingStore(tmp_path / "p.db"), up_view(),
        clock=FakeClock(),
    )
    ref = DirectoryActor.start(
        cfg, 1, client, PeerLink(cfg, 1, peer), PinStore(tmp_path / "p.db"), up_view(),
        clock=FakeClock(),
    )
    try:
        wired(pending, election=Recorder.start(), supervisor=Recorder.start())
        wired(ref, pending=pending, election=Recorder.start(), supervisor=Recorder.start())
        pending.ask(StoreUpdate(ALICE, "alice#2", update(2, "bob")))
        pending.ask(StoreUpdate(ALICE, "alice#3", update(3, "carol")))
        ref.ask(PeerIn(2, ForgetUpdates(ids=("alice#2",), user="bob", session=bytes(16))))
        bob = ("127.0.0.1", 40009)
        ref.tell(ClientIn(bob, ConfirmUpdates(rid="bob#1", user="bob", token=bytes(16),
                                              ids=("alice#2",))))
        (err,) = client.wait_msg(ErrorReply)
        assert err.code == "bad_token"
        ref.tell(ClientIn(bob, signed(ClientKeys(b"b" * 32, bytes(32)), "bob#2", "bob")))
        (joined,) = client.wait_msg(JoinReply)
        assert [u.id for u in joined.updates] == ["alice#2"]
        confirm = ConfirmUpdates(rid="bob#3", user="bob", token=joined.token,
                                 ids=("alice#3", "alice#2"))
        ref.tell(ClientIn(bob, confirm))
        client.wait_msg(Ack, where=lambda m: m.rid == "bob#3")
        ref.tell(PeerIn(3, StateRequest(node=3)))
        (sync,) = peer.wait_msg(StateSync)
        assert sync.forgotten == ("alice#2",)
        assert [u.id for u in sync.updates] == ["alice#3"]
        assert ref.proxy().counters.get()["forget_refused"] == 1
    finally:
        ref.stop()
        pending.stop()


def test_only_the_lowest_node_up_replicates_at_once(tmp_path: Path) -> None:
    """Node 2 (second lowest up) holds its replica REPLICATE_DEFER_S; node 1's replica of the
    same id cancels it (node 1 sent to every node); one nobody replicated leaves when due."""
    clock = FakeClock()
    peer = FakeTransport()
    ref, _ = start_pending(tmp_path / "p.db", FakeTransport(), peer, node=2, clock=clock)
    ref.ask(StoreUpdate(ALICE, "alice#2", update(2)))
    ref.ask(StoreUpdate(ALICE, "alice#3", update(3)))
    ref.ask(PeerIn(1, ReplicateUpdate(update=update(2))))  # node 1 replicated alice#2
    ref.ask(Tick())
    assert peer.sends_of(ReplicateUpdate) == []  # not due yet
    clock.advance(REPLICATE_DEFER_S)
    ref.ask(Tick())
    ref.ask(Tick())
    assert [s.msg.update.id for s in peer.sends_of(ReplicateUpdate)] == ["alice#3"] * 2
    assert sorted(s.addr for s in peer.sends_of(ReplicateUpdate)) == sorted(
        ref.proxy().peers.get().addrs.values()
    )


def test_the_second_node_replicates_at_once_when_the_lowest_is_down(tmp_path: Path) -> None:
    peer = FakeTransport()
    view = up_view(up=frozenset({2, 3}))
    ref, _ = start_pending(tmp_path / "p.db", FakeTransport(), peer, view=view, node=2)
    ref.ask(StoreUpdate(ALICE, "alice#2", update(2)))
    assert [s.msg.update.id for s in peer.sends_of(ReplicateUpdate)] == ["alice#2"] * 2


def test_replicated_updates_need_a_majority(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    ref, _ = start_pending(path, FakeTransport(), FakeTransport(), view=up_view(majority=False))
    ref.ask(PeerIn(2, ReplicateUpdate(update=update(4))))
    assert on_disk(path) == []
    ref.ask(up_view(version=2))
    ref.ask(PeerIn(2, ReplicateUpdate(update=update(4))))
    assert on_disk(path) == ["alice#4"]


def test_an_applied_sync_is_reported_to_the_election_actor(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    ref, election = start_pending(path, FakeTransport(), FakeTransport())
    sync = StateSync(node=2, users=(), updates=(update(6),), forgotten=(), digest=b"")
    ref.tell(ApplySync(2, sync))
    wait_recorded(
        election, lambda ms: any(isinstance(m, SyncApplied) and m.sender == 2 for m in ms)
    )
    assert on_disk(path) == ["alice#6"]
    empty = StateSync(node=3, users=(), updates=(), forgotten=(), digest=b"")
    ref.tell(ApplySync(3, empty))
    got = wait_recorded(
        election, lambda ms: any(isinstance(m, SyncApplied) and m.sender == 3 for m in ms)
    )
    assert [(m.sender, m.empty) for m in got if isinstance(m, SyncApplied)] == [
        (2, False),
        (3, True),
    ]


# ---- EncryptFlowActor and its EncoderActor pool --------------------------------------------------
@pytest.fixture
def flow() -> Iterator[
    tuple[pykka.ActorRef[Any], FakeTransport, FakeTransport, pykka.ActorRef[Any]]
]:
    cfg = three_node_config()
    client, peer = FakeTransport(auto=None), FakeTransport()
    ref = EncryptFlowActor.start(
        cfg,
        1,
        client,
        PeerLink(cfg, 1, peer),  # type: ignore[arg-type]
        up_view(),
        clock=FakeClock(),
    )
    election = Recorder.start()
    wired(ref, election=election, supervisor=Recorder.start())
    yield ref, client, peer, election
    ref.stop()


def test_the_flow_actor_seals_when_won_and_replies(flow: Any) -> None:
    ref, client, peer, election = flow
    ref.tell(
        ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png", data=png_bytes(1), attempt=0))
    )
    wait_recorded(election, lambda ms: any(isinstance(m, StartElection) for m in ms))
    ref.tell(Won("alice#1"))
    (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))
    assert sent.addr == ALICE and sent.msg.node == 1
    client.complete(sent)  # the client's transport acknowledged the reply
    dones = [d.msg for d in peer.wait_sent(lambda s: isinstance(s.msg, Done), count=2)]
    assert all(d.rid == "alice#1" and d.acked for d in dones)
    got = wait_recorded(election, lambda ms: any(type(m).__name__ == "ForgetElection" for m in ms))
    assert next(m for m in got if type(m).__name__ == "ForgetElection").settled


def test_the_flow_actor_refuses_a_request_id_another_client_holds_and_counts_it(flow: Any) -> None:
    """A second client sending an id in flight gets `id_in_use` through the client transport,
    counted on the node; the reply still goes to the client that sent the id first."""
    ref, client, _peer, election = flow
    mine = EncryptRequest(rid="alice#1", image="a.png", data=png_bytes(1), attempt=0)
    ref.tell(ClientIn(ALICE, mine))
    ref.tell(ClientIn(ALICE2, EncryptRequest(rid="alice#1", image="b.png", data=png_bytes(2),
                                             attempt=0)))
    (refusal,) = client.wait_sent(lambda s: isinstance(s.msg, ErrorReply))
    assert refusal.addr == ALICE2 and refusal.msg.code == "id_in_use"
    assert ref.ask(CountersQuery())["id_in_use"] == 1
    assert len(recorded(election, StartElection)) == 1
    ref.tell(Won("alice#1"))
    (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))
    assert sent.addr == ALICE
    from codec import seal as seal_mod

    assert seal_mod.unseal(sent.msg.sealed).payload == mine.data


def test_the_flow_actor_writes_its_status_figures_without_a_message() -> None:
    """served and cached go into the supervisor's `figures` dict, not as Snapshot messages (two
    per request on every node before: issue 19)."""
    cfg = three_node_config()
    client, peer = FakeTransport(auto=None), FakeTransport()
    figures: dict[str, Any] = {"served": 0, "cached": 0}
    ref = EncryptFlowActor.start(cfg, 1, client, PeerLink(cfg, 1, peer),  # type: ignore[arg-type]
                                 up_view(), clock=FakeClock(), figures=figures)
    supervisor = Recorder.start()
    wired(ref, election=Recorder.start(), supervisor=supervisor)
    try:
        ref.tell(ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png",
                                                data=png_bytes(1), attempt=0)))
        ref.ask(CountersQuery())  # the request has been handled
        assert figures == {"served": 0, "cached": 1}
        ref.tell(Won("alice#1"))
        (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))
        client.complete(sent)  # the client acknowledged the reply: served
        peer.wait_sent(lambda s: isinstance(s.msg, Done), count=2)
        ref.ask(CountersQuery())
        assert figures == {"served": 1, "cached": 0}
        assert recorded(supervisor, object) == []  # nothing was told to the supervisor
    finally:
        ref.stop()


@pytest.mark.parametrize("size", [40, 90])  # ~4.8 KB (the benchmark's small images), ~24 KB
def test_a_small_payload_is_sealed_by_the_flow_actor_a_larger_one_by_the_pool(
    flow: Any, size: int
) -> None:
    """Up to SEAL_HERE_MAX the winner seals on the flow actor's thread: no encoder job, so no
    `Load` change for the election (issue 19: the pool's round trip was two wake-ups and two
    Load messages per request); above it the pool seals, and the election hears its load."""
    from actors.node.encrypt_actor import SEAL_HERE_MAX
    from actors.node.signals import Load
    from codec import seal as seal_mod

    ref, client, _peer, election = flow
    data = png_bytes(2, size)
    assert (len(data) <= SEAL_HERE_MAX) == (size == 40)
    ref.tell(ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png", data=data, attempt=0)))
    wait_recorded(election, lambda ms: any(isinstance(m, StartElection) for m in ms))
    ref.tell(Won("alice#1"))
    (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))
    assert seal_mod.unseal(sent.msg.sealed).payload == data
    ref.ask(CountersQuery())
    loads = [m.in_flight for m in recorded(election, Load)]
    assert loads == ([0] if size == 40 else [0, 1, 0])


def test_the_flow_actor_fetches_an_offered_payload_once_won(flow: Any) -> None:
    ref, client, peer, election = flow
    data = png_bytes(1)
    ref.tell(ClientIn(ALICE, EncryptOffer(rid="alice#1", image="a.png", size=len(data),
                                          attempt=0)))
    wait_recorded(election, lambda ms: any(isinstance(m, StartElection) for m in ms))
    ref.tell(Won("alice#1"))
    (fetch,) = client.wait_sent(lambda s: isinstance(s.msg, FetchPayload))
    assert fetch.addr == ALICE and fetch.msg == FetchPayload(rid="alice#1", node=1, attempt=0)
    client.complete(fetch)
    ref.tell(ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png", data=data, attempt=0)))
    (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))
    assert sent.addr == ALICE
    client.complete(sent)
    peer.wait_sent(lambda s: isinstance(s.msg, Done), count=2)


def test_a_fetch_the_client_never_acknowledged_ends_the_request_unacked(flow: Any) -> None:
    ref, client, peer, _election = flow
    ref.tell(ClientIn(ALICE, EncryptOffer(rid="alice#1", image="a.png", size=100, attempt=0)))
    ref.tell(Won("alice#1"))
    (fetch,) = client.wait_sent(lambda s: isinstance(s.msg, FetchPayload))
    client.complete(fetch, SendError("unacknowledged", "fake: client gone"))
    dones = [d.msg for d in peer.wait_sent(lambda s: isinstance(s.msg, Done), count=2)]
    assert all(d.rid == "alice#1" and not d.acked for d in dones)
    assert ref.proxy().flow.get().cache == {}


class GateClock(FakeClock):
    """A FakeClock that, once armed, holds the actor thread reading it until released: what is
    told meanwhile waits in the actor's mailbox."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> float:
        if self.armed.is_set():
            self.armed.clear()
            self.holding.set()
            self.release.wait(timeout=30)
        return super().__call__()


def test_dones_ended_while_the_mailbox_was_busy_leave_in_one_batch() -> None:
    cfg = three_node_config()
    client, peer, clock = FakeTransport(auto=None), FakeTransport(), GateClock()
    ref = EncryptFlowActor.start(cfg, 1, client, PeerLink(cfg, 1, peer), up_view(),  # type: ignore[arg-type]
                                 clock=clock)
    wired(ref, election=Recorder.start(), supervisor=Recorder.start())
    rids = [f"alice#{k}" for k in range(1, 4)]
    for rid in rids:
        ref.tell(ClientIn(ALICE, EncryptRequest(rid=rid, image="a.png", data=png_bytes(1),
                                                attempt=0)))
        ref.tell(Won(rid))
    replies = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply), count=3)
    clock.armed.set()
    ref.tell(Tick())  # the actor reads the clock and waits there
    assert clock.holding.wait(timeout=30)
    for sent in replies:
        client.complete(sent)  # three acknowledgements queue up behind the Tick
    clock.release.set()
    batches = [s for s in peer.wait_sent(lambda s: isinstance(s.msg, DoneBatch), count=2)]
    assert len({s.addr for s in batches}) == 2  # one to each peer
    order = tuple(s.msg.rid for s in replies)  # the seals end in any order
    assert [s.msg for s in batches] == [DoneBatch(node=1, acked=order, unacked=())] * 2
    assert sorted(order) == rids
    assert not [s for s in peer.sent if isinstance(s.msg, Done)]  # 2 messages instead of 6
    ref.stop()


def test_an_idle_flow_handles_a_reply_outcome_on_the_thread_that_learned_it() -> None:
    """With its DirectEntry, the acknowledgement of a reply runs on the acknowledging thread
    (no mailbox hop) and, the mailbox being empty, its Dones leave before it returns."""
    cfg = three_node_config()
    client, peer, entry = FakeTransport(auto=None), FakeTransport(), DirectEntry()
    ref = EncryptFlowActor.start(cfg, 1, client, PeerLink(cfg, 1, peer), up_view(),  # type: ignore[arg-type]
                                 clock=FakeClock(), entry=entry)
    wired(ref, election=Recorder.start(), supervisor=Recorder.start())
    ref.tell(ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png", data=png_bytes(1),
                                            attempt=0)))
    ref.tell(Won("alice#1"))
    (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))
    ref.ask(CountersQuery())  # the actor is idle now
    client.complete(sent)
    done = Done(rid="alice#1", node=1, acked=True)
    assert [(s.addr, s.msg) for s in peer.sent] == [
        (addr, done) for addr in PeerLink(cfg, 1, peer).addrs.values()
    ]
    assert ref.proxy().flow.get().cache == {}
    ref.stop()


def test_a_won_on_the_reader_thread_is_sealed_there_once_the_turn_is_over() -> None:
    """A Won that runs on a foreign thread through the flow's DirectEntry (the reader thread,
    which handles the election while both actors are idle) does not wake the flow's thread with
    a SealJob: the seal is left to the end of that thread's turn (`after_turn`, the node's
    `Reactor.defer`) and runs there, through the entry. Where `after_turn` refuses (not the
    reactor's thread), the SealJob goes to the flow's mailbox as before."""
    from codec import seal as seal_mod

    cfg = three_node_config()
    client, peer, entry = FakeTransport(auto=None), FakeTransport(), DirectEntry()
    deferred: list[Any] = []
    accept = [True]

    def after_turn(fn: Any) -> bool:
        if accept[0]:
            deferred.append(fn)
        return accept[0]

    ref = EncryptFlowActor.start(cfg, 1, client, PeerLink(cfg, 1, peer), up_view(),  # type: ignore[arg-type]
                                 clock=FakeClock(), entry=entry, after_turn=after_turn)
    wired(ref, election=Recorder.start(), supervisor=Recorder.start())
    try:
        data = png_bytes(1)
        for k in (1, 2):
            ref.tell(ClientIn(ALICE, EncryptRequest(rid=f"alice#{k}", image="a.png", data=data,
                                                    attempt=0)))
        ref.ask(CountersQuery())  # idle: the entry runs the Won on this thread
        entry.tell(Won("alice#1"))
        assert len(deferred) == 1
        ref.ask(CountersQuery())  # whatever the mailbox held has run: no SealJob was told
        assert [s for s in client.sent if isinstance(s.msg, EncryptReply)] == []
        deferred.pop()()  # the turn is over: sealed now, on this thread
        (sent,) = [s for s in client.sent if isinstance(s.msg, EncryptReply)]
        assert sent.msg.rid == "alice#1" and seal_mod.unseal(sent.msg.sealed).payload == data
        assert sent.thread == threading.get_ident()
        accept[0] = False
        entry.tell(Won("alice#2"))
        (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply)
                                   and s.msg.rid == "alice#2")
        assert sent.thread != threading.get_ident() and deferred == []  # the flow's own
    finally:
        ref.stop()


def test_the_dones_of_one_reader_turn_leave_as_one_done_batch_per_peer() -> None:
    """Replies acknowledged on the node's reader in one turn (through the flow's DirectEntry):
    the PeerLink holds their Dones to the turn's end, then one DoneBatch per peer carries them
    all. Off the reader a Done leaves at once."""
    cfg = three_node_config()
    client, peer, entry = FakeTransport(auto=None), FakeTransport(), DirectEntry()
    peers = PeerLink(cfg, 1, peer)  # type: ignore[arg-type]
    reactor = FakeReactor(threading.current_thread())
    peers.reactor = reactor  # type: ignore[assignment]
    ref = EncryptFlowActor.start(cfg, 1, client, peers, up_view(),  # type: ignore[arg-type]
                                 clock=FakeClock(), entry=entry)
    wired(ref, election=Recorder.start(), supervisor=Recorder.start())
    try:
        rids = [f"alice#{k}" for k in (1, 2, 3)]
        for rid in rids:
            ref.tell(ClientIn(ALICE, EncryptRequest(rid=rid, image="a.png", data=png_bytes(1),
                                                    attempt=0)))
            ref.tell(Won(rid))
        replies = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply), count=3)
        ref.ask(CountersQuery())  # idle: the outcomes run on this thread, through the entry
        for sent in replies:
            client.complete(sent)  # the reader learns three acknowledgements in one turn
        assert peer.sent == [] and [first for _, first in reactor.deferred] == [True]
        reactor.end_turn()
        order = tuple(s.msg.rid for s in replies)
        assert sorted(order) == rids
        assert [(s.addr, s.msg) for s in peer.sent] == [
            (addr, DoneBatch(node=1, acked=order, unacked=())) for addr in peers.addrs.values()
        ]
        peers.reactor = FakeReactor(threading.Thread(target=lambda: None))  # type: ignore[assignment]
        ref.tell(ClientIn(ALICE, EncryptRequest(rid="alice#4", image="a.png", data=png_bytes(1),
                                                attempt=0)))
        ref.tell(Won("alice#4"))
        (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply)
                                   and s.msg.rid == "alice#4")
        ref.ask(CountersQuery())
        before = len(peer.sent)
        client.complete(sent)
        assert [s.msg for s in peer.sent[before:]] == [Done(rid="alice#4", node=1, acked=True)] * 2
    finally:
        ref.stop()


def test_a_peer_done_batch_drops_every_request_it_names(flow: Any) -> None:
    ref, _client, _peer, _election = flow
    for k in (1, 2, 3):
        ref.tell(ClientIn(ALICE, EncryptRequest(rid=f"alice#{k}", image="a.png",
                                                data=png_bytes(1), attempt=0)))
    ref.ask(PeerIn(2, DoneBatch(node=2, acked=("alice#1",), unacked=("alice#3",))))
    svc = ref.proxy().flow.get()
    assert sorted(svc.cache) == ["alice#2"]
    assert svc.settled("alice#1") and not svc.settled("alice#3")


def test_done_leaves_before_goingdown(flow: Any) -> None:
    ref, client, peer, _election = flow
    ref.tell(
        ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png", data=png_bytes(1), attempt=0))
    )
    ref.tell(Won("alice#1"))
    client.wait_sent(lambda s: isinstance(s.msg, EncryptReply))  # in flight, not acknowledged
    bye = GoingDown(node=1, epoch=5)
    ref.tell(GoDown(then_send=((2, bye), (3, bye))))
    peer.wait_sent(lambda s: isinstance(s.msg, GoingDown), count=2)
    kinds = [type(s.msg).__name__ for s in peer.sent]
    assert kinds == ["Done", "Done", "GoingDown", "GoingDown"]
    assert all(not s.msg.acked for s in peer.sent[:2])  # outcome unknown: a retry is served
    ref.tell(
        ClientIn(ALICE, EncryptRequest(rid="alice#2", image="a.png", data=png_bytes(1), attempt=0))
    )
    assert ref.proxy().flow.get().cache == {}  # down: nothing cached, nothing answered



class FakeLater:
    """The flow actor's timer (`later`): records (delay, fn); the test fires them."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Any]] = []

    def __call__(self, delay_s: float, fn: Any) -> None:
        self.timers.append((delay_s, fn))

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for _, fn in timers:
            fn()


def held_flow(later: FakeLater) -> tuple[pykka.ActorRef[Any], FakeTransport, FakeTransport]:
    base = three_node_config()  # the hold is off by default: 50 ms here
    cfg = dataclasses.replace(base, election=dataclasses.replace(base.election, done_hold_ms=50))
    client, peer = FakeTransport(auto=None), FakeTransport()
    ref = EncryptFlowActor.start(cfg, 1, client, PeerLink(cfg, 1, peer), up_view(),  # type: ignore[arg-type]
                                 clock=FakeClock(), later=later)
    wired(ref, election=Recorder.start(), supervisor=Recorder.start())
    return ref, client, peer


def serve_one(ref: pykka.ActorRef[Any], client: FakeTransport, rid: str) -> None:
    """`rid` won, sealed, and its reply acknowledged by the client (handled when this returns)."""
    ref.tell(ClientIn(ALICE, EncryptRequest(rid=rid, image="a.png", data=png_bytes(1),
                                            attempt=0)))
    ref.tell(Won(rid))
    (sent,) = client.wait_sent(lambda s: isinstance(s.msg, EncryptReply) and s.msg.rid == rid)
    client.complete(sent)
    ref.ask(CountersQuery())


def test_held_dones_leave_together_when_the_hold_ends() -> None:
    """Issue 19: the winner's Dones wait `election.done_hold_ms` from the first one (a timer,
    so an idle node sends them too), then leave as one DoneBatch per peer."""
    later = FakeLater()
    ref, client, peer = held_flow(later)
    try:
        rids = [f"alice#{k}" for k in range(1, 4)]
        for rid in rids:
            serve_one(ref, client, rid)
        assert [d for d, _ in later.timers] == [0.05]  # one hold, armed by the first Done
        assert peer.sent == []  # held
        later.fire()
        batches = peer.wait_sent(lambda s: isinstance(s.msg, DoneBatch), count=2)
        assert len({s.addr for s in batches}) == 2
        assert [s.msg for s in batches] == [DoneBatch(node=1, acked=tuple(rids), unacked=())] * 2
        assert ref.proxy().flow.get().cache == {}
        serve_one(ref, client, "alice#4")  # the next Done starts a new hold
        assert len(later.timers) == 1 and len(peer.sent) == 2
        later.fire()
        dones = peer.wait_sent(lambda s: isinstance(s.msg, Done), count=2)
        assert [s.msg for s in dones] == [Done(rid="alice#4", node=1, acked=True)] * 2
    finally:
        ref.stop()


def test_a_full_hold_leaves_at_once_and_its_timer_then_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actors.node import encrypt_actor

    monkeypatch.setattr(encrypt_actor, "DONE_HOLD_MAX", 2)
    later = FakeLater()
    ref, client, peer = held_flow(later)
    try:
        serve_one(ref, client, "alice#1")
        assert peer.sent == []
        serve_one(ref, client, "alice#2")  # the hold is full: it leaves without the timer
        assert [s.msg for s in peer.sent] == [
            DoneBatch(node=1, acked=("alice#1", "alice#2"), unacked=())] * 2
        later.fire()  # the first hold's timer: stale
        serve_one(ref, client, "alice#3")  # held in a new hold, not sent by the stale timer
        assert len(peer.sent) == 2 and len(later.timers) == 1
    finally:
        ref.stop()


def test_stopping_the_flow_actor_sends_its_held_dones() -> None:
    later = FakeLater()
    ref, client, peer = held_flow(later)
    serve_one(ref, client, "alice#1")
    assert peer.sent == []
    ref.stop()  # the node stops before the hold ends: the Done still leaves
    assert [s.msg for s in peer.sent] == [Done(rid="alice#1", node=1, acked=True)] * 2
    later.fire()  # the actor is gone: its timer's tell is dropped, not raised into the ticker


def test_a_simulated_failure_sends_the_held_dones_before_goingdown() -> None:
    later = FakeLater()
    ref, client, peer = held_flow(later)
    try:
        serve_one(ref, client, "alice#1")
        bye = GoingDown(node=1, epoch=5)
        ref.tell(GoDown(then_send=((2, bye), (3, bye))))
        peer.wait_sent(lambda s: isinstance(s.msg, GoingDown), count=2)
        assert [type(s.msg).__name__ for s in peer.sent] == ["Done", "Done", "GoingDown",
                                                             "GoingDown"]
    finally:
        ref.stop()


def test_the_ticker_runs_a_timer_and_at_stop_the_pending_ones() -> None:
    from actors.node.supervisor import Ticker

    ticker = Ticker([], period=0.001)
    ran: list[str] = []
    soon = threading.Event()
    ticker.after(0.0, lambda: (ran.append("soon"), soon.set()))
    ticker.after(3600.0, lambda: ran.append("late"))
    ticker.start()
    assert soon.wait(timeout=30)
    assert ran == ["soon"]
    ticker.stop()  # the late one runs now rather than never
    assert ran == ["soon", "late"]
    ticker.after(3600.0, lambda: ran.append("after stop"))  # at once: no thread runs timers
    assert ran == ["soon", "late", "after stop"]
    ticker.join(timeout=30)


def test_an_encoder_keeps_no_reference_to_a_payload_it_sealed() -> None:
    """Memory (issue 15): pykka keeps an actor's last message until the next arrives; the
    encoder takes the payload out of its SealJob, so the payload is freed once the flow, which
    drops its copy when the seal ends, lets go of it (the reply is encoded without it)."""
    from actors.node.encoder import SealJob

    cfg = three_node_config()
    got: list[Sealed] = []
    done = threading.Event()
    ref = EncoderActor.start(cfg.seal, 1 << 20, lambda s: (got.append(s), done.set()),
                             CoverSet())
    try:
        job = SealJob("r1", png_bytes(1, 8))
        ref.tell(job)
        assert done.wait(30) and got[0].png is not None and got[0].error is None
        assert job.payload is None  # the actor's last message holds no payload any more
    finally:
        ref.stop()


def test_encoder_pool_dispatches_to_the_least_busy_and_reports_a_failed_seal() -> None:
    cfg = three_node_config()
    results: list[Sealed] = []
    done = threading.Condition()

    def deliver(s: Sealed) -> None:
        with done:
            results.append(s)
            done.notify_all()

    pool = EncoderPool(2, cfg.seal, 64, deliver)  # payloads over 64 bytes cannot be sealed
    try:
        pool.submit("r1", b"x" * 10)
        pool.submit("r2", b"x" * 10)
        first, second = pool._where["r1"], pool._where["r2"]
        assert first != second  # one each
        with done:
            assert done.wait_for(lambda: len(results) == 2, timeout=30)
        pool.finished("r1")
        pool.submit("r3", b"y" * 100)  # to the encoder r1 left, the least busy one
        assert pool._where["r3"] == first
        with done:
            assert done.wait_for(lambda: len(results) == 3, timeout=30)
        failed = results[2]
        assert failed.rid == "r3" and failed.png is None and "seal failed" in (failed.error or "")
        assert all(r.png is not None and r.error is None for r in results[:2])
        assert all(r.actor_class is EncoderActor for r in pool._refs)
    finally:
        pool.stop()


def test_a_failed_seal_is_answered_with_an_error(tmp_path: Path) -> None:
    from codec.sharecrypt import MAGIC

    cfg = three_node_config()
    client, peer = FakeTransport(), FakeTransport()
    holder: dict[str, Any] = {}
    pool = EncoderPool(1, cfg.seal, 64, lambda s: holder["ref"].tell(s))  # seals fail over 64 B
    ref = EncryptFlowActor.start(
        cfg, 1, client, PeerLink(cfg, 1, peer), up_view(), clock=FakeClock(), pool=pool  # type: ignore[arg-type]
    )
    holder["ref"] = ref
    wired(ref, election=Recorder.start(), supervisor=Recorder.start())
    opaque = MAGIC + bytes(200)  # ciphertext-shaped: not probed, but over the seal's limit
    ref.tell(ClientIn(ALICE, EncryptRequest(rid="alice#1", image="a.png", data=opaque, attempt=0)))
    ref.tell(Won("alice#1"))
    (err,) = client.wait_msg(ErrorReply)
    assert err.code == "seal_failed" and not err.retryable, err
    assert ref.proxy().flow.get().cache == {}  # answered and done: nothing kept


def test_initial_view_waits_for_sync_when_there_are_peers() -> None:
    v = initial_view(three_node_config())
    assert v.syncing and not v.majority and v.self_up


# ---- NodeActor (the supervisor), all actors wired, fake transports -------------------------------
def test_the_supervisor_wires_every_actor_and_answers_status_from_their_snapshots(
    tmp_path: Path,
) -> None:
    import hashlib
    import random

    from actors.core.directory import Directory
    from actors.node.supervisor import FAST_TICK_S, SLOW_TICK_S, NodeActor, tick_periods
    from codec.messages import StatusQuery, StatusReply

    cfg = three_node_config()
    data = tmp_path / "node-1"
    data.mkdir()
    with PendingStore(data / "pending.db") as store:  # pending from a previous life
        store.add(update(1))
    client = FakeTransport(address=cfg.node(1).client_addr)
    peer = FakeTransport(address=cfg.node(1).peer_addr)
    ref = NodeActor.start(
        cfg,
        1,
        data,
        client_tp=client,
        peer_tp=peer,  # type: ignore[arg-type]
        clock=FakeClock(),
        rng=random.Random(1),
        failures=False,
    )
    try:
        ref.ask({"query": "counters"})  # on_start done: the actors are wired and subscribed
        # failures off: the token ring has no deadlines, its actor is ticked slowly
        children = ref.proxy().children.get()
        ticked = ref.proxy().ticker.get()._refs
        periods = {t._ref if isinstance(t, DirectEntry) else t: p for t, p in ticked}
        assert {n: periods[r] for n, r in children.items()} == tick_periods(False)
        # the election is ticked through its entry: a tick while it is idle needs no wake-up
        entries = [t for t, _ in ticked if isinstance(t, DirectEntry)]
        assert len(entries) == 1 and entries[0]._ref is children["election"]
        assert tick_periods(False)["token"] == SLOW_TICK_S
        assert tick_periods(True)["token"] == tick_periods(True)["election"] == FAST_TICK_S

        def status() -> StatusReply:
            n = len(client.sends_of(StatusReply))
            client.deliver(ALICE, StatusQuery(rid=f"status#{n}"))
            return client.wait_msg(StatusReply, count=n + 1)[n]

        empty_dir = Directory(b"k" * 32, 15.0).digest(0.0)
        with PendingStore(data / "pending.db") as store:
            pending_digest = store.digest()
        expected = hashlib.sha256(empty_dir + pending_digest).digest()[:16]
        deadline_rounds = 200
        for _ in range(deadline_rounds):  # the actors' snapshots reach the supervisor
            st = status()
            if st.pending == 1 and st.digest == expected:
                break
        assert (st.node, st.state, st.pending, st.users, st.digest) == (1, "up", 1, 0, expected)
        # the token fields come from the token actor's own TokenView, not the election's view
        assert (st.token, st.token_holder) == (False, 0)
        ref.tell(TokenView(epoch=7, holder=1, holding=True, down=False, down_since=0.0))
        assert (status().token, status().token_holder) == (True, 1)
        assert ref.proxy().view.get().holding is False  # the ClusterView still says not held
        # a heartbeat from a peer goes to both membership replicas; a StatusQuery to the supervisor
        counters = ref.ask({"query": "counters"})
        assert counters.get("internal_errors", 0) == 0
    finally:
        ref.stop()


def test_a_peers_forget_drops_only_the_updates_addressed_to_that_user(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    ref, _ = start_pending(path, FakeTransport(), FakeTransport())
    from actors.node.signals import ForgetIds

    ref.ask(StoreUpdate(ALICE, "alice#1", update(1, addressee="gina1")))
    ref.ask(StoreUpdate(ALICE, "alice#2", update(2, addressee="bob")))
    ref.ask(ForgetIds("gina1", ("alice#1", "alice#2")))  # alice#2 is bob's: not gina1's to drop
    assert on_disk(path) == ["alice#2"]


def test_a_state_sync_carries_the_pins_it_was_built_with(tmp_path: Path) -> None:
    from actors.node.signals import BuildSync
    from codec.messages import Pin

    peer = FakeTransport()
    ref, _ = start_pending(tmp_path / "pending.db", FakeTransport(), peer)
    pin = Pin(user="gina1", sign_key=GINA_KEYS[0], box_key=GINA_KEYS[1])
    ref.ask(BuildSync(2, (), b"", (pin,)))
    (sent,) = peer.sends_of(StateSync)
    assert sent.msg.pins == (pin,)


def test_election_messages_of_a_busy_mailbox_leave_in_one_batch_per_peer() -> None:
    """Three requests start while node 1's election actor is busy: their Elections leave as one
    ElectionBatch per peer (2 datagrams instead of 6); the peers handle the items like the
    messages they stand for, and each request still has exactly one winner."""
    from codec.messages import Election, ElectionBatch, ElectionItem

    clock = GateClock()
    # a new cloud (no node kept a disk): no node abstains from elections it has no copy for,
    # which would make node 1 claim before its peers have the requests (a race with this test)
    cloud = FakeCloud(three_node_config(), clock, fresh=frozenset({1, 2, 3}))
    try:
        connect(cloud)
        rids = [f"alice#{k}" for k in (1, 2, 3)]
        tp = cloud.tp[1]
        before = len(tp.sent)
        clock.armed.set()
        cloud.ref(1, "election").tell(Tick())  # node 1 reads the clock and waits there
        assert clock.holding.wait(timeout=30)
        for rid in rids:
            cloud.ref(1, "election").tell(StartElection(rid))  # queue up behind the Tick
        clock.release.set()
        batches = tp.wait_sent(lambda s: isinstance(s.msg, ElectionBatch), count=2)
        assert {s.addr for s in batches} == {cloud.cfg.node(n).peer_addr for n in (2, 3)}
        prio = batches[0].msg.items[0].priority
        rounds = [item.round for item in batches[0].msg.items]  # one per request: 1, 2, 3
        assert [s.msg.items for s in batches] == [
            tuple(ElectionItem(kind="election", rid=rid, priority=prio, round=r, bind=0b1110)
                  for rid, r in zip(rids, rounds, strict=True))  # each binds nodes 1, 2, 3
        ] * 2
        assert len(set(rounds)) == 3
        assert not [s for s in tp.sent[before:] if isinstance(s.msg, Election)]
        for n in (2, 3):
            for rid in rids:
                cloud.ref(n, "election").tell(StartElection(rid))
        for rid in rids:
            res = outcomes(cloud, rid, cloud.ids)
            winners = [n for n, m in res.items() if isinstance(m, Won)]
            assert len(winners) == 1, res
            assert all(m.winner == winners[0] for m in res.values() if isinstance(m, Lost))
    finally:
        cloud.stop()


def test_election_messages_of_one_reader_turn_leave_in_one_batch_per_peer() -> None:
    """Requests started on the node's reader (the flow's StartElection through the election's
    DirectEntry): the PeerLink holds their Elections to the turn's end, then one ElectionBatch
    per peer carries them all; a request alone in its turn sends Elections as themselves."""
    from codec.messages import Election, ElectionBatch

    cfg = three_node_config()
    tp, entry = FakeTransport(), DirectEntry()
    peers = PeerLink(cfg, 1, tp)  # type: ignore[arg-type]
    reactor = FakeReactor(threading.current_thread())
    peers.reactor = reactor  # type: ignore[assignment]
    ref = ElectionActor.start(cfg, 1, peers, clock=FakeClock(), boot_epoch=1,
                              loadavg=lambda: 0.0, disk_kept=False, entry=entry)
    wired(ref, flow=Recorder.start())

    def elections() -> list[Any]:
        return [s for s in tp.sent if isinstance(s.msg, (Election, ElectionBatch))]

    try:
        for n in (2, 3):
            ref.tell(PeerIn(n, PeerHeartbeat(node=n, epoch=1, state="up", load=0, token_epoch=0,
                                             token_holder=0, digest=b"")))
        ref.tell(Tick())
        ref.ask(CountersQuery())  # idle: the entry runs what it is told on this thread
        reactor.end_turn()  # what the heartbeats and the tick sent
        rids = [f"alice#{k}" for k in (1, 2, 3)]
        for rid in rids:
            entry.tell(StartElection(rid))
        assert elections() == []
        reactor.end_turn()
        batches = elections()
        assert {s.addr for s in batches} == set(peers.addrs.values()) and len(batches) == 2
        assert [[i.rid for i in s.msg.items] for s in batches] == [rids, rids]
        entry.tell(StartElection("alice#4"))  # alone in its turn: an Election, no batch
        reactor.end_turn()
        alone = elections()[2:]
        assert [(type(s.msg), s.msg.rid) for s in alone] == [(Election, "alice#4")] * 2
    finally:
        ref.stop()


def test_a_received_election_batch_is_handled_item_by_item(cloud: FakeCloud) -> None:
    """Node 2 sends an ElectionBatch naming an Election, a Claim and a vote: node 1 votes for the
    claim (ElectionOk) and, for the Election and the (resent) vote of a request whose reply was
    acknowledged, answers Done, as it would for the messages alone."""
    from actors.node.signals import ForgetElection
    from codec.messages import ElectionBatch, ElectionItem, ElectionOk

    connect(cloud)
    cloud.ref(1, "election").ask(ForgetElection("alice#3", settled=True))
    tp = cloud.tp[1]
    n2 = cloud.cfg.node(2).peer_addr
    before = len(tp.sent)
    tp.deliver(n2, ElectionBatch(node=2, items=(
        ElectionItem(kind="election", rid="alice#3", priority=5, round=1, bind=0),
        ElectionItem(kind="claim", rid="alice#4", priority=0, round=1, bind=0),
        ElectionItem(kind="ok", rid="alice#3", priority=0, round=1, bind=0),
    )))
    cloud.settle()
    to_2 = [s.msg for s in tp.sent[before:]
            if s.addr == n2 and not isinstance(s.msg, PeerHeartbeat)]
    done = Done(rid="alice#3", node=1, acked=True)
    # the Dones leave at once, the vote with the election messages when the batch is handled
    assert to_2 == [done, done, ElectionOk(rid="alice#4", node=1, round=1)]
    cloud.ref(1, "election").tell(StartElection("alice#4"))  # its own copy: it follows 2
    assert outcomes(cloud, "alice#4", [1]) == {1: Lost("alice#4", 2)}
