"""codec.images: accepted formats, header probes with pixel limits, viewing, previews, file names.

RELIABILITY 3.2 and 6.3 (TI-4, TI-5) for users' own images.
"""

from __future__ import annotations

import dataclasses
import io
import struct

import numpy as np
import pytest
from imagefix import MiB, exotic_files, jpeg_claiming, peak_rss_growth, zero_png
from PIL import Image

import config
from codec import images, png
from codec.images import ImageError
from codec.names import InvalidName, is_valid_name

LIMIT = 50_000_000


def encoded(
    fmt: str,
    size: tuple[int, int] = (40, 30),
    mode: str = "RGB",
    color: object = (200, 30, 60),
    **save: object,
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, format=fmt, **save)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("fmt", images.ACCEPTED)
def test_accepted_formats_probe_and_view(fmt: str) -> None:
    data = encoded(fmt)
    assert images.sniff(data) == fmt
    assert images.probe(data, LIMIT) == (fmt, 40, 30)
    im = images.open_for_view(data, LIMIT)
    assert (im.mode, im.size) == ("RGB", (40, 30))
    r, g, b = im.getpixel((5, 5))  # type: ignore[misc]
    assert abs(r - 200) < 12 and abs(g - 30) < 12 and abs(b - 60) < 12


def test_sniff_names_other_formats() -> None:
    assert images.sniff(b"") is None
    assert images.sniff(b"hello world, not an image") is None
    for fmt, data in exotic_files().items():
        assert images.sniff(data) == fmt
    assert images.sniff(encoded("BMP")) == "BMP"
    assert images.sniff(encoded("TIFF")) == "TIFF"


def test_refusals_name_the_reason() -> None:
    with pytest.raises(ImageError, match="^not an image"):
        images.probe(b"\0" * 100, LIMIT)
    for fmt, data in exotic_files().items():
        with pytest.raises(ImageError, match=f"^unsupported format {fmt}"):
            images.probe(data, LIMIT)
    with pytest.raises(ImageError, match="^not a valid PNG image"):
        images.probe(b"\x89PNG\r\n\x1a\n" + b"\0" * 30, LIMIT)


def test_exotic_plugins_never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    Image.init()
    calls: list[str] = []
    for fmt in ("PSD", "EPS", "FITS", "JPEG2000", "DDS", "BMP", "TIFF"):
        if fmt in Image.OPEN:
            _, accept = Image.OPEN[fmt]
            monkeypatch.setitem(Image.OPEN, fmt, (lambda *a, f=fmt: calls.append(f), accept))
    samples = [*exotic_files().values(), encoded("BMP"), encoded("TIFF")]
    for data in samples:
        for call in (images.probe, images.open_for_view):
            with pytest.raises(ImageError, match="unsupported format"):
                call(data, LIMIT)
        with pytest.raises(ImageError):
            images.make_preview(data)
    assert calls == []


def test_pixel_limits_from_the_header_without_decoding() -> None:
    huge_jpeg = jpeg_claiming(65500, 65500)
    bomb = zero_png(6000)
    for data, limit in [(huge_jpeg, LIMIT), (bomb, 10_000_000), (zero_png(12000), 10**9)]:
        errors: list[ImageError] = []

        def attempt(
            data: bytes = data, limit: int = limit, errors: list[ImageError] = errors
        ) -> None:
            try:
                images.open_for_view(data, limit)
            except ImageError as exc:
                errors.append(exc)

        assert peak_rss_growth(attempt) <= 32 * MiB
        assert len(errors) == 1 and str(errors[0]).startswith("too many pixels"), errors
    assert images.probe(bomb, 36_000_000) == ("PNG", 6000, 6000)  # at the limit: header only


def test_max_user_pixels_follows_config() -> None:
    cfg = config.load()
    assert images.max_user_pixels(cfg) == 89_478_485 == Image.MAX_IMAGE_PIXELS
    small = dataclasses.replace(
        cfg, transport=dataclasses.replace(cfg.transport, max_message=3 * MiB)
    )
    assert images.max_user_pixels(small) == 4 * MiB


