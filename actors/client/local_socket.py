"""The local socket of a client home: how a second process of the same user reaches the running one.

A client that stays online (`--serve`, or the interactive shell) listens on `<home>/run/client.sock`
(AF_UNIX, stream). A later `-c` process of the same home finds it, hands its commands over and
prints what comes back (shell.handoff). This module is the socket and its wire format only:

- Paths and permissions: `run/` is created 0700 and the socket chmod-ed 0600 right after bind
  (the 0700 folder already keeps everybody else out while it is created). Both must belong to this
  process's uid, be of the right type, and give nothing to group or others: anything else is
  refused (`HandoffError`, code `not_private`), never used or removed. The listener checks each
  caller's uid with SO_PEERCRED as well.
- Stale socket: a socket file nobody listens on (its process died) refuses connections
  (ECONNREFUSED); `connect` and `listen` remove it (once checked to be ours) and go on.
- Long homes: AF_UNIX paths end at 107 bytes; a longer one is reached through
  `/proc/self/fd/N/client.sock`, N an open descriptor of `run/` (Linux).
- Frames: a 4-byte big-endian length, then that many bytes of a UTF-8 JSON object; at most
  `MAX_FRAME` bytes. A frame that is too long, not UTF-8, not JSON or not an object is the peer's
  fault (`HandoffError`, code `bad_frame`); EOF between frames is `None`, EOF inside one an error.

Callers: shell.handoff (server and forwarding client), tests/test_handoff.py.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actors.client.errors import HandoffError

RUN_DIR = "run"
SOCKET_NAME = "client.sock"
MAX_FRAME = 16 * 1024 * 1024  # a reply of a command (a table of every grant) stays far below
MAX_SUN_PATH = 107
_HEADER = struct.Struct(">I")

__all__ = ["MAX_FRAME", "HandoffError", "Listener", "check_private", "connect", "decode_body",
           "encode_frame", "listen", "peer_credentials", "read_frame", "socket_path",
           "write_frame"]


def socket_path(home: Path) -> Path:
    return Path(home) / RUN_DIR / SOCKET_NAME


# ---- frames ---------------------------------------------------------------------------------------
def encode_frame(obj: dict[str, Any]) -> bytes:
    """One frame: length, then the compact JSON of `obj`. Raises HandoffError past MAX_FRAME."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise HandoffError("too_large", f"a frame of {len(body)} bytes is over {MAX_FRAME}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """The object of one frame's body; HandoffError(bad_frame) for anything but a JSON object."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HandoffError("bad_frame", f"a frame that is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HandoffError("bad_frame", f"a frame that is not an object: {type(obj).__name__}")
    return obj


def read_frame(recv: Callable[[int], bytes], limit: int = MAX_FRAME) -> dict[str, Any] | None:
    """Read one frame with `recv` (socket.recv). None on EOF before its first byte."""
    header = _read_exact(recv, _HEADER.size, at_start=True)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > limit:  # checked before anything is allocated for it
        raise HandoffError("bad_frame", f"a frame of {size} bytes is over the limit of {limit}")
    body = _read_exact(recv, size, at_start=False)
    assert body is not None
    return decode_body(body)


def write_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(encode_frame(obj))


def _read_exact(recv: Callable[[int], bytes], n: int, *, at_start: bool) -> bytes | None:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = recv(min(n - got, 65536))
        if not chunk:
            if at_start and got == 0:
                return None
            raise HandoffError("bad_frame", f"the connection ended inside a frame ({got} of {n} "
                                            "bytes)")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# ---- permissions ------------------------------------------------------------------------------------
def check_private(path: Path, *, kind: str, uid: int | None = None) -> os.stat_result:
    """lstat `path` and refuse (HandoffError not_private) unless it is a `kind` ("dir" or
    "socket") owned by `uid` (this process's by default) with no group or other permission."""
    uid = os.getuid() if uid is None else uid
    st = os.lstat(path)
    is_kind = stat.S_ISDIR(st.st_mode) if kind == "dir" else stat.S_ISSOCK(st.st_mode)
    if not is_kind:
        raise HandoffError("not_private", f"{path} is not a {kind}; remove it")
    if st.st_uid != uid:
        raise HandoffError("not_private", f"{path} belongs to uid {st.st_uid}, not to you "
                                          f"(uid {uid}): refusing to use it")
    if st.st_mode & 0o077:
        raise HandoffError("not_private", f"{path} is open to others (mode "
                                          f"{stat.S_IMODE(st.st_mode):04o}); it must be private")
    return st


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected AF_UNIX socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


@contextmanager
def _address(path: Path) -> Iterator[str]:
    """An AF_UNIX address for `path`, through /proc/self/fd when the path is too long."""
    if len(os.fsencode(str(path))) <= MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _remove_stale(path: Path) -> None:
    check_private(path, kind="socket")
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def connect(home: Path, *, timeout_s: float = 5.0) -> socket.socket | None:
    """A connection to the client running from `home`, or None when none runs there (no socket
    file, or a stale one, which is removed). Raises HandoffError when the folder or socket is
    not private to this uid."""
    path = socket_path(home)
    try:
        check_private(path.parent, kind="dir")
        check_private(path, kind="socket")
    except FileNotFoundError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        with _address(path) as addr:
            sock.connect(addr)
    except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
        sock.close()
        _remove_stale(path)
        return None
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


class Listener:
    """The bound, listening socket of `home` (`listen` makes it); `close` removes the file if it
    is still the one this listener bound."""

    def __init__(self, sock: socket.socket, path: Path, inode: int) -> None:
        self.sock = sock
        self.path = path
        self._inode = inode

    def accept(self) -> socket.socket:
        conn, _addr = self.sock.accept()
        return conn

    def close(self) -> None:
        try:
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self.sock.close()


def listen(home: Path, backlog: int = 8) -> Listener:
    """Bind `<home>/run/client.sock` (run/ 0700, the socket 0600), removing a stale socket file.
    HandoffError: `busy` when a live process already listens there, `not_private` when the
    folder or file is not this uid's and private."""
    path = socket_path(home)
    try:
        path.parent.mkdir(mode=0o700)
    except FileExistsError:
        pass
    check_private(path.parent, kind="dir")
    if os.path.lexists(path):
        live = connect(home)  # removes a stale one
        if live is not None:
            live.close()
            raise HandoffError("busy", f"another client already listens on {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _address(path) as addr:
            sock.bind(addr)
        os.chmod(path, 0o600)
        sock.listen(backlog)
        inode = os.lstat(path).st_ino
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise HandoffError("busy", f"another client took {path} meanwhile") from None
        raise
    return Listener(sock, path, inode)
