"""Real sockets on 127.0.0.1 (TL-1, TL-2, TL-4) and the Transport handle's contract."""

from __future__ import annotations

import math
import random
import socket
import threading
import time

import psutil
import pykka
import pytest
from udp_kit import CFG, LOCAL, Inbox, start

from benchmarks.localcloud import free_udp_ports
from transport import frames as F
from transport.auth import MemoryEpochStore, PeerAuth
from transport.policy import LossPolicy
from transport.sim import Blob, BlobCodec, Ping
from transport.udp import Delivery, SendError, Transport

pytestmark = pytest.mark.timeout(120)


def sizes(rng: random.Random, n: int, top: int) -> list[int]:
    """Log-uniform sizes in [0, top]: mostly small, a few near `top`; `top` itself included."""
    out = [int(math.exp(rng.uniform(0, math.log(top)))) - 1 for _ in range(n - 1)]
    return [*out, top]


def exchange(a: Transport, b: Transport, per_side: int, top: int, seed: int) -> None:
    """Both directions at once; every message delivered exactly once, bit-exact."""
    rng = random.Random(seed)
    inbox_a, inbox_b = Inbox(), Inbox()
    a.subscribe(inbox_a)
    b.subscribe(inbox_b)
    to_b = [rng.randbytes(n) for n in sizes(rng, per_side, top)]
    to_a = [rng.randbytes(n) for n in sizes(rng, per_side, top)]
    futures = [a.send(b.address, Blob(x), deadline_s=30) for x in to_b]
    futures += [b.send(a.address, Blob(x), deadline_s=30) for x in to_a]
    for f in futures:
        f.get(timeout=90)
    got_b = inbox_b.wait(per_side)
    got_a = inbox_a.wait(per_side)
    assert sorted(d.msg.data for d in got_b) == sorted(to_b)
    assert sorted(d.msg.data for d in got_a) == sorted(to_a)
    assert {d.addr for d in got_b} == {a.address} and {d.addr for d in got_a} == {b.address}
    for t in (a, b):
        s = t.stats()
        assert s["held_bytes"] == 0 and s["pending"] == 0 and s["internal_errors"] == 0


def test_tl1_200_messages_both_ways_at_10_percent_loss(transports: list[Transport]) -> None:
    rss = psutil.Process().memory_info().rss
    a = start(transports, LossPolicy(drop=0.1, seed=1), name="a")
    b = start(transports, LossPolicy(drop=0.1, seed=2), name="b")
    exchange(a, b, per_side=100, top=4_000_000, seed=1)
    assert a.stats()["policy_dropped"] > 0 and b.stats()["policy_dropped"] > 0
    assert a.stats()["retransmits"] > 0
    growth = psutil.Process().memory_info().rss - rss
    assert growth <= CFG.max_reassembly_bytes + 64 * 1024 * 1024


def test_tl2_30_percent_loss_small_and_medium(transports: list[Transport]) -> None:
    a = start(transports, LossPolicy(drop=0.3, seed=3), name="a")
    b = start(transports, LossPolicy(drop=0.3, seed=4), name="b")
    rng = random.Random(2)
    inbox = Inbox()
    b.subscribe(inbox)
    bodies = [rng.randbytes(rng.randrange(1, 1000)) for _ in range(50)]
    bodies += [rng.randbytes(rng.randrange(1, 256 * 1024)) for _ in range(50)]
    futures = [a.send(b.address, Blob(x), deadline_s=30) for x in bodies]
    for f in futures:
        f.get(timeout=60)
    assert sorted(d.msg.data for d in inbox.wait(100)) == sorted(bodies)


def test_tl4_forged_ack_from_another_port_is_not_accepted(transports: list[Transport]) -> None:
    a = start(transports, name="a")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(LOCAL)
    forger.bind(LOCAL)
    silent.settimeout(5)
    try:
        fut = a.send(silent.getsockname(), Ping(b"hello"), deadline_s=1)
        data, _ = silent.recvfrom(65536)
        h, _ = F.parse(F.CrcFramer(), data)
        ack = F.pack(F.CrcFramer(), F.ACK, flags=F.FLAG_COMPLETE, type_code=h.type_code,
                     epoch=h.epoch, msg_id=h.msg_id, frag_index=0, seq=h.seq)  # fmt: skip
        forger.sendto(ack, a.address)
        with pytest.raises(SendError) as err:
            fut.get(timeout=10)
        assert err.value.kind == "unacknowledged"
        assert a.stats()["bad_acks"] >= 1
        fut2 = a.send(silent.getsockname(), Ping(b"again"), deadline_s=10)
        first_id = h.msg_id
        while h.msg_id == first_id:  # skip the first message's retransmissions
            h, _ = F.parse(F.CrcFramer(), silent.recvfrom(65536)[0])
        ack = F.pack(F.CrcFramer(), F.ACK, flags=F.FLAG_COMPLETE, type_code=h.type_code,
                     epoch=h.epoch, msg_id=h.msg_id, frag_index=0, seq=h.seq)  # fmt: skip
        silent.sendto(ack, a.address)  # the same ACK from the right address is accepted
        assert fut2.get(timeout=5) is None
    finally:
        silent.close()
        forger.close()


