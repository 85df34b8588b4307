"""The sender's reordering window (transport.reorder): the pure rules, then the sender on the fake
network: a FIFO path never pays for it, a shuffled path is learned and stops costing spurious
retransmissions."""

from __future__ import annotations

import random

import pytest

from config import TransportConfig
from transport import frames as F
from transport import reorder as R
from transport.endpoint import Endpoint
from transport.reorder import Reorder
from transport.sender import SendDone
from transport.sim import (
    BULK_TYPE,
    PAIR_A,
    PAIR_B,
    Bernoulli,
    Impairment,
    delivered,
    fake_max_body,
    pair,
    payload,
    settle,
    shuffled,
)

CFG = TransportConfig()
SRTT, MIN_RTT = 0.030, 0.020


def test_the_window_is_zero_until_the_path_shows_reordering() -> None:
    r = Reorder()
    assert r.window(MIN_RTT) == 0.0 and r.window(float("inf")) == 0.0
    r.declared_lost((1, 5), seq=50, now=1.000)
    assert r.acked((1, 5), trigger=60, now=1.012, srtt=SRTT, window=0.0)  # not sent again
    assert r.learned == pytest.approx(0.012)  # the time the declaration came too early
    assert r.window(MIN_RTT) == pytest.approx(0.012)
    assert r.window(0.080) == pytest.approx(0.020)  # never under min_rtt / 4 once learned
    assert (1, 5) not in r.marks


def test_an_ack_the_retransmission_explains_is_no_evidence() -> None:
    r = Reorder()
    r.declared_lost((1, 5), seq=50, now=1.0)
    r.sent_again((1, 5), 70)
    r.sent_again((1, 5), 71)  # a second copy: the first retransmission counts
    assert not r.acked((1, 5), trigger=70, now=1.02, srtt=SRTT, window=0.0)
    assert r.learned == 0.0
    r.declared_lost((1, 6), seq=51, now=1.0)
    r.sent_again((1, 6), 72)
    assert r.acked((1, 6), trigger=65, now=1.02, srtt=SRTT, window=0.0)  # trigger sent before it
    assert r.learned == pytest.approx(0.02)


def test_evidence_widens_at_most_to_srtt() -> None:
    r = Reorder()
    r.declared_lost((1, 5), seq=50, now=1.0)
    r.acked((1, 5), trigger=60, now=1.5, srtt=SRTT, window=0.0)
    assert r.learned == SRTT


def test_a_suspect_rescued_late_in_its_window_doubles_the_window() -> None:
    r = Reorder()
    r.learned = 0.010
    w = r.window(MIN_RTT)
    r.suspect((1, 1), seq=10, base=2.000, due=2.000 + w)
    r.suspect((1, 2), seq=11, base=2.000, due=2.000 + w)
    assert r.acked((1, 1), trigger=20, now=2.003, srtt=SRTT, window=w)  # early: window stands
    assert r.learned == 0.010
    assert r.acked((1, 2), trigger=21, now=2.008, srtt=SRTT, window=w)  # late in the window
    assert r.learned == pytest.approx(0.020)


def test_due_suspects_wait_for_a_window_that_grew_and_skip_settled_ones() -> None:
    r = Reorder()
    r.learned = 0.010
    for i, seq in ((1, 10), (2, 11), (3, 12), (4, 13)):
        r.suspect((1, i), seq=seq, base=1.0, due=1.010)
    r.suspect((1, 1), seq=10, base=1.004, due=1.014)  # reported again: keeps its first time
    r.acked((1, 2), trigger=30, now=1.002, srtt=SRTT, window=0.010)  # acknowledged
    r.sent_again((1, 3), 31)  # a probe went out: its fate is the probe's now
    assert r.next_due() == 1.010
    assert r.pop_due(1.010, window=0.010) == [((1, 1), 10), ((1, 4), 13)]
    r.suspect((1, 5), seq=14, base=1.0, due=1.010)
    assert r.pop_due(1.012, window=0.020) == []  # the window grew: due at 1.020 now
    assert r.next_due() == pytest.approx(1.020)
    assert r.pop_due(1.020, window=0.020) == [((1, 5), 14)]


def test_declarations_without_evidence_decay_what_was_learned() -> None:
    r = Reorder()
    r.learned = 0.016
    for i in range(R.DECAY_AFTER):
        r.declared_lost((1, i), seq=i, now=1.0)
    assert r.learned == pytest.approx(0.008)


