"""The per-turn shortcuts of the sans-IO core (issue 19) decide as the long way did: a held ACK
that is not yet due (peer sockets) stays held and is what next_deadline names, and leaves (alone, with its
held time) once due; a finished one-fragment message leaves nothing in flight, nor a timer,
while another message to another address keeps its own. Pure endpoints, no clock moves."""

from __future__ import annotations

import random

from config import TransportConfig
from transport import frames as F
from transport.auth import MemoryEpochStore, PeerAuth, PeerGuard
from transport.endpoint import Delivered, Endpoint
from transport.sender import SendDone
from transport.sim import BULK_TYPE, fake_max_body

A = ("10.0.0.1", 4001)
B = ("10.0.0.2", 4002)
C = ("10.0.0.3", 4003)
CFG = TransportConfig()
NOW = 100.0


def endpoint(epoch: int, seed: int) -> Endpoint:
    return Endpoint(CFG, epoch=epoch, rng=random.Random(seed), max_body=fake_max_body)


def test_a_held_ack_waits_for_its_delay_then_leaves_alone() -> None:
    store = MemoryEpochStore()
    a, b = (Endpoint(CFG, epoch=n, rng=random.Random(n), max_body=fake_max_body,
                     guard=PeerGuard(PeerAuth(secret=b"k" * 32, self_id=n, peers={1: A, 2: B},
                                              epoch_store=store), lambda: 1_000))
            for n in (1, 2))  # fmt: skip
    handle = a.send(B, BULK_TYPE, b"x" * 40, NOW)
    data = a.datagrams_to_send(NOW)
    b.datagrams_received([(A, d) for _, d in data], NOW)
    assert [e.body for e in b.pop_events() if isinstance(e, Delivered)] == [b"x" * 40]
    delay = CFG.ack_delay_ms / 1000
    assert delay > 0
    assert b.datagrams_to_send(NOW) == []  # not due: held for DATA to carry it
    assert b.next_deadline() == NOW + delay  # the held ACK is the next timer work
    assert b.datagrams_to_send(NOW + delay / 2) == []
    out = b.datagrams_to_send(NOW + delay)
    (h,) = [F.parse(b.framer, d)[0] for _, d in out]
    assert h.kind == F.ACK and h.flags & F.FLAG_COMPLETE
    assert h.block_size == int(((NOW + delay) - NOW) * 10_000)  # it tells how long it was held
    assert b.next_deadline() is None and b.stats()["acks_sent"] == 1
    a.datagrams_received([(B, d) for _, d in out], NOW + delay)
    assert a.pop_events() == [SendDone(handle)]


def test_a_finished_lone_fragment_leaves_nothing_in_flight_but_the_others() -> None:
    a, b, c = endpoint(1000, 1), endpoint(2000, 2), endpoint(3000, 3)
    done = a.send(B, BULK_TYPE, b"y" * 40, NOW, prompt=True)  # asks for its ACK now
    a.send(C, BULK_TYPE, b"z" * 40, NOW, prompt=True)
    out = a.datagrams_to_send(NOW)
    to = {addr: [(A, d) for x, d in out if x == addr] for addr in (B, C)}
    b.datagrams_received(to[B], NOW)
    ack = b.datagrams_to_send(NOW)
    assert len(ack) == 1
    a.datagrams_received([(B, d) for _, d in ack], NOW + 0.001)
    assert a.pop_events() == [SendDone(done)]
    assert not a.sender.has_work(B) and a.sender.has_work(C)
    assert a.sender.pending() == 1
    rto = a.sender.rtt(C).rto
    assert a.next_deadline() == NOW + rto  # C's fragment is still timed, B's is not
    # C never answers: its fragment is probed at its RTO, B gets nothing more
    again = a.datagrams_to_send(NOW + rto)
    assert [addr for addr, _ in again] == [C]
    c.datagrams_received(to[C], NOW)
    assert a.stats()["probes"] == 1
