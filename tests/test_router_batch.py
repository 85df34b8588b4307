"""The router's per-turn hand-over: the messages of one reader turn reach each owner actor in one
tell (`Inbound` when there are several), in order, with the same checks as one by one; a node
actor handles an `Inbound` as if each message had been told alone."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from actors.node.base import Inbound, NodePartActor, Wire
from actors.node.router import Router
from actors.node.signals import ClientIn, CountersQuery, PeerIn
from codec.messages import (
    DirectoryQuery,
    Done,
    DoneBatch,
    ElectionBatch,
    ElectionItem,
    StateRequest,
    StatusQuery,
)
from transport.udp import Delivery

pytestmark = pytest.mark.timeout(60)
PEER2, PEER3, CLIENT = ("127.0.0.1", 2), ("127.0.0.1", 3), ("127.0.0.1", 9)


class _Mailbox(pykka.ThreadingActor):
    """Records the actor messages it is told, as told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, CountersQuery):
            return list(self.told)
        self.told.append(message)
        return None


@pytest.fixture
def boxes() -> Any:
    names = ("flow", "directory", "supervisor", "election", "token", "pending")
    refs = {n: _Mailbox.start() for n in names}
    yield refs
    for ref in refs.values():
        ref.stop()


def _told(ref: pykka.ActorRef[Any]) -> list[Any]:
    return ref.ask(CountersQuery(), timeout=30)


def test_one_turn_of_peer_messages_is_one_tell_per_owner_in_order(boxes: Any) -> None:
    router = Router(1, {PEER2: 2, PEER3: 3}, boxes)
    d1, d2 = Done(rid="u#1", node=2, acked=True), Done(rid="u#2", node=3, acked=False)
    forged = Done(rid="u#3", node=3, acked=True)  # claims node 3, comes from node 2
    router.peer_batch([Delivery(PEER2, d1), Delivery(PEER2, forged), Delivery(PEER3, d2),
                       Delivery(("127.0.0.1", 7), d1), Delivery(PEER2, StateRequest(node=2))])
    assert _told(boxes["flow"]) == [Inbound((PeerIn(2, d1), PeerIn(3, d2)))]
    assert _told(boxes["directory"]) == [PeerIn(2, StateRequest(node=2))]  # alone: not wrapped
    assert router.counters == {"peer_id_mismatch": 1, "peer_unknown_sender": 1}


def test_one_turn_of_client_messages_is_one_tell_per_owner(boxes: Any) -> None:
    router = Router(1, {PEER2: 2}, boxes)
    q1, q2, s = DirectoryQuery(rid="u#4"), DirectoryQuery(rid="u#5"), StatusQuery(rid="u#6")
    router.client_batch([Delivery(CLIENT, q1), Delivery(CLIENT, s), Delivery(CLIENT, q2),
                         Delivery(CLIENT, Done(rid="u#7", node=2, acked=True))])
    assert _told(boxes["directory"]) == [Inbound((ClientIn(CLIENT, q1), ClientIn(CLIENT, q2)))]
    assert _told(boxes["supervisor"]) == [ClientIn(CLIENT, s)]
    assert router.counters == {"client_unexpected": 1}
    router.client(Delivery(CLIENT, q1))  # one at a time still works
    assert _told(boxes["directory"])[-1] == ClientIn(CLIENT, q1)


class _Part(NodePartActor):
    """Records what `handle` got; raises for the message "boom"."""

    def __init__(self) -> None:
        super().__init__(1, lambda: 0.0)
        self.handled: list[Any] = []
        self.lock = threading.Lock()

    def handle(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("bug")
        self.handled.append(message)
        return None


def test_a_node_actor_handles_an_inbound_in_order_and_survives_a_bad_item() -> None:
    ref = _Part.start()
    try:
        ref.tell(Inbound(("early",)))  # before the wiring: kept, handled once wired, in order
        ref.ask(Wire({"x": ref}), timeout=30)
        ref.tell(Inbound(("a", "boom", "b")))
        counters = ref.ask(CountersQuery(), timeout=30)
        handled = ref.proxy().handled.get(timeout=30)
    finally:
        ref.stop()
    assert handled == ["early", "a", "b"]
    assert counters == {"internal_errors": 1}


def test_the_dones_riding_in_an_election_batch_reach_the_flow_as_a_done_batch(boxes: Any) -> None:
    """An ElectionBatch that carries Dones (a peer's turn sent both in one datagram) goes to the
    election as it is, and its Dones to the flow as the DoneBatch they stand for; one without
    Dones reaches the election only."""
    router = Router(1, {PEER2: 2, PEER3: 3}, boxes)
    item = ElectionItem(kind="election", rid="u#9", priority=5, round=1, bind=0)
    both = ElectionBatch(node=2, items=(item,), acked=("u#1",), unacked=("u#2",))
    alone = ElectionBatch(node=3, items=(item,))
    router.peer_batch([Delivery(PEER2, both), Delivery(PEER3, alone)])
    assert _told(boxes["election"]) == [Inbound((PeerIn(2, both), PeerIn(3, alone)))]
    assert _told(boxes["flow"]) == [PeerIn(2, DoneBatch(node=2, acked=("u#1",),
                                                        unacked=("u#2",)))]
