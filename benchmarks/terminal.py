"""Run a client with one output stream on a pseudo-terminal, as a person at a terminal would.

`view` draws the picture only on a terminal (issue 17), so tests and benchmarks that take views
run the shell with the picture's stream on a pty: stderr with `--json` (stdout stays a pipe for
the JSON), stdout otherwise. Each time the picture opens (the alternate screen is switched on)
a key is pressed on the terminal, as a person closing it would; nothing waits on a clock.

`run_on_terminal` returns a CompletedProcess[str] like subprocess.run(..., text=True), the
terminal's bytes decoded with "\\r\\n" turned back into "\\n". Callers: benchmarks.localcloud
(Cloud.shell), tests/net/netcloud.py, tests/viewkit.py.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

ALT_SCREEN_ON = b"\x1b[?1049h"
Popen = Callable[..., "subprocess.Popen[bytes]"]


def open_pty(columns: int = 80, lines: int = 24) -> tuple[int, int]:
    """(master, slave) of a new pseudo-terminal of `columns` x `lines`."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    return master, slave


def run_on_terminal(cmd: list[str], *, on: str = "stdout", env: dict[str, str] | None = None,
                    cwd: str | None = None, timeout: float = 120, columns: int = 80,
                    lines: int = 24, key: bytes = b"q",
                    popen: Popen | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cmd` with `on` ("stdout" or "stderr") on a pty, the other stream on a pipe, stdin
    from /dev/null; press `key` on the terminal each time a picture opens. `popen(cmd, **kw)`
    starts the process (default subprocess.Popen). Kills it after `timeout` seconds."""
    if on not in ("stdout", "stderr"):
        raise ValueError(f"on must be stdout or stderr, not {on!r}")
    master, slave = open_pty(columns, lines)
    other = "stderr" if on == "stdout" else "stdout"
    kw: dict[str, Any] = {on: slave, other: subprocess.PIPE, "stdin": subprocess.DEVNULL,
                          "env": env, "cwd": cwd}
    try:
        proc = (popen or subprocess.Popen)(cmd, **kw)
    finally:
        os.close(slave)
    piped: list[bytes] = []
    pipe = proc.stdout if on == "stderr" else proc.stderr
    assert pipe is not None
    reader = threading.Thread(target=lambda: piped.append(pipe.read()), daemon=True)
    reader.start()
    try:
        seen = _read_terminal(master, key, time.monotonic() + timeout)
        proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(master)
    reader.join(timeout)
    term = seen.decode("utf-8", "replace").replace("\r\n", "\n")
    rest = (piped[0] if piped else b"").decode("utf-8", "replace")
    out, err = (term, rest) if on == "stdout" else (rest, term)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _read_terminal(master: int, key: bytes, deadline: float) -> bytes:
    """Everything written to the terminal until every writer closed it; `key` pressed after
    each ALT_SCREEN_ON. TimeoutError past `deadline`."""
    data = bytearray()
    pressed = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired("terminal", 0)
        ready, _, _ = select.select([master], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
        while data.count(ALT_SCREEN_ON) > pressed:
            os.write(master, key)
            pressed += 1
