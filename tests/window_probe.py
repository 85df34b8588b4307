"""Shows the picture bob's client decrypted in the Tk viewer, under the X display in $DISPLAY,
and records what the screen shows; run as a script by tests/test_viewer.py.

It runs in its own process so that Tk and Xlib stay out of pytest's: Xlib ends the process when
its display goes away, and the test stops its Xvfb at the end.

    python tests/window_probe.py HOME OUT

Steps: bob's client (viewkit.offline_borrower, 1 view) views pic.png, a 900x500 `smooth()`
picture; shell.viewer.show_window shows it; once shown, the window's label is captured
(PIL.ImageGrab over XCB) to OUT/shot-0.png, the window is resized to 400x400 and captured again
(OUT/shot-1.png), then Esc is pressed. OUT/seen.json says what happened.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageGrab
from viewkit import offline_borrower

from shell import viewer

RESIZED = (400, 400)


def smooth(width: int = 900, height: int = 500) -> Image.Image:
    """Gradients and a soft pattern, every channel in 40..240 (never black)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    arr = np.stack(
        [40 + 200 * x / width, 40 + 200 * y / height, 140 + 100 * np.sin(x / 37) * np.cos(y / 23)],
        axis=-1,
    )
    return Image.fromarray(np.clip(arr, 40, 240).astype(np.uint8))


def show_and_capture(display: str, picture: Image.Image) -> dict[str, Any]:
    """The steps of the module docstring; returns {"shots": [...], "esc": bool, ...}."""
    seen: dict[str, Any] = {"shots": [], "esc": False, "open_after_esc": False}

    def on_shown(root: Any) -> None:
        root.update_idletasks()
        label = root.winfo_children()[0]
        x, y = label.winfo_rootx(), label.winfo_rooty()
        w, h = label.winfo_width(), label.winfo_height()
        if w <= 1 or h <= 1:
            return  # not laid out yet
        shot = ImageGrab.grab(xdisplay=display).convert("RGB").crop((x, y, x + w, y + h))
        seen["shots"].append(shot)
        if len(seen["shots"]) == 1:
            root.geometry(f"{RESIZED[0]}x{RESIZED[1]}")
        elif (w, h) == RESIZED and not seen["esc"]:
            seen["esc"] = True
            root.focus_force()
            root.update()
            root.event_generate("<KeyPress-Escape>", when="tail")
            root.after(5000, lambda: seen.update(open_after_esc=True))  # Esc did not close it

    viewer.show_window(picture, "alice/pic.png", close_after_ms=15000, on_shown=on_shown)
    return seen


def main(home: Path, out: Path) -> None:
    raw = io.BytesIO()
    smooth().save(raw, "PNG")
    with offline_borrower(home, raw.getvalue(), views=1) as (bob, _png):
        data, picture = bob.sharing.view("pic.png")
    seen = show_and_capture(os.environ["DISPLAY"], picture)
    shots = seen.pop("shots")
    for i, shot in enumerate(shots):
        shot.save(out / f"shot-{i}.png")
    seen.update(
        shown=data["shown"],
        views_left=data["views_left"],
        shots=len(shots),
        same_picture=picture.tobytes() == smooth().tobytes(),
    )
    (out / "seen.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
