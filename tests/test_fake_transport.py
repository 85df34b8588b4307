"""The test double must behave like the real thing: FakeTransport against Transport and its
TransportActor (the delivery side), on the surface the actors use."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pykka
import pytest
from fake_transport import FakeNetwork, FakeTransport

from codec.messages import Ack, StatusQuery
from config import TransportConfig
from transport.errors import SendError
from transport.udp import Delivery, Transport, TransportActor

SURFACE = ("send", "subscribe", "progress", "stats", "set_policy", "stop")


@pytest.mark.parametrize("name", SURFACE)
def test_fake_transport_has_the_signature_of_transport(name: str) -> None:
    real = inspect.signature(getattr(Transport, name))
    fake = inspect.signature(getattr(FakeTransport, name))
    assert list(real.parameters) == list(fake.parameters)
    for p in real.parameters.values():
        assert fake.parameters[p.name].kind == p.kind


class Inbox(pykka.ThreadingActor):
    def __init__(self, got: list[Any], event: threading.Event) -> None:
        super().__init__()
        self.got = got
        self.event = event

    def on_receive(self, message: Any) -> None:
        self.got.append(message)
        self.event.set()


def _deliveries_to_an_actor(tp: Any, inject: Any) -> list[Any]:
    got: list[Any] = []
    event = threading.Event()
    ref = Inbox.start(got, event)
    try:
        tp.subscribe(ref, (Ack,))
        inject()
        assert event.wait(10)
        return got
    finally:
        ref.stop()


def test_both_tell_an_actor_subscriber_a_delivery_of_the_subscribed_types() -> None:
    real = Transport.start(("127.0.0.1", 0), TransportConfig(), name="contract-real")
    sender = Transport.start(("127.0.0.1", 0), TransportConfig(), name="contract-sender")
    try:
        assert real._actor.actor_class is TransportActor  # the delivery side is an actor

        def inject_real() -> None:
            sender.send(real.address, StatusQuery(rid="x#1"))  # not subscribed: filtered out
            sender.send(real.address, Ack(rid="x#2")).get(timeout=10)

        got_real = _deliveries_to_an_actor(real, inject_real)
    finally:
        real.stop()
        sender.stop()
    fake = FakeTransport()
    got_fake = _deliveries_to_an_actor(
        fake,
        lambda: (
            fake.deliver(("127.0.0.1", 9), StatusQuery(rid="x#1")),
            fake.deliver(("127.0.0.1", 9), Ack(rid="x#2")),
        ),
    )
    for got in (got_real, got_fake):
        assert [type(d) for d in got] == [Delivery]
        assert got[0].msg == Ack(rid="x#2")


def test_send_outcomes_reach_the_future_and_on_done() -> None:
    net = FakeNetwork()
    a, b = net.add(("127.0.0.1", 1)), net.add(("127.0.0.1", 2))
    outcomes: list[object] = []
    assert a.send(b.address, Ack(rid="r#1"), on_done=outcomes.append).get(timeout=1) is None
    net.cut(a.address, b.address)
    fut = a.send(b.address, Ack(rid="r#2"), on_done=outcomes.append)
    with pytest.raises(SendError):
        fut.get(timeout=1)
    manual = FakeTransport(auto=None)
    rec = manual.wait_sent(lambda s: True, timeout=0.1, count=0)  # nothing yet
    assert rec == []
    manual.send(b.address, Ack(rid="r#3"), on_done=outcomes.append)
    (sent,) = manual.sent
    assert not sent.done
    manual.complete(sent, SendError("unacknowledged", "silent"))
    assert outcomes[0] is None and isinstance(outcomes[1], SendError)
    assert isinstance(outcomes[2], SendError) and outcomes[2].kind == "unacknowledged"
