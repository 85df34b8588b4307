"""The reader's wake-up byte (issue 19): while the socket is busy the reader sleeps at most its
horizon (the RTO floor), so a send() whose first deadline is its RTO needs no poke; a datagram
lost meanwhile is still resent, by the reader waking at its horizon. Real sockets on
127.0.0.1; ACTIVE_S and POKE_SLACK_S are widened so that a stalled thread on a loaded machine
cannot change the outcome (the rule, not the constants, is under test)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from udp_kit import Inbox, start

from transport import udp
from transport.sim import Ping
from transport.udp import Transport

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pokes(monkeypatch: pytest.MonkeyPatch) -> list[Transport]:
    """The transports poked by a thread other than their reader (the calls of send())."""
    monkeypatch.setattr(udp, "ACTIVE_S", 3600.0, raising=False)
    monkeypatch.setattr(udp, "POKE_SLACK_S", 0.5, raising=False)
    poked: list[Transport] = []
    poke = Transport._poke

    def counted(self: Transport) -> None:
        if threading.current_thread() is not self._reader and not self._closed.is_set():
            poked.append(self)
        poke(self)

    monkeypatch.setattr(Transport, "_poke", counted)
    return poked


class DropNext:
    """Socket wrapper: while `armed`, the next datagram sent is lost (not sent)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.armed = threading.Event()
        self.dropped = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _lose(self) -> bool:
        if self.armed.is_set():
            self.armed.clear()
            self.dropped += 1
            return True
        return False

    def sendto(self, *args: Any) -> Any:
        return 0 if self._lose() else self._sock.sendto(*args)

    def sendmsg(self, *args: Any) -> Any:
        return 0 if self._lose() else self._sock.sendmsg(*args)


def asleep(t: Transport) -> None:
    """Wait until `t`'s reader sleeps (its wake-up time set, not -inf: awake)."""
    pause = threading.Event()
    for _ in range(6000):
        if t._sleep_until > 0:
            return
        pause.wait(0.01)
    raise AssertionError("the reader never slept")


def test_sends_to_a_busy_readers_horizon_need_no_wake_up_byte(
    transports: list[Transport], pokes: list[Transport]
) -> None:
    a, b = start(transports), start(transports)
    sink = Inbox()
    b.subscribe(sink)
    assert a.send(b.address, Ping(b"first")).get(timeout=30) is None
    pokes.clear()  # the first send found the reader idle (asleep until further notice)
    for k in range(20):
        asleep(a)
        assert a.send(b.address, Ping(b"%d" % k)).get(timeout=30) is None
    assert len(sink.wait(21)) == 21
    assert [t for t in pokes if t is a] == []


def test_a_lost_datagram_is_resent_by_a_reader_that_was_not_poked(
    transports: list[Transport], pokes: list[Transport]
) -> None:
    wrappers: list[DropNext] = []

    def wrap(sock: Any) -> DropNext:
        wrappers.append(DropNext(sock))
        return wrappers[-1]

    a = start(transports, sock_wrapper=wrap, batching=False)
    b = start(transports)
    sink = Inbox()
    b.subscribe(sink)
    assert a.send(b.address, Ping(b"first")).get(timeout=30) is None
    pokes.clear()  # the first send found the reader idle (asleep until further notice)
    asleep(a)
    wrappers[0].armed.set()
    assert a.send(b.address, Ping(b"lost once")).get(timeout=30) is None
    assert [d.msg for d in sink.wait(2)] == [Ping(b"first"), Ping(b"lost once")]
    assert wrappers[0].dropped == 1
    assert a.stats()["retransmits"] >= 1
    assert [t for t in pokes if t is a] == []
