"""The ACKs one batch of datagrams calls for leave once per message (issue 19): a later ACK of
a message says everything an earlier one of the same batch said, so the earlier ones are
dropped (counter `acks_merged`). Pure endpoints, no clock moves: what a batch gives, and that a
merged ACK still reports a hole at once (no timeout) and still completes the send."""

from __future__ import annotations

import random

from config import TransportConfig
from transport import frames as F
from transport.endpoint import Delivered, Endpoint
from transport.sender import SendDone
from transport.sim import BULK_TYPE, fake_max_body

A = ("10.0.0.1", 4001)
B = ("10.0.0.2", 4002)
CFG = TransportConfig()
NOW = 100.0
BODY = bytes(range(256)) * (4 * CFG.fragment_size // 256)  # 4 fragments: the small request


def endpoint(epoch: int, seed: int) -> Endpoint:
    return Endpoint(CFG, epoch=epoch, rng=random.Random(seed), max_body=fake_max_body)


def acks(datagrams: list[tuple[tuple[str, int], bytes]]) -> list[F.Header]:
    heads = [F.parse(F.CrcFramer(), d)[0] for _, d in datagrams]
    assert all(h.kind == F.ACK for h in heads), heads
    return heads


def fragments(a: Endpoint, body: bytes = BODY) -> tuple[int, list[tuple[tuple[str, int], bytes]]]:
    handle = a.send(B, BULK_TYPE, body, NOW)
    out = a.datagrams_to_send(NOW)
    assert len(out) == 4 and all(addr == B for addr, _ in out)
    return handle, [(A, d) for _, d in out]


def test_one_ack_per_message_in_a_batch_where_one_at_a_time_asks_several() -> None:
    _, data = fragments(endpoint(1000, 1))
    alone = endpoint(2000, 2)
    for d in data:
        alone.datagrams_received([d], NOW)
    asked = len(acks(alone.datagrams_to_send(NOW)))
    assert asked >= 2  # the tail of a message asks for an ACK per fragment

    a, b = endpoint(1000, 1), endpoint(2000, 2)
    handle, data = fragments(a)
    b.datagrams_received(data, NOW)
    out = b.datagrams_to_send(NOW)
    (ack,) = acks(out)
    assert ack.flags & F.FLAG_COMPLETE
    assert b.stats()["acks_merged"] == asked - 1 and b.stats()["acks_sent"] == 1
    assert [e.body for e in b.pop_events() if isinstance(e, Delivered)] == [BODY]
    a.datagrams_received([(B, d) for _, d in out], NOW)
    assert a.pop_events() == [SendDone(handle)]


def test_a_merged_ack_still_reports_a_hole_at_once() -> None:
    a, b = endpoint(1000, 1), endpoint(2000, 2)
    handle, data = fragments(a)
    b.datagrams_received([data[0], data[1], data[3]], NOW)  # the third fragment was lost
    out = b.datagrams_to_send(NOW)
    (ack,) = acks(out)
    assert not ack.flags & F.FLAG_COMPLETE and ack.total == 2  # fragments 0 and 1 held
    a.datagrams_received([(B, d) for _, d in out], NOW)
    again = a.datagrams_to_send(NOW)  # the same instant: declared lost by the ACK, no timer
    assert [F.parse(F.CrcFramer(), d)[0].frag_index for _, d in again] == [2]
    b.datagrams_received([(A, d) for _, d in again], NOW)
    a.datagrams_received([(B, d) for _, d in b.datagrams_to_send(NOW)], NOW)
    assert a.pop_events() == [SendDone(handle)]


def test_two_messages_in_one_batch_get_one_ack_each() -> None:
    a, b = endpoint(1000, 1), endpoint(2000, 2)
    h1 = a.send(B, BULK_TYPE, b"first", NOW)
    h2 = a.send(B, BULK_TYPE, b"second", NOW)
    out = a.datagrams_to_send(NOW)
    b.datagrams_received([(A, d) for _, d in out], NOW)
    replies = b.datagrams_to_send(NOW)
    assert sorted(h.msg_id for h in acks(replies)) == sorted(
        F.parse(F.CrcFramer(), d)[0].msg_id for _, d in out)
    assert b.stats()["acks_merged"] == 0
    a.datagrams_received([(B, d) for _, d in replies], NOW)
    assert sorted(e.handle for e in a.pop_events()) == [h1, h2]
