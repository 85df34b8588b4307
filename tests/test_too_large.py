"""Oversized work is refused at once (issue 15 items 4, 5): the largest image is what a sealed
reply can carry; the client checks before it uploads, the node before it seals, `too_large`."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import pykka
import pytest
from fake_transport import FakeTransport
from node_actor_kit import FakeClock, Recorder

import config
from actors.client.client_session import ClientSession
from actors.client.errors import SessionError
from actors.core.encrypt_flow import EncryptService
from actors.node.base import PeerLink, Wire
from actors.node.encrypt_actor import EncryptFlowActor
from actors.node.signals import ClientIn, ClusterView, Won
from codec import seal
from codec.covers import CoverSet
from codec.messages import EncryptRequest, ErrorReply
from codec.sharecrypt import MAGIC
from config import SealConfig

COVERS = CoverSet()
CFG = SealConfig()


def capacity(w: int, h: int) -> int:
    """Payload bytes a w x h tier holds at CFG's bits."""
    samples = 3 * w * h - seal.HEADER_SAMPLES
    n = samples * CFG.bits_per_channel // 8
    while seal.HEADER_SAMPLES + seal.payload_samples(n, CFG.bits_per_channel) > 3 * w * h:
        n -= 1
    return n


@pytest.mark.parametrize("tier", [(640, 480), (1024, 768), (1600, 1200)])
def test_the_size_bound_holds_at_the_edges_of_a_tier(tier: tuple[int, int]) -> None:
    full = capacity(*tier)
    rng = random.Random(tier[0])
    for n in (full, full + 1, full // 3):  # full, just over (next tier, mostly cover), a third
        payload = rng.randbytes(n)  # ciphertext-like: the payload bits do not compress
        png = seal.seal(payload, cfg=CFG, covers=COVERS)
        assert len(png) <= seal.sealed_size_bound(n, CFG, COVERS), (tier, n, len(png))


def test_the_largest_image_is_the_largest_whose_bound_fits_the_message() -> None:
    for max_message in (256 * 1024, 8 * 2**20, 64 * 2**20):
        limit = seal.max_image_bytes(CFG, max_message, COVERS)
        room = max_message - seal.REPLY_OVERHEAD
        assert 0 < limit < max_message
        assert seal.sealed_size_bound(limit, CFG, COVERS) <= room
        assert seal.sealed_size_bound(limit + 1, CFG, COVERS) > room
    assert seal.max_image_bytes(CFG, 64 * 2**20, COVERS) > 30 * 2**20  # 64 MiB messages: ~31 MiB


def test_the_flow_core_refuses_before_sealing() -> None:
    sent: list[tuple[object, str]] = []
    sealed: list[str] = []
    svc = EncryptService(node_id=1, send_client=lambda addr, msg, rid: sent.append((msg, rid)),
                         send_peers=lambda msg: None, start_election=lambda rid, now: None,
                         cancel_election=lambda rid: None,
                         submit_seal=lambda rid, data: sealed.append(rid),
                         max_pixels=10**8, clock=lambda: 0.0, max_image=1000,
                         send_fetch=lambda addr, msg, rid: sent.append((msg, rid)),
                         send_refusal=lambda addr, msg: sent.append((msg, "")))
    svc.on_request(("127.0.0.1", 9), EncryptRequest(rid="a#1", image="x.png",
                                                    data=MAGIC + bytes(2000), attempt=0), 0.0)
    svc.on_won("a#1")
    ((msg, rid),) = sent
    assert isinstance(msg, ErrorReply) and msg.code == "too_large" and not msg.retryable
    assert "1000 bytes" in msg.message and rid == "a#1"
    assert sealed == []  # nothing sealed, nothing held but the cached request until Done


def test_the_flow_actor_answers_too_large_at_once() -> None:
    cfg = config.load(None)
    cfg = replace(cfg, transport=replace(cfg.transport, max_message=256 * 1024))
    limit = seal.max_image_bytes(cfg.seal, cfg.transport.max_message)
    client = FakeTransport()
    view = ClusterView(version=1, self_up=True, majority=True, up=frozenset({1, 2, 3}),
                       syncing=False, token_holder=1, holding=False, down_since=0.0)
    ref = EncryptFlowActor.start(cfg, 1, client, PeerLink(cfg, 1, FakeTransport()),  # type: ignore[arg-type]
                                 view, clock=FakeClock())
    try:
        ref.ask(Wire({"election": Recorder.start(), "supervisor": Recorder.start()}))
        ref.tell(ClientIn(("127.0.0.1", 9), EncryptRequest(
            rid="a#1", image="x.png", data=MAGIC + bytes(limit), attempt=0)))
        ref.tell(Won("a#1"))
        (err,) = client.wait_msg(ErrorReply)
        assert err.code == "too_large" and f"({limit} bytes)" in err.message
    finally:
        pykka.ActorRegistry.stop_all()


def test_the_client_refuses_before_it_reads_or_sends(tmp_path: Path) -> None:
    cfg = config.load(None)
    cfg = replace(cfg, transport=replace(cfg.transport, max_message=256 * 1024))
    tp = FakeTransport(auto=None)
    session = ClientSession("alice", tmp_path / "home", cfg, transport=tp)  # type: ignore[arg-type]
    try:
        big = tmp_path / "big.png"
        big.write_bytes(os.urandom(session.max_image + 1))
        with pytest.raises(SessionError) as err:
            session.encrypt_file(big)
        assert err.value.code == "too_large" and str(session.max_image) in str(err.value)
        assert tp.sends_of(EncryptRequest) == []
        out = session.encrypt([big])
        assert out.failed[0]["code"] == "too_large" and out.encrypted == []
    finally:
        tp.auto = "fail"
        session.close()
