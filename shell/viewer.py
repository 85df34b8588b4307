"""Showing a picture: a Tk window when a display exists, true-colour half blocks otherwise.

The picture comes from memory (a PIL image decoded from the unsealed payload) and is never
written to disk, not even to a temp file: Tk gets the pixels through ImageTk.PhotoImage.
The window keeps the aspect ratio when resized; Esc or closing the window ends the view.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
from PIL import Image

UPPER_HALF = "\u2580"


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with `size`'s aspect ratio inside `box` (at least 1x1)."""
    w, h = size
    bw, bh = box
    scale = min(bw / w, bh / h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def terminal_art(img: Image.Image, columns: int = 80, rows: int | None = None) -> str:
    """The picture as half-block characters with 24-bit colours: two pixels per character."""
    rgb = img.convert("RGB")
    max_rows = rows if rows is not None else 10_000
    w, h = fit(rgb.size, (columns, max_rows * 2))
    h += h % 2
    px = np.asarray(rgb.resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
    lines = []
    for y in range(0, h, 2):
        top, bottom = px[y], px[y + 1]
        cells = [f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m{UPPER_HALF}"
                 for t, b in zip(top.tolist(), bottom.tolist())]
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def show_window(img: Image.Image, title: str, *, close_after_ms: int | None = None,
                on_shown: Any = None) -> None:
    """A Tk window showing `img`, scaled to the window with its aspect ratio kept."""
    import tkinter as tk

    from PIL import ImageTk

    root = tk.Tk()
    root.title(title)
    screen = (root.winfo_screenwidth() * 8 // 10, root.winfo_screenheight() * 8 // 10)
    w, h = fit(img.size, (min(screen[0], max(img.width, 200)), min(screen[1], max(img.height, 150))))
    root.geometry(f"{w}x{h}")
    root.configure(background="black")
    label = tk.Label(root, background="black", borderwidth=0, highlightthickness=0)
    label.pack(fill="both", expand=True)
    state: dict[str, Any] = {"size": None}

    def redraw(_event: Any = None) -> None:
        box = (max(1, label.winfo_width()), max(1, label.winfo_height()))
        size = fit(img.size, box)
        if size == state["size"]:
            return
        state["size"] = size
        state["photo"] = ImageTk.PhotoImage(img.resize(size, Image.Resampling.LANCZOS))
        label.configure(image=state["photo"])
        if on_shown is not None:
            root.after(50, on_shown, root)

    label.bind("<Configure>", redraw)
    root.bind("<Escape>", lambda _e: root.destroy())
    if close_after_ms is not None:
        root.after(close_after_ms, root.destroy)
    root.mainloop()


def show(img: Image.Image, title: str, *, out: Any = None) -> str:
    """Show the picture the best way this terminal allows; returns "window" or "terminal"."""
    if has_display():
        try:
            show_window(img, title)
            return "window"
        except Exception as exc:  # noqa: BLE001  any Tk failure: fall back to the terminal, say so
            print(f"(no window: {exc}; showing it in the terminal)", file=out, flush=True)
    cols, lines = shutil.get_terminal_size((80, 24))
    art = terminal_art(img, columns=min(cols, 120), rows=max(8, lines - 4))
    print(art, file=out, flush=True)
    return "terminal"
