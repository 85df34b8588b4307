"""The real interactive shell in a real terminal (tmux), against a real local cloud (issue 8).

alice encrypts a picture and serves; bob's `python -m shell` runs inside a detached tmux
session (120x40, TERM=xterm-256color, no DISPLAY) and is driven with send-keys through users,
Tab completion, browse, request, view (the picture drawn as true-colour half blocks on the
alternate screen, closed with a key, nothing of it left in the scrollback: issue 17), inbox
and quit. Each step polls `tmux capture-pane` until the expected text is on the screen; the
deadline only bounds a hang, nothing is timed. After quit the pane's process has exited with
status 0 and bob has left the directory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgdata import jpeg_bytes

from benchmarks.localcloud import REPO, Cloud, env, json_lines, stop_shell
from codec import images
from shell.viewer import UPPER_HALF, terminal_art

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

COLS, ROWS = 120, 40
STEP_DEADLINE_S = 30.0  # bounds a hang only; a step normally takes well under a second
PIC_SIZE = 160  # a 160x160 picture: drawn 78 cells wide, 39 rows (fit in 120 x (40-1)*2)
CONF = "set -g remain-on-exit on\nset -g status off\nset -g history-limit 10000\n"
SGR = re.compile(r"\x1b\[([0-9;]*)m")


class Tmux:
    """One tmux server on its own socket (`tmux -L name`), killed by `kill_server`."""

    def __init__(self, conf: Path) -> None:
        self.socket = f"veilshare-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.conf = conf
        self.env = {k: v for k, v in env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.env["TERM"] = "xterm-256color"
        self.env.pop("TMUX", None)

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, "-f", str(self.conf), *args],
                             capture_output=True, text=True, env=self.env, timeout=15,
                             check=False)
        assert out.returncode == 0, f"tmux {args}: {out.stderr}"
        return out.stdout

    def start(self, name: str, command: list[str]) -> None:
        self.run("new-session", "-d", "-s", name, "-x", str(COLS), "-y", str(ROWS), "-c",
                 str(REPO), shlex.join(command))

    def keys(self, target: str, text: str, *special: str) -> None:
        if text:
            self.run("send-keys", "-t", target, "-l", text)
        if special:
            self.run("send-keys", "-t", target, *special)

    def screen(self, target: str, escapes: bool = False, history: bool = True) -> str:
        """The pane's whole history and screen, or the visible screen only (with SGR escapes if
        `escapes`). On the alternate screen the history shown is the normal screen's."""
        return self.run("capture-pane", "-p", "-J", "-t", target,
                        *(["-S", "-", "-E", "-"] if history else []),
                        *(["-e"] if escapes else []))

    def info(self, target: str, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", target, fmt).strip()

    def wait_for(self, target: str, pattern: str) -> str:
        """Poll the pane (history included) until a line matches `pattern` (a regex); the
        screen then. Each pattern below matches only output of the step that waits for it."""
        deadline = time.monotonic() + STEP_DEADLINE_S
        while True:
            text = self.screen(target)
            if re.search(pattern, text, re.MULTILINE):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on the screen:\n{text}")
            time.sleep(0.1)

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       env=self.env, timeout=15, check=False)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    conf = tmp_path / "tmux.conf"
    conf.write_text(CONF)
    t = Tmux(conf)
    try:
        yield t
    finally:
        t.kill_server()


def _serve(cloud: Cloud, user: str, home: Path) -> subprocess.Popen[str]:
    proc = cloud.spawn_shell(user, home, ["--serve"])
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    assert "online" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc


def _cells(line: str) -> list[tuple[str, str]]:
    """(foreground, background) true colours of each half block of one captured line."""
    fg = bg = ""
    cells = []
    for piece in re.split(r"(\x1b\[[0-9;]*m)", line):
        m = SGR.fullmatch(piece)
        if m:
            params = m.group(1)
            if params in ("", "0"):
                fg = bg = ""
            for kind, rgb in re.findall(r"(38|48);2;(\d+;\d+;\d+)", params):
                if kind == "38":
                    fg = rgb
                else:
                    bg = rgb
            continue
        cells += [(fg, bg)] * piece.count(UPPER_HALF)
    return cells


def _art_rows(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if UPPER_HALF in line]


# _TAB_NOTE: a Tab that arrives while the complete-while-typing completion of the same keys
# is still running is dropped by prompt_toolkit (Buffer's completer runs one at a time), so
# the test waits for the menu before pressing Tab, as a person looking at the screen does.
PROMPT = r"^bob> ?$"  # bob's prompt waiting for a line (capture-pane trims the space)


