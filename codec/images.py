"""Users' own images: which formats we take, checking them, viewing them, previews, file names.

Callers: the node (`probe` on EncryptRequest data: the cloud never decodes beyond the header),
the client (probe before encrypt, `make_preview` for low/, `open_for_view` to show a hidden image,
`sealed_name` for encrypted/ and received/), codec.png (`sniff`, `open_image`).

Accepted formats: PNG, JPEG, GIF and WEBP, what people share. Pillow is only ever asked to open
the format the magic bytes name (`formats=[that one]`), so the plugins of other formats (PSD,
EPS, PDF, FITS, JPEG 2000, DDS, ... where Pillow's recent CVEs live) never see our input. WebP
is decoded by the libwebp bundled with Pillow (1.6 here, after the CVE-2023-4863 fix).

Pixel limits: Pillow's DecompressionBombWarning is an error while a file is opened, and the
caller's `max_pixels` is checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Collection

from PIL import Image, ImageOps

from codec.errors import CodecError
from codec.names import check_name
from config import Config

ACCEPTED: tuple[str, ...] = ("PNG", "JPEG", "GIF", "WEBP")
NAME_MAX = 64

# Magic bytes at offset 0 -> format name. Unaccepted ones are listed for a clear error message.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"8BPS", "PSD"),
    (b"%PDF-", "PDF"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"SIMPLE  =", "FITS"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (b"DDS ", "DDS"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
)
_warn_lock = threading.Lock()  # warnings.catch_warnings is process-wide: one opener at a time


class ImageError(CodecError, ValueError):
    """A user's image is refused: "not an image", "unsupported format X", "too many pixels", or
    "not a valid X image" (it does not decode)."""


def sniff(data: bytes) -> str | None:
    """The format named by the magic bytes at the start of `data` (Pillow's names), or None."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def open_image(data: bytes, formats: list[str]) -> Image.Image:
    """Image.open restricted to `formats`, with the decompression-bomb warning as an error.
    Pillow's exceptions pass through (callers turn them into their own error)."""
    with _warn_lock, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=formats)


