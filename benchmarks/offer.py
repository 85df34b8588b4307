"""`python -m benchmarks.offer`: where uploading once starts to pay (actors.client.cloud.OFFER_MIN_BYTES).

On one 3-node local cloud, one in-process client seals images of several sizes, each way in turn:
sent to every node (EncryptRequest to all) and offered (EncryptOffer to all, the winner fetches
the bytes). Prints per size the p50 of each way and their ratio (offered / to every node); the
two ways alternate request by request, so the host's drift hits both alike.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import actors.client.cloud as client_cloud
from benchmarks.cloud import small_png, table
from benchmarks.localcloud import Cloud

SIZES = (4_000, 16_000, 64_000, 256_000, 1_900_000)
NEVER = 2**62
OFFER_DEFAULT = client_cloud.OFFER_MIN_BYTES


def noise_png(n: int) -> bytes:
    """A PNG of about n bytes: seeded noise, which deflate cannot shrink (3 bytes a pixel)."""
    side = max(8, int((n / 3) ** 0.5))
    arr = np.random.default_rng(n).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, "PNG")
    return buf.getvalue()


def measure(cloud: Cloud, root: Path, sizes: tuple[int, ...], reps: int) -> list[dict[str, Any]]:
    import config as config_mod
    from actors.client.client_session import ClientSession

    session = ClientSession("offer", root / "home", config_mod.load(cloud.config))
    images = {n: small_png(7) if n <= 5_000 else noise_png(n) for n in sizes}
    times: dict[tuple[int, str], list[float]] = {(n, w): [] for n in sizes for w in ("all", "offer")}
    try:
        session.seal_through_cloud("warm.png", small_png(1))
        for _ in range(reps):
            for n, data in images.items():
                for way, threshold in (("all", NEVER), ("offer", 0)):
                    client_cloud.OFFER_MIN_BYTES = threshold
                    start = time.perf_counter()
                    session.seal_through_cloud("x.png", data)
                    times[(n, way)].append((time.perf_counter() - start) * 1000)
    finally:
        client_cloud.OFFER_MIN_BYTES = OFFER_DEFAULT
        session.close()
    rows = []
    for n, data in images.items():
        every, offer = (statistics.median(times[(n, w)]) for w in ("all", "offer"))
        rows.append({"bytes": len(data), "to_every_node_p50_ms": round(every, 1),
                     "offered_p50_ms": round(offer, 1), "ratio": round(offer / every, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.offer", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=15, help="requests per size and way")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="image sizes in bytes")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    sizes = tuple(int(x) for x in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        cloud = Cloud(Path(tmp), 3).start()
        try:
            rows = measure(cloud, Path(tmp), sizes, args.reps)
        finally:
            cloud.stop()
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"one client, 3 nodes, {args.reps} requests per size and way; threshold now "
              f"{OFFER_DEFAULT} bytes")
        print(table(rows, ["bytes", "to_every_node_p50_ms", "offered_p50_ms", "ratio"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
