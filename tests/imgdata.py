"""Small deterministic images for cloud tests, and an "any window of it at rest?" scanner."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(seed: int, size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def windows_found(originals: list[bytes], folder: Path) -> list[str]:
    """Files under `folder` holding any 32-byte window of any original (16-byte aligned probe:
    a 32-byte match always contains one aligned 16-byte window of the original)."""
    probes = {o[i:i + 16] for o in originals for i in range(0, len(o) - 15, 16)}
    hits = []
    for f in folder.rglob("*"):
        if not f.is_file():
            continue
        data = f.read_bytes()
        if any(data[i:i + 16] in probes for i in range(len(data) - 15)):
            hits.append(str(f))
    return hits
