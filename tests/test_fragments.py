"""Pure core on a fake network and a fake clock: sizes, order, duplicates, loss (TP-1), the
two-generals case (TP-3), RTO/Karn (TP-4), a blackhole (TP-5) and bit flips (TP-7)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import TransportConfig
from transport import frames as F
from transport.endpoint import Delivered, Endpoint
from transport.rtt import RttEstimator
from transport.sender import SendDone, SendFailed
from transport.sim import (
    BULK_TYPE,
    Bernoulli,
    Impairment,
    Net,
    delivered,
    fake_max_body,
    settle,
)

A = ("10.0.0.1", 4001)
B = ("10.0.0.2", 4002)
CFG = TransportConfig()
FS, BS = CFG.fragment_size, CFG.block_size


def pair(cfg: TransportConfig = CFG, seed: int = 1) -> tuple[Net, Endpoint, Endpoint]:
    net = Net(random.Random(seed))
    a = net.add(A, Endpoint(cfg, epoch=1000, rng=random.Random(seed + 1), max_body=fake_max_body))
    b = net.add(B, Endpoint(cfg, epoch=2000, rng=random.Random(seed + 2), max_body=fake_max_body))
    return net, a, b


def lossy(net: Net, p_data: float, p_ack: float) -> None:
    net.impair(A, B, Impairment(loss=Bernoulli(p_data)))
    net.impair(B, A, Impairment(loss=Bernoulli(p_ack)))


SIZES = [0, 1, FS - 1, FS, FS + 1, BS * FS - 1, BS * FS, BS * FS + 1, 1 << 20]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("loss", [0.0, 0.1, 0.3])
def test_sizes_delivered_once_bit_exact_under_loss_both_ways(size: int, loss: float) -> None:
    net, a, b = pair(seed=size + int(loss * 100))
    lossy(net, loss, loss)
    body = random.Random(size).randbytes(size)
    h = a.send(B, BULK_TYPE, body, net.now)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    net.run()  # drain: late retransmissions must not deliver again
    got = delivered(net.events[B])
    assert [(d.addr, d.type_code, d.body) for d in got] == [(A, BULK_TYPE, body)]
    assert b.stats()["held_bytes"] == 0 and b.stats()["partials"] == 0


def test_64_mib_message_bit_exact() -> None:
    cfg = dataclasses.replace(CFG, fragment_size=65000)  # keeps the fake run to ~1k fragments
    net, a, _b = pair(cfg)
    lossy(net, 0.1, 0.1)
    body = random.Random(64).randbytes(64 * 1024 * 1024)
    h = a.send(B, BULK_TYPE, body, net.now)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    got = delivered(net.events[B])
    assert len(got) == 1 and got[0].body == body


def _capture(net: Net, a: Endpoint, body: bytes) -> list[bytes]:
    a.send(B, BULK_TYPE, body, net.now)
    return [d for _, d in a.datagrams_to_send(net.now)]


@pytest.mark.parametrize("order", ["in_order", "reversed", "duplicated", "shuffled"])
def test_fragment_order_and_duplicates(order: str) -> None:
    net, a, b = pair()
    body = random.Random(3).randbytes(200 * FS + 17)  # 201 fragments: one window
    data = _capture(net, a, body)
    assert len(data) == 201
    if order == "reversed":
        data.reverse()
    elif order == "duplicated":
        data = [d for d in data for _ in range(2)]
    elif order == "shuffled":
        random.Random(4).shuffle(data)
    for d in data:
        b.datagram_received(A, d, 0.001)
    got = [e for e in b.pop_events() if isinstance(e, Delivered)]
    assert [g.body for g in got] == [body]
    for _, ack in b.datagrams_to_send(0.001):
        a.datagram_received(B, ack, 0.002)
    a.datagrams_to_send(0.002)
    assert a.pop_events() == [SendDone(1)]
    assert a.stats()["data_sent"] == 201 and a.stats()["retransmits"] == 0


def test_many_messages_both_directions_exactly_once() -> None:
    net, a, b = pair(seed=9)
    lossy(net, 0.1, 0.1)
    rng = random.Random(9)
    bodies_ab = [rng.randbytes(rng.randrange(0, 50_000)) for _ in range(40)]
    bodies_ba = [rng.randbytes(rng.randrange(0, 50_000)) for _ in range(40)]
    ha = [a.send(B, BULK_TYPE, x, 0.0) for x in bodies_ab]
    hb = [b.send(A, BULK_TYPE, x, 0.0) for x in bodies_ba]
    settle(net, A, ha)
    settle(net, B, hb)
    net.run()
    assert sorted(d.body for d in delivered(net.events[B])) == sorted(bodies_ab)
    assert sorted(d.body for d in delivered(net.events[A])) == sorted(bodies_ba)


def test_tp3_every_ack_lost_fails_unacknowledged_and_replay_is_not_redelivered() -> None:
    net, a, b = pair()
    sent: list[bytes] = []
    net.tap = lambda src, dst, d: sent.append(d) if src == A else None
    net.impair(B, A, Impairment(cut=lambda now, d: True))  # every ACK dropped
    body = random.Random(5).randbytes(10 * FS)
    h = a.send(B, BULK_TYPE, body, 0.0, deadline_s=3.0)
    out = settle(net, A, [h])[h]
    assert isinstance(out, SendFailed) and out.kind == "unacknowledged"
    assert [d.body for d in delivered(net.events[B])] == [body]
    dup_before = b.stats()["duplicates"]
    replay = list(sent)
    for d in replay:  # the same message id again, every datagram
        net.inject(A, B, d)
    net.run()
    assert [d.body for d in delivered(net.events[B])] == [body]
    assert b.stats()["duplicates"] == dup_before + len(replay)
    assert a.stats()["pending"] == 0


def test_silent_peer_before_any_fragment_left_is_undelivered() -> None:
    cfg = dataclasses.replace(CFG, window_blocks=1, block_size=4)
    net, a, _b = pair(cfg)
    net.impair(A, B, Impairment(cut=lambda now, d: True))
    h1 = a.send(B, BULK_TYPE, b"x" * (10 * FS), 0.0, deadline_s=2.0)
    out = settle(net, A, [h1])[h1]
    assert isinstance(out, SendFailed) and out.kind == "undelivered"  # 6 fragments never left


def test_rto_estimator_bounds_backoff_and_reset() -> None:
    r = RttEstimator(0.02, 1.0)
    assert r.rto == 0.2  # before any sample
    r.sample(0.001)
    assert r.rto == 0.02  # floor
    r.sample(5.0)
    assert r.rto == 1.0  # ceiling
    r2 = RttEstimator(0.02, 1.0)
    r2.sample(0.05)
    base = r2.rto
    assert base == pytest.approx(0.05 + 4 * 0.025)
    r2.timeout()
    assert r2.rto == pytest.approx(1.5 * base)
    r2.timeout()
    assert r2.rto == pytest.approx(2.25 * base)
    for _ in range(10):
        r2.timeout()
    assert r2.rto == 1.0
    r2.progress()  # new data acknowledged: the backoff ends
    assert r2.rto == pytest.approx(base)
    r2.timeout()
    r2.sample(0.05)  # so does a valid sample
    assert r2.rto == pytest.approx(0.05 + 4 * (0.75 * 0.025))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, 3.0), st.sampled_from(["timeout", "progress"])),
                max_size=60))
def test_rto_and_pto_follow_the_formulas_after_any_sequence(ops: list[object]) -> None:
    """rto, pto and base_rto are computed when the state changes, not on read: after any
    sequence of samples, timeouts and progress they equal RFC 6298 / RFC 8985 from scratch."""
    r = RttEstimator(0.02, 1.0)
    srtt: float | None = None
    rttvar, shift = 0.0, 0
    for op in ops:
        if op == "timeout":
            r.timeout()
            shift = min(shift + 1, 32)
        elif op == "progress":
            r.progress()
            shift = 0
        else:
            x = float(op)  # type: ignore[arg-type]
            r.sample(x)
            if srtt is None:
                srtt, rttvar = x, x / 2
            else:
                rttvar = 0.75 * rttvar + 0.25 * abs(srtt - x)
                srtt = 0.875 * srtt + 0.125 * x
            shift = 0
        raw = 0.2 if srtt is None else srtt + max(0.001, 4 * rttvar)
        base = min(1.0, max(0.02, raw))
        rto = min(1.0, base * 1.5**shift)
        assert r.base_rto == pytest.approx(base)
        assert r.rto == pytest.approx(rto)
        assert r.backoff_shift == shift
        if srtt is None:
            assert r.pto is None
        else:
            assert r.pto == pytest.approx(min(rto, max(2 * srtt, 0.001)))


def _rtt_run(delay_of: object, n_frags: int = 2000) -> tuple[Net, Endpoint, list[float]]:
    net, a, _b = pair()
    rtos: list[float] = []
    imp_ab = net.impair(A, B, Impairment(delay=0.0))
    imp_ba = net.impair(B, A, Impairment(delay=0.0))

    def watch(dst: tuple[str, int], ep: Endpoint) -> None:
        rtos.append(a.sender.rtt(B).rto)
        d = delay_of(net.now)  # type: ignore[operator]
        imp_ab.delay, imp_ab.jitter = d
        imp_ba.delay, imp_ba.jitter = d

    net.on_datagram = watch
    h = a.send(B, BULK_TYPE, bytes(n_frags * FS), 0.0, deadline_s=30.0)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    return net, a, rtos


@pytest.mark.parametrize(
    "name,delay_of",
    [
        ("constant 20 ms", lambda now: (0.010, 0.0)),
        ("uniform 10-30 ms", lambda now: (0.005, 0.010)),
    ],
)
def test_tp4_no_spurious_retransmissions_with_jitter(name: str, delay_of: object) -> None:
    _net, a, rtos = _rtt_run(delay_of)
    assert all(0.02 <= r <= 1.0 for r in rtos)
    assert a.stats()["retransmits"] <= 0.01 * 2000, name


def test_tp4_rtt_step_keeps_rto_in_bounds_and_completes() -> None:
    _net, a, rtos = _rtt_run(lambda now: (0.010, 0.0) if now < 0.1 else (0.100, 0.0), 8000)
    assert all(0.02 <= r <= 1.0 for r in rtos)
    srtt = a.sender.rtt(B).srtt
    assert srtt is not None and srtt > 0.15  # adapted to the 200 ms round trip


def test_tp4_karn_no_sample_from_a_retransmission() -> None:
    net, a, _b = pair()
    first = [True]

    def drop_first(now: float, d: bytes) -> bool:
        was, first[0] = first[0], False
        return was

    net.impair(A, B, Impairment(delay=0.01, cut=drop_first))
    net.impair(B, A, Impairment(delay=0.01))
    h = a.send(B, BULK_TYPE, b"one fragment", 0.0)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    r = a.sender.rtt(B)
    assert a.stats()["retransmits"] == 1
    assert r.samples == 0  # the only ACK answered a retransmission
    h2 = a.send(B, BULK_TYPE, b"another", net.now)
    settle(net, A, [h2])
    assert r.samples == 1 and r.latest == pytest.approx(0.02)


def _timed_send(blackhole: bool) -> tuple[float, Net, Endpoint]:
    net, a, b = pair()
    size = 10 * 1024 * 1024
    frags = size // FS
    window: list[float] = []

    def cut(now: float, d: bytes) -> bool:
        if not window and b.stats()["delivered"] == 0 and b.receiver.held_bytes > 0.3 * size:
            window.append(now)
        return bool(window) and window[0] <= now < window[0] + 2.0

    for s, d in ((A, B), (B, A)):
        net.impair(s, d, Impairment(delay=0.005, cut=cut if blackhole else None))
    h = a.send(B, BULK_TYPE, bytes(size), 0.0)
    assert settle(net, A, [h]) == {h: SendDone(h)}
    net.run()
    assert len(delivered(net.events[B])) == 1
    assert frags > 0
    return net.now, net, a


def test_tp5_two_second_blackhole_completes_without_duplicate() -> None:
    base, _, _ = _timed_send(False)
    t, _net, a = _timed_send(True)
    assert t <= base + 2.0 + 1.0 + 0.01
    assert a.stats()["timeouts"] > 0


@pytest.mark.parametrize("size,rate", [(1 << 20, 0.02), (300, 0.3)])
def test_tp7_bit_flips_never_delivered_and_all_counted(size: int, rate: float) -> None:
    net, a, b = pair(seed=7)
    imps = [net.impair(A, B, Impairment(corrupt=rate)), net.impair(B, A, Impairment(corrupt=rate))]
    rng = random.Random(7)
    bodies = [rng.randbytes(size) for _ in range(1 if size > 1000 else 30)]
    hs = [a.send(B, BULK_TYPE, x, 0.0) for x in bodies]
    assert set(settle(net, A, hs).values()) == {SendDone(h) for h in hs}
    net.run()
    assert sorted(d.body for d in delivered(net.events[B])) == sorted(bodies)
    flips = sum(i.counts["flipped"] for i in imps)
    assert flips > 0
    assert a.stats()["bad_datagrams"] + b.stats()["bad_datagrams"] == flips


def test_ack_with_unknown_id_or_wrong_epoch_is_counted_not_applied() -> None:
    _net, a, _b = pair()
    h = a.send(B, BULK_TYPE, b"x" * 10, 0.0)
    a.datagrams_to_send(0.0)
    for msg_id, epoch in ((99, 1000), (1, 999)):
        ack = F.pack(F.CrcFramer(), F.ACK, flags=F.FLAG_COMPLETE, type_code=BULK_TYPE,
                     msg_id=msg_id, epoch=epoch)  # fmt: skip
        a.datagram_received(B, ack, 0.001)
    ack = F.pack(F.CrcFramer(), F.ACK, flags=F.FLAG_COMPLETE, type_code=BULK_TYPE, msg_id=1,
                 epoch=1000)  # fmt: skip
    a.datagram_received(("10.0.0.9", 4002), ack, 0.001)  # right ids, wrong address
    a.datagrams_to_send(0.001)
    assert a.pop_events() == [] and a.stats()["bad_acks"] == 3
    a.datagram_received(B, ack, 0.002)
    a.datagrams_to_send(0.002)
    assert a.pop_events() == [SendDone(h)]


def test_last_lone_retransmission_of_a_large_message_goes_out_twice() -> None:
    net, a, _b = pair()
    seen: list[int] = []

    def drop_first_of_fragment_5(now: float, d: bytes) -> bool:
        h, _ = F.parse(F.CrcFramer(), d)
        seen.append(h.frag_index)
        return h.frag_index == 5 and seen.count(5) == 1

    net.impair(A, B, Impairment(cut=drop_first_of_fragment_5))
    small = a.send(B, BULK_TYPE, bytes(10 * FS), 0.0)  # one block: no second copy
    assert settle(net, A, [small]) == {small: SendDone(small)}
    assert seen.count(5) == 2
    seen.clear()
    big = a.send(B, BULK_TYPE, bytes((BS + 8) * FS), net.now)  # two blocks: two copies
    assert settle(net, A, [big]) == {big: SendDone(big)}
    assert seen.count(5) == 3 and a.stats()["timeouts"] == 0
