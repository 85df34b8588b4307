"""TD-1: a zsteg-like sweep and a stegano-like reveal over a shared (AEAD payload) sealed image.

The sweep extracts 80 bit streams the way zsteg does (bits 1..4 of each sample x channels
r, g, b, rgb, bgr x bit order lsb/msb first x pixel order xy (rows) / yx (columns)), bits packed
into bytes most significant first. `b2, rgb, msb, xy` is exactly codec.seal's layout, so the
control (a plaintext seal of the same original) must be caught by the same checks.
The stegano-like reveal follows stegano 3.0's `lsb.reveal` (installing stegano would pull
opencv-python and downgrade Pillow, so it is emulated): LSB of R, G, B per pixel in row order,
8-bit characters most significant bit first, a decimal length then ":" then the message.
"""

from __future__ import annotations

import io
import random
import zlib

import numpy as np
import pytest
from PIL import Image

from actors.client.keys import ClientKeys
from codec import seal, sharecrypt

CHANNELS = {"r": [0], "g": [1], "b": [2], "rgb": [0, 1, 2], "bgr": [2, 1, 0]}
MAGICS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF")
WINDOW = 16


def _original() -> bytes:
    """A realistic photo-like JPEG (gradients, shapes, sensor noise), deterministic, ~135 KB."""
    rng = np.random.default_rng(20240601)
    h, w = 480, 640
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x * 255 / w, y * 255 / h, 128 + 100 * np.sin((x + 2 * y) / 40)], axis=-1)
    img[(x - 320) ** 2 + (y - 240) ** 2 < 90**2] = (230, 60, 40)
    img += rng.normal(0, 25, img.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


ORIGINAL = _original()


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def _stream(pixels: np.ndarray, bits: int, channels: list[int], msb: bool, order: str) -> bytes:
    """One zsteg stream, e.g. (2, rgb, msb, xy) = `zsteg -E b2,rgb,msb,xy`."""
    grid = pixels if order == "xy" else pixels.transpose(1, 0, 2)
    samples = grid[:, :, channels].reshape(-1)
    shifts = np.arange(bits - 1, -1, -1) if msb else np.arange(bits)
    planes = (samples[:, None] >> shifts.astype(np.uint8)) & 1
    return np.packbits(planes.reshape(-1).astype(np.uint8)).tobytes()


def _sweep(pixels: np.ndarray) -> dict[str, bytes]:
    out = {}
    for bits in range(1, 5):
        for name, channels in CHANNELS.items():
            for msb in (False, True):
                for order in ("xy", "yx"):
                    key = f"b{bits},{name},{'msb' if msb else 'lsb'},{order}"
                    out[key] = _stream(pixels, bits, channels, msb, order)
    return out


class WindowFinder:
    """Finds any 16-byte window of `original` in a stream, exactly.

    Every 16-byte window of a stream holds a whole 8-byte block at an offset that is a multiple
    of 8. Those blocks are looked up among all 8-byte windows of the original (searchsorted);
    around each hit, the 8 windows of 16 bytes that hold the block are hashed and looked up among
    the hashes of all 16-byte windows of the original; a hashed hit is confirmed byte for byte."""

    def __init__(self, original: bytes) -> None:
        self.original = original
        arr = np.frombuffer(original, dtype=np.uint8)
        self.blocks = np.unique(_words(np.lib.stride_tricks.sliding_window_view(arr, 8)))
        self.windows = np.unique(_hash16(np.lib.stride_tricks.sliding_window_view(arr, WINDOW)))

    def find(self, stream: bytes) -> int | None:
        """Offset in `stream` of a 16-byte window of the original, or None."""
        arr = np.frombuffer(stream, dtype=np.uint8)
        blocks = _words(arr[: len(arr) // 8 * 8].reshape(-1, 8))
        starts = 8 * np.flatnonzero(_member(blocks, self.blocks))
        if len(starts) == 0:
            return None
        offsets = np.unique((starts[:, None] - np.arange(8)).reshape(-1))
        offsets = offsets[(offsets >= 0) & (offsets + WINDOW <= len(arr))]
        hashed = _hash16(arr[offsets[:, None] + np.arange(WINDOW)])
        for p in offsets[_member(hashed, self.windows)]:
            if self.original.find(stream[int(p) : int(p) + WINDOW]) >= 0:
                return int(p)
        return None


def _words(rows: np.ndarray) -> np.ndarray:
    """Each row of 8 bytes as one big-endian uint64."""
    words: np.ndarray = np.ascontiguousarray(rows).view(">u8").reshape(-1)
    return words


def _hash16(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of 16 bytes (collisions only cost a byte comparison)."""
    halves = np.ascontiguousarray(rows).view("<u8").reshape(-1, 2)
    hashed: np.ndarray = halves[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ halves[:, 1]
    return hashed


def _member(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    idx = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    found: np.ndarray = sorted_unique[idx] == values
    return found


def _stegano_reveal(pixels: np.ndarray) -> bytes | None:
    """stegano.lsb.reveal's reading, on bytes: None where it raises "Impossible to detect"."""
    chars = _stream(pixels, 1, [0, 1, 2], True, "xy")
    colon = chars.find(b":")
    head = chars[:colon].decode("latin-1")
    if colon < 0 or not head.isdigit():
        return None
    try:
        limit = int(head)
    except ValueError:  # str.isdigit accepts "²", int() does not
        return None
    message = chars[colon + 1 : colon + 1 + limit]
    return message if len(message) == limit else None


def _stegano_hide(pixels: np.ndarray, message: bytes) -> np.ndarray:
    """stegano.lsb.hide's layout (for the control): f"{len}:" + message in the LSBs of R, G, B."""
    bits = np.unpackbits(np.frombuffer(f"{len(message)}:".encode() + message, dtype=np.uint8))
    flat = pixels.reshape(-1).copy()
    flat[: len(bits)] = flat[: len(bits)] & 0xFE | bits
    return flat.reshape(pixels.shape)


def _findings(png: bytes, finder: WindowFinder) -> dict[str, list[str]]:
    """What the sweep finds: streams holding a window of the original, streams starting with an
    image magic (at 0, or at the payload offset of the seal layout), and the reveal's result."""
    found: dict[str, list[str]] = {"windows": [], "magic": [], "reveal": []}
    pixels = _pixels(png)
    streams = _sweep(pixels)
    assert len(streams) == 80
    for key, stream in streams.items():
        if finder.find(stream) is not None:
            found["windows"].append(key)
        for at in (0, seal.HEADER_BYTES):
            if stream[at:].startswith(MAGICS):
                found["magic"].append(f"{key}@{at}")
    message = _stegano_reveal(pixels)
    if message is not None and finder.find(message) is not None:
        found["reveal"].append("stegano")
    return found


@pytest.fixture(scope="module")
def finder() -> WindowFinder:
    return WindowFinder(ORIGINAL)


def _shared_seal() -> tuple[bytes, bytes]:
    """(sealed PNG, encrypted payload) as the owner's client makes them for bob."""
    r = random.Random(77)
    alice, bob = (
        ClientKeys(r.randbytes(32), r.randbytes(32)),
        ClientKeys(r.randbytes(32), r.randbytes(32)),
    )
    aad = sharecrypt.payload_aad("alice", "bob", "photo.jpg")
    key, nonce, payload = sharecrypt.encrypt_payload(ORIGINAL, aad=aad, rng=r.randbytes)
    grant = sharecrypt.make_grant(
        alice,
        owner="alice",
        borrower="bob",
        image="photo.jpg",
        views=2,
        expires=0.0,
        version=1,
        content_key=key,
        nonce=nonce,
        borrower_box_public=bob.box_public,
        rng=r.randbytes,
    )
    png = seal.seal(payload, grant=sharecrypt.sealed_grant(grant))
    assert (
        sharecrypt.open_payload(
            grant, seal.unseal(png).payload, sharecrypt.open_content_key(grant, bob)
        )
        == ORIGINAL
    )
    return png, payload


def test_the_original_is_a_realistic_jpeg() -> None:
    assert ORIGINAL[:3] == b"\xff\xd8\xff" and 50_000 <= len(ORIGINAL) <= 200_000


def test_sweep_of_a_shared_sealed_image_finds_nothing(finder: WindowFinder) -> None:
    png, payload = _shared_seal()
    assert _findings(png, finder) == {"windows": [], "magic": [], "reveal": []}
    canonical = _stream(_pixels(png), 2, [0, 1, 2], True, "xy")
    region = canonical[seal.HEADER_BYTES : seal.HEADER_BYTES + len(payload)]
    assert region == payload  # the sweep did read the payload region
    ratio = len(zlib.compress(region, 9)) / len(region)
    assert ratio >= 0.99, ratio


def test_control_the_same_sweep_finds_a_plaintext_seal(finder: WindowFinder) -> None:
    png = seal.seal(ORIGINAL)
    found = _findings(png, finder)
    assert "b2,rgb,msb,xy" in found["windows"]
    assert found["magic"] == [f"b2,rgb,msb,xy@{seal.HEADER_BYTES}"]
    canonical = _stream(_pixels(png), 2, [0, 1, 2], True, "xy")
    region = canonical[seal.HEADER_BYTES : seal.HEADER_BYTES + len(ORIGINAL)]
    assert region == ORIGINAL


def test_control_the_reveal_finds_a_stegano_layout(finder: WindowFinder) -> None:
    pixels = _pixels(seal.seal(b"cover only"))
    hidden = _stegano_hide(pixels, ORIGINAL[:20_000])
    assert _stegano_reveal(hidden) == ORIGINAL[:20_000]
    assert finder.find(_stegano_reveal(hidden) or b"") is not None


def test_window_finder_finds_windows_at_every_alignment(finder: WindowFinder) -> None:
    noise = random.Random(5).randbytes(64)
    before, after = bytes([ORIGINAL[999] ^ 0xFF]), bytes([ORIGINAL[1015] ^ 0xFF])
    for shift in range(1, 10):
        assert finder.find(noise[: shift - 1] + before + ORIGINAL[1000:1016] + noise) == shift
        assert finder.find(noise[: shift - 1] + before + ORIGINAL[1000:1015] + after) is None
    assert finder.find(bytes(64)) is None and finder.find(b"") is None
