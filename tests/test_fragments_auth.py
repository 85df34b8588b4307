"""Peer-socket authentication (HMAC, configured addresses, replay window, epochs, receiver restart)
and anti-amplification on node client sockets, on the pure core."""

from __future__ import annotations

import random

from config import TransportConfig
from transport import frames as F
from transport.auth import MemoryEpochStore, PeerAuth, PeerGuard, boot_epoch
from transport.endpoint import Endpoint
from transport.sender import Addr, SendDone, SendFailed
from transport.sim import (
    BULK_TYPE,
    CONTROL_TYPE,
    Bernoulli,
    Impairment,
    Net,
    delivered,
    fake_max_body,
    settle,
)

CFG = TransportConfig()
SECRET = b"k" * 32
N1 = ("127.0.0.1", 47201)
N2 = ("127.0.0.1", 47202)
OTHER = ("127.0.0.1", 47299)
PEERS = {1: N1, 2: N2}
WALL = [1_700_000_000_000]


def peer(node: int, store: MemoryEpochStore, seed: int = 0) -> Endpoint:
    guard = PeerGuard(PeerAuth(SECRET, node, PEERS, store), lambda: WALL[0])
    epoch = boot_epoch(store, node, WALL[0])
    return Endpoint(CFG, epoch=epoch, rng=random.Random(seed), max_body=fake_max_body, guard=guard)


def peers() -> tuple[Net, Endpoint, Endpoint, list[bytes]]:
    net = Net(random.Random(1))
    a = net.add(N1, peer(1, MemoryEpochStore()))
    b = net.add(N2, peer(2, MemoryEpochStore()))
    wire: list[bytes] = []
    net.tap = lambda src, dst, d: wire.append(d) if src == N1 else None
    return net, a, b, wire


def send(net: Net, ep: Endpoint, body: bytes) -> SendDone | SendFailed:
    h = ep.send(N2, BULK_TYPE, body, net.now)
    out = settle(net, N1, [h])[h]
    assert isinstance(out, (SendDone, SendFailed))
    return out


def test_peer_exchange_and_datagrams_fit_1472() -> None:
    net, a, _b, wire = peers()
    body = random.Random(1).randbytes(100_000)
    assert isinstance(send(net, a, body), SendDone)
    assert [d.body for d in delivered(net.events[N2])] == [body]
    assert max(len(d) for d in wire) == 1472


def test_bad_missing_or_foreign_tags_and_unconfigured_senders_dropped() -> None:
    net, a, b, wire = peers()
    send(net, a, b"hello")
    good = wire[0]
    other_key = F.HmacFramer(F.derive_peer_key(b"x" * 32))
    h, payload = F.parse(a.framer, good)
    forged = [
        good[:-16],  # tag missing
        good[:-1],  # tag truncated
        good[:-16] + bytes(16),  # tag zero
        F.pack(F.CrcFramer(), **h._asdict(), payload=payload),  # a CRC, no tag
        F.pack(other_key, **h._asdict(), payload=payload),  # the wrong key
    ]
    before = b.stats()
    for d in forged:
        net.inject(N1, N2, d)
    net.inject(OTHER, N2, good)  # valid tag, unconfigured port
    wrong_id = F.pack(a.framer, **{**h._asdict(), "sender": 3, "msg_id": 77}, payload=payload)
    net.inject(N1, N2, wrong_id)  # valid tag, node id not at that address
    net.run()
    s = b.stats()
    assert s["bad_datagrams"] - before["bad_datagrams"] == len(forged) + 2
    assert s["unknown_sender"] - before["unknown_sender"] == 2
    assert len(delivered(net.events[N2])) == 1


def test_replay_same_epoch_after_delivery_is_not_redelivered() -> None:
    net, a, b, wire = peers()
    send(net, a, b"once")
    for d in list(wire):
        net.inject(N1, N2, d)
    net.run()
    assert [d.body for d in delivered(net.events[N2])] == [b"once"]
    assert b.stats()["duplicates"] >= 1