def test_marks_are_bounded_and_forgotten_with_their_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(R, "MAX_MARKS", 4)
    r = Reorder()
    for i in range(6):
        r.declared_lost((1, i), seq=i, now=1.0)
    assert list(r.marks) == [(1, 2), (1, 3), (1, 4), (1, 5)]
    r.declared_lost((2, 0), seq=9, now=1.0)
    r.forget(1)
    assert list(r.marks) == [(2, 0)]


# ----------------------------------------------------------------- the sender on the fake net
def _messages(kind: str, seed: int, n: int = 4) -> tuple[list[float], int]:
    """Efficiency (data datagrams / fragments) of n 1 MiB messages in a row over one pair at
    10 % loss each way, and the sender's reordering counter."""
    net, a, _ = pair(CFG, seed)
    for src, dst in ((PAIR_A, PAIR_B), (PAIR_B, PAIR_A)):
        net.impair(src, dst, shuffled(0.1) if kind == "shuffled" else Impairment(loss=Bernoulli(0.1)))
    effs = []
    bodies = [payload(seed * 10 + m, 1 << 20) for m in range(n)]
    for body in bodies:
        before = a.stats()["data_sent"]
        h = a.send(PAIR_B, BULK_TYPE, body, net.now, deadline_s=60)
        assert settle(net, PAIR_A, [h]) == {h: SendDone(h)}
        effs.append((a.stats()["data_sent"] - before) / -(-len(body) // CFG.fragment_size))
    net.run()
    assert [d.body for d in delivered(net.events[PAIR_B])] == bodies  # once each, bit-exact
    return effs, a.stats()["reordering"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fifo_path_never_waits_for_reordering(seed: int) -> None:
    effs, reordering = _messages("fifo", seed)
    assert reordering == 0  # a hole on a FIFO path is a loss: declared at once, as before
    assert max(effs) <= 1.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_shuffled_path_costs_few_repeats_from_its_first_message(seed: int) -> None:
    effs, reordering = _messages("shuffled", seed)
    assert reordering > 0
    assert max(effs) <= 1.35  # the TP-2 bound at 10 % loss (1.6-1.9 without the window)


# ----------------------------------------------------------------- what the receiver tells
SRC = ("10.0.0.1", 4001)


def _datagram(index: int, seq: int, flags: int = 0, count: int = 40) -> bytes:
    fs = CFG.fragment_size
    return F.pack(F.CrcFramer(), F.DATA, flags=flags, type_code=BULK_TYPE, epoch=1, msg_id=1,
                  frag_index=index, frag_size=fs, block_size=CFG.block_size, total=count * fs,
                  seq=seq, payload=bytes(fs))  # fmt: skip


def _acks(ep: Endpoint, now: float) -> list[F.Header]:
    return [F.parse(ep.framer, d)[0] for _, d in ep.datagrams_to_send(now)]


def test_the_receiver_reports_how_late_a_reordered_fragment_came() -> None:
    ep = Endpoint(CFG, epoch=5, rng=random.Random(0), max_body=fake_max_body)
    for k in range(5):  # fragments 0-4 in order, 1 ms apart: no reordering
        ep.datagram_received(SRC, _datagram(k, seq=k), 0.001 * k)
    ep.datagram_received(SRC, _datagram(5, seq=5, flags=F.FLAG_ACK_NOW), 0.005)
    (ack,) = _acks(ep, 0.005)
    assert ack.frag_size == 0  # nothing came late: a FIFO path reports 0
    ep.datagram_received(SRC, _datagram(8, seq=8), 0.006)
    ep.datagram_received(SRC, _datagram(7, seq=7), 0.0133)  # 7.3 ms after seq 8 came
    ep.datagram_received(SRC, _datagram(9, seq=9, flags=F.FLAG_ACK_NOW), 0.014)
    (ack,) = _acks(ep, 0.014)
    assert ack.frag_size == 73  # in 0.1 ms, rounded up


def test_a_fragment_an_ack_reported_missing_is_acknowledged_at_once() -> None:
    ep = Endpoint(CFG, epoch=5, rng=random.Random(0), max_body=fake_max_body)
    ep.datagram_received(SRC, _datagram(0, seq=0), 0.0)
    ep.datagram_received(SRC, _datagram(2, seq=2, flags=F.FLAG_ACK_NOW), 0.001)
    (ack,) = _acks(ep, 0.001)  # fragment 1 (seq 1) is missing from it
    ep.datagram_received(SRC, _datagram(3, seq=3), 0.002)
    assert _acks(ep, 0.002) == []  # in order, no flag: no ACK
    ep.datagram_received(SRC, _datagram(1, seq=1), 0.004)  # late, no ACK_NOW flag
    (ack,) = _acks(ep, 0.004)
    assert ack.frag_index == 1 and ack.total == 4  # fragments 0-3 held: the sender knows now
