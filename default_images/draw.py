"""Draw Veilshare's cover art (the "default image") at the base sizes, with Pillow only.

Run from the repository root:  python default_images/draw.py
It (re)writes default_images/cover_<W>x<H>.png for each size in SIZES. The art is ours: flat
colours, a padlock and Pillow's bundled font, no third-party pictures. Flat areas keep the files
small (tens of KB) and keep the sealed PNGs small too: only the low bits of a flat region vary
once a payload is embedded, which deflate codes in about two bits per byte.

The output is deterministic (same Pillow, same bytes), so re-running it leaves git clean.
codec/covers.py reads these files; it scales the largest one up for payloads that need more pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1024, 768), (1600, 1200))
HERE = Path(__file__).resolve().parent

BACKGROUND = (28, 37, 54)
PANEL = (38, 50, 72)
ACCENT = (236, 178, 60)
TEXT = (238, 241, 246)
MUTED = (160, 172, 192)

TITLE = "Protected image"
LINES = (
    "This picture is sealed by Veilshare.",
    "Open it with the Veilshare client to view it.",
)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _padlock(draw: ImageDraw.ImageDraw, cx: int, cy: int, unit: int) -> None:
    """A padlock centred on (cx, cy); `unit` is its body height in pixels."""
    body_w, body_h = int(unit * 1.25), unit
    left, top = cx - body_w // 2, cy - body_h // 4
    shackle_w = int(body_w * 0.7)
    thick = max(3, unit // 8)
    sx0, sx1 = cx - shackle_w // 2, cx + shackle_w // 2
    sy0 = top - int(unit * 0.75)
    draw.arc((sx0, sy0, sx1, sy0 + shackle_w), 180, 360, fill=ACCENT, width=thick)
    draw.rectangle((sx0, sy0 + shackle_w // 2, sx0 + thick - 1, top), fill=ACCENT)
    draw.rectangle((sx1 - thick + 1, sy0 + shackle_w // 2, sx1, top), fill=ACCENT)
    draw.rounded_rectangle((left, top, left + body_w, top + body_h), radius=unit // 8, fill=ACCENT)
    hole = max(2, unit // 9)
    hy = top + body_h // 2 - hole
    draw.ellipse((cx - hole, hy - hole, cx + hole, hy + hole), fill=BACKGROUND)
    draw.rectangle((cx - hole // 2, hy, cx + hole // 2, hy + hole * 3), fill=BACKGROUND)


def _centred(
    draw: ImageDraw.ImageDraw, text: str, y: int, width: int, size: int, fill: tuple[int, int, int]
) -> int:
    """Draw `text` centred horizontally with its top at y; return the y below it."""
    font = _font(size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (x1 - x0)) // 2 - x0, y - y0), text, font=font, fill=fill)
    return int(y + (y1 - y0))


def draw_cover(width: int, height: int) -> Image.Image:
    """The cover at width x height pixels (RGB)."""
    im = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(im)
    margin = width // 20
    draw.rounded_rectangle(
        (margin, margin, width - margin, height - margin),
        radius=width // 40,
        fill=PANEL,
        outline=ACCENT,
        width=max(2, width // 320),
    )
    unit = height // 6
    _padlock(draw, width // 2, int(height * 0.33), unit)
    y = int(height * 0.56)
    y = _centred(draw, TITLE, y, width, width // 13, TEXT) + height // 20
    for line in LINES:
        y = _centred(draw, line, y, width, width // 34, MUTED) + height // 60
    _centred(draw, "veilshare", height - margin - height // 14, width, width // 45, ACCENT)
    return im


def main(out_dir: Path = HERE) -> int:
    for w, h in SIZES:
        path = out_dir / f"cover_{w}x{h}.png"
        draw_cover(w, h).save(path, format="PNG", optimize=True)
        print(f"{path} {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
