"""Receiver limits and bad input (TP-6, R6, R7): everything dropped and counted before
allocating, held bytes under the cap after every datagram, nothing raised."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from config import TransportConfig
from transport import frames as F
from transport.endpoint import Delivered, Endpoint
from transport.sim import BULK_TYPE, CONTROL_LIMIT, CONTROL_TYPE, fake_max_body

CFG = TransportConfig()
FS, BS = CFG.fragment_size, CFG.block_size
SRC = ("10.0.0.1", 4001)
CRC = F.CrcFramer()


def receiver(cfg: TransportConfig = CFG) -> Endpoint:
    return Endpoint(cfg, epoch=5, rng=random.Random(0), max_body=fake_max_body)


def frag(msg_id: int, index: int, total: int, payload: bytes, **kw: int) -> bytes:
    fields = {"type_code": BULK_TYPE, "epoch": 1, "frag_size": FS, "block_size": BS}
    fields.update(kw)
    return F.pack(
        CRC, F.DATA, msg_id=msg_id, frag_index=index, total=total, payload=payload, **fields
    )


def feed(ep: Endpoint, datagrams: list[bytes], src: tuple[str, int] = SRC, now: float = 0.0,
         cap: int | None = None) -> list[Delivered]:  # fmt: skip
    got: list[Delivered] = []
    for d in datagrams:
        ep.datagram_received(src, d, now)
        ep.datagrams_to_send(now)
        assert ep.receiver.held_bytes <= (cap or ep.cfg.max_reassembly_bytes)
        got += [e for e in ep.pop_events() if isinstance(e, Delivered)]
    return got


def test_flood_of_10000_partials_from_one_sender() -> None:
    ep = receiver()
    feed(ep, [frag(i, 0, FS + 1, b"a" * FS) for i in range(1, 10_001)])
    s = ep.stats()
    assert s["partials"] == CFG.max_partial_per_sender == 64
    assert s["dropped_limit"] == 10_000 - 64
    assert s["bad_datagrams"] == 0
    # another sender is not starved by the first one
    feed(ep, [frag(1, 0, FS + 1, b"b" * FS)], src=("10.0.0.2", 4001))
    assert ep.stats()["partials"] == 65


def test_totals_over_the_limits_refused_before_buffering() -> None:
    ep = receiver()
    feed(ep, [frag(1, 0, CFG.max_message + 1, b"a" * FS),
              frag(2, 0, CONTROL_LIMIT + 1, b"a" * FS, type_code=CONTROL_TYPE)])  # fmt: skip
    s = ep.stats()
    assert s["dropped_limit"] == 2 and s["held_bytes"] == 0 and s["partials"] == 0


def test_malformed_fragments_counted_as_bad() -> None:
    ep = receiver()
    bad = [
        frag(1, 0, 10, b"x" * 10, type_code=99),  # unknown type
        frag(2, 2, 2 * FS, b"x" * FS),  # index past count
        frag(3, 0, 2 * FS, b"x" * (FS - 1)),  # short payload
        frag(4, 1, FS + 5, b"x" * 6),  # last fragment too long
        frag(5, 0, 100, b"x" * 63, frag_size=63),  # fragment size below the minimum
        frag(6, 0, 10, b"x" * 10, block_size=0),
        frag(7, 0, 10, b"x" * 10, block_size=513),
    ]
    assert feed(ep, bad) == []
    s = ep.stats()
    assert s["bad_datagrams"] == len(bad) and s["held_bytes"] == 0 and s["partials"] == 0


def test_conflicting_totals_drop_the_message_and_count() -> None:
    ep = receiver()
    feed(ep, [frag(1, 0, 3 * FS, b"x" * FS)])
    assert ep.stats()["partials"] == 1
    feed(ep, [frag(1, 1, 4 * FS, b"x" * FS)])
    s = ep.stats()
    assert s["conflicts"] == 1 and s["bad_datagrams"] == 1
    assert s["partials"] == 0 and s["held_bytes"] == 0
    feed(ep, [frag(2, 0, 3 * FS, b"x" * FS), frag(2, 1, 3 * FS, b"x" * FS, type_code=CONTROL_TYPE)])
    assert ep.stats()["conflicts"] == 2


def test_reassembly_cap_holds_after_every_datagram() -> None:
    cfg = dataclasses.replace(CFG, max_reassembly_bytes=200_000, max_message=150_000)
    ep = receiver(cfg)
    rng = random.Random(1)
    datagrams = []
    for i in range(1, 301):
        sender_msg = rng.randrange(1, 40)
        datagrams.append(frag(sender_msg, rng.randrange(0, 100), 100 * FS, b"z" * FS))
    srcs = [(f"10.0.0.{rng.randrange(1, 5)}", 4000) for _ in datagrams]
    for d, s in zip(datagrams, srcs):
        feed(ep, [d], src=s, cap=200_000)
    assert ep.stats()["dropped_limit"] > 0
    assert ep.stats()["held_bytes"] <= 200_000


def test_idle_partial_freed_at_timeout_within_one_tick() -> None:
    ep = receiver()
    feed(ep, [frag(1, 0, 2 * FS, b"x" * FS)], now=10.0)
    idle = CFG.partial_idle_s
    assert ep.next_deadline() == 10.0 + idle
    ep.datagrams_to_send(10.0 + idle - 0.001)
    assert ep.stats()["partials"] == 1
    ep.datagrams_to_send(10.0 + idle)
    s = ep.stats()
    assert s["partials"] == 0 and s["expired"] == 1 and s["held_bytes"] == 0
    assert ep.next_deadline() is None


def test_random_and_truncated_datagrams_all_counted() -> None:
    ep = receiver()
    rng = random.Random(2)
    junk = [rng.randbytes(rng.randrange(0, 1500)) for _ in range(3000)]
    good = frag(1, 0, 10, b"0123456789")
    junk += [good[:n] for n in range(len(good))]  # every truncation
    assert feed(ep, junk) == []
    assert ep.stats()["bad_datagrams"] == len(junk)
    assert feed(ep, [good])[0].body == b"0123456789"


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    kind=st.sampled_from([F.DATA, F.ACK, F.PROBE, F.ECHO, F.REJECT]),
    flags=st.integers(0, 255),
    type_code=st.sampled_from([0, BULK_TYPE, CONTROL_TYPE, 65535]),
    msg_id=st.integers(0, 3),
    frag_index=st.sampled_from([0, 1, 2, 1000, 2**32 - 1]),
    frag_size=st.sampled_from([0, 1, 63, 64, 65, FS, 65535]),
    block_size=st.sampled_from([0, 1, 32, 512, 513, 65535]),
    total=st.sampled_from([0, 1, 64, FS, FS + 1, 2**26, 2**26 + 1, 2**64 - 1]),
    payload=st.binary(max_size=200),
)
def test_valid_crc_random_fields_never_raise(**fields: object) -> None:
    ep = receiver()
    ep.send(SRC, BULK_TYPE, b"q" * 3000, 0.0)
    ep.datagrams_to_send(0.0)
    kind = fields.pop("kind")
    d = F.pack(CRC, kind, epoch=1, **fields)  # type: ignore[arg-type]
    for _ in range(2):
        ep.datagram_received(SRC, d, 0.001)
        ep.datagrams_to_send(0.001)
    assert ep.receiver.held_bytes <= CFG.max_reassembly_bytes
    assert ep.stats()["partials"] <= 1