def test_truncated_image_does_not_view() -> None:
    data = encoded("JPEG", (400, 300), color=(1, 2, 3), quality=95)
    cut = data[: len(data) // 2]
    assert images.probe(cut, LIMIT) == ("JPEG", 400, 300)  # the header is intact
    with pytest.raises(ImageError, match="not a valid JPEG image"):
        images.open_for_view(cut, LIMIT)


def test_transparency_and_palette_view_over_white() -> None:
    rgba = encoded("PNG", mode="RGBA", color=(0, 0, 0, 0))
    assert images.open_for_view(rgba, LIMIT).getpixel((0, 0)) == (255, 255, 255)
    gif = encoded("GIF", mode="P", color=3)
    assert images.open_for_view(gif, LIMIT).mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = encoded("JPEG", (40, 30), exif=exif.tobytes())
    assert images.probe(data, LIMIT) == ("JPEG", 40, 30)
    assert images.open_for_view(data, LIMIT).size == (30, 40)


def _photo(width: int, height: int, seed: int = 0, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {})
    )
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "fmt", "want"),
    [
        ((120, 120), "PNG", (30, 30)),  # issue 17: a small image is never sent whole
        ((120, 120), "JPEG", (30, 30)),
        ((40, 30), "PNG", (10, 7)),
        ((600, 200), "GIF", (150, 50)),  # a quarter is under 160 on the long side
        ((640, 480), "JPEG", (160, 120)),  # exactly both limits
        ((1600, 1200), "JPEG", (160, 120)),  # 160 on the long side, far under a quarter
        ((900, 3000), "WEBP", (48, 160)),
        ((3, 2), "PNG", (1, 1)),
    ],
)
def test_preview_is_reduced_to_a_quarter_and_160_px(
    size: tuple[int, int], fmt: str, want: tuple[int, int]
) -> None:
    prev = images.make_preview(_photo(*size, fmt=fmt))
    with Image.open(io.BytesIO(prev)) as im:
        assert (im.format, im.size) == ("JPEG", want)
    w, h = size
    assert want[0] <= max(1, w // 4) and want[1] <= max(1, h // 4) and max(want) <= 160


def test_preview_is_a_modest_jpeg_deterministic_and_refuses_bombs() -> None:
    photo = _photo(1600, 1200)
    prev = images.make_preview(photo)
    assert prev == images.make_preview(photo)  # deterministic
    assert len(prev) < 16 * 1024  # 160x120 of noise at modest quality
    with Image.open(io.BytesIO(prev)) as im:  # modest: the quantisation of quality 60
        assert im.quantization[0][0] == Image.open(io.BytesIO(_q(60))).quantization[0][0]
    with pytest.raises(ImageError, match="too many pixels"):
        images.make_preview(jpeg_claiming(65500, 65500))


def _q(quality: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_preview_of_a_turned_photo_is_upright_and_reduced() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    prev = images.make_preview(encoded("JPEG", (400, 200), exif=exif.tobytes()))
    with Image.open(io.BytesIO(prev)) as im:
        assert im.size == (50, 100)


def test_preview_fits_tells_a_reduced_preview_from_a_whole_copy() -> None:
    original = _photo(120, 120, fmt="PNG")
    assert images.preview_fits(images.make_preview(original), original, LIMIT)
    old = io.BytesIO()  # what an older version kept in low/: the whole picture as a JPEG
    Image.open(io.BytesIO(original)).save(old, format="JPEG")
    assert not images.preview_fits(old.getvalue(), original, LIMIT)
    assert not images.preview_fits(b"", original, LIMIT)
    assert not images.preview_fits(_photo(30, 30, fmt="PNG"), original, LIMIT)  # not a JPEG


def test_sealed_names() -> None:
    assert images.sealed_name("b.jpg") == "b.png"
    assert images.sealed_name("a.png") == "a.png"
    assert images.sealed_name("notes") == "notes.png"
    assert images.sealed_name("x.tar.gz") == "x.tar.png"
    assert images.sealed_name("a.jpg", {"a.png"}) == "a.jpg.png"
    assert images.sealed_name("a.jpg", {"a.png", "a.jpg.png"}) == "a-2.png"
    assert images.sealed_name("a.jpg", {"a.png", "a.jpg.png", "a-2.png"}) == "a-3.png"
    for name in ["x" * 64, "p" * 60 + ".jpg", "y" * 63 + ".", "a.b" * 21]:
        for taken in [set(), {images.sealed_name(name)}]:
            got = images.sealed_name(name, taken)
            assert is_valid_name(got) and got.endswith(".png") and got not in taken
    for bad in ["../x.png", "", ".hidden", "a/b.jpg", "x" * 65]:
        with pytest.raises(InvalidName):
            images.sealed_name(bad)


def test_probe_reads_sizes_of_big_headers_quickly() -> None:
    # a PNG IHDR claiming 30000x20000 (600 Mpx) is refused from its 33 header bytes
    ihdr = struct.pack(">IIBBBBB", 30000, 20000, 8, 2, 0, 0, 0)
    data = png.SIGNATURE + b"".join(png.chunk(b"IHDR", ihdr)) + b"".join(png.chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="too many pixels"):
        images.probe(data, LIMIT)
