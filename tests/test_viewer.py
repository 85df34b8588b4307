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
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features
from window_probe import smooth

from benchmarks import localcloud
from shell import viewer

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


def test_show_without_a_display_prints_the_art(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "150")
    monkeypatch.setenv("LINES", "20")
    img = _blocks()
    out = io.StringIO()
    assert viewer.show(img, "alice/pic.png", out=out) == "terminal"
    assert out.getvalue() == viewer.terminal_art(img, columns=120, rows=16) + "\n"
    # at most 120 columns and LINES - 4 = 16 lines: 600x300 becomes 64x32 pixels
    assert _parse(out.getvalue().rstrip("\n")).shape == (32, 64, 3)


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
