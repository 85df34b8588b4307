"""DATA as gathered parts (`frames.DatagramRun`): the core hands the socket layer header, payload
view and trailer per datagram, and `DatagramSocket` sends them without joining (GSO where the
kernel takes it, one sendmsg per datagram where it refuses). The datagrams on the wire must be
exactly those the joined path builds."""

from __future__ import annotations

import errno
import random
import socket
from typing import Any

import pytest

from config import TransportConfig
from transport import frames as F
from transport.auth import MemoryEpochStore, PeerAuth, PeerGuard
from transport.endpoint import Endpoint
from transport.sim import BULK_TYPE, fake_max_body
from transport.sockets import DatagramSocket

CFG = TransportConfig()
FS = CFG.fragment_size
A, B = ("127.0.0.1", 47301), ("127.0.0.1", 47302)


def endpoint(kind: str) -> Endpoint:
    if kind == "client":
        return Endpoint(CFG, epoch=7, rng=random.Random(1), max_body=fake_max_body)
    auth = PeerAuth(secret=b"s" * 32, self_id=1, peers={1: A, 2: B},
                    epoch_store=MemoryEpochStore())  # fmt: skip
    return Endpoint(CFG, epoch=7, rng=random.Random(1), max_body=fake_max_body,
                    guard=PeerGuard(auth, lambda: 1_000))  # fmt: skip


def runs_of(ep: Endpoint, now: float) -> list[F.DatagramRun]:
    out = ep.gathered_to_send(now)
    assert all(isinstance(d, F.DatagramRun) for _, d in out)
    return [d for _, d in out]  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["client", "peer"])
@pytest.mark.parametrize("size", [0, 1, FS - 1, FS, FS + 1, 40 * FS + 7, 64 * FS])
def test_gathered_datagrams_equal_the_joined_ones(kind: str, size: int) -> None:
    body = random.Random(size).randbytes(size)
    joined, gathered = endpoint(kind), endpoint(kind)
    joined.send(B, BULK_TYPE, body, 0.0)
    gathered.send(B, BULK_TYPE, body, 0.0)
    expected = [d for _, d in joined.datagrams_to_send(0.0)]
    runs = runs_of(gathered, 0.0)
    assert [d for r in runs for d in r.datagrams()] == expected
    for r in runs:  # the GSO rule: every datagram `seg` bytes but the last, never longer
        sizes = [len(d) for d in r.datagrams()]
        assert all(n == r.seg for n in sizes[:-1]) and sizes[-1] <= r.seg
        assert r.nbytes == sum(sizes) and r.count == len(sizes)
    assert gathered.stats()["bytes_out"] == joined.stats()["bytes_out"] == sum(map(len, expected))
    assert gathered.stats()["datagrams_out"] == len(expected)


def test_a_short_last_fragment_ends_its_run() -> None:
    """Retransmissions come in the order they were declared lost: the short last fragment may
    come before full ones, and a GSO send allows a short datagram only at its end."""
    ep = endpoint("client")
    ep.send(B, BULK_TYPE, bytes(39 * FS + 10), 0.0)
    assert sum(r.count for r in runs_of(ep, 0.0)) == 40
    out = next(iter(ep.sender._outs.values()))
    ep._emit(out, [39, 5, 6], 100, [0, 0, F.FLAG_ACK_NOW])
    short, full = runs_of(ep, 0.0)
    assert (short.count, short.seg, short.nbytes) == (1, ep.overhead + 10, ep.overhead + 10)
    assert (full.count, full.seg) == (2, ep.overhead + FS)
    indices = [F.parse(ep.framer, d)[0].frag_index for r in (short, full) for d in r.datagrams()]
    assert indices == [39, 5, 6]


class _NoGso:
    """Wraps a socket: sendmsg with ancillary data fails as a kernel without UDP GSO would."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendmsg(self, buffers: Any, anc: Any = (), *args: Any) -> int:
        self.calls.append(len(anc))
        if anc:
            raise OSError(errno.EIO, "no GSO here")
        return self._sock.sendmsg(buffers, anc, *args)


@pytest.mark.parametrize("mode", ["gso", "no batching", "kernel refuses gso"])
def test_a_run_arrives_as_the_same_datagrams(mode: str) -> None:
    wrap: list[_NoGso] = []

    def wrapper(sock: socket.socket) -> Any:
        wrap.append(_NoGso(sock))
        return wrap[0]

    tx = DatagramSocket(("127.0.0.1", 0), 1 << 22, batching=mode != "no batching",
                        wrap=wrapper if mode == "kernel refuses gso" else None)  # fmt: skip
    rx = DatagramSocket(("127.0.0.1", 0), 1 << 22, batching=False)
    try:
        ep = endpoint("client")
        ep.send(rx.address, BULK_TYPE, random.Random(5).randbytes(100 * FS + 3), 0.0)
        out = ep.gathered_to_send(0.0)
        expected = [d for _, r in out for d in r.datagrams()]  # type: ignore[union-attr]
        assert tx.send(out) == 0
        got: list[bytes] = []
        rx.sock.settimeout(2.0)
        while len(got) < len(expected):
            got.append(rx.sock.recv(65536))
        assert got == expected
        if mode == "kernel refuses gso":
            assert not tx.gso and wrap[0].calls[0] > 0 and wrap[0].calls[-1] == 0
    finally:
        tx.close()
        rx.close()


class _RefusedOnce:
    """A socket whose next send raises ECONNREFUSED without sending: the kernel's report of an
    ICMP port unreachable an earlier datagram (maybe to another address) drew (IP_RECVERR)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.refuse = 1
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _maybe_refuse(self) -> None:
        self.calls += 1
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, "queued port unreachable")

    def sendmsg(self, *args: Any) -> int:
        self._maybe_refuse()
        return self._sock.sendmsg(*args)

    def sendto(self, *args: Any) -> int:
        self._maybe_refuse()
        return self._sock.sendto(*args)


@pytest.mark.parametrize("size", [FS // 2, 3 * FS])
def test_a_queued_port_unreachable_does_not_eat_the_next_message(size: int) -> None:
    """The error another datagram drew is reported instead of sending the next one: that one is
    sent again at once (not an RTO later), a one-datagram message as any other."""
    wrapped: list[_RefusedOnce] = []

    def wrapper(sock: socket.socket) -> Any:
        wrapped.append(_RefusedOnce(sock))
        return wrapped[0]

    tx = DatagramSocket(("127.0.0.1", 0), 1 << 22, wrap=wrapper)
    rx = DatagramSocket(("127.0.0.1", 0), 1 << 22, batching=False)
    try:
        ep = endpoint("client")
        ep.send(rx.address, BULK_TYPE, random.Random(6).randbytes(size), 0.0)
        out = ep.gathered_to_send(0.0)
        expected = [d for _, r in out for d in r.datagrams()]  # type: ignore[union-attr]
        assert tx.send(out) == 0
        rx.sock.settimeout(2.0)
        got = [rx.sock.recv(65536) for _ in expected]
        assert got == expected and wrapped[0].refuse == 0
    finally:
        tx.close()
        rx.close()
