"""The viewer (issue 5): terminal rendering without a display, and the Tk window under Xvfb.

The window test starts its own Xvfb (skipped when Xvfb is not installed) and runs
tests/window_probe.py under it: the probe shows the picture bob's client decrypted from a shared
sealed image, takes screenshots with PIL.ImageGrab (X11 through XCB), resizes the window and
presses Esc; this test compares the screenshots with the original scaled independently (box
filter).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image, features
from window_probe import smooth

from actors.client.client_session import ClientSession
from actors.client.errors import SessionError
from benchmarks import localcloud
from benchmarks.terminal import open_pty
from shell import viewer
from shell.commands import Context, run_line

pytestmark = pytest.mark.timeout(60)

CELL = re.compile(r"\x1b\[38;2;(\d+);(\d+);(\d+)m\x1b\[48;2;(\d+);(\d+);(\d+)m\u2580")
BLOCKS = [
    (200, 40, 40),
    (40, 200, 40),
    (40, 40, 200),
    (230, 230, 60),
    (60, 230, 230),
    (230, 60, 230),
    (120, 120, 120),
    (250, 250, 250),
    (90, 50, 20),
    (20, 90, 50),
    (50, 20, 90),
    (170, 110, 60),
]


def _blocks() -> Image.Image:
    """600x300: a 4x3 grid of flat colours, 150x100 each."""
    arr = np.zeros((300, 600, 3), dtype=np.uint8)
    for i, colour in enumerate(BLOCKS):
        row, col = divmod(i, 4)
        arr[row * 100 : (row + 1) * 100, col * 150 : (col + 1) * 150] = colour
    return Image.fromarray(arr)


def _parse(art: str) -> np.ndarray:
    """Half-block art back to pixels: (2 * lines, cells, 3), upper then lower half per line."""
    rows = []
    for line in art.split("\n"):
        assert line.endswith("\x1b[0m")
        cells = CELL.findall(line[: -len("\x1b[0m")])
        assert CELL.sub("", line[: -len("\x1b[0m")]) == ""  # nothing but cells
        rows.append([tuple(map(int, c[:3])) for c in cells])
        rows.append([tuple(map(int, c[3:])) for c in cells])
    return np.array(rows, dtype=np.int64)


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


# ---- terminal rendering (no display) -------------------------------------------------------------
def test_terminal_art_colours_are_the_scaled_picture() -> None:
    img = _blocks()
    got = _parse(viewer.terminal_art(img, columns=60))
    assert got.shape == (30, 60, 3)  # 600x300 -> 60 columns, 30 pixel rows = 15 lines
    box = np.asarray(img.resize((60, 30), Image.Resampling.BOX))
    assert _mean_diff(got, box) < 4
    for i, colour in enumerate(BLOCKS):  # inside each block (15x10 cells) the colour is exact
        row, col = divmod(i, 4)
        inner = got[row * 10 + 3 : row * 10 + 7, col * 15 + 3 : col * 15 + 12]
        assert (inner == colour).all(), (i, colour)


def test_terminal_art_keeps_the_aspect_ratio_within_columns_and_rows() -> None:
    img = smooth(900, 500)
    for columns, rows, size in ((80, 10, (36, 20)), (40, 100, (40, 22)), (200, 200, (200, 112))):
        got = _parse(viewer.terminal_art(img, columns=columns, rows=rows))
        assert (got.shape[1], got.shape[0]) == size
        assert abs(size[0] / size[1] - 1.8) < 0.03
        assert _mean_diff(got, np.asarray(img.resize(size, Image.Resampling.BOX))) < 4
    odd = _parse(viewer.terminal_art(Image.new("RGB", (10, 3), (1, 2, 3)), columns=10))
    assert odd.shape == (4, 10, 3) and (odd == (1, 2, 3)).all()  # odd height: one more row


@pytest.fixture
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)


class Pty:
    """A pseudo-terminal of 150 x 20 for the viewer: `out` (the slave as a text file) is where the
    picture goes; a thread reads what the terminal receives (a terminal's buffer is small: a
    picture blocks its writer until someone reads), `read_until` waits for a marker in it and
    gives it all, "\r\n" turned into "\n"."""

    def __init__(self, columns: int = 150, lines: int = 20) -> None:
        self.master, slave = open_pty(columns, lines)
        self.out = os.fdopen(slave, "w", encoding="utf-8")
        self.seen = b""
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.changed:
                self.seen += chunk
                self.changed.notify_all()

    def read_until(self, marker: str) -> str:
        with self.changed:
            found = self.changed.wait_for(lambda: marker.encode() in self.seen, timeout=30)
            assert found, f"{marker!r} never came: {self.seen[-200:]!r}"
            return self.seen.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        # the reader ends (EIO) once the slave is closed; only then is the master's fd number
        # given back: a reader still running could otherwise read the next test's terminal,
        # whose new pty may get the same number (its typed "x" then never came)
        self.out.close()
        self.reader.join(timeout=30)
        assert not self.reader.is_alive(), "the pty reader did not end"
        os.close(self.master)


@pytest.fixture
def pty() -> Iterator[Pty]:
    t = Pty()
    yield t
    t.close()


def test_where_a_picture_can_go(no_display: None, pty: Pty, monkeypatch: pytest.MonkeyPatch) -> None:
    assert viewer.where(io.StringIO()) is None  # a file: nowhere, the command refuses
    read, write = os.pipe()
    with os.fdopen(read, "rb") as r, os.fdopen(write, "wb") as w:
        assert viewer.where(w) is None and r.readable()  # a pipe: nowhere
    assert viewer.where(None) is None
    assert viewer.where(pty.out) == "terminal"
    monkeypatch.setenv("DISPLAY", ":99")
    assert viewer.where(io.StringIO()) == "window"


def _show(pty: Pty, img: Image.Image, seconds: float) -> threading.Thread:
    t = threading.Thread(target=viewer.show, args=(img, "alice/pic.png"),
                         kwargs={"out": pty.out, "seconds": seconds}, daemon=True)
    t.start()
    return t


def test_the_picture_is_on_the_alternate_screen_fits_and_a_key_ends_it(
    no_display: None, pty: Pty
) -> None:
    img = _blocks()
    mode = termios.tcgetattr(pty.out.fileno())
    shown = _show(pty, img, seconds=3600)  # only the key can end it within the test's timeout
    pty.read_until(viewer.ALT_SCREEN_ON)
    os.write(pty.master, b"q")
    shown.join(30)
    assert not shown.is_alive()
    text = pty.read_until(viewer.ALT_SCREEN_OFF)
    # 150 x 20: at most 120 columns and 19 rows of art, the hint on the 20th line
    art = viewer.terminal_art(img, columns=120, rows=19)
    hint = "alice/pic.png: any key closes the picture (it closes by itself after 3600 s)"
    assert text == viewer.ALT_SCREEN_ON + art + "\n\x1b[0m" + hint + viewer.ALT_SCREEN_OFF
    assert _parse(art).shape == (38, 76, 3) and len(art.splitlines()) == 19
    assert termios.tcgetattr(pty.out.fileno()) == mode  # the terminal's mode is back


def test_ctrl_c_ends_the_view_like_any_key(no_display: None, pty: Pty) -> None:
    shown = _show(pty, _blocks(), seconds=3600)
    pty.read_until(viewer.ALT_SCREEN_ON)
    os.write(pty.master, b"\x03")  # no signal: ISIG is off while the picture is up
    shown.join(30)
    assert not shown.is_alive()
    assert pty.read_until(viewer.ALT_SCREEN_OFF).endswith(viewer.ALT_SCREEN_OFF)


def test_the_picture_closes_by_itself_when_its_time_is_up(no_display: None, pty: Pty) -> None:
    os.write(pty.master, b"x")  # typed ahead (and echoed): dropped, it does not end the view
    pty.read_until("x")
    assert viewer.show(_blocks(), "alice/pic.png", out=pty.out, seconds=0) == "terminal"
    text = pty.read_until(viewer.ALT_SCREEN_OFF)
    assert text.startswith("x" + viewer.ALT_SCREEN_ON) and text.endswith(viewer.ALT_SCREEN_OFF)
    fd = os.open(os.ttyname(pty.out.fileno()), os.O_RDONLY | os.O_NOCTTY)
    try:  # non-canonical, without flushing: anything still pending could be read now
        mode = termios.tcgetattr(fd)
        mode[3] &= ~termios.ICANON
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        assert select.select([fd], [], [], 0)[0] == []  # the "x" was dropped
    finally:
        os.close(fd)


def test_key_wait_counts_time_on_its_clock(pty: Pty) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 0.4
        return now[0]

    with viewer.KeyWait(pty.out.fileno(), clock=clock) as keys:
        os.write(pty.master, b"k")
        assert keys.wait(3600) is True
        assert keys.wait(1.0) is False  # the clock passed 1 s before any key


def test_art_box_leaves_the_last_line_for_the_hint() -> None:
    assert viewer.art_box(150, 20) == (120, 19)
    assert viewer.art_box(60, 30) == (60, 29)
    assert viewer.art_box(0, 0) == (1, 1)


# ---- the window under Xvfb -----------------------------------------------------------------------
@pytest.fixture
def xvfb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An Xvfb server (800x600, 24 bits) on a display number it picks itself; DISPLAY set."""
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    pytest.importorskip("tkinter")
    if not features.check("xcb"):
        pytest.skip("this Pillow has no XCB support: ImageGrab cannot read an X display")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [binary, "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        number = b""
        while not number.endswith(b"\n"):
            chunk = os.read(read_fd, 16)
            assert chunk, f"Xvfb exited ({proc.wait()}) without giving a display number"
            number += chunk
        display = f":{int(number)}"
        monkeypatch.setenv("DISPLAY", display)
        yield display
    finally:
        os.close(read_fd)
        proc.terminate()
        proc.wait(timeout=10)


def test_window_shows_the_hidden_picture_scaled_keeps_its_aspect_and_esc_closes(
    xvfb: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("window_probe.py")),
            str(tmp_path / "bob"),
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=localcloud.env(),
        timeout=50,
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads((out / "seen.json").read_text())
    assert seen == {
        "esc": True,
        "open_after_esc": False,
        "shown": "image",
        "views_left": 0,
        "shots": seen["shots"],
        "same_picture": True,
    }
    original = smooth(900, 500)
    first = Image.open(out / "shot-0.png")
    resized = Image.open(out / f"shot-{seen['shots'] - 1}.png")
    # 800x600 screen: the window opens at most 80 % of it, here 640x356 (900x500 scaled)
    assert first.size == (640, 356)
    expected = original.resize((640, 356), Image.Resampling.BOX)
    assert _mean_diff(np.asarray(first), np.asarray(expected)) < 12
    # 400x400: the picture is 400x222, centred between black bars
    assert resized.size == (400, 400)
    arr = np.asarray(resized).astype(np.int64)
    lit = np.argwhere(arr.sum(axis=-1) > 60)
    (top, left), (bottom, right) = lit.min(axis=0), lit.max(axis=0) + 1
    assert (left, right, top, bottom) == (0, 400, 89, 311)
    assert abs((right - left) / (bottom - top) - 900 / 500) < 0.02
    inner = arr[top:bottom, left:right]
    assert _mean_diff(inner, np.asarray(original.resize((400, 222), Image.Resampling.BOX))) < 12
    assert arr[:top].max() == 0 and arr[bottom:].max() == 0


# ---- the view command: nowhere to show the picture, no view taken ----------------------------------
class _NoView:
    """A session whose view must not be taken."""

    def __init__(self) -> None:
        self.sharing = self
        self.views = 0

    def find_received(self, name: str) -> object:
        if name != "pic.png":
            raise SessionError("no_such_image",
                               f"nothing called {name!r} was shared with you; see: inbox")
        return object()

    def view(self, name: str) -> tuple[dict[str, object], Image.Image]:
        self.views += 1
        data: dict[str, object] = {"owner": "alice", "image": name, "path": "received/alice/p.png",
                                   "views_left": 1, "shown": "image", "width": 600,
                                   "height": 300}
        return data, _blocks()


def test_view_refuses_without_a_terminal_or_display_before_taking_a_view(
    no_display: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = _NoView()
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # `-c "view pic.png" > out.txt`
    out = run_line(Context(cast(ClientSession, session)), "view pic.png")
    assert not out.ok and out.data["code"] == "no_terminal"
    assert out.data == {"error": out.data["error"], "code": "no_terminal"}
    assert "stdout is not a terminal and there is no display" in out.data["error"]
    ctx = Context(cast(ClientSession, session), art_out=sys.stderr)  # --json: stderr captured
    out = run_line(ctx, "view pic.png")
    assert out.data["code"] == "no_terminal" and "stderr is not a terminal" in out.data["error"]
    assert session.views == 0
    assert sys.stdout.getvalue() == ""  # type: ignore[attr-defined]


def test_view_of_a_name_not_in_the_inbox_says_so_even_without_a_terminal(
    no_display: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not "run view in a terminal": the user would, and only then hear the name is wrong."""
    session = _NoView()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    out = run_line(Context(cast(ClientSession, session)), "view zzz.png")
    assert not out.ok and out.data == {
        "error": "nothing called 'zzz.png' was shared with you; see: inbox",
        "code": "no_such_image"}
    assert session.views == 0


def test_view_on_a_terminal_says_1_view_left(no_display: None, pty: Pty) -> None:
    session = _NoView()
    ctx = Context(cast(ClientSession, session), art_out=pty.out, view_seconds=0)
    out = run_line(ctx, "view pic.png")
    assert out.ok and session.views == 1
    assert out.text == "alice/pic.png: 1 view left" and out.data["display"] == "terminal"
    assert pty.read_until(viewer.ALT_SCREEN_OFF).endswith(viewer.ALT_SCREEN_OFF)