def _two_peer_addresses() -> dict[int, tuple[str, int]]:
    """Two free loopback ports, as node ids 1 and 2."""
    ports = free_udp_ports(2)
    return {1: ("127.0.0.1", ports[0]), 2: ("127.0.0.1", ports[1])}


def test_peer_sockets_authenticate_and_refuse_strangers(transports: list[Transport]) -> None:
    peers = _two_peer_addresses()
    secret = b"p" * 32
    n1 = Transport.start(
        peers[1], CFG, codec=BlobCodec, auth=PeerAuth(secret, 1, peers, MemoryEpochStore())
    )
    transports.append(n1)
    n2 = Transport.start(
        peers[2], CFG, codec=BlobCodec, auth=PeerAuth(secret, 2, peers, MemoryEpochStore())
    )
    transports.append(n2)
    inbox = Inbox()
    n2.subscribe(inbox)
    assert n1.send(peers[2], Blob(b"x" * 50_000)).get(timeout=10) is None
    assert inbox.wait(1)[0].msg.data == b"x" * 50_000
    stranger = start(transports, name="stranger")  # plain CRC frames from an unknown port
    with pytest.raises(SendError):
        stranger.send(peers[2], Ping(b"let me in"), deadline_s=0.5).get(timeout=5)
    assert n2.stats()["bad_datagrams"] >= 1 and len(inbox.items) == 1