def max_user_pixels(cfg: Config) -> int:
    """Decode limit for users' images: Pillow's default MAX_IMAGE_PIXELS (89,478,485, a 256 MiB
    RGBA bitmap), lower when transport.max_message is small: RGB at most 4x the largest message."""
    return min(Image.MAX_IMAGE_PIXELS or 0, 4 * cfg.transport.max_message // 3)


def _open_checked(data: bytes, max_pixels: int) -> tuple[str, Image.Image]:
    fmt = sniff(data)
    if fmt is None:
        raise ImageError("not an image (no known signature)")
    if fmt not in ACCEPTED:
        raise ImageError(f"unsupported format {fmt} (accepted: {', '.join(ACCEPTED)})")
    try:
        im = open_image(data, [fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"too many pixels: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"not a valid {fmt} image ({exc})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(f"too many pixels: {w}x{h} is over the limit of {max_pixels}")
    return fmt, im


def probe(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(format, width, height) from the header only; no pixel is decoded. Raises ImageError."""
    fmt, im = _open_checked(data, max_pixels)
    with im:
        return fmt, im.width, im.height


def to_rgb(im: Image.Image) -> Image.Image:
    """Loaded, EXIF-upright RGB; transparency is composed over white."""
    im.load()
    im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def open_for_view(data: bytes, max_pixels: int) -> Image.Image:
    """The image decoded to RGB (first frame of an animation), checked as in probe."""
    fmt, im = _open_checked(data, max_pixels)
    try:
        with im:
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"not a valid {fmt} image ({exc})") from None


PREVIEW_FRACTION = 4  # a preview is at most 1/4 of the original on each side ...
PREVIEW_MAX_SIDE = 160  # ... and at most this many pixels on its long side
PREVIEW_QUALITY = 60  # JPEG quality: enough to recognise the picture, not to keep it


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The size of the preview of a `width` x `height` image: the aspect ratio kept, each side at
    most a quarter of the original and the long side at most PREVIEW_MAX_SIDE (120x120 -> 30x30,
    1600x1200 -> 160x120). Never below 1 pixel, so an original under 4 pixels on a side gets a
    1-pixel side. Pure."""
    scale = min(1 / PREVIEW_FRACTION, PREVIEW_MAX_SIDE / max(width, height, 1))
    return max(1, int(width * scale)), max(1, int(height * scale))


def make_preview(data: bytes, *, max_pixels: int = Image.MAX_IMAGE_PIXELS or 0) -> bytes:
    """A reduced JPEG copy of a user's image, for low/ and PreviewReply: `preview_size` of the
    original, quality PREVIEW_QUALITY (a few KB; far under PreviewReply's 256 KiB limit). A
    preview never gives the original away, however small the original is (issue 17). JPEGs are
    decoded at reduced scale (draft) so a large photo costs little. Raises ImageError."""
    fmt, im = _open_checked(data, max_pixels)
    try:
        with im:
            width, height = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF says: turn by 90 degrees
                width, height = height, width
            size = preview_size(width, height)
            if fmt == "JPEG":
                im.draft("RGB", (max(size), max(size)))
            rgb = to_rgb(im).resize(size, Image.Resampling.LANCZOS)
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=PREVIEW_QUALITY)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"not a valid {fmt} image ({exc})") from None


def preview_fits(jpeg: bytes, original: bytes, max_pixels: int) -> bool:
    """True if `jpeg` is a preview `make_preview` could have made of `original`: a JPEG no
    larger than `preview_size` of the original (upright or not). The owner's client checks the
    previews cached in low/ with it, so one kept from an older version (full size) is made
    again rather than served. Reads headers only."""
    try:
        fmt, pw, ph = probe(jpeg, max_pixels)
        _ofmt, ow, oh = probe(original, max_pixels)
    except ImageError:
        return False
    limits = (preview_size(ow, oh), preview_size(oh, ow))
    return fmt == "JPEG" and any(pw <= lw and ph <= lh for lw, lh in limits)


def _fit(base: str, suffix: str) -> str:
    return base[: NAME_MAX - len(suffix)] + suffix


def sealed_name(image_name: str, taken: Collection[str] = frozenset()) -> str:
    """The file name of a sealed image in encrypted/ or received/<owner>/.

    Rule: the image name's extension becomes ".png" ("b.jpg" -> "b.png", "a.png" -> "a.png",
    "notes" -> "notes.png"), as the shell's `encrypt a.png b.jpg` -> encrypted/a.png, b.png.
    The image's real name is inside the sealed file (its grant) and in state.db, so the file
    name is only storage. Clashes: `taken` holds the names already used in that folder by OTHER
    images; then the full name is kept ("a.jpg" -> "a.jpg.png" when a.png holds "a.png"), then
    "<stem>-2.png", "-3", ... Results are cut to 64 characters, so they are valid names too.
    """
    check_name(image_name, "image name")
    stem = image_name.rsplit(".", 1)[0] if "." in image_name else image_name
    first = [_fit(stem, ".png"), _fit(image_name, ".png")]
    for n in range(len(first) + len(taken) + 1):
        candidate = first[n] if n < len(first) else _fit(stem, f"-{n}.png")
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: more candidates than taken names")


def preview_name(image_name: str) -> str:
    """The file name of an image's preview in low/ and previews/<user>/: always a JPEG, named
    after the whole image name ("pic.png" -> "pic.png.jpg", "pic.jpg" -> "pic.jpg"), so two images
    that differ only by extension keep two previews. Cut to 64 characters (a valid name)."""
    check_name(image_name, "image name")
    if image_name.lower().endswith((".jpg", ".jpeg")):
        return image_name
    return _fit(image_name, ".jpg")

