"""Showing a picture: a Tk window when a display exists, true-colour half blocks otherwise.

The picture comes from memory (a PIL image decoded from the unsealed payload) and is never
written to disk, not even to a temp file: Tk gets the pixels through ImageTk.PhotoImage.
The window keeps the aspect ratio when resized; Esc or closing the window ends the view.

In a terminal (issue 17) the picture is drawn only to a terminal, never into a file or a pipe:
`where(stream)` says whether a picture can be shown at all, and the `view` command refuses before
it takes a view when it cannot. The half blocks go on the terminal's alternate screen (as `less`
and `vim` use it), sized to the terminal's rows with one line left for a hint, and the view ends
on any key (Ctrl-C included) or after `VIEW_SECONDS`: the normal screen comes back as it was,
and nothing of the picture is left in the scrollback. Keys are read from the terminal the
picture is drawn on (its device, opened by name), in cbreak mode without echo or signals;
typed-ahead keys are dropped first so that they do not end the view at once.
"""

from __future__ import annotations

import os
import select
import termios
import time
from collections.abc import Callable
from typing import Any, Self

import numpy as np
from PIL import Image

UPPER_HALF = "\u2580"
VIEW_SECONDS = 10.0  # a terminal picture closes by itself after this long
MAX_COLUMNS = 120  # wider pictures get no sharper, only slower to draw
ALT_SCREEN_ON = "\x1b[?1049h\x1b[0m\x1b[H\x1b[2J"  # save the screen, switch, plain, clear, home
ALT_SCREEN_OFF = "\x1b[?1049l"  # back to the normal screen as it was


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


def is_terminal(stream: Any) -> bool:
    """True if `stream` is a file object on a terminal."""
    try:
        return stream is not None and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def where(stream: Any) -> str | None:
    """Where a picture would be shown: "window" (a display exists), "terminal" (`stream` is a
    terminal), or None: nowhere, and the caller must refuse before taking a view."""
    if has_display():
        return "window"
    return "terminal" if is_terminal(stream) else None


def art_box(columns: int, lines: int) -> tuple[int, int]:
    """(columns, rows) of half-block art on a `columns` x `lines` terminal: at most MAX_COLUMNS
    wide, and one line under the picture for the hint, so nothing scrolls. Pure."""
    return max(1, min(columns, MAX_COLUMNS)), max(1, lines - 1)


def screen_text(art: str, hint: str) -> str:
    """What goes to the terminal for one view: the alternate screen, the picture, the hint on
    the last line (no newline after it, so the screen never scrolls). Pure."""
    return ALT_SCREEN_ON + art + "\n\x1b[0m" + hint


class KeyWait:
    """Waits for one key on the terminal of `fd` (its device opened by name) for at most
    `seconds`. Used as a context manager: cbreak mode without echo or signals while inside
    (typed-ahead keys dropped on entry), the terminal's own mode restored on exit."""

    def __init__(self, fd: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._fd: int | None = None
        self._saved: list[Any] | None = None
        try:
            self._fd = os.open(os.ttyname(fd), os.O_RDONLY | os.O_NOCTTY)
        except OSError:
            self._fd = None  # no readable terminal: the view ends after its time

    def __enter__(self) -> Self:
        if self._fd is not None:
            try:
                self._saved = termios.tcgetattr(self._fd)
                mode = termios.tcgetattr(self._fd)
                mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
                mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
                termios.tcsetattr(self._fd, termios.TCSANOW, mode)
                termios.tcflush(self._fd, termios.TCIFLUSH)
            except termios.error:
                self._saved = None
        return self

    def wait(self, seconds: float) -> bool:
        """True if a key was pressed within `seconds`, False when the time ran out."""
        end = self._clock() + seconds
        while True:
            left = end - self._clock()
            if left <= 0:
                return False
            if self._fd is None:
                time.sleep(min(left, 0.5))
                continue
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                os.read(self._fd, 64)
                return True

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        try:
            if self._saved is not None:
                termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)
        finally:
            os.close(self._fd)


def show_in_terminal(img: Image.Image, title: str, out: Any,
                     seconds: float = VIEW_SECONDS) -> None:
    """The picture on the alternate screen of the terminal `out` until a key or `seconds`."""
    fd = out.fileno()
    try:
        size = os.get_terminal_size(fd)
        columns, lines = size.columns or 80, size.lines or 24
    except OSError:
        columns, lines = 80, 24
    cols, rows = art_box(columns, lines)
    art = terminal_art(img, columns=cols, rows=rows)
    hint = f"{title}: any key closes the picture (it closes by itself after {seconds:g} s)"
    with KeyWait(fd) as keys:
        try:
            out.write(screen_text(art, hint[: max(1, columns - 1)]))
            out.flush()
            keys.wait(seconds)
        finally:
            out.write(ALT_SCREEN_OFF)
            out.flush()


def show(img: Image.Image, title: str, *, out: Any, seconds: float = VIEW_SECONDS) -> str:
    """Show the picture the best way this terminal allows; returns "window" or "terminal".
    The caller checked `where(out)` first (never None here)."""
    if has_display():
        try:
            show_window(img, title)
            return "window"
        except Exception as exc:  # any Tk failure: fall back to the terminal, say so
            if not is_terminal(out):
                raise
            print(f"(no window: {exc}; showing it in the terminal)", file=out, flush=True)
    show_in_terminal(img, title, out, seconds)
    return "terminal"
