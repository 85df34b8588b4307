"""Wire-level tools for the security and fuzz tests: real frames built with `transport.frames`
and `codec.messages`, a packet recorder and a raw sender for namespace hosts.

- `frame(...)`: one DATA datagram carrying a whole message (<= one fragment), sealed with any
  framer (CRC for client sockets, HMAC with the right or a wrong key for peer sockets).
- `Capture`: an AF_PACKET socket on a host's `eth0` that keeps every IPv4 packet arriving at or
  leaving that host; `flow(...)` picks the UDP packets of one flow (the recorder of TS-2), and
  `segments` splits a UDP GSO buffer into its datagrams. Replays are rebuilt with `udp_packet`
  (a recorded packet's UDP checksum may be the partial one a veth leaves to the receiver).
- `Spoofer`: an IPPROTO_RAW socket that sends hand-built (or recorded) IPv4/UDP packets with any
  source address, e.g. a replay that looks like it comes from a configured peer.
Callers: tests/net/test_security.py, tests/net/fuzz.py.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from codec import messages
from transport import frames as F
from transport.errors import FrameError

from .hosts import Host

ETH_P_IP = 0x0800
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
Addr = tuple[str, int]


def frame(framer: F.Framer, msg: messages.Message, *, sender: int = 0, epoch: int = 1,
          msg_id: int = 1, nonce: int = 0, seq: int = 0) -> bytes:  # fmt: skip
    """One DATA datagram holding all of `msg` (its body must fit one 1400-byte fragment)."""
    body = messages.encode(msg)
    if len(body) > 1400:
        raise ValueError(f"{type(msg).__name__} body of {len(body)} bytes needs fragments")
    return F.pack(framer, F.DATA, flags=F.FLAG_ACK_NOW, sender=sender, type_code=msg.TYPE,
                  epoch=epoch, msg_id=msg_id, frag_index=0, frag_size=1400, block_size=32,
                  total=len(body), seq=seq, nonce=nonce, payload=body)  # fmt: skip


@dataclass(frozen=True)
class Packet:
    """One recorded IPv4/UDP packet: addresses, the UDP payload, and the whole IP packet."""

    src: Addr
    dst: Addr
    payload: bytes
    raw: bytes


def parse_udp(pkt: bytes) -> Packet | None:
    """The UDP packet in an IPv4 packet (None for other protocols or fragments)."""
    if len(pkt) < 28 or pkt[0] >> 4 != 4 or pkt[9] != socket.IPPROTO_UDP:
        return None
    if struct.unpack_from("!H", pkt, 6)[0] & 0x3FFF:  # a fragment (MF or offset)
        return None
    ihl = (pkt[0] & 0x0F) * 4
    total = struct.unpack_from("!H", pkt, 2)[0]
    sport, dport, length = struct.unpack_from("!HHH", pkt, ihl)
    src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
    payload = pkt[ihl + 8 : ihl + length]
    return Packet((src, sport), (dst, dport), payload, pkt[:total])


class Capture:
    """Every IPv4 packet seen on `host`'s eth0 from now on (kept in the socket buffer, 16 MiB,
    until `packets()` drains it)."""

    def __init__(self, host: Host) -> None:
        self.sock = host.raw_socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.bind((host.dev, ETH_P_IP))
        self.sock.setblocking(False)
        self.seen: list[Packet] = []

    def packets(self) -> list[Packet]:
        """Drain what arrived since the last call; returns every UDP packet so far."""
        while True:
            try:
                pkt = self.sock.recv(65535)
            except BlockingIOError:
                return self.seen
            p = parse_udp(pkt)
            if p is not None:
                self.seen.append(p)

    def flow(self, src: Addr, dst: Addr) -> list[Packet]:
        """The recorded packets from `src` to `dst` (in arrival order)."""
        return [p for p in self.packets() if p.src == src and p.dst == dst]


def segments(framer: F.Framer, payload: bytes) -> list[bytes]:
    """The datagrams in a recorded UDP payload. A sender using UDP GSO hands the kernel one
    buffer of equal-size segments (the last may be shorter), and over veth the receiving host
    sees that buffer whole; the segment size is the shortest prefix whose trailer checks.
    FrameError if no prefix does."""
    if framer.check(payload):
        return [payload]
    for size in range(F.HEADER_SIZE + framer.trailer, len(payload)):
        if framer.check(payload[:size]):
            return [payload[i : i + size] for i in range(0, len(payload), size)]
    raise FrameError("no datagram in this payload checks")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_packet(src: Addr, dst: Addr, payload: bytes) -> bytes:
    """An IPv4 packet (don't fragment, TTL 64) carrying one UDP datagram from `src` to `dst`."""
    length = 8 + len(payload)
    s, d = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp = struct.pack("!HHHH", src[1], dst[1], length, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, 64,
                       socket.IPPROTO_UDP, 0, s, d)  # fmt: skip
    return head[:10] + struct.pack("!H", _checksum(head)) + head[12:] + udp


class Spoofer:
    """Sends whole IPv4 packets from `host` (IPPROTO_RAW: the kernel takes our header as is)."""

    def __init__(self, host: Host) -> None:
        self.sock = host.raw_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, packet: bytes) -> None:
        self.sock.sendto(packet, (socket.inet_ntoa(packet[16:20]), 0))

    def send_udp(self, src: Addr, dst: Addr, payload: bytes) -> None:
        self.send(udp_packet(src, dst, payload))
