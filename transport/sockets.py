"""One UDP socket with batched I/O (used by transport.udp; no protocol logic here).

- Buffers raised to `socket_buffer` (SO_RCVBUFFORCE when privileged, else capped by the kernel);
  they absorb bursts but the protocol never relies on them (the window paces sending).
- Linux: IP_MTU_DISCOVER = IP_PMTUDISC_DO (a datagram too big for the path fails with EMSGSIZE
  instead of being fragmented), UDP GSO on send (consecutive datagrams of one size to one address
  leave in one sendmsg; the kernel cuts them into ordinary datagrams, each <= the path MTU) and UDP
  GRO on receive (one recvmsg may return several datagrams with their segment size). Where the
  kernel refuses either, it falls back to one sendto/recvfrom per datagram, for good.
- DATA comes as `frames.DatagramRun`s: header, payload view and trailer per datagram, handed to
  sendmsg as they are (the kernel gathers them), so no datagram is joined in Python.
- Every OSError is counted by the caller (`send` and `recv` return the number) and never raised.
- `recv_errors=True` (Linux): IP_RECVERR (and IPV6_RECVERR on a v6 socket), so the ICMP errors
  that datagrams we sent drew are queued on the socket's error queue with the destination they
  were sent to; `queued_errors()` drains it. A port unreachable (ECONNREFUSED) says that no
  process listens at that address any more: a peer that was killed or crashed while its host
  stays up. With IP_RECVERR the kernel also reports the error once on the socket itself (and
  select() sees the socket readable while the queue is not empty): the next recv raises
  ECONNREFUSED (skipped: the queue tells it), and the next send raises it *without sending*, so
  a send that meets it is made again once. A lost host or a firewall that drops gives no ICMP.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from transport.frames import DatagramRun

Addr = tuple[str, int]
RECV_SIZE = 65536
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65507  # UDP payload limit of one (super-)datagram
_SOL_UDP, _UDP_SEGMENT, _UDP_GRO = 17, 103, 104
_IP_MTU_DISCOVER, _IPV6_MTU_DISCOVER, _PMTUDISC_DO = 10, 23, 2
_SO_RCVBUFFORCE, _SO_SNDBUFFORCE = 33, 32
_NO_GSO = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO}
_GRO_ANC = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_SOL_IP, _IP_RECVERR, _SOL_IPV6, _IPV6_RECVERR = 0, 11, 41, 25
_RECVERR = {(_SOL_IP, _IP_RECVERR), (_SOL_IPV6, _IPV6_RECVERR)}
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err: ee_errno, origin, type, code, ...
_ERR_ANC = 512  # the extended error and the offender's address fit
ERRQUEUE_BATCH = 64  # error-queue entries read per call (the rest keep the socket readable)


def open_socket(bind: Addr, buffer_bytes: int) -> socket.socket:
    """A bound UDP socket with raised buffers and (Linux) path-MTU discovery forced on."""
    family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for force, plain in (
            (_SO_RCVBUFFORCE, socket.SO_RCVBUF),
            (_SO_SNDBUFFORCE, socket.SO_SNDBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, buffer_bytes)
            except OSError:  # not privileged: the kernel caps at rmem_max / wmem_max
                sock.setsockopt(socket.SOL_SOCKET, plain, buffer_bytes)
        if sys.platform.startswith("linux"):
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _PMTUDISC_DO)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _PMTUDISC_DO)
        sock.bind(bind)
    except BaseException:
        sock.close()
        raise
    return sock


def canonical_address(addr: Addr, family: int) -> Addr:
    """(host, port) with the host as the kernel reports it in recvfrom (compressed IP literal;
    names resolved once), so replies from a peer match the address we sent to."""
    host, port = addr[0], int(addr[1])
    try:
        return (ipaddress.ip_address(host).compressed, port)
    except ValueError:
        info = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        return (str(info[0][4][0]), port)


class DatagramSocket:
    """A bound UDP socket; `wrap(sock)` may interpose on sendto/sendmsg/recvfrom/recvmsg
    (fault injection in tests). `batching=False` forces one syscall per datagram."""

    def __init__(self, bind: Addr, buffer_bytes: int, *, wrap: Callable[[Any], Any] | None = None,
                 batching: bool = True, recv_errors: bool = False) -> None:  # fmt: skip
        self.sock = open_socket(bind, buffer_bytes)
        self.family = self.sock.family
        self.io: Any = wrap(self.sock) if wrap is not None else self.sock
        linux = sys.platform.startswith("linux") and batching
        self.gso = linux
        self.gro = False
        if linux:
            try:
                self.sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
                self.gro = True
            except OSError:
                pass
        self.recv_errors = recv_errors and sys.platform.startswith("linux") and self._recverr()

    def _recverr(self) -> bool:
        """Switch IP_RECVERR on (and IPV6_RECVERR on a v6 socket, whose v4-mapped peers'
        errors still come by IP_RECVERR); False if the kernel refuses."""
        opts = [(_SOL_IP, _IP_RECVERR)]
        if self.family == socket.AF_INET6:
            opts.insert(0, (_SOL_IPV6, _IPV6_RECVERR))
        try:
            self.sock.setsockopt(*opts[0], 1)
        except OSError:
            return False
        for opt in opts[1:]:
            try:
                self.sock.setsockopt(*opt, 1)
            except OSError:
                pass
        return True

    @property
    def address(self) -> Addr:
        host, port = self.sock.getsockname()[:2]
        return (host, port)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def buffers(self) -> tuple[int, int]:
        """(SO_RCVBUF, SO_SNDBUF) as the kernel set them."""
        get = self.sock.getsockopt
        return get(socket.SOL_SOCKET, socket.SO_RCVBUF), get(socket.SOL_SOCKET, socket.SO_SNDBUF)

    # ----------------------------------------------------------------- sending
    def send(self, out: Sequence[tuple[Addr, bytes | DatagramRun]]) -> int:
        """Send every datagram (in order); returns the number of OSErrors (those are lost).
        A `DatagramRun` leaves as gathered parts: up to a GSO batch per sendmsg."""
        errors = 0
        n = len(out)
        i = 0
        while i < n:
            addr, first = out[i]
            if not isinstance(first, bytes):
                errors += self._send_run(addr, first)
                i += 1
                continue
            j = self._run_end(out, i) if self.gso else i + 1
            if j - i == 1:
                try:
                    _once_more(self.io.sendto, first, addr)
                except OSError:
                    errors += 1
            else:
                errors += self._send_gso(out, i, j)
            i = j
        return errors

    def _send_run(self, addr: Addr, run: DatagramRun) -> int:
        """The datagrams of `run`, GSO batches of their parts (one datagram per sendmsg where
        the kernel refuses GSO); returns the number of OSErrors."""
        parts, seg, n = run.parts, run.seg, run.count
        if n == 1:  # a one-datagram message (the common control message): one plain call
            try:
                _once_more(self.io.sendmsg, parts, (), 0, addr)
                return 0
            except OSError:
                return 1  # the core resends
        step = min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES // max(seg, 1)) if self.gso else 1
        anc = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", seg))]
        sendmsg = self.io.sendmsg
        errors = 0
        k = 0
        while k < n:
            m = min(step, n - k)
            try:
                _once_more(sendmsg, parts[3 * k : 3 * (k + m)], anc if m > 1 else (), 0, addr)
            except OSError as exc:
                if m > 1 and exc.errno in _NO_GSO:  # GSO refused: one datagram per call
                    self.gso = False
                    step = 1
                    continue
                errors += 1  # ENOBUFS, ENETUNREACH...: the batch is lost, the core resends
            k += m
        return errors

    def _run_end(self, out: Sequence[tuple[Addr, bytes | DatagramRun]], i: int) -> int:
        """End of the run of datagrams from i that can leave in one GSO send: same address,
        same size (the last one may be shorter), within the segment and byte limits (out[i] is
        bytes)."""
        addr, first = out[i]
        size = len(cast(bytes, first))
        limit = min(len(out), i + MAX_GSO_SEGMENTS, i + MAX_GSO_BYTES // max(size, 1))
        j = i + 1
        while j < limit and out[j][0] == addr:
            d = out[j][1]
            if not isinstance(d, bytes):
                break
            n = len(d)
            if n == size:
                j += 1
                continue
            if n < size:
                j += 1
            break
        return j

    def _send_gso(self, out: Sequence[tuple[Addr, bytes | DatagramRun]], i: int, j: int) -> int:
        addr, first = out[i]
        anc = [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", len(cast(bytes, first))))]
        try:
            _once_more(self.io.sendmsg, [d for _, d in out[i:j]], anc, 0, addr)
            return 0
        except OSError as exc:
            if exc.errno not in _NO_GSO:
                return 1  # ENOBUFS, ENETUNREACH...: the whole batch is lost, the core resends
        self.gso = False  # the kernel or path refuses GSO: one datagram per syscall from now on
        return self.send(out[i:j])

    # ----------------------------------------------------------------- receiving
    def recv(self, limit: int) -> tuple[list[tuple[Addr, bytes]], int]:
        """Up to about `limit` datagrams that are already waiting (never blocks) and the number of
        OSErrors met. ECONNREFUSED is not one: with `recv_errors` it is the ICMP error that
        `queued_errors` reads (without, the kernel does not report it on an unconnected socket)."""
        batch: list[tuple[Addr, bytes]] = []
        errors = refusals = 0
        io = self.io
        while len(batch) < limit:
            try:
                if self.gro:
                    data, anc, _flags, addr = io.recvmsg(RECV_SIZE, _GRO_ANC, socket.MSG_DONTWAIT)
                else:
                    data, addr = io.recvfrom(RECV_SIZE, socket.MSG_DONTWAIT)
                    anc = ()
            except BlockingIOError:
                break
            except ConnectionRefusedError:  # IP_RECVERR: an ICMP error, read from the queue
                refusals += 1
                if refusals > limit:
                    break
                continue
            except OSError:
                errors += 1
                if errors > limit:
                    break
                continue
            src = (addr[0], addr[1])
            seg = _segment_size(anc)
            if seg and len(data) > seg:
                batch.extend((src, data[k : k + seg]) for k in range(0, len(data), seg))
            else:
                batch.append((src, data))
        return batch, errors


    def queued_errors(self) -> tuple[list[Addr], int]:
        """Drain (up to ERRQUEUE_BATCH entries, never blocking) the error queue that
        `recv_errors` switched on: (the destinations that answered port unreachable, in order,
        once each; the number of other errors, such as host unreachable or a path MTU too small).
        ([], 0) without `recv_errors`."""
        refused: list[Addr] = []
        other = 0
        if not self.recv_errors:
            return refused, other
        for _ in range(ERRQUEUE_BATCH):
            try:
                _data, anc, _flags, addr = self.sock.recvmsg(
                    1, _ERR_ANC, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                other += 1
                break
            dest = (addr[0], addr[1]) if addr else None
            if _queued_errno(anc) == errno.ECONNREFUSED and dest is not None:
                if dest not in refused:
                    refused.append(dest)
            else:
                other += 1
        return refused, other


def _once_more(send: Callable[..., Any], *args: Any) -> Any:
    """`send(*args)`, made again once if it raised ECONNREFUSED: with IP_RECVERR that is the
    ICMP error an earlier datagram drew, reported instead of sending this one."""
    try:
        return send(*args)
    except ConnectionRefusedError:
        return send(*args)


def _queued_errno(anc: Sequence[tuple[int, int, bytes]]) -> int:
    """ee_errno of the extended error in an error-queue message's ancillary data (0: none)."""
    for level, kind, value in anc:
        if (level, kind) in _RECVERR and len(value) >= _EE.size:
            return int(_EE.unpack_from(value)[0])
    return 0


def _segment_size(anc: Sequence[tuple[int, int, bytes]]) -> int:
    for level, kind, value in anc:
        if level == _SOL_UDP and kind == _UDP_GRO and len(value) >= 2:
            return int.from_bytes(value[:4] if len(value) >= 4 else value[:2], sys.byteorder)
    return 0
