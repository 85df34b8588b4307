"""ACKs carried on DATA (piggyback) and held back a little (issue 19), on the pure core with an
injected clock: an ACK rides on the answer to the same address, or leaves alone after the ACK
delay (telling how long it was held, so the sender's RTT is not inflated); ACK_NOW, duplicates
and multi-fragment messages are acknowledged at once; no spurious retransmission at 0 % loss;
loss is still recovered; bad ACK records are counted and dropped on client (CRC) and peer (HMAC)
sockets."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from config import TransportConfig
from transport import frames as F
from transport.auth import MemoryEpochStore, PeerAuth, PeerGuard, boot_epoch
from transport.endpoint import Delivered, Endpoint
from transport.sender import Addr, SendDone
from transport.sim import BULK_TYPE, Bernoulli, Impairment, Net, delivered, fake_max_body

CFG = TransportConfig()
DELAY = CFG.ack_delay_ms / 1000
FS = CFG.fragment_size
A = ("10.0.0.1", 4001)
B = ("10.0.0.2", 4002)
N1 = ("127.0.0.1", 47201)
N2 = ("127.0.0.1", 47202)
SECRET = b"k" * 32
WALL = [1_700_000_000_000]
T0 = 100.0


def _peer(node: int, addrs: dict[int, Addr], cfg: TransportConfig) -> Endpoint:
    store = MemoryEpochStore()
    guard = PeerGuard(PeerAuth(SECRET, node, addrs, store), lambda: WALL[0])
    return Endpoint(cfg, epoch=boot_epoch(store, node, WALL[0]), rng=random.Random(node),
                    max_body=fake_max_body, guard=guard)  # fmt: skip


def endpoints(mode: str, cfg: TransportConfig = CFG) -> tuple[Endpoint, Endpoint, Addr, Addr]:
    """Two endpoints that know each other: client sockets (CRC) that exchanged one message each
    way (each echoes the other's nonce from then on), or peer sockets (HMAC)."""
    if mode == "peer":
        return _peer(1, {1: N1, 2: N2}, cfg), _peer(2, {1: N1, 2: N2}, cfg), N1, N2
    a = Endpoint(cfg, epoch=1000, rng=random.Random(1), max_body=fake_max_body)
    b = Endpoint(cfg, epoch=2000, rng=random.Random(2), max_body=fake_max_body)
    for t, (src, dst, sa, da) in ((T0 - 1, (a, b, A, B)), (T0 - 0.5, (b, a, B, A))):
        src.send(da, BULK_TYPE, b"hello", t)
        move(src, dst, sa, t)
        move(dst, src, da, t + DELAY)
    assert a.pop_events() and b.pop_events()
    return a, b, A, B


def move(src: Endpoint, dst: Endpoint, src_addr: Addr, now: float) -> list[bytes]:
    """What `src` sends at `now`, handed to `dst` at once; returns the datagrams."""
    out = [d for _, d in src.datagrams_to_send(now)]
    if out:
        dst.datagrams_received([(src_addr, d) for d in out], now)
    return out


def heads(ep: Endpoint, out: list[bytes]) -> list[F.Header]:
    return [F.parse(ep.framer, d)[0] for d in out]


def with_riders(mode: str) -> tuple[Endpoint, Endpoint, Addr, Addr, int, bytes]:
    """a sends a one-fragment request; b answers before the ACK delay: the answer is returned
    (not yet handed to a) with the handle of the request."""
    a, b, aa, ba = endpoints(mode)
    sent = b.stats()["acks_sent"]
    req = a.send(ba, BULK_TYPE, b"request", T0)
    (data,) = move(a, b, aa, T0)
    (h,) = heads(a, [data])
    assert not h.flags & F.FLAG_ACK_NOW  # a first transmission of one fragment: no ACK now
    assert [e.body for e in b.pop_events() if isinstance(e, Delivered)] == [b"request"]
    assert b.datagrams_to_send(T0) == []  # the ACK is held
    b.send(aa, BULK_TYPE, b"answer", T0 + DELAY / 2)
    (answer,) = [d for _, d in b.datagrams_to_send(T0 + DELAY / 2)]
    assert b.stats()["acks_sent"] == sent + 1
    return a, b, aa, ba, req, answer


@pytest.mark.parametrize("mode", ["plain", "peer"])
def test_the_ack_rides_on_the_answer_and_no_ack_leaves_alone(mode: str) -> None:
    a, b, _aa, ba, req, answer = with_riders(mode)
    (h,) = heads(b, [answer])
    assert h.kind == F.DATA and h.flags & F.FLAG_ACKS
    assert len(answer) == F.HEADER_SIZE + len(b"answer") + F.ACK_RECORD.size + b.framer.trailer
    assert b.stats()["acks_carried"] == 1  # and one ACK in all since the request (below)
    a.datagrams_received([(ba, answer)], T0 + DELAY / 2)
    events = a.pop_events()
    assert SendDone(req) in events
    assert [e.body for e in events if isinstance(e, Delivered)] == [b"answer"]
    later = heads(b, [d for _, d in b.datagrams_to_send(T0 + 10 * DELAY)])
    assert F.ACK not in [h.kind for h in later]  # the ACK left once, on the answer
    assert b.stats()["acks_carried"] == 1


def test_an_ack_with_no_data_to_ride_on_leaves_alone_after_the_delay_and_says_so() -> None:
    a, b, aa, ba = endpoints("plain")
    one_way = 0.001
    req = a.send(ba, BULK_TYPE, b"no answer", T0)
    (data,) = [d for _, d in a.datagrams_to_send(T0)]
    b.datagrams_received([(aa, data)], T0 + one_way)
    assert b.datagrams_to_send(T0 + one_way) == []
    assert b.next_deadline() == pytest.approx(T0 + one_way + DELAY)
    assert b.datagrams_to_send(T0 + one_way + DELAY * 0.99) == []
    out = [d for _, d in b.datagrams_to_send(T0 + one_way + DELAY)]
    (h,) = heads(b, out)
    assert h.kind == F.ACK and h.flags & F.FLAG_COMPLETE
    units = int(DELAY * 10_000)  # the ACK was held 5 ms: 50 units of 0.1 ms, rounded down
    assert units - 1 <= h.block_size <= units
    rtt = a.sender.rtt(ba)
    before = rtt.samples
    a.datagrams_received([(ba, out[0])], T0 + 2 * one_way + DELAY)
    assert a.pop_events() == [SendDone(req)]
    assert rtt.samples == before + 1
    assert rtt.latest == pytest.approx(2 * one_way, abs=1e-4)  # not 2 ms + the 5 ms held


def test_a_duplicate_of_a_held_message_is_acknowledged_at_once_in_place_of_the_held_ack() -> None:
    a, b, aa, _ba = endpoints("peer")
    a.send(N2, BULK_TYPE, b"request", T0)
    (data,) = move(a, b, aa, T0)
    assert b.datagrams_to_send(T0) == []
    b.datagrams_received([(aa, data)], T0 + 0.001)  # the same datagram again: a duplicate
    out = [d for _, d in b.datagrams_to_send(T0 + 0.001)]
    (h,) = heads(b, out)
    assert h.kind == F.ACK and h.flags & F.FLAG_COMPLETE
    assert b.stats()["acks_merged"] == 1 and b.stats()["acks_sent"] == 1
    assert b.datagrams_to_send(T0 + 10 * DELAY) == []


def test_a_multi_fragment_message_and_a_probe_are_acknowledged_at_once() -> None:
    a, b, aa, ba = endpoints("plain")
    a.send(ba, BULK_TYPE, bytes(3 * FS - 5), T0)
    move(a, b, aa, T0)
    assert heads(b, move(b, a, ba, T0))[0].flags & F.FLAG_COMPLETE  # at once
    # a tail probe of a one-fragment message asks for an ACK now: no delay on it
    a.send(ba, BULK_TYPE, b"lost", T0 + 1)
    a.datagrams_to_send(T0 + 1)  # lost on the way
    probe_at = a.next_deadline()
    assert probe_at is not None
    (probe,) = [d for _, d in a.datagrams_to_send(probe_at)]
    assert heads(a, [probe])[0].flags & F.FLAG_ACK_NOW
    b.datagrams_received([(aa, probe)], probe_at)
    (h,) = heads(b, [d for _, d in b.datagrams_to_send(probe_at)])
    assert h.kind == F.ACK and h.flags & F.FLAG_COMPLETE


def test_a_prompt_send_is_acknowledged_at_once() -> None:
    a, b, aa, ba = endpoints("plain")
    h = a.send(ba, BULK_TYPE, b"waited on", T0, prompt=True)
    (data,) = move(a, b, aa, T0)
    assert heads(a, [data])[0].flags & F.FLAG_ACK_NOW
    move(b, a, ba, T0)  # the same instant
    assert a.pop_events() == [SendDone(h)]


def test_an_endpoint_without_ack_delay_neither_holds_acks_nor_has_its_own_held() -> None:
    a = Endpoint(CFG, epoch=1000, rng=random.Random(1), max_body=fake_max_body, ack_delay=False)
    b = Endpoint(CFG, epoch=2000, rng=random.Random(2), max_body=fake_max_body, ack_delay=False)
    for t, (src, dst, sa, da) in ((T0 - 1, (a, b, A, B)), (T0 - 0.5, (b, a, B, A))):
        src.send(da, BULK_TYPE, b"hello", t)  # each now echoes the other's nonce
        move(src, dst, sa, t)
        move(dst, src, da, t)
    h = a.send(B, BULK_TYPE, b"request", T0)
    (data,) = move(a, b, A, T0)
    assert heads(a, [data])[0].flags & F.FLAG_ACK_NOW
    (ack,) = move(b, a, B, T0)  # at once
    assert heads(b, [ack])[0].kind == F.ACK
    assert SendDone(h) in a.pop_events()
    b.send(A, BULK_TYPE, b"x", T0)  # and b's own one-fragment send asks for its ACK now
    (data,) = [d for _, d in b.datagrams_to_send(T0)]
    assert heads(b, [data])[0].flags & F.FLAG_ACK_NOW


def test_riders_end_their_run_and_never_make_a_datagram_larger_than_a_full_fragment() -> None:
    a, b, aa, ba = endpoints("plain")
    for k in range(3):  # three held ACKs
        a.send(ba, BULK_TYPE, b"r%d" % k, T0)
    move(a, b, aa, T0)
    assert b.datagrams_to_send(T0) == []
    b.send(aa, BULK_TYPE, bytes(2 * FS + 10), T0 + 0.001)  # last fragment short: room
    runs = [d for _, d in b.gathered_to_send(T0 + 0.001)]
    full = F.HEADER_SIZE + FS + b.framer.trailer
    datagrams = []
    for run in runs:
        assert isinstance(run, F.DatagramRun)
        sizes = [len(x) for x in run.datagrams()]
        assert all(s == run.seg for s in sizes[:-1]) and sizes[-1] <= run.seg <= full
        datagrams += run.datagrams()
    hs = heads(b, datagrams)
    assert [h.frag_index for h in hs] == [0, 1, 2]
    assert [bool(h.flags & F.FLAG_ACKS) for h in hs] == [False, False, True]
    assert b.stats()["acks_carried"] == 3
    # a full last fragment has no room: the held ACK then leaves alone when due
    a, b, aa, ba = endpoints("plain")
    a.send(ba, BULK_TYPE, b"r3", T0 + 1)
    move(a, b, aa, T0 + 1)
    b.send(aa, BULK_TYPE, bytes(FS), T0 + 1)
    (d,) = [d for _, d in b.datagrams_to_send(T0 + 1)]
    assert len(d) == full and not heads(b, [d])[0].flags & F.FLAG_ACKS
    (h,) = heads(b, [d for _, d in b.datagrams_to_send(T0 + 1 + DELAY)])
    assert h.kind == F.ACK


Corrupt = Callable[[bytes], bytes]
_REC = F.ACK_RECORD.size
CORRUPTIONS: dict[str, Corrupt] = {
    "truncated record": lambda r: r[:-1],
    "record cut short": lambda r: r[: _REC // 2],
    "no record": lambda r: b"",
    "payload longer than allowed": lambda r: r[: _REC - 1] + bytes([F.MAX_ACK_PAYLOAD + 1]),
    "payload past the end": lambda r: r[: _REC - 1] + bytes([8]) + bytes(4),
    "bitmap too short": lambda r: r[: _REC - 1] + bytes([2]) + bytes(2),
    "bitmap start not 8-aligned": lambda r: r[: _REC - 1] + bytes([5]) + bytes([0, 0, 0, 3, 1]),
}


@pytest.mark.parametrize("mode", ["plain", "peer"])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_bad_ack_records_are_counted_and_dropped_never_raised(mode: str, name: str) -> None:
    a, b, _aa, ba, req, answer = with_riders(mode)
    trailer = b.framer.trailer
    header, body = answer[: F.HEADER_SIZE], answer[F.HEADER_SIZE : len(answer) - trailer]
    fragment, record = body[: len(b"answer")], body[len(b"answer") :]
    assert len(record) == _REC
    bad = b.framer.seal(header, fragment + CORRUPTIONS[name](record))
    before = a.stats()["bad_datagrams"]
    a.datagrams_received([(ba, bad)], T0 + DELAY / 2)  # must not raise
    assert a.stats()["bad_datagrams"] == before + 1
    assert a.pop_events() == []  # neither the answer delivered nor the request acknowledged
    a.datagrams_received([(ba, answer)], T0 + DELAY / 2)  # the intact datagram still works
    events = a.pop_events()
    assert SendDone(req) in events and any(isinstance(e, Delivered) for e in events)


Traffic = tuple[Net, Endpoint, Endpoint, list[int], list[int]]


def _traffic(cfg: TransportConfig, loss: float, seed: int) -> Traffic:
    """Both ways, 150 one-fragment messages each at random gaps of 0-6 ms (some answers come
    within the ACK delay, some do not) and a few multi-fragment ones; one-way delay 1 ms."""
    net = Net(random.Random(seed))
    a = net.add(A, Endpoint(cfg, epoch=1000, rng=random.Random(seed + 1), max_body=fake_max_body))
    b = net.add(B, Endpoint(cfg, epoch=2000, rng=random.Random(seed + 2), max_body=fake_max_body))
    net.impair(A, B, Impairment(delay=0.001, loss=Bernoulli(loss) if loss else None))
    net.impair(B, A, Impairment(delay=0.001, loss=Bernoulli(loss) if loss else None))
    rng = random.Random(seed)
    sends = sorted((rng.random() * 0.9, who, k) for who in "ab" for k in range(150))
    handles: dict[str, list[int]] = {"a": [], "b": []}
    for t, who, k in sends:
        net.advance(t)
        src, dst = (a, B) if who == "a" else (b, A)
        body = b"%s%d" % (who.encode(), k) * (1 if k % 25 else 2000)
        handles[who].append(src.send(dst, BULK_TYPE, body, net.now))
    net.run()
    return net, a, b, handles["a"], handles["b"]


def test_no_spurious_retransmission_at_zero_loss_with_the_delay() -> None:
    net, a, b, ha, hb = _traffic(CFG, 0.0, 7)
    for ep, addr, handles in ((a, A, ha), (b, B, hb)):
        s = ep.stats()
        assert (s["retransmits"], s["probes"], s["timeouts"]) == (0, 0, 0), s
        assert s["sent_ok"] == len(handles) == 150
        assert s["acks_carried"] > 0  # some ACKs rode on DATA ...
        assert s["acks_sent"] > s["acks_carried"]  # ... and some left alone after the delay
        assert ep.sender.rtt(B if ep is a else A).srtt == pytest.approx(0.002, abs=2e-4)
        assert len(delivered(net.events[B if ep is a else A])) == 150


def test_fewer_ack_datagrams_than_without_the_delay() -> None:
    def ack_datagrams(cfg: TransportConfig) -> int:
        _net, a, b, _, _ = _traffic(cfg, 0.0, 7)
        return sum(ep.stats()["acks_sent"] - ep.stats()["acks_carried"] for ep in (a, b))

    off = ack_datagrams(TransportConfig(ack_delay_ms=0.0))
    assert ack_datagrams(CFG) < off


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_both_ways_still_delivers_everything_once_and_completes(seed: int) -> None:
    net, a, b, ha, hb = _traffic(CFG, 0.2, seed)
    for ep, handles, peer in ((a, ha, B), (b, hb, A)):
        outcomes = [e for e in net.events[A if ep is a else B] if isinstance(e, SendDone)]
        assert sorted(e.handle for e in outcomes) == sorted(handles)
        bodies = [d.body for d in delivered(net.events[peer])]
        assert len(bodies) == len(set(bodies)) == 150
    assert a.stats()["acks_carried"] + b.stats()["acks_carried"] > 0
