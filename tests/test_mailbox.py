"""transport.mailbox.QuickInboxActor: a SimpleQueue mailbox keeps pykka's mailbox semantics."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pykka
import pytest

from actors.direct import DirectActor
from actors.node.base import NodePartActor
from actors.node.encoder import EncoderActor
from transport.mailbox import QuickInboxActor
from transport.udp import TransportActor

pytestmark = pytest.mark.timeout(60)


class _Recorder(QuickInboxActor):
    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.gate = gate

    def on_receive(self, message: Any) -> Any:
        if message == "wait":
            assert self.gate is not None
            self.gate.wait(30)
            return None
        if message == "boom":
            raise RuntimeError("boom (a test's failure)")
        if message == "seen":
            return list(self.seen)
        self.seen.append(message)
        return len(self.seen)


def test_every_senders_messages_arrive_all_and_in_order():
    ref = _Recorder.start()
    try:
        def sender(k: int) -> None:
            for i in range(500):
                ref.tell((k, i))

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seen = ref.ask("seen", timeout=30)
        assert len(seen) == 2000
        for k in range(4):
            assert [i for kk, i in seen if kk == k] == list(range(500))
    finally:
        ref.stop()


def test_ask_answers_and_a_stopped_actor_refuses():
    ref = _Recorder.start()
    assert ref.ask("a", timeout=10) == 1
    ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("b", timeout=10)


def test_asks_left_in_the_mailbox_of_an_actor_that_failed_get_actor_dead():
    gate = threading.Event()
    ref = _Recorder.start(gate)
    ref.tell("wait")  # the actor is busy with this one ...
    ref.tell("boom")  # ... then fails on this one and stops ...
    pending = ref.ask("x", block=False)  # ... with this one still in its mailbox
    gate.set()
    with pytest.raises(pykka.ActorDeadError):
        pending.get(timeout=30)
    assert ref.actor_stopped.wait(30)


def test_the_projects_busy_actors_have_the_quick_mailbox():
    for cls in (NodePartActor, DirectActor, EncoderActor, TransportActor):
        assert issubclass(cls, QuickInboxActor), cls
    ref = _Recorder.start()
    try:
        inbox = ref.actor_inbox
        assert isinstance(inbox, queue.SimpleQueue)
    finally:
        ref.stop()
