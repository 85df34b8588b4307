"""Loopback fragments (transport.loopback_fragment_size): a loopback destination gets the larger
fragments, any other the 1500-byte-MTU size, the window keeps its bytes, receivers take each
message's own size, and the embedded default config turns it on. Pure core on the fake network,
then real sockets on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

import config
from config import ConfigError, TransportConfig
from tests.udp_kit import Inbox
from transport import frames as F
from transport.endpoint import Endpoint
from transport.sender import SendDone, is_loopback
from transport.sim import (
    BULK_TYPE,
    Bernoulli,
    Blob,
    BlobCodec,
    Impairment,
    Net,
    delivered,
    fake_max_body,
    outcomes,
    settle,
)
from transport.udp import Transport

LO_A, LO_B = ("127.0.0.1", 4001), ("127.0.0.2", 4002)
FAR = ("10.0.0.3", 4003)
CFG = TransportConfig(fragment_size=1000, loopback_fragment_size=9000)


def _net(seed: int, cfg: TransportConfig = CFG) -> tuple[Net, dict[tuple[str, int], list[F.Header]]]:
    """Three endpoints (two on loopback, one far); the DATA headers each destination got."""
    net = Net(random.Random(seed))
    for i, addr in enumerate((LO_A, LO_B, FAR)):
        net.add(addr, Endpoint(cfg, epoch=1000 * (i + 1), rng=random.Random(seed + i),
                               max_body=fake_max_body))  # fmt: skip
    seen: dict[tuple[str, int], list[F.Header]] = {LO_A: [], LO_B: [], FAR: []}

    def tap(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> None:
        h, _ = F.parse(net.endpoints[dst].framer, data)
        if h.kind == F.DATA:
            seen[dst].append(h)

    net.tap = tap
    return net, seen


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.2", False), ("::ffff:10.0.0.1", False), ("fe80::1", False),
    ("localhost", False), ("", False),
])  # fmt: skip
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize("loss", [0.0, 0.2])
def test_loopback_destination_gets_large_fragments_far_one_the_mtu_size(loss: float) -> None:
    net, seen = _net(seed=int(loss * 10) + 1)
    for dst in (LO_B, FAR):
        net.impair(LO_A, dst, Impairment(loss=Bernoulli(loss)))
        net.impair(dst, LO_A, Impairment(loss=Bernoulli(loss)))
    a = net.endpoints[LO_A]
    body = random.Random(7).randbytes(100_000)
    handles = [a.send(LO_B, BULK_TYPE, body, net.now), a.send(FAR, BULK_TYPE, body, net.now)]
    assert settle(net, LO_A, handles) == {h: SendDone(h) for h in handles}
    net.run()
    for dst in (LO_B, FAR):
        got = delivered(net.events[dst])
        assert [(d.addr, d.body) for d in got] == [(LO_A, body)]
    assert {h.frag_size for h in seen[LO_B]} == {9000}
    assert {h.frag_size for h in seen[FAR]} == {1000}
    # first transmissions: one per fragment of each size
    assert len({h.frag_index for h in seen[LO_B]}) == -(-len(body) // 9000)
    assert len({h.frag_index for h in seen[FAR]}) == -(-len(body) // 1000)


def test_window_keeps_its_bytes_on_loopback_and_at_least_a_block() -> None:
    cfg = dataclasses.replace(CFG, block_size=2, window_blocks=16)  # 32 fragments of 1000 B
    net, seen = _net(seed=3, cfg=cfg)
    a = net.endpoints[LO_A]
    a.send(LO_B, BULK_TYPE, bytes(2_000_000), net.now)
    a.send(FAR, BULK_TYPE, bytes(2_000_000), net.now)
    net.flush()  # the first burst, before any ACK: exactly the window of each destination
    assert len(seen[FAR]) == 32
    assert len(seen[LO_B]) == 32 * 1000 // 9000  # 3: the same bytes in flight
    tiny = dataclasses.replace(cfg, window_blocks=1, loopback_fragment_size=60_000)
    net, seen = _net(seed=4, cfg=tiny)
    net.endpoints[LO_A].send(LO_B, BULK_TYPE, bytes(2_000_000), net.now)
    net.flush()
    assert len(seen[LO_B]) == 2  # never below one block


def test_off_by_default_in_code_loopback_gets_fragment_size() -> None:
    net, seen = _net(seed=5, cfg=TransportConfig(fragment_size=1000))
    a = net.endpoints[LO_A]
    h = a.send(LO_B, BULK_TYPE, bytes(5000), net.now)
    assert settle(net, LO_A, [h]) == {h: SendDone(h)}
    assert {x.frag_size for x in seen[LO_B]} == {1000}


def test_progress_counts_bytes_of_the_message_fragment_size() -> None:
    net, _ = _net(seed=6)
    dropped: list[int] = []

    def cut(now: float, data: bytes) -> bool:  # the last fragment's first transmission is lost
        h, _ = F.parse(net.endpoints[LO_B].framer, data)
        if h.kind == F.DATA and h.frag_index == 2 and not dropped:
            dropped.append(h.seq)
            return True
        return False

    net.impair(LO_A, LO_B, Impairment(cut=cut))
    a = net.endpoints[LO_A]
    h = a.send(LO_B, BULK_TYPE, bytes(20_000), net.now)
    assert a.sender.progress() == (0, 20_000)
    seen = set()
    while a.sender.progress()[1]:
        seen.add(a.sender.progress()[0])
        assert net.step()
    # acknowledged fragments count 9000 bytes each (the loopback size), the last one its rest
    assert dropped and seen == {0, 18000}  # 2 of 3 acknowledged, then the resent last one
    assert outcomes(net.events[LO_A]) == {h: SendDone(h)}


def test_config_range_and_embedded_default(tmp_path: Path) -> None:
    base = config.DEFAULT_PATH.read_text()
    for bad in (1, 63, 65001, -1):
        p = tmp_path / f"bad{bad}.toml"
        p.write_text(base.replace("loopback_fragment_size = 32768", f"loopback_fragment_size = {bad}"))
        with pytest.raises(ConfigError, match="loopback_fragment_size"):
            config.load(p)
    embedded = config.load(config.DEFAULT_PATH)
    assert embedded.transport.loopback_fragment_size > embedded.transport.fragment_size
    assert all(is_loopback(n.host) for n in embedded.nodes)  # it is a loopback cloud
    assert TransportConfig().loopback_fragment_size == 0  # multi-host configs: off


def test_real_sockets_large_message_in_few_datagrams(transports: list[Transport]) -> None:
    cfg = TransportConfig(loopback_fragment_size=30_000)
    a = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec, name="a")
    transports.append(a)
    b = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec, name="b")
    transports.append(b)
    inbox = Inbox()
    b.subscribe(inbox)
    data = random.Random(9).randbytes(600_000)
    a.send(b.address, Blob(data), deadline_s=30).get(timeout=60)
    got = inbox.wait(1)
    assert [d.msg.data for d in got] == [data]
    sent = a.stats()["data_sent"]
    assert -(-len(data) // 30_000) <= sent < -(-len(data) // cfg.fragment_size)
