"""PeerLink's turn sends: on the node's reader, the election messages and Dones of one turn to a
peer leave as one ElectionBatch once the turn is over; off the reader, and for any other send,
at once, with what was held sent first (a GoingDown never overtakes the Dones before it)."""

from __future__ import annotations

import threading

import pytest
from fake_transport import FakeTransport
from node_actor_kit import FakeReactor, three_node_config

from actors.node.base import PeerLink, batch_item, merged
from codec.messages import (
    DONE_BATCH_MAX,
    Done,
    DoneBatch,
    Election,
    ElectionBatch,
    ElectionOk,
    GoingDown,
    PeerHeartbeat,
)

pytestmark = pytest.mark.timeout(60)


def link(thread: threading.Thread | None = None) -> tuple[PeerLink, FakeTransport, FakeReactor]:
    cfg = three_node_config()
    tp = FakeTransport()
    peers = PeerLink(cfg, 1, tp)  # type: ignore[arg-type]
    reactor = FakeReactor(thread or threading.current_thread())
    peers.reactor = reactor  # type: ignore[assignment]
    return peers, tp, reactor


def election(rid: str, node: int = 1) -> Election:
    return Election(rid=rid, node=node, priority=7, round=1, bind=0b1110)


def test_a_turns_election_messages_and_dones_to_a_peer_leave_as_one_election_batch() -> None:
    peers, tp, reactor = link()
    peers.send_each([(2, election("a#1")), (3, election("a#1"))], turn=True)
    peers.send_all(DoneBatch(node=1, acked=("a#0",), unacked=("b#0",)), turn=True)
    peers.send_all(Done(rid="c#0", node=1, acked=True), turn=True)
    assert tp.sent == [] and [first for _, first in reactor.deferred] == [True]  # one flush
    reactor.end_turn()
    want = ElectionBatch(node=1, items=(batch_item(election("a#1")),), acked=("a#0", "c#0"),
                         unacked=("b#0",))
    assert [(s.addr, s.msg) for s in tp.sent] == [(peers.addrs[2], want), (peers.addrs[3], want)]
    assert tp.many == [2]  # both peers in one pass


def test_a_lone_message_leaves_as_itself_and_dones_alone_as_one_done_batch() -> None:
    peers, tp, reactor = link()
    peers.send_each([(2, election("a#1"))], turn=True)
    peers.send_each([(3, Done(rid="c#0", node=1, acked=False)),
                     (3, Done(rid="c#1", node=1, acked=True))], turn=True)
    reactor.end_turn()
    assert [(s.addr, s.msg) for s in tp.sent] == [
        (peers.addrs[2], election("a#1")),
        (peers.addrs[3], DoneBatch(node=1, acked=("c#1",), unacked=("c#0",))),
    ]


def test_off_the_reader_thread_a_turn_send_leaves_at_once() -> None:
    peers, tp, reactor = link(thread=threading.Thread(target=lambda: None))
    peers.send_all(Done(rid="c#0", node=1, acked=True), turn=True)
    assert [s.msg for s in tp.sent] == [Done(rid="c#0", node=1, acked=True)] * 2
    assert reactor.deferred == []


def test_any_other_send_sends_what_is_held_first() -> None:
    """A GoingDown (the failure token's, after the flow's Dones) sent while the reader holds
    Dones: the Dones leave first, then the GoingDown; the turn's flush has nothing left."""
    peers, tp, reactor = link()
    peers.send_all(Done(rid="c#0", node=1, acked=True), turn=True)
    bye = GoingDown(node=1, epoch=5)
    sender = threading.Thread(target=lambda: peers.send(2, bye))  # another thread
    sender.start()
    sender.join()
    assert [(s.addr, s.msg) for s in tp.sent] == [
        (peers.addrs[2], Done(rid="c#0", node=1, acked=True)),
        (peers.addrs[3], Done(rid="c#0", node=1, acked=True)),
        (peers.addrs[2], bye),
    ]
    reactor.end_turn()
    assert len(tp.sent) == 3


def test_merged_leaves_other_kinds_and_oversized_turns_as_they_are() -> None:
    hb = PeerHeartbeat(node=1, epoch=1, state="up", load=0, token_epoch=0, token_holder=0,
                       digest=b"")
    done = Done(rid="c#0", node=1, acked=True)
    assert merged(1, [election("a#1"), hb, done]) == [election("a#1"), hb, done]
    many = [Done(rid=f"c#{k}", node=1, acked=True) for k in range(DONE_BATCH_MAX + 1)]
    assert merged(1, [election("a#1"), *many]) == [election("a#1"), *many]
    ok = ElectionOk(rid="a#2", node=1, round=2)
    batch = ElectionBatch(node=1, items=(batch_item(election("a#3")),))
    assert merged(1, [election("a#1"), ok, batch]) == [ElectionBatch(node=1, items=(
        batch_item(election("a#1")), batch_item(ok), batch_item(election("a#3"))))]
