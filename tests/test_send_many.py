"""`Transport.send_many`: one message to several destinations in one call (a client's request to
every node, issue 19): encoded once, every copy delivered and acknowledged, each item's own
outcome (a refused one fails alone), and at most one wake-up byte for the reader. Real sockets
on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from udp_kit import CFG, Inbox, start

from transport.sim import Blob, BlobCodec, Ping
from transport.udp import SendError, Transport

pytestmark = pytest.mark.timeout(120)


class CountingCodec(BlobCodec):
    encoded = 0

    @classmethod
    def encode(cls, msg: Blob | Ping) -> bytes:  # type: ignore[override]
        cls.encoded += 1
        return BlobCodec.encode(msg)


def test_one_message_to_three_destinations_is_encoded_once_and_each_copy_delivered(
    transports: list[Transport],
) -> None:
    sender = start(transports, codec=CountingCodec)
    nodes = [start(transports) for _ in range(3)]
    sinks = [Inbox() for _ in nodes]
    for t, sink in zip(nodes, sinks):
        t.subscribe(sink)
    msg = Blob(bytes(range(256)) * 20)  # 4 fragments, like a small image's request
    outcomes: list[tuple[int, SendError | None]] = []
    CountingCodec.encoded = 0
    futs = sender.send_many([(t.address, msg, lambda err, i=i: outcomes.append((i, err)))
                             for i, t in enumerate(nodes)], quick_done=True)
    assert CountingCodec.encoded == 1
    for f in futs:
        assert f.get(timeout=30) is None
    assert [[d.msg for d in s.wait(1)] for s in sinks] == [[msg]] * 3
    _wait(lambda: len(outcomes) == 3)
    assert sorted(outcomes, key=lambda o: o[0]) == [(0, None), (1, None), (2, None)]


def test_a_refused_item_fails_alone(transports: list[Transport]) -> None:
    sender, a, b = start(transports), start(transports), start(transports)
    sinks = [Inbox(), Inbox()]
    a.subscribe(sinks[0])
    b.subscribe(sinks[1])
    too_big = Ping(b"x" * (CFG.max_message + 1))
    futs = sender.send_many([(a.address, Ping(b"one"), None), (a.address, too_big, None),
                             (b.address, Ping(b"two"), None)])
    assert futs[0].get(timeout=30) is None and futs[2].get(timeout=30) is None
    with pytest.raises(SendError) as err:
        futs[1].get(timeout=30)
    assert err.value.kind == "rejected"
    assert [d.msg for d in sinks[0].wait(1)] == [Ping(b"one")]
    assert [d.msg for d in sinks[1].wait(1)] == [Ping(b"two")]


def test_at_most_one_wake_up_byte_for_the_reader(transports: list[Transport],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sender = start(transports)
    nodes = [start(transports) for _ in range(3)]
    pokes: list[str] = []
    poke = Transport._poke

    def counted(self: Transport) -> None:
        if self is sender:
            pokes.append(threading.current_thread().name)
        poke(self)

    monkeypatch.setattr(Transport, "_poke", counted)
    futs = sender.send_many([(t.address, Ping(b"p%d" % i), None) for i, t in enumerate(nodes)])
    caller = threading.current_thread().name
    assert pokes.count(caller) <= 1  # one send() each: up to one per copy
    for f in futs:
        assert f.get(timeout=30) is None


def _wait(cond: Any) -> None:
    pause = threading.Event()
    for _ in range(6000):
        if cond():
            return
        pause.wait(0.01)
    raise AssertionError("condition not met within 60 s")
