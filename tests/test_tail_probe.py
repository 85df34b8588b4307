"""Tail loss probes (transport.sender, RFC 8985 style): a quiet destination gets its newest
fragment again after a PTO of about 2 srtt, before the RTO with its floor fires."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest

from config import TransportConfig
from transport import frames as F
from transport.endpoint import Endpoint
from transport.rtt import GRANULARITY_S, RttEstimator
from transport.sender import MAX_TAIL_PROBES, SendDone
from transport.sim import BULK_TYPE, Impairment, Net, delivered, fake_max_body, settle

A = ("10.0.0.1", 4001)
B = ("10.0.0.2", 4002)
CFG = TransportConfig()
FLOOR = CFG.rto_floor_ms / 1000
DELAY = 0.001  # one way: RTT 2 ms, far under the 20 ms RTO floor


def _pair(cut_ack: object = None) -> tuple[Net, Endpoint, Endpoint]:
    net = Net(random.Random(1))
    a = net.add(A, Endpoint(CFG, epoch=1000, rng=random.Random(2), max_body=fake_max_body))
    b = net.add(B, Endpoint(CFG, epoch=2000, rng=random.Random(3), max_body=fake_max_body))
    net.impair(A, B, Impairment(delay=DELAY))
    net.impair(B, A, Impairment(delay=DELAY, cut=cut_ack))  # type: ignore[arg-type]
    return net, a, b


def _warm(net: Net, a: Endpoint) -> None:
    """One message first: the path gets RTT samples (no PTO without them)."""
    h = a.send(B, BULK_TYPE, b"warm", net.now)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    assert a.sender.rtt(B).samples == 1


def test_pto_is_twice_srtt_within_granularity_and_rto() -> None:
    r = RttEstimator(0.02, 1.0)
    assert r.pto is None
    r.sample(0.002)
    assert r.pto == pytest.approx(0.004)
    r2 = RttEstimator(0.02, 1.0)
    r2.sample(0.0001)
    assert r2.pto == GRANULARITY_S
    r3 = RttEstimator(0.02, 0.05)
    r3.sample(0.04)
    assert r3.pto == r3.rto == 0.05


def test_a_lost_last_ack_costs_a_probe_timeout_not_an_rto() -> None:
    dropped: list[float] = []

    def drop_first_complete(now: float, d: bytes) -> bool:
        h, _ = F.parse(F.CrcFramer(), d)
        if h.flags & F.FLAG_COMPLETE and h.msg_id == 2 and not dropped:
            dropped.append(now)
            return True
        return False

    net, a, b = _pair(drop_first_complete)
    _warm(net, a)
    t0 = net.now
    h = a.send(B, BULK_TYPE, b"x" * 3000, t0)  # three fragments
    assert settle(net, A, [h]) == {h: SendDone(h)}
    assert dropped, "the COMPLETE ACK was not dropped"
    # PTO = 2 srtt = 4 ms after the last transmission, then one round trip
    assert net.now - t0 <= 2 * DELAY + 2 * (2 * DELAY) + 2 * DELAY + 1e-9
    assert net.now - t0 < FLOOR
    s = a.stats()
    assert (s["probes"], s["timeouts"], s["retransmits"]) == (1, 0, 1)
    net.run()
    assert len(delivered(net.events[B])) == 2  # warm-up + this one, once each
    assert b.stats()["duplicates"] == 1  # the probe was answered COMPLETE again


def test_no_tail_probe_before_any_round_trip_sample() -> None:
    lost: list[bool] = []

    def drop_first_data(now: float, d: bytes) -> bool:
        was = not lost
        lost.append(True)
        return was

    net = Net(random.Random(1))
    a = net.add(A, Endpoint(CFG, epoch=1000, rng=random.Random(2), max_body=fake_max_body))
    net.add(B, Endpoint(CFG, epoch=2000, rng=random.Random(3), max_body=fake_max_body))
    net.impair(A, B, Impairment(delay=DELAY, cut=drop_first_data))
    net.impair(B, A, Impairment(delay=DELAY))
    h = a.send(B, BULK_TYPE, b"first contact", 0.0)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    s = a.stats()
    assert (s["timeouts"], s["probes"]) == (1, 1)  # the RTO's probe, none earlier
    assert net.now >= 0.2  # the initial RTO


def test_tail_probes_per_quiet_spell_are_capped_then_the_rto_takes_over() -> None:
    sent: list[float] = []
    net, a, _b = _pair(lambda now, d: F.parse(F.CrcFramer(), d)[0].msg_id == 2)  # ACKs of msg 2
    _warm(net, a)
    pto = a.sender.rtt(B).pto
    assert pto is not None and pto < FLOOR

    def tap(src: tuple[str, int], dst: tuple[str, int], d: bytes) -> None:
        if src == A and F.parse(F.CrcFramer(), d)[0].kind == F.DATA:
            sent.append(net.now)

    net.tap = tap
    t0 = net.now
    a.send(B, BULK_TYPE, b"y" * 100, t0, deadline_s=0.5)
    net.run(until=lambda: a.stats()["timeouts"] > 0)
    # the first transmission, MAX_TAIL_PROBES probes a PTO apart, then the RTO's probe (its
    # timer restarted at the last tail probe, a retransmission). The first probe waits the ACK
    # delay longer: a one-fragment message's COMPLETE ACK may be held back that long; the probe
    # asks for an ACK now, so the next one waits a PTO only.
    assert len(sent) == 1 + MAX_TAIL_PROBES + 1
    gaps = [later - earlier for earlier, later in pairwise(sent)]
    delay = CFG.ack_delay_ms / 1000
    assert delay > 0
    assert gaps[:MAX_TAIL_PROBES] == pytest.approx([pto + delay] + [pto] * (MAX_TAIL_PROBES - 1))
    assert gaps[-1] == pytest.approx(FLOOR)
    assert a.stats()["probes"] == MAX_TAIL_PROBES + 1
