"""DirectEntry / DirectActor: an actor's messages run on the caller's thread while it is idle,
else through its mailbox, in order, never re-entering it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from fake_transport import FakeClock, FakeTransport
from node_actor_kit import Recorder, three_node_config

from actors.direct import DirectActor, DirectEntry
from actors.node.base import PeerLink, Wire
from actors.node.election_actor import ElectionActor
from actors.node.signals import PeerIn, StartElection
from codec.messages import Claim, Election, ElectionOk, PeerHeartbeat

WAIT_S = 10.0


class _Leaf(pykka.ThreadingActor):
    """What DirectActor's lock wraps: records (message, thread); "block" waits for `release`;
    ("reenter", m) tells m through its own entry from inside; "seen" answers the record."""

    entry: DirectEntry
    seen: list[tuple[Any, int]]
    release: threading.Event
    inside: threading.Event

    def on_receive(self, message: Any) -> Any:
        if message == "seen":
            return [m for m, _ in self.seen]
        self.seen.append((message, threading.get_ident()))
        if message == "block":
            self.inside.set()
            self.release.wait(WAIT_S)
        elif isinstance(message, tuple) and message[0] == "reenter":
            self.entry.tell(message[1])
        return None


class Probe(DirectActor, _Leaf):
    last: Probe | None = None  # the instance the test looks inside

    def __init__(self, entry: DirectEntry) -> None:
        super().__init__()
        Probe.last = self
        self.entry = entry
        self.seen = []
        self.release = threading.Event()
        self.inside = threading.Event()
        self.gate, self.at_gate = threading.Event(), threading.Event()
        self.done_calls = 0
        self.direct_init(entry)

    def direct_done(self) -> None:
        self.done_calls += 1

    def on_receive(self, message: Any) -> Any:
        if message == "gate":  # waits before DirectActor takes the lock
            self.at_gate.set()
            self.gate.wait(WAIT_S)
        return super().on_receive(message)


@pytest.fixture
def probe() -> Iterator[tuple[DirectEntry, pykka.ActorRef[Any], Probe]]:
    entry = DirectEntry()
    ref = Probe.start(entry)
    actor = Probe.last
    assert actor is not None
    yield entry, ref, actor
    actor.release.set()
    actor.gate.set()
    ref.stop()


def test_an_idle_actor_handles_an_entry_message_on_the_callers_thread_before_tell_returns(
        probe: tuple[DirectEntry, pykka.ActorRef[Any], Probe]) -> None:
    entry, ref, actor = probe
    entry.tell("a")
    assert actor.seen == [("a", threading.get_ident())]
    assert actor.done_calls == 1
    ref.tell("b")  # the mailbox still works, on the actor's thread
    assert ref.ask("seen") == ["a", "b"]
    assert actor.seen[1][1] != threading.get_ident()


def test_a_busy_actor_gets_entry_messages_through_its_mailbox_in_order(
        probe: tuple[DirectEntry, pykka.ActorRef[Any], Probe]) -> None:
    entry, ref, actor = probe
    ref.tell("block")
    assert actor.inside.wait(WAIT_S)
    entry.tell("x")  # the actor's thread holds the lock: not waited for, queued
    entry.tell("y")
    assert [m for m, _ in actor.seen] == ["block"]
    actor.release.set()
    assert ref.ask("seen") == ["block", "x", "y"]
    assert actor.done_calls == 0  # both went through the mailbox


def test_entry_messages_never_overtake_queued_ones(
        probe: tuple[DirectEntry, pykka.ActorRef[Any], Probe]) -> None:
    """1 goes to the mailbox (the lock was busy); when 2 comes the actor is idle (its thread
    waits outside the lock, 1 still in its mailbox): 2 must follow 1 there, not run first."""
    entry, ref, actor = probe
    ref.tell("gate")  # the actor's thread waits at the gate, outside its lock
    assert actor.at_gate.wait(WAIT_S)
    held, free = threading.Event(), threading.Event()

    def hold() -> None:
        with actor._direct_lock:
            held.set()
            free.wait(WAIT_S)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(WAIT_S)
    entry.tell(1)  # the lock is busy: to the mailbox
    free.set()
    t.join(WAIT_S)
    entry.tell(2)  # the lock is free now, but 1 waits in the mailbox
    assert [m for m, _ in actor.seen] == []
    actor.gate.set()
    assert ref.ask("seen") == ["gate", 1, 2]
    assert actor.done_calls == 0


def test_a_message_told_from_inside_the_actor_waits_for_the_current_one(
        probe: tuple[DirectEntry, pykka.ActorRef[Any], Probe]) -> None:
    entry, ref, actor = probe
    entry.tell(("reenter", "inner"))  # direct: handled here, and "inner" must not nest in it
    assert ref.ask("seen") == [("reenter", "inner"), "inner"]
    assert actor.seen[1][1] != threading.get_ident()  # the mailbox ran it, afterwards


def test_an_entry_of_a_stopped_actor_raises_like_a_tell() -> None:
    entry = DirectEntry()
    with pytest.raises(pykka.ActorDeadError):
        entry.tell("unbound")
    ref = Probe.start(entry)
    ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        entry.tell("late")


def test_the_ticker_ticks_an_idle_actor_through_its_entry_on_the_tickers_thread(
        probe: tuple[DirectEntry, pykka.ActorRef[Any], Probe]) -> None:
    """The node's ticker holds the ElectionActor's entry: each tick while it is idle costs no
    wake-up of its thread. A busy actor gets the tick through its mailbox."""
    from actors.node.signals import Tick
    from actors.node.supervisor import Ticker

    entry, ref, actor = probe
    assert entry.is_alive()
    ticker = Ticker([(entry, 0.001)], period=0.001)
    ticker.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while len(actor.seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
        ticks = [(m, t) for m, t in actor.seen if isinstance(m, Tick)]
        assert len(ticks) >= 3
        assert {t for _, t in ticks} == {ticker.ident}  # all on the ticker's thread
        ref.tell("block")
        assert actor.inside.wait(WAIT_S)
        n = len(actor.seen)
        actor.release.set()
        deadline = time.monotonic() + WAIT_S
        while len(actor.seen) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        later = [m for m, _ in actor.seen[n:]]
        assert later and all(isinstance(m, Tick) for m in later)  # none lost while it was busy
    finally:
        ticker.stop()
        ticker.join(timeout=WAIT_S)
    ref.stop()
    assert not entry.is_alive()


@contextlib.contextmanager
def election_actor(tp: FakeTransport) -> Iterator[tuple[pykka.ActorRef[Any], DirectEntry]]:
    """Node 1's ElectionActor over `tp`, its other actors Recorders, and its entry."""
    cfg = three_node_config()
    entry = DirectEntry()
    ref = ElectionActor.start(cfg, 1, PeerLink(cfg, 1, tp), clock=FakeClock(), boot_epoch=1,  # type: ignore[arg-type]
                              loadavg=lambda: 0.0, disk_kept=False, entry=entry)
    others = {n: Recorder.start() for n in ("flow", "token", "directory", "pending", "supervisor")}
    try:
        ref.ask(Wire({**others, "election": ref}))
        yield ref, entry
    finally:
        ref.stop()
        for r in others.values():
            r.stop()


