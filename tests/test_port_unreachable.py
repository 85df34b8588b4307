"""A killed peer's port answers "port unreachable" (issue 19, failover): the socket's ICMP error
queue (IP_RECVERR) on real sockets on loopback, and the transport's `on_refused` event.

Each test sends to a port nobody listens on (bound, then closed), as peers see a SIGKILLed
node whose host is up.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from config import TransportConfig
from transport.sim import BlobCodec, Ping
from transport.sockets import DatagramSocket
from transport.udp import Transport

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux")]
WAIT_S = 10.0  # a generous ceiling for one loopback ICMP on a busy machine


def closed_port(host: str) -> tuple[str, int]:
    """An address on `host` where nothing listens any more."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    addr = s.getsockname()[:2]
    s.close()
    return (addr[0], addr[1])


def readable(sock: DatagramSocket, timeout: float) -> bool:
    return bool(select.select([sock.fileno()], [], [], timeout)[0])


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def sockets() -> Iterator[list[DatagramSocket]]:
    opened: list[DatagramSocket] = []
    yield opened
    for s in opened:
        s.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_error_queue_names_the_closed_destination_and_the_socket_does_not_stay_readable(
        sockets: list[DatagramSocket], host: str) -> None:
    if host == "::1" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this host")
    sock = DatagramSocket((host, 0), 1 << 20, recv_errors=True)
    sockets.append(sock)
    assert sock.recv_errors
    dead = closed_port(host)
    assert sock.send([(dead, b"hello")]) == 0
    assert readable(sock, WAIT_S)  # POLLERR: the error queue holds the ICMP error
    batch, errors = sock.recv(16)  # a plain recv meets ECONNREFUSED: neither data nor an error
    assert (batch, errors) == ([], 0)
    assert sock.queued_errors() == ([dead], 0)
    assert not readable(sock, 0.0)  # drained: a select() loop does not spin on it
    assert sock.queued_errors() == ([], 0)


def test_a_send_that_meets_the_reported_error_is_made_again(
        sockets: list[DatagramSocket]) -> None:
    """With IP_RECVERR the kernel reports the ICMP error once more on the next send, and does
    not send that datagram: it must leave all the same, to a live peer."""
    sock = DatagramSocket(("127.0.0.1", 0), 1 << 20, recv_errors=True)
    live = DatagramSocket(("127.0.0.1", 0), 1 << 20)
    sockets += [sock, live]
    dead = closed_port("127.0.0.1")
    sock.send([(dead, b"to the dead")])
    assert readable(sock, WAIT_S)  # the ICMP error is back (and pending on the socket)
    assert sock.send([(live.address, b"to the living")]) == 0
    assert readable(live, WAIT_S)
    assert live.recv(4)[0] == [(sock.address, b"to the living")]
    assert sock.queued_errors() == ([dead], 0)


def test_without_recv_errors_nothing_is_queued(sockets: list[DatagramSocket]) -> None:
    sock = DatagramSocket(("127.0.0.1", 0), 1 << 20)
    sockets.append(sock)
    assert not sock.recv_errors
    sock.send([(closed_port("127.0.0.1"), b"hello")])
    assert sock.queued_errors() == ([], 0)


def test_the_transport_reports_a_refused_peer_and_keeps_serving_the_others() -> None:
    cfg = TransportConfig()
    a = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec,  # type: ignore[arg-type]
                        recv_errors=True, policy=None)
    b = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec)  # type: ignore[arg-type]
    refused: list[tuple[str, int]] = []
    got = threading.Event()

    def on_refused(addr: tuple[str, int]) -> None:
        refused.append(addr)
        got.set()

    try:
        a.on_refused(on_refused)
        dead = closed_port("127.0.0.1")
        a.send(dead, Ping(b"anyone?"), deadline_s=30.0)
        assert got.wait(WAIT_S), a.stats()
        assert set(refused) == {dead}
        assert a.stats()["refused"] >= 1 and a.stats()["oserrors"] == 0
        a.send(b.address, Ping(b"still here")).get(timeout=WAIT_S)  # acknowledged by b
    finally:
        a.stop()
        b.stop()