def _step(tmux: Tmux, line: str, *patterns: str) -> str:
    """Type `line` + Enter at bob's prompt, wait for each pattern, then for the next prompt."""
    tmux.keys("bob", line, "Enter")
    for pattern in patterns:
        tmux.wait_for("bob", pattern)
    return tmux.wait_for("bob", PROMPT)


def test_interactive_shell_in_tmux(cloud: Cloud, tmux: Tmux, tmp_path: Path) -> None:
    original = jpeg_bytes(11, PIC_SIZE)
    pic = tmp_path / "pic.jpg"
    pic.write_bytes(original)
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    r = cloud.shell("alice", alice_home, f"encrypt {pic}")
    assert r.returncode == 0, r.stderr
    alice = _serve(cloud, "alice", alice_home)
    try:
        bob = shlex.join(["env", "-u", "DISPLAY", "-u", "WAYLAND_DISPLAY", "TERM=xterm-256color",
                          sys.executable, "-m", "shell", "--user", "bob", "--home", str(bob_home),
                          "--config", str(cloud.config)])
        tmux.start("bob", ["sh", "-c", f'{bob}; echo "shell exited with status $?"'])
        assert tmux.info("bob", "#{window_width}x#{window_height}") == f"{COLS}x{ROWS}"
        tmux.wait_for("bob", r"^Veilshare: you are bob\. Type help")
        tmux.wait_for("bob", PROMPT)
        text = _step(tmux, "users", r"^bob\s+127\.0\.0\.1:\d+$")
        assert re.search(r"^alice\s+127\.0\.0\.1:\d+$", text, re.MULTILINE)
        tmux.keys("bob", "bro")  # as a person would: Tab once the menu shows (see _TAB_NOTE)
        tmux.wait_for("bob", r"^\s+browse\s+fetch USER's previews")
        tmux.keys("bob", "", "Tab")
        tmux.wait_for("bob", r"^bob> browse ?$")
        # the completion ended with a space (issue 17): the user name follows directly
        _step(tmux, "alice", r"^pic\.jpg\s+previews/alice/pic\.jpg\s+\d+$")
        assert (bob_home / "previews/alice/pic.jpg").read_bytes()[:2] == b"\xff\xd8"
        _step(tmux, "request alice pic.jpg 2", r"^alice/pic\.jpg: 2 views -> received/alice/pic\.png$")
        tmux.keys("bob", "view pic.jpg", "Enter")
        tmux.wait_for("bob", r"^alice/pic\.jpg: any key closes the picture")
        assert tmux.info("bob", "#{alternate_on}") == "1"
        _assert_picture_drawn(tmux.screen("bob", escapes=True, history=False), original)
        tmux.keys("bob", "q")
        text = _step(tmux, "", r"^alice/pic\.jpg: 1 view left$")
        assert tmux.info("bob", "#{alternate_on}") == "0"
        assert UPPER_HALF not in tmux.screen("bob")  # nothing of it on the screen or above
        assert "any key closes the picture" not in text and "bob> view pic.jpg" in text
        _step(tmux, "inbox", r"^alice\s+pic\.jpg\s+1 of 2\s+never\s+received/alice/pic\.png$")
        tmux.keys("bob", "quit", "Enter")
        tmux.wait_for("bob", r"^bye$")
        text = tmux.wait_for("bob", r"^shell exited with status \d+$")
        assert re.search(r"^shell exited with status 0$", text, re.MULTILINE)
        assert "Traceback" not in tmux.screen("bob")
    finally:
        stop_shell(alice)
    r = cloud.shell("alice", alice_home, "users")  # bob left the directory when he quit
    assert r.returncode == 0, r.stderr
    assert [u["user"] for u in json_lines(r.stdout)[0]["users"]] == ["alice"]


def _assert_picture_drawn(screen: str, original: bytes) -> None:
    """The (alternate) screen holds the hidden picture as half blocks from its first row: the
    rows and columns the viewer draws for a 120x40 terminal, with the colours of the decoded
    original, and the hint on the last row: the whole picture is visible."""
    expected = terminal_art(images.open_for_view(original, 10**8), columns=COLS, rows=ROWS - 1)
    want = [_cells(line) for line in expected.splitlines()]
    got = [_cells(line) for line in _art_rows(screen)]
    rows = screen.split("\n")
    assert _art_rows(screen) == [line for line in rows[: len(want)]]
    assert "any key closes the picture" in rows[len(want)]
    assert (len(want), len(want[0])) == (ROWS - 1, 78)  # 160x160 fit in 120 x 78 pixels
    assert [len(row) for row in got] == [len(row) for row in want]
    assert got == want
