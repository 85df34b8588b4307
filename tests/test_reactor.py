"""`transport.udp.Reactor`: one reader thread for several transports (a node's client and peer
sockets), on real sockets on 127.0.0.1."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from udp_kit import CFG, LOCAL, Inbox, start

from transport.errors import TransportError
from transport.policy import LossPolicy
from transport.sim import Blob, BlobCodec, Ping
from transport.udp import Delivery, Reactor, Transport

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    """A reactor; at the end its transports are stopped and its thread must have ended."""
    r = Reactor("test-reactor")
    yield r
    for tp in list(r._tps):
        tp.stop()
    r.thread.join(timeout=10)
    assert not r.thread.is_alive()


def on(reactor: Reactor, started: list[Transport], name: str,
       policy: LossPolicy | None = None) -> Transport:
    return start(started, policy, reactor=reactor, name=name)


def echo(tp: Transport) -> None:
    """Answer every Ping with the same Ping (from the delivery or the reader thread)."""
    def answer(d: Delivery) -> None:
        tp.send(d.addr, d.msg)

    tp.subscribe(answer, (Ping,), quick=True)


def ping_pong(a: Transport, b: Transport, n: int) -> list[bytes]:
    """`a` pings `b` (an echo) n times, one at a time; what came back, in order."""
    inbox = Inbox()
    a.subscribe(inbox, (Ping,))
    for i in range(n):
        a.send(b.address, Ping(b"%d" % i), deadline_s=30).get(timeout=60)
        inbox.wait(i + 1)
    return [d.msg.data for d in inbox.items]


def transport_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("transport-"))


def test_one_thread_reads_both_sockets_and_each_exchange_is_exact_under_loss(
        transports: list[Transport], reactor: Reactor) -> None:  # fmt: skip
    lossy = LossPolicy(seed=7, drop=0.1)
    a1, a2 = on(reactor, transports, "a1", lossy), on(reactor, transports, "a2", lossy)
    b1, b2 = start(transports, name="b1"), start(transports, name="b2")
    assert a1._reader is a2._reader is reactor.thread
    names = transport_threads()
    assert names.count("transport-test-reactor") == 1
    assert "transport-a1" not in names and "transport-a2" not in names
    assert names.count("transport-b1") == 1 and names.count("transport-b2") == 1
    inbox_b1, inbox_b2, inbox_a1, inbox_a2 = Inbox(), Inbox(), Inbox(), Inbox()
    for tp, box in ((b1, inbox_b1), (b2, inbox_b2), (a1, inbox_a1), (a2, inbox_a2)):
        tp.subscribe(box)
    sizes = [0, 1, 1400, 5000, 70_000, 300_000]
    out = {(a1, b1): [bytes([1, n % 251]) * (n // 2) for n in sizes],
           (a2, b2): [bytes([2, n % 251]) * (n // 2) for n in sizes],
           (b1, a1): [bytes([3, n % 251]) * (n // 2) for n in sizes],
           (b2, a2): [bytes([4, n % 251]) * (n // 2) for n in sizes]}
    futures = [src.send(dst.address, Blob(x), deadline_s=60)
               for (src, dst), xs in out.items() for x in xs]
    for f in futures:
        f.get(timeout=90)
    for box, (src, dst) in ((inbox_b1, (a1, b1)), (inbox_b2, (a2, b2)),
                            (inbox_a1, (b1, a1)), (inbox_a2, (b2, a2))):
        got = box.wait(len(sizes))
        assert sorted(d.msg.data for d in got) == sorted(out[(src, dst)])
        assert {d.addr for d in got} == {src.address}
    for t in (a1, a2):
        s = t.stats()
        assert s["internal_errors"] == 0 and s["pending"] == 0 and s["held_bytes"] == 0
        assert s["policy_dropped"] > 0  # the loss was real, and each core recovered it


def test_a_transport_alone_reads_on_a_reactor_of_its_own_that_ends_with_it(
        transports: list[Transport]) -> None:  # fmt: skip
    solo, other = start(transports, name="solo"), start(transports, name="other")
    echo(other)
    assert ping_pong(solo, other, 2) == [b"0", b"1"]
    reader = solo._reader
    assert reader.name == "transport-solo" and reader.is_alive() and reader is not other._reader
    solo.stop()
    reader.join(timeout=10)
    assert not reader.is_alive() and solo._sock.fileno() == -1
    assert solo._reactor.wake_r.fileno() == -1 and solo._reactor.wake_w.fileno() == -1
    assert other._reader.is_alive()


class FakeTp:
    """What the reactor uses of a Transport: `_plan`, `_turn`, `_sock`, `_closed`, `_count`,
    `_sleep_until`; the socket is a real one (select needs a descriptor)."""

    def __init__(self, name: str, wake: float, spin: float = 0.0) -> None:
        self.name = name
        self._sock, self.peer = socket.socketpair()
        self.wake, self.spin = wake, spin
        self._closed = threading.Event()
        self._sleep_until = 0.0
        self.turns: list[bool] = []
        self.counts: dict[str, int] = {}

    def _plan(self) -> tuple[float, float]:
        self._sleep_until = self.wake
        return self.wake, self.spin

    def _turn(self, readable: bool) -> None:
        self.turns.append(readable)
        if readable:
            self._sock.recv(4096)

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def close(self) -> None:
        self._sock.close()
        self.peer.close()


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Reactor, list[Any]]]:
    """A reactor whose thread is not started, and what its select() was asked (fds, timeout,
    spin, each transport's _sleep_until then)."""
    waits: list[Any] = []
    real_wait = Reactor._wait
    r = Reactor("fake")
    tps: list[FakeTp] = []

    def wait(fds: list[int], timeout: float | None, spin: float) -> list[int]:
        waits.append((fds, timeout, spin, [t._sleep_until for t in tps]))
        return real_wait(fds, 0.0, 0.0)

    monkeypatch.setattr(Reactor, "_wait", staticmethod(wait))
    yield r, [tps, waits]
    for t in tps:
        t.close()
    r.wake_r.close()
    r.wake_w.close()


def test_every_transport_gets_its_turn_each_round_whatever_the_others_want(
        fakes: tuple[Reactor, list[Any]]) -> None:  # fmt: skip
    """One that wants the next turn at once (a full CHUNK sent) and is readable does not keep
    the others waiting: one select on all, then a turn each, in order."""
    r, (tps, waits) = fakes
    now = time.monotonic()
    busy, other, idle = FakeTp("busy", now), FakeTp("other", now + 3600), FakeTp("idle", math.inf)
    tps += [busy, other, idle]
    busy.peer.send(b"x")
    other.peer.send(b"y")
    for _ in range(3):
        r._iterate(list(tps))
    assert busy.turns == [True, False, False]
    assert other.turns == [True, False, False]
    assert idle.turns == [False, False, False]
    fds, timeout, spin, sleeping = waits[0]
    assert fds == [busy._sock.fileno(), other._sock.fileno(), idle._sock.fileno(),
                   r.wake_r.fileno()]
    assert timeout == 0.0 and spin == 0.0  # the earliest wake-up of all: busy's, now
    assert sleeping == [now, now, now]  # a send() pokes only for a deadline before that
    assert [t._sleep_until for t in tps] == [-math.inf] * 3  # awake after the wait


def test_the_sleep_is_the_earliest_wake_up_and_the_longest_spin(
        fakes: tuple[Reactor, list[Any]]) -> None:  # fmt: skip
    r, (tps, waits) = fakes
    later = time.monotonic() + 3600
    tps += [FakeTp("a", later + 10, spin=0.0), FakeTp("b", later, spin=0.002),
            FakeTp("c", math.inf, spin=0.0)]
    r._iterate(list(tps))
    _, timeout, spin, sleeping = waits[0]
    assert 3599 < timeout <= 3600 and spin == 0.002
    assert sleeping == [later, later, later]
    tps[:] = [FakeTp("d", math.inf)]
    r._iterate(list(tps))
    assert waits[1][1] is None  # nothing due anywhere: sleep until a datagram or a poke


def test_a_closed_transport_gets_no_turn_and_a_failing_turn_stops_no_other(
        fakes: tuple[Reactor, list[Any]], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    r, (tps, _) = fakes
    now = time.monotonic()
    closed, failing, fine = FakeTp("closed", now), FakeTp("failing", now), FakeTp("fine", now)
    tps += [closed, failing, fine]
    closed._closed.set()

    def fail(readable: bool) -> None:
        raise RuntimeError("a bug")

    failing._turn = fail  # type: ignore[method-assign]
    r._iterate(list(tps))
    assert closed.turns == [] and fine.turns == [False]
    assert failing.counts == {"internal_errors": 1}
    assert "reader turn failed" in caplog.text


def test_a_transport_leaves_the_other_serves_on_and_the_thread_ends_with_the_last(
        transports: list[Transport], reactor: Reactor) -> None:  # fmt: skip
    a1, a2 = on(reactor, transports, "a1"), on(reactor, transports, "a2")
    b = start(transports)
    echo(b)
    a1.stop()
    assert a1._sock.fileno() == -1  # closed once the reactor let go of it
    assert ping_pong(a2, b, 5) == [b"%d" % i for i in range(5)]
    assert reactor.thread.is_alive()
    a2.stop()
    reactor.thread.join(timeout=10)
    assert not reactor.thread.is_alive()
    assert reactor.wake_r.fileno() == -1 and reactor.wake_w.fileno() == -1
    with pytest.raises(TransportError):
        Transport.start(LOCAL, CFG, codec=BlobCodec, reactor=reactor)


def test_a_transport_stopped_on_the_reactor_thread_does_not_stall_it(
        transports: list[Transport], reactor: Reactor,
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    a1, a2 = on(reactor, transports, "a1"), on(reactor, transports, "a2")
    b = start(transports)
    echo(b)
    stopped_on: list[threading.Thread] = []
    turn = a1._turn

    def turn_then_stop(readable: bool) -> None:  # a1's turn stops a1 once it read something
        turn(readable)
        if readable and not stopped_on:
            stopped_on.append(threading.current_thread())
            a1.stop()

    monkeypatch.setattr(a1, "_turn", turn_then_stop)
    b.send(a1.address, Ping(b"stop"), deadline_s=30)
    assert a1._closed.wait(30)
    assert stopped_on == [reactor.thread]
    assert ping_pong(a2, b, 5) == [b"%d" % i for i in range(5)]


class FakeTimer:
    """A TimerSource: due at `due`; records its fires (and may fail)."""

    def __init__(self, due: float, fail: bool = False) -> None:
        self.due, self.fail = due, fail
        self.fired: list[float] = []

    def next_due(self) -> float:
        return self.due

    def fire(self, now: float) -> None:
        self.fired.append(now)
        if self.fail:
            raise RuntimeError("a bug")


def test_a_timer_bounds_the_sleep_and_fires_once_due_after_the_turns(
        fakes: tuple[Reactor, list[Any]], caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    r, (tps, waits) = fakes
    now = time.monotonic()
    idle = FakeTp("idle", math.inf)
    tps.append(idle)
    later, due, failing = FakeTimer(now + 3600), FakeTimer(now - 1), FakeTimer(now - 1, fail=True)
    r._iterate(list(tps), [later, failing, due])
    _, timeout, _, sleeping = waits[0]
    assert timeout == 0.0 and sleeping == [now - 1]  # the earliest due time bounds the sleep
    assert idle.turns == [False]
    assert later.fired == [] and len(failing.fired) == 1 and len(due.fired) == 1
    assert due.fired[0] >= now  # fired after the wait and the turns
    assert "timer" in caplog.text and "failed" in caplog.text
    r._iterate(list(tps), [later])
    assert 3599 < waits[1][1] <= 3600 and later.fired == []


def test_deferred_functions_run_on_the_reactor_thread_after_the_turns_and_timers(
        fakes: tuple[Reactor, list[Any]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """`defer` from the reactor's thread: run once every transport had its turn and the due
    timers fired, in order, with what they defer in turn; one that fails is logged and stops no
    other. From any other thread it refuses (False) and keeps nothing."""
    r, (tps, _) = fakes
    monkeypatch.setattr(r, "thread", threading.current_thread())  # _iterate runs on this one
    order: list[str] = []
    a, b = FakeTp("a", math.inf), FakeTp("b", math.inf)
    tps += [a, b]

    def fail() -> None:
        order.append("fail")
        raise RuntimeError("a bug")

    def turn_a(readable: bool) -> None:
        order.append("turn a")
        assert r.defer(lambda: order.append("deferred 1"))
        assert r.defer(fail)
        assert r.defer(lambda: (order.append("deferred 2"),
                                r.defer(lambda: order.append("deferred by deferred 2"))))

    a._turn = turn_a  # type: ignore[method-assign]
    b._turn = lambda readable: order.append("turn b")  # type: ignore[method-assign]
    timer = FakeTimer(time.monotonic() - 1)
    timer.fire = lambda now: order.append("timer")  # type: ignore[method-assign]
    r._iterate(list(tps), [timer])
    assert order == ["turn a", "turn b", "timer", "deferred 1", "fail", "deferred 2",
                     "deferred by deferred 2"]
    order.clear()

    def turn_first(readable: bool) -> None:
        order.append("turn a")
        assert r.defer(lambda: (order.append("deferred 1"),
                                r.defer(lambda: order.append("first by 1"), first=True)))
        assert r.defer(lambda: order.append("deferred 2"))
        assert r.defer(lambda: order.append("first"), first=True)

    a._turn = turn_first  # type: ignore[method-assign]
    r._iterate(list(tps), [timer])
    assert order == ["turn a", "turn b", "first", "timer", "deferred 1", "first by 1",
                     "deferred 2"]
    a._turn = turn_a  # type: ignore[method-assign]
    assert "deferred" in caplog.text and "failed" in caplog.text
    order.clear()
    refused: list[bool] = []
    other = threading.Thread(target=lambda: refused.append(r.defer(lambda: order.append("x"))))
    other.start()
    other.join()
    r._iterate(list(tps))
    assert refused == [False] and "x" not in order and order[-1] == "deferred by deferred 2"


def test_a_driven_ticker_ticks_on_the_reactor_thread_until_it_stops(
        transports: list[Transport], reactor: Reactor) -> None:  # fmt: skip
    """The node's ticker on its reader thread: no thread of its own; the ticks and the `after`
    timers run on the reactor's thread; after `stop` nothing more fires."""
    from actors.node.supervisor import Ticker

    on(reactor, transports, "a1")
    ticks: list[threading.Thread] = []
    three = threading.Event()

    class Ref:
        def is_alive(self) -> bool:
            return True

        def tell(self, message: Any) -> None:
            ticks.append(threading.current_thread())
            if len(ticks) >= 3:
                three.set()

    ticker = Ticker([(Ref(), 0.001)], period=0.001)
    timer_ran: list[threading.Thread] = []
    ticker.after(0.0, lambda: timer_ran.append(threading.current_thread()))
    ticker.drive(reactor)
    assert three.wait(30)
    assert not ticker.is_alive()  # its own thread never started
    ticker.stop()
    n = len(ticks)
    assert set(ticks) == {reactor.thread} and timer_ran == [reactor.thread]
    assert ticker.next_due() == math.inf
    ticker.after(3600.0, lambda: timer_ran.append(threading.current_thread()))  # at once now
    assert timer_ran[-1] is threading.current_thread()
    b = start(transports, name="b")  # a few more reactor turns: no tick after stop
    echo(b)
    a2 = on(reactor, transports, "a2")
    assert ping_pong(a2, b, 3) == [b"0", b"1", b"2"]
    assert len(ticks) <= n + 1  # at most one fire that had begun before stop


def test_a_node_reads_both_sockets_and_ticks_on_one_thread(tmp_path: Path) -> None:
    """`start_node`: one reader thread for the client and the peer socket, the ticker driven by
    it (no thread of its own, and it fires: its next due time moves on), all of it gone at
    stop."""
    import config as config_mod
    from actors.node.supervisor import start_node
    from benchmarks.localcloud import free_udp_ports, write_config

    ports = free_udp_ports(6)
    nodes = [(i + 1, "127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(3)]
    cfg = config_mod.load(write_config(tmp_path / "cluster.toml", nodes))
    before = set(threading.enumerate())
    ref, stop = start_node(cfg, 1, tmp_path / "data", failures=False)
    try:
        ticker = ref.proxy().ticker.get()
        first = ticker.next_due()
        deadline = time.monotonic() + 30
        while ticker.next_due() <= first + 0.05 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first < math.inf and ticker.next_due() > first + 0.05  # five periods and more
        started = {t.name for t in set(threading.enumerate()) - before}
        assert "transport-node1" in started and not ticker.is_alive()
        assert not {"transport-node1-client", "transport-node1-peer", "ticker"} & started
    finally:
        stop()
    reader = [t for t in threading.enumerate() if t.name == "transport-node1"]
    for t in reader:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in reader)


def test_a_transport_polls_on_after_datagrams_moved_while_they_move_often() -> None:
    """transport.poll_after_io_us: while datagrams move at least POLL_MIN_EVENTS times per
    POLL_RATE_S, the reader's plan asks to poll until that long after the last one moved; not
    once the window has passed, not for sparse traffic (an idle cloud's heartbeats), and not
    when the setting is 0. (How the rate is counted: tests/test_traffic.py.)"""
    import dataclasses

    from transport.udp import POLL_MIN_EVENTS

    started = [Transport.start(LOCAL, CFG, codec=BlobCodec),
               Transport.start(LOCAL, dataclasses.replace(CFG, poll_after_io_us=0),
                               codec=BlobCodec)]  # fmt: skip
    tp, off = started
    for t in started:
        t.stop()  # (its reader is gone: the plans below are ours alone)
    window = CFG.poll_after_io_us / 1e6
    assert window > 0

    def moved(t: Transport, times: int) -> None:
        with t._lock:
            now = time.monotonic()
            for _ in range(times):
                t._moved(now)

    moved(tp, 1)  # one datagram after a long quiet: sparse, no poll
    assert tp._plan()[1] == 0.0
    moved(tp, POLL_MIN_EVENTS)  # a burst: poll for the rest of the window
    spin = tp._plan()[1]
    assert 0 < spin <= window
    with tp._lock:
        tp._last_io = time.monotonic() - window - 0.001
    assert tp._plan()[1] == 0.0  # the window has passed: sleep at once
    moved(off, 2 * POLL_MIN_EVENTS)
    assert off._plan()[1] == 0.0  # switched off


def test_a_poll_yields_the_cpu_between_polls_and_returns_what_became_readable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reactor._wait: within `spin` it polls without sleeping, giving the CPU up between two
    polls, and returns a socket as soon as a datagram is there; with nothing coming it returns
    nothing after the spin."""
    import os

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        yields = 0
        real_yield = os.sched_yield

        def counting_yield() -> None:
            nonlocal yields
            yields += 1
            if yields == 3:  # the datagram comes during the poll
                tx.sendto(b"x", rx.getsockname())
            real_yield()

        monkeypatch.setattr(os, "sched_yield", counting_yield)
        ready = Reactor._wait([rx.fileno()], 60.0, 30.0)
        assert ready == [rx.fileno()] and yields >= 3
        rx.recv(16)
        before = yields
        assert Reactor._wait([rx.fileno()], 60.0, 0.005) == []  # nothing came: spin, then none
        assert yields > before
    finally:
        rx.close()
        tx.close()