def test_the_election_actor_votes_for_a_claim_from_its_entry_on_the_callers_thread() -> None:
    """A peer's Claim told through the ElectionActor's entry (as the router does on the peer
    transport's reader thread) is voted for before `tell` returns, by this thread: no mailbox
    hop, no flush marker."""
    tp = FakeTransport()
    senders: list[tuple[object, int]] = []
    send = tp.send

    def recording_send(addr: Any, msg: Any, **kw: Any) -> Any:
        senders.append((msg, threading.get_ident()))
        return send(addr, msg, **kw)

    tp.send = recording_send  # type: ignore[method-assign]
    with election_actor(tp) as (_ref, entry):
        entry.tell(PeerIn(2, Claim(rid="u#1", node=2, round=1)))
        votes = [(m, t) for m, t in senders if isinstance(m, ElectionOk)]
        assert votes == [(ElectionOk(rid="u#1", node=1, round=1), threading.get_ident())]


def test_the_election_actor_sends_what_one_message_produced_in_one_send_many() -> None:
    """The Elections a StartElection makes for both peers leave in one Transport.send_many
    (one pass, encoded once), each peer getting the same Election."""
    tp = FakeTransport()
    with election_actor(tp) as (ref, entry):
        for n in (2, 3):
            ref.ask(PeerIn(n, PeerHeartbeat(node=n, epoch=1, state="up", load=0, token_epoch=0,
                                            token_holder=0, digest=b"")))
        tp.many.clear()
        tp.sent.clear()
        entry.tell(StartElection("u#1"))
        assert tp.many == [2]
        cfg = three_node_config()
        assert [s.addr for s in tp.sent] == list(PeerLink(cfg, 1, tp).addrs.values())  # type: ignore[arg-type]
        assert {type(s.msg) for s in tp.sent} == {Election} and tp.sent[0].msg == tp.sent[1].msg