class _OrderedStore(MemoryEpochStore):
    """An epoch store that records when it is written, next to the deliveries."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def put(self, node_id: int, epoch: int) -> None:
        self.log.append(f"put {node_id}")
        super().put(node_id, epoch)


def test_a_peer_epoch_is_on_the_store_before_its_message_is_delivered(
    transports: list[Transport],
) -> None:
    peers = _two_peer_addresses()
    secret = b"p" * 32
    log: list[str] = []
    n1 = Transport.start(
        peers[1], CFG, codec=BlobCodec, auth=PeerAuth(secret, 1, peers, MemoryEpochStore())
    )
    transports.append(n1)
    n2 = Transport.start(
        peers[2], CFG, codec=BlobCodec, auth=PeerAuth(secret, 2, peers, _OrderedStore(log))
    )
    transports.append(n2)
    log.clear()  # n2's own boot epoch
    n2.subscribe(lambda d: log.append("delivered"))
    assert n1.send(peers[2], Blob(b"y" * 10)).get(timeout=10) is None
    deadline = time.monotonic() + 60  # a hang guard
    while "delivered" not in log and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log == ["put 1", "delivered"]  # node 1's epoch was written first, once


def test_subscribe_types_actor_refs_unsubscribe_and_failing_handlers(
    transports: list[Transport],
) -> None:
    a, b = start(transports), start(transports)
    pings, everything = Inbox(), Inbox()

    class Collector(pykka.ThreadingActor):
        def on_receive(self, message: object) -> None:
            everything(message)  # type: ignore[arg-type]

    ref = Collector.start()
    try:
        b.subscribe(pings, (Ping,))
        b.subscribe(ref)

        def broken(d: Delivery) -> None:
            raise RuntimeError("subscriber bug")

        undo = b.subscribe(broken)
        a.send(b.address, Blob(b"bulk")).get(timeout=5)
        a.send(b.address, Ping(b"ping")).get(timeout=5)
        assert [d.msg for d in everything.wait(2)] == [Blob(b"bulk"), Ping(b"ping")]
        assert [d.msg for d in pings.wait(1)] == [Ping(b"ping")]
        assert b.stats()["subscriber_errors"] == 2
        undo()
        a.send(b.address, Ping(b"after")).get(timeout=5)
        everything.wait(3)
        assert b.stats()["subscriber_errors"] == 2
    finally:
        ref.stop()


def test_rejected_sends_and_stop(transports: list[Transport]) -> None:
    a, b = start(transports), start(transports)
    with pytest.raises(SendError) as err:
        a.send(b.address, Ping(b"x" * (64 * 1024 + 1))).get(timeout=5)
    assert err.value.kind == "rejected"
    results: list[SendError | None] = []
    done = threading.Event()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(LOCAL)
    try:

        def on_done(e: SendError | None) -> None:
            results.append(e)
            done.set()

        fut = a.send(silent.getsockname(), Blob(b"never acked"), deadline_s=60, on_done=on_done)
        a.stop()
        with pytest.raises(SendError) as err:
            fut.get(timeout=5)
        assert err.value.kind == "rejected" and done.wait(5)
        assert results[0] is not None and results[0].kind == "rejected"
        with pytest.raises(SendError):
            a.send(b.address, Ping(b"late")).get(timeout=5)
        a.stop()  # idempotent
    finally:
        silent.close()


def test_undecodable_body_is_counted_not_delivered(transports: list[Transport]) -> None:
    a, b = start(transports), start(transports)
    inbox = Inbox()
    b.subscribe(inbox)

    class Bad:
        TYPE = 99

    class LooseCodec(BlobCodec):
        @staticmethod
        def encode(msg: object) -> bytes:
            return b"?"

        @staticmethod
        def max_body(type_code: int, max_message: int) -> int:
            return 100

    c = Transport.start(LOCAL, CFG, codec=LooseCodec, name="loose")
    transports.append(c)
    with pytest.raises(SendError):  # b's codec refuses type 99 before buffering: never acked
        c.send(b.address, Bad(), deadline_s=0.5).get(timeout=5)
    a.send(b.address, Ping(b"fine")).get(timeout=5)
    assert [d.msg for d in inbox.wait(1)] == [Ping(b"fine")]
    assert b.stats()["bad_datagrams"] >= 1


def test_delivery_batch_runs_in_order_and_survives_a_failing_subscriber() -> None:
    """A reader turn hands its messages and send outcomes to the delivery thread as one batch:
    they run in the order they happened, and one failing callback is counted and logged while
    the rest of the batch still runs."""
    from transport import udp

    ran: list[str] = []

    class FakeTransport:
        name = "fake"
        _actor_thread = None
        _ran = 0  # actor messages run (the delivery thread counts them)
        counts: dict[str, int] = {}

        def _deliver(self, items: list[udp._Deliver]) -> None:
            ran.extend(f"deliver {d.parts[0].decode()}" for d in items)

        def _count(self, key: str, n: int = 1) -> None:
            self.counts[key] = self.counts.get(key, 0) + n

    def call(tag: str) -> udp._Call:
        return udp._Call(lambda err: ran.append(f"{tag} {err}"), None)

    def boom(err: SendError | None) -> None:
        raise RuntimeError("subscriber bug")

    fake = FakeTransport()
    ref = udp.TransportActor.start(fake)  # type: ignore[arg-type]
    try:
        items: list[udp._Deliver | udp._Call] = [
            udp._Deliver(("127.0.0.1", 1), 1, [b"a"]), call("done1"), udp._Call(boom, None),
            udp._Deliver(("127.0.0.1", 1), 1, [b"b"]), call("done2"),
        ]
        ref.ask(udp._Batch(items))
        ref.ask(udp._Deliver(("127.0.0.1", 1), 1, [b"c"]))  # a lone one is not wrapped
    finally:
        ref.stop()
    assert ran == ["deliver a", "done1 None", "deliver b", "done2 None", "deliver c"]
    assert fake._ran == 2  # one per actor message, batch or not
    assert fake.counts == {"subscriber_errors": 1}


def test_burst_of_messages_each_delivered_and_each_send_settled(
    transports: list[Transport],
) -> None:
    """Many messages completing in the same reader turns (batched for the delivery thread):
    every one is delivered exactly once and every sender callback runs once."""
    a, b = start(transports), start(transports)
    inbox = Inbox()
    b.subscribe(inbox)
    done: list[SendError | None] = []
    lock = threading.Lock()

    def on_done(err: SendError | None) -> None:
        with lock:
            done.append(err)

    futs = [a.send(b.address, Ping(b"%d" % i), on_done=on_done) for i in range(300)]
    for f in futs:
        f.get(timeout=60)
    got = inbox.wait(300)
    assert sorted(int(d.msg.data) for d in got) == list(range(300))
    deadline = time.monotonic() + 60
    while len(done) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == [None] * 300
