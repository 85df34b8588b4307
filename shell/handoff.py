"""One user, two processes: a `-c` client hands its commands to the client already online from
its home, which runs them and sends back what they print (issue 16 item 5).

Only one client per user can be in the directory (the nodes refuse a second live session). So
a client that stays online (`--serve`, or the interactive shell) listens on the home's local
socket (actors.client.local_socket); a `python -m shell --user U -c "..."` of that home connects
to it instead of joining, and prints exactly what it would have printed itself, with the same
exit status.

The exchange, in frames (local_socket):
  caller -> `{"v": 1, "user": U, "script": "CMD; CMD", "json": bool, "cwd": "/abs/folder"}`
  server -> `{"out": "stdout"|"stderr", "text": "..."}` for each printed piece, in order (the
            outcomes of the commands, and the retry notices of their calls, as `-c` prints them)
  server -> `{"exit": 0|1}` last; or `{"refused": "why", "code": "..."}` instead of running
            anything (another user name, a malformed request).
The caller's EOF while its script runs (Ctrl-C) cancels the script: nothing more is sent or
stored for it (as Ctrl-C in the shell). Callers from another uid are refused (SO_PEERCRED).

Rules:
- Relative files (`encrypt cat.png`, globs) are read from the caller's folder (`cwd`).
- `view` is refused in a handed-over command (code `no_terminal`, before a view is taken): the
  picture must be drawn on the caller's terminal, which the running client does not have. The
  message says to run `view` in the running client (its prompt) or to stop it first.
- Commands run one at a time per session (Context.turn): a second caller, or the shell's own
  prompt, waits for the command in progress.
- `quit` ends the handed-over script, not the running client.

Callers: shell.__main__ (forward, start_server), tests/test_handoff.py.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from actors.client import local_socket
from actors.client.errors import HandoffError
from actors.client.scope import CancelScope, current_notices, within
from shell.commands import Context
from shell.script import run_script

log = logging.getLogger(__name__)

VERSION = 1
REQUEST_LIMIT = 1024 * 1024  # a script is a line of commands: far below
EXIT_LOST = 3  # the running client went away before the script ended

__all__ = ["HandoffServer", "forward", "view_refusal"]


def view_refusal(user: str, pid: int) -> str:
    return (f"view draws the picture on your terminal, but {user}'s client already online from "
            f"this home (pid {pid}) runs these commands and has no terminal of yours; run view at "
            "that client's prompt, or stop it and run view again")


class HandoffServer:
    """Accepts callers on `listener` and runs their scripts on contexts made by `make_ctx`
    (the running client's session, its `turn` lock). `user`: the only user name accepted."""

    def __init__(self, listener: local_socket.Listener, user: str,
                 make_ctx: Callable[[Path], Context], cancel: Callable[[CancelScope], None]) -> None:
        self.listener = listener
        self.user = user
        self.make_ctx = make_ctx
        self.cancel = cancel
        self.refused = 0  # callers refused: another uid, another user, a malformed request
        self.served = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="handoff", daemon=True)

    def start(self) -> HandoffServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and remove the socket file (a script in progress finishes)."""
        self._stopping.set()
        try:
            self.listener.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(timeout=5.0)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self.listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.warning("handoff: accept failed", exc_info=True)
                continue
            threading.Thread(target=self._serve_one, args=(conn,), name="handoff-caller",
                             daemon=True).start()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._exchange(conn)
        except (HandoffError, OSError) as exc:
            self.refused += 1
            log.warning("handoff: a caller failed: %s", exc)

    def _exchange(self, conn: socket.socket) -> None:
        pid, uid, _gid = local_socket.peer_credentials(conn)
        if uid != os.getuid():
            self.refused += 1
            log.warning("handoff: refused a caller of uid %d (pid %d)", uid, pid)
            return  # nothing said to another user
        conn.settimeout(10.0)  # the request follows the connection at once
        req = local_socket.read_frame(conn.recv, REQUEST_LIMIT)
        conn.settimeout(None)
        if req is None:
            return
        problem = _request_problem(req, self.user)
        if problem is not None:
            self.refused += 1
            log.warning("handoff: refused pid %d: %s", pid, problem)
            local_socket.write_frame(conn, {"refused": problem, "code": "bad_request"})
            return
        log.info("handoff: pid %d runs %r", pid, req["script"])
        self.served += 1
        self._run(conn, req, pid)

    def _run(self, conn: socket.socket, req: dict[str, Any], pid: int) -> None:
        ctx = self.make_ctx(Path(req["cwd"]))
        scope = CancelScope()
        sending = threading.Lock()
        gone = threading.Event()

        def emit(stream: str, text: str) -> None:
            if gone.is_set():
                return
            try:
                with sending:
                    local_socket.write_frame(conn, {"out": stream, "text": text})
            except OSError:
                gone.set()

        watcher = threading.Thread(target=self._watch, args=(conn, gone, scope, pid),
                                   name="handoff-watch", daemon=True)
        watcher.start()
        token = current_notices.set(lambda text: emit("stderr", text))
        try:
            with within(scope):
                status = run_script(ctx, req["script"], req["json"], emit)
        finally:
            current_notices.reset(token)
        if not gone.is_set():
            with sending:
                local_socket.write_frame(conn, {"exit": status})
        try:
            conn.shutdown(socket.SHUT_RDWR)  # ends the watcher's recv
        except OSError:
            pass
        watcher.join(timeout=5.0)

    def _watch(self, conn: socket.socket, gone: threading.Event, scope: CancelScope,
               pid: int) -> None:
        """The caller sends nothing after its request: EOF means it went away (Ctrl-C)."""
        try:
            data = conn.recv(1)
        except OSError:
            data = b""
        if not data and not gone.is_set() and not scope.cancelled:
            gone.set()
            log.info("handoff: pid %d went away; cancelling its commands", pid)
            self.cancel(scope)


def _request_problem(req: dict[str, Any], user: str) -> str | None:
    if req.get("v") != VERSION:
        return f"unknown request version {req.get('v')!r} (this client speaks {VERSION})"
    if not isinstance(req.get("script"), str) or not isinstance(req.get("json"), bool):
        return "a request needs a script (text) and json (true or false)"
    cwd = req.get("cwd")
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        return "a request needs the caller's folder as an absolute path (cwd)"
    if req.get("user") != user:
        return (f"this home's running client is {user}'s, not {req.get('user')!r}'s: use a "
                "home of your own (--home)")
    return None


def forward(home: Path, user: str, script: str, as_json: bool, *,
            stdout: TextIO | None = None, stderr: TextIO | None = None) -> int | None:
    """Hand `script` to the client running from `home` and print what it sends back; its exit
    status. None when no client runs there (the caller joins by itself). HandoffError when the
    socket is not private to this user. Ctrl-C closes the connection (the script is cancelled)."""
    sock = local_socket.connect(home)
    if sock is None:
        return None
    streams = {"stdout": stdout or sys.stdout, "stderr": stderr or sys.stderr}
    with sock:
        local_socket.write_frame(sock, {"v": VERSION, "user": user, "script": script,
                                        "json": as_json, "cwd": os.getcwd()})
        while True:
            try:
                frame = local_socket.read_frame(sock.recv)
            except (HandoffError, OSError) as exc:
                frame = None
                log.debug("handoff: reading the answer failed: %s", exc)
            if frame is None:
                print(f"veilshare: {user}'s running client stopped before the commands ended",
                      file=streams["stderr"], flush=True)
                return EXIT_LOST
            if "exit" in frame and isinstance(frame["exit"], int):
                return int(frame["exit"])
            if "refused" in frame:
                print(f"veilshare: {user}'s running client refused the commands: "
                      f"{frame['refused']}", file=streams["stderr"], flush=True)
                return 2
            stream = streams.get(str(frame.get("out")))
            if stream is not None and isinstance(frame.get("text"), str):
                print(frame["text"], file=stream, flush=True)
