"""Seal and unseal speed and size: `python -m benchmarks.seal [--repeat N] [--json] [--compare]`.

Payloads (deterministic, made here): a ~4 KB PNG (40x40 noise) and a ~1.9 MB photo-like JPEG
(2048x1536 gradients, waves and Gaussian noise, quality 95). For each: the first seal (it scales
the tier and is paid once per process), then the median of `--repeat` warm seals and unseals,
and the sealed size over the payload size. Targets on the 2-core reference machine: 4 KB seal
under 5 ms; 1.9 MB seal under 150 ms and unseal under 80 ms.

`--compare` times the PNG writers considered for the payload rows of the 1.9 MB seal (the table
in codec/png.py's docstring): Pillow's encoder, and zlib over rows with filter None or Up, with
the default strategy or Huffman-only.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from codec import seal as S
from codec.covers import CoverSet
from config import SealConfig


def photo_jpeg(seed: int = 1, width: int = 2048, height: int = 1536) -> bytes:
    """A photo-like JPEG of about 1.9 MB: smooth colour gradients and waves under noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60],
        axis=-1,
    )
    base += 40 * np.sin(x[..., None] / 37.0) * np.cos(y[..., None] / 53.0)
    pixels = np.clip(base + rng.normal(0, 14, (height, width, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def small_png(seed: int = 2, side: int = 40) -> bytes:
    """A noisy PNG of about 4 KB."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(128, 20, (side, side, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(name: str, payload: bytes, repeat: int, cfg: SealConfig) -> dict[str, Any]:
    """One row of the table; a fresh CoverSet so the first seal includes building the tier."""
    covers = CoverSet()
    start = time.perf_counter()
    sealed = S.seal(payload, cfg=cfg, covers=covers)
    first = (time.perf_counter() - start) * 1000
    got = S.unseal(sealed, cfg=cfg, covers=covers)
    if got.payload != payload:
        raise SystemExit(f"{name}: round trip failed")
    return {
        "payload": name,
        "payload_bytes": len(payload),
        "tier": f"{got.width}x{got.height}",
        "first_seal_ms": round(first, 2),
        "seal_ms": round(_ms(lambda: S.seal(payload, cfg=cfg, covers=covers), repeat), 2),
        "unseal_ms": round(_ms(lambda: S.unseal(sealed, cfg=cfg, covers=covers), repeat), 2),
        "sealed_bytes": len(sealed),
        "ratio": round(len(sealed) / len(payload), 3),
    }


def _writer_rows(payload: bytes, cfg: SealConfig) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the sealed image and its raw payload rows (filter byte 0 at each row head)."""
    sealed = S.seal(payload, cfg=cfg)
    with Image.open(io.BytesIO(sealed), formats=["PNG"]) as im:
        arr = np.asarray(im.convert("RGB"))
    w = arr.shape[1]
    used = -(-(S.HEADER_SAMPLES + S.payload_samples(len(payload), cfg.bits_per_channel)) // (3 * w))
    rows = np.zeros((used, 1 + 3 * w), dtype=np.uint8)
    rows[:, 1:] = arr[:used].reshape(used, 3 * w)
    return arr, rows


def compare(payload: bytes, cfg: SealConfig, repeat: int) -> list[dict[str, Any]]:
    """Writers for the payload rows of one seal: time and compressed size."""
    arr, rows = _writer_rows(payload, cfg)
    up = rows.copy()
    up[:, 0] = 2
    up[1:, 1:] = rows[1:, 1:] - rows[:-1, 1:]
    out: list[dict[str, Any]] = []

    def zlib_case(label: str, data: np.ndarray, level: int, strategy: int) -> None:
        def run() -> bytes:
            comp = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
            return comp.compress(data.reshape(-1).data) + comp.flush()

        out.append({"writer": label, "ms": round(_ms(run, repeat), 1), "bytes": len(run())})

    zlib_case("zlib level 0 (stored)", rows, 0, zlib.Z_DEFAULT_STRATEGY)
    zlib_case("filter None, level 1", rows, 1, zlib.Z_DEFAULT_STRATEGY)
    zlib_case("filter None, Huffman-only", rows, 1, zlib.Z_HUFFMAN_ONLY)
    zlib_case("filter Up, level 1", up, 1, zlib.Z_DEFAULT_STRATEGY)
    zlib_case("filter Up, Huffman-only (used)", up, 1, zlib.Z_HUFFMAN_ONLY)
    image = Image.fromarray(arr[: rows.shape[0]])

    def pillow() -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    out.append(
        {
            "writer": "Pillow PNG, level 1",
            "ms": round(_ms(pillow, repeat), 1),
            "bytes": len(pillow()),
        }
    )
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += [
        "  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)) for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seal", description=__doc__)
    parser.add_argument("--repeat", type=int, default=9, help="warm runs per figure (median)")
    parser.add_argument("--bits", type=int, default=2, choices=(1, 2, 3, 4))
    parser.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    parser.add_argument("--compare", action="store_true", help="also time the PNG writers")
    args = parser.parse_args(argv)
    cfg = SealConfig(bits_per_channel=args.bits)
    photo = photo_jpeg()
    result: dict[str, Any] = {
        "bits_per_channel": args.bits,
        "zlib_level": cfg.zlib_level,
        "rows": [
            measure("4 KB PNG", small_png(), args.repeat, cfg),
            measure("1.9 MB JPEG", photo, args.repeat, cfg),
        ],
    }
    if args.compare:
        result["writers"] = compare(photo, cfg, max(1, args.repeat // 3))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"seal/unseal, {args.bits} bits per channel, medians of {args.repeat} warm runs")
    print(_table(result["rows"]))
    if args.compare:
        print("\nwriters for the payload rows of the 1.9 MB seal")
        print(_table(result["writers"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