def test_older_epoch_refused_after_sender_restart() -> None:
    store1 = MemoryEpochStore()
    net = Net(random.Random(1))
    a = net.add(N1, peer(1, store1))
    b = net.add(N2, peer(2, MemoryEpochStore()))
    wire: list[bytes] = []
    net.tap = lambda src, dst, d: wire.append(d) if src == N1 else None
    h = a.send(N2, BULK_TYPE, b"old life", 0.0)
    settle(net, N1, [h])
    old = list(wire)
    a2 = net.add(N1, peer(1, store1, seed=5))  # node 1 restarts: higher epoch
    assert a2.epoch > a.epoch
    h2 = a2.send(N2, BULK_TYPE, b"new life", net.now)
    assert settle(net, N1, [h2]) == {h2: SendDone(h2)}
    for d in old:
        net.inject(N1, N2, d)
    net.run()
    assert [d.body for d in delivered(net.events[N2])] == [b"old life", b"new life"]
    assert b.stats()["dropped_replay"] == len(old)


def test_receiver_restart_rejects_current_epoch_and_sender_moves_on() -> None:
    store2 = MemoryEpochStore()
    net = Net(random.Random(1))
    a = net.add(N1, peer(1, MemoryEpochStore()))
    net.add(N2, peer(2, store2))
    wire: list[bytes] = []
    net.tap = lambda src, dst, d: wire.append(d) if src == N1 else None
    h = a.send(N2, BULK_TYPE, b"before restart", 0.0)
    settle(net, N1, [h])
    captured = list(wire)
    assert [d.body for d in delivered(net.events[N2])] == [b"before restart"]
    b2 = net.add(N2, peer(2, store2, seed=9))  # node 2 restarts, its windows are gone
    for d in captured:  # an attacker replays node 1's datagrams into the fresh node 2
        net.inject(N1, N2, d)
    net.run()
    assert delivered(net.events[N2]) == []  # (events of the restarted node only)
    assert b2.stats()["rejects_sent"] == len(captured) and a.stats()["epoch_rotations"] == 1
    h2 = a.send(N2, BULK_TYPE, b"after restart", net.now)
    assert settle(net, N1, [h2]) == {h2: SendDone(h2)}
    assert [d.body for d in delivered(net.events[N2])] == [b"after restart"]


def test_in_flight_message_to_restarted_peer_fails_then_resend_succeeds() -> None:
    store2 = MemoryEpochStore()
    net = Net(random.Random(1))
    a = net.add(N1, peer(1, MemoryEpochStore()))
    net.add(N2, peer(2, store2))
    send(net, a, b"first")
    net.add(N2, peer(2, store2, seed=3))
    out = send(net, a, b"during restart")
    assert isinstance(out, SendFailed) and out.kind == "unacknowledged"
    assert isinstance(send(net, a, b"again"), SendDone)
    assert [d.body for d in delivered(net.events[N2])] == [b"again"]


def test_epoch_far_in_the_future_refused() -> None:
    net, a, b, _ = peers()
    d = F.pack(a.framer, F.DATA, sender=1, type_code=BULK_TYPE, epoch=WALL[0] + 31_000, msg_id=1,
               frag_size=1400, block_size=32, total=1, payload=b"x")  # fmt: skip
    net.inject(N1, N2, d)
    net.run()
    assert b.stats()["dropped_epoch"] == 1 and delivered(net.events[N2]) == []


# ---------------------------------------------------------------- anti-amplification
NODE = ("127.0.0.1", 47101)
CLIENT = ("127.0.0.1", 50000)
VICTIM = ("127.0.0.1", 50001)


