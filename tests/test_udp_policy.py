"""The seeded loss policy (spec strings, environment, gate) and the socket batching helpers."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from transport.policy import ENV, LossPolicy, PolicyFile, PolicyGate
from transport.sockets import MAX_GSO_SEGMENTS, DatagramSocket, _segment_size

A = ("127.0.0.1", 1)


def test_spec_round_trip_and_env() -> None:
    spec = "drop=0,dup=0,delay_ms=20,jitter_ms=5,reorder=0.1,seed=1"  # the netns fixture's form
    p = LossPolicy.parse(spec)
    assert p == LossPolicy(delay_ms=20, jitter_ms=5, reorder=0.1, seed=1)
    assert LossPolicy.parse(p.spec()) == p
    assert LossPolicy.from_env({ENV: spec}) == p
    assert LossPolicy.from_env({}) is None and LossPolicy.from_env({ENV: " "}) is None


@pytest.mark.parametrize(
    "spec", ["drop=2", "nope=1", "drop", "drop=x", "delay_ms=5,jitter_ms=10", "delay_ms=-1"]
)
def test_bad_specs_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        LossPolicy.parse(spec)


def test_gate_is_seeded_and_counts_exactly() -> None:
    def run() -> tuple[list[tuple[float, bytes]], dict[str, int]]:
        gate = PolicyGate(LossPolicy(drop=0.2, dup=0.1, corrupt=0.1, reorder=0.2, delay_ms=2,
                                     jitter_ms=1, seed=7))  # fmt: skip
        out: list[tuple[float, bytes]] = []
        for i in range(2000):
            now = i * 0.0001
            out += [(now, d) for _, d in gate.admit(A, i.to_bytes(4, "big"), now)]
            out += [(now, d) for _, d in gate.due(now)]
        out += [(1.0, d) for _, d in gate.due(1.0)]
        return out, gate.counts

    first, counts = run()
    assert run() == (first, counts)  # same seed, same schedule
    assert len(first) == 2000 - counts["policy_dropped"] + counts["policy_duplicated"]
    assert counts["policy_delayed"] == len(first)  # every copy was held back (delay 1..3 ms)
    assert 300 < counts["policy_dropped"] < 500
    intact = sum(1 for _, d in first if int.from_bytes(d, "big") < 2000)
    assert len(first) - intact <= counts["policy_corrupted"]


def test_gate_without_delay_delivers_at_once() -> None:
    gate = PolicyGate(LossPolicy(seed=1))
    assert gate.admit(A, b"x", 0.0) == [(A, b"x")] and gate.next_time() is None


def test_gate_policy_changes_keep_what_is_held_back() -> None:
    gate = PolicyGate(LossPolicy(delay_ms=10))
    assert gate.admit(A, b"late", 0.0) == []
    gate.set_policy(LossPolicy(drop=1.0))
    assert gate.admit(A, b"dropped", 0.001) == [] and gate.counts["policy_dropped"] == 1
    gate.set_policy(LossPolicy())
    assert gate.admit(A, b"now", 0.002) == [(A, b"now")]
    assert gate.due(0.0105) == [(A, b"late")]  # held by the first policy, out on time


def test_policy_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "peer-policy"
    pf = PolicyFile(str(path), every_s=0.1)
    assert pf.poll(0.0) == (False, None)  # missing: no impairment, nothing changed
    path.write_text("drop=0.5,seed=3\n")
    assert pf.poll(0.05) == (False, None)  # not looked at before every_s
    assert pf.poll(0.15) == (True, LossPolicy(drop=0.5, seed=3))
    assert pf.poll(0.3) == (False, None)
    path.write_text("delay_ms=75,jitter_ms=50")
    assert pf.poll(0.45) == (True, LossPolicy(delay_ms=75, jitter_ms=50))
    path.write_text("")
    assert pf.poll(0.6) == (True, None)
    path.write_text("drop=7")
    with pytest.raises(ValueError, match="drop"):
        pf.poll(0.75)


def test_transport_policy_switched_while_running() -> None:
    from config import TransportConfig
    from transport.sim import Blob, BlobCodec
    from transport.udp import SendError, Transport

    cfg = TransportConfig()
    a = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec)
    b = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec)
    got: list[bytes] = []
    b.subscribe(lambda d: got.append(d.msg.data))
    try:
        b.set_policy(LossPolicy(drop=1.0))
        with pytest.raises(SendError):
            a.send(b.address, Blob(b"x" * 5000), deadline_s=0.5).get(timeout=10)
        assert got == [] and b.stats()["policy_dropped"] > 0
        b.set_policy(None)
        assert a.send(b.address, Blob(b"y" * 5000), deadline_s=5).get(timeout=10) is None
        deadline = time.monotonic() + 60  # delivered on b's delivery thread, after the ACK (a hang guard)
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [b"y" * 5000]
    finally:
        a.stop()
        b.stop()


def test_gso_runs_group_same_address_and_size_with_a_shorter_last() -> None:
    s = DatagramSocket(("127.0.0.1", 0), 65536)
    try:
        b = ("127.0.0.1", 2)
        out = [(A, b"x" * 100)] * 3 + [(A, b"y" * 40), (A, b"z" * 100), (b, b"x" * 100)]
        assert s._run_end(out, 0) == 4  # three full ones and the shorter last
        assert s._run_end(out, 4) == 5  # address changes
        many = [(A, b"x" * 10)] * 100
        assert s._run_end(many, 0) == MAX_GSO_SEGMENTS
        big = [(A, b"x" * 30000)] * 5
        assert s._run_end(big, 0) == 2  # at most 65507 bytes in one send
    finally:
        s.close()


def test_gro_segment_size_from_control_message() -> None:
    assert _segment_size([(17, 104, (1460).to_bytes(4, sys.byteorder))]) == 1460
    assert _segment_size([]) == 0
    assert _segment_size([(socket.SOL_SOCKET, 1, b"\x00\x00\x00\x00")]) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_MTU_DISCOVER is Linux-only")
def test_sockets_forbid_ip_fragmentation_and_raise_buffers() -> None:
    s = DatagramSocket(("127.0.0.1", 0), 1 << 20)
    try:
        assert s.sock.getsockopt(socket.IPPROTO_IP, 10) == 2  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
        rcv, snd = s.buffers()
        assert rcv >= 1 << 20 and snd >= 1 << 20  # the kernel reports twice the request
        with pytest.raises(OSError):  # too big for one IPv4 datagram: refused, never fragmented
            s.sock.sendto(b"x" * 70000, ("127.0.0.1", 9))
    finally:
        s.close()