def amp_net() -> tuple[Net, Endpoint, Endpoint, dict[tuple[Addr, Addr], int], list[str]]:
    net = Net(random.Random(2))
    node = net.add(NODE, Endpoint(CFG, epoch=1, rng=random.Random(3), max_body=fake_max_body,
                                  validate_addresses=True))  # fmt: skip
    client = net.add(CLIENT, Endpoint(CFG, epoch=2, rng=random.Random(4), max_body=fake_max_body))
    net.add(VICTIM, Endpoint(CFG, epoch=3, rng=random.Random(5), max_body=fake_max_body))
    sent: dict[tuple[Addr, Addr], int] = {}
    breaches: list[str] = []

    def tap(src: Addr, dst: Addr, d: bytes) -> None:
        sent[(src, dst)] = sent.get((src, dst), 0) + len(d)
        if (
            src == NODE
            and dst not in node._validated
            and sent[(NODE, dst)] > 3 * sent.get((dst, NODE), 0)
        ):
            breaches.append(f"{dst}: {sent[(NODE, dst)]} > 3 x {sent.get((dst, NODE), 0)}")

    net.tap = tap
    return net, node, client, sent, breaches


def test_honest_client_gets_a_large_reply_after_echoing_the_nonce() -> None:
    net, node, client, _sent, breaches = amp_net()
    hc = client.send(NODE, CONTROL_TYPE, b"q" * 100, 0.0)
    settle(net, CLIENT, [hc])
    reply = random.Random(7).randbytes(300_000)
    hn = node.send(CLIENT, BULK_TYPE, reply, net.now)
    assert settle(net, NODE, [hn]) == {hn: SendDone(hn)}
    assert [d.body for d in delivered(net.events[CLIENT])] == [reply]
    assert breaches == []


def test_spoofed_requests_cannot_make_the_node_flood_a_victim() -> None:
    net, node, _client, sent, breaches = amp_net()
    forged_nonce = 12345
    for i in range(20):  # the attacker sends requests "from" the victim
        d = F.pack(F.CrcFramer(), F.DATA, flags=F.FLAG_ACK_NOW, type_code=CONTROL_TYPE, epoch=9,
                   msg_id=i + 1, frag_size=1400, block_size=32, total=100, nonce=forged_nonce,
                   payload=b"r" * 100)  # fmt: skip
        net.inject(VICTIM, NODE, d)
        forged_echo = F.pack(F.CrcFramer(), F.ECHO, echo=forged_nonce)
        net.inject(VICTIM, NODE, forged_echo)  # guessing does not validate
    net.run(max_time=1.0)
    hn = node.send(VICTIM, BULK_TYPE, bytes(1_000_000), net.now, deadline_s=5.0)
    out = settle(net, NODE, [hn])[hn]
    assert isinstance(out, SendFailed) and out.kind == "undelivered"
    assert breaches == []
    assert VICTIM not in node._validated
    assert sent[(NODE, VICTIM)] <= 3 * sent[(VICTIM, NODE)]


def test_a_reply_cut_short_by_the_budget_still_completes() -> None:
    """The client never heard the node while its request went out (the node's datagrams were
    lost), so nothing it sent echoes the node's nonce; the reply is larger than 3x the request.
    The fragments that fit the budget end with one that asks for an ACK, and DATA leaves room for
    a PROBE: the client's answer validates its address, and the reply completes (before, for
    some sizes, neither side spoke again until the send deadline)."""
    for size in range(300, 8000, 300):
        net, node, client, _sent, breaches = amp_net()
        net.impair(NODE, CLIENT, Impairment(loss=Bernoulli(1.0)))
        hc = client.send(NODE, CONTROL_TYPE, b"q" * size, 0.0, deadline_s=0.3)
        settle(net, CLIENT, [hc])
        del net.impairments[(NODE, CLIENT)]
        assert [len(d.body) for d in delivered(net.events[NODE])] == [size]
        reply = random.Random(size).randbytes(40_000)
        hn = node.send(CLIENT, BULK_TYPE, reply, net.now, deadline_s=3.0)
        assert settle(net, NODE, [hn]) == {hn: SendDone(hn)}, size
        assert [d.body for d in delivered(net.events[CLIENT])] == [reply]
        assert breaches == []
