"""A node's memory for one request of the largest accepted image: `python -m benchmarks.memory`.

Starts a local cloud of three node processes (benchmarks.localcloud, free ports, a temp
directory), then seals one JPEG of `codec.seal.max_image_bytes` bytes (about 31 MiB for the
default 64 MiB messages; about 16 megapixels of noise, padded) through it with a real client, while a thread samples every node's
resident set size (psutil, every `--period-ms`). Prints, per node: RSS before the request, the
peak during it, the peak over the baseline as a multiple of the payload, and RSS after the reply
(once the node's housekeeping ran). The node that sealed is marked. `--json` prints the rows as
one JSON object too; `--trace` the sealing node's RSS over time (receive, seal, reply). Issue 15
item 4: the peak must stay a small multiple of the payload.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

import config
from actors.client.client_session import ClientSession
from benchmarks.localcloud import Cloud
from codec import seal

MIB = 1024 * 1024


class RssSampler:
    """Peak RSS per process since `mark()`, sampled on a thread every `period_s`."""

    def __init__(self, pids: dict[int, int], period_s: float) -> None:
        self.procs = {n: psutil.Process(pid) for n, pid in pids.items()}
        self.period_s = period_s
        self.peak = {n: 0 for n in pids}
        self.trace: dict[int, list[tuple[float, int]]] = {n: [] for n in pids}  # since mark()
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> dict[int, int]:
        return {n: p.memory_info().rss for n, p in self.procs.items()}

    def mark(self) -> dict[int, int]:
        now = self.rss()
        with self._lock:
            self.peak = dict(now)
            self.trace = {n: [(0.0, v)] for n, v in now.items()}
            self._t0 = time.monotonic()
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = self.rss()
            with self._lock:
                at = time.monotonic() - self._t0
                for n, v in now.items():
                    self.peak[n] = max(self.peak[n], v)
                    self.trace[n].append((at, v))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def payload(n: int, seed: int = 1) -> bytes:
    """A real JPEG of exactly `n` bytes: noise at quality 100 (about 2 bytes per pixel, 4:3)
    sized to just under `n`, then padded after its end marker (decoders ignore trailing bytes)."""
    rng = np.random.default_rng(seed)
    pixels = int(n / 2.0 * 0.95)
    while True:
        h = int((pixels * 3 / 4) ** 0.5)
        w = pixels // h
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            buf, "JPEG", quality=100
        )
        data = buf.getvalue()
        if len(data) <= n:
            return data + rng.integers(0, 256, n - len(data), dtype=np.uint8).tobytes()
        pixels = int(pixels * 0.95)


def measure(root: Path, period_s: float, settle_s: float) -> dict[str, Any]:
    cloud = Cloud(root, 3).start()
    try:
        cfg = config.load(cloud.config)
        size = seal.max_image_bytes(cfg.seal, cfg.transport.max_message)
        data = payload(size)
        client = ClientSession("memo", root / "client", cfg)
        try:
            deadline = time.monotonic() + 60
            while True:  # the cloud may still be syncing right after its start
                try:
                    client.join()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            pids = {int(r["id"]): int(r["pid"]) for r in cloud.status()}
            with RssSampler(pids, period_s) as sampler:
                base = sampler.mark()
                started = time.perf_counter()
                sealed, node = client.seal_through_cloud("big.jpg", data)
                took = time.perf_counter() - started
                time.sleep(settle_s)  # the reply's buffers are released after it was acked
                after = sampler.rss()
                peak = dict(sampler.peak)
                trace = sampler.trace[node]
        finally:
            client.close()
    finally:
        cloud.stop()
    rows = [
        {
            "node": n,
            "sealed": n == node,
            "before_mib": base[n] / MIB,
            "peak_mib": peak[n] / MIB,
            "peak_over_payload": (peak[n] - base[n]) / size,
            "after_mib": after[n] / MIB,
        }
        for n in sorted(pids)
    ]
    steps = [(t, v / MIB) for t, v in changes(trace, 4 * MIB)]
    return {"payload_bytes": size, "sealed_bytes": len(sealed), "seconds": took, "rows": rows,
            "sealer_trace": steps}


def changes(trace: list[tuple[float, int]], step: int) -> list[tuple[float, int]]:
    """The samples where RSS moved by `step` or more since the last one kept (and the peak)."""
    out: list[tuple[float, int]] = []
    top = max(trace, key=lambda tv: tv[1]) if trace else None
    for t, v in trace:
        if not out or abs(v - out[-1][1]) >= step or (t, v) == top:
            out.append((t, v))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    p.add_argument("--period-ms", type=float, default=10.0, help="RSS sampling period")
    p.add_argument("--settle-s", type=float, default=3.0, help="wait after the reply")
    p.add_argument("--json", action="store_true")
    p.add_argument("--trace", action="store_true",
                   help="also print the sealing node's RSS where it moved by 4 MiB or more")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="veilshare-memory-") as tmp:
        res = measure(Path(tmp), args.period_ms / 1000, args.settle_s)
    size = res["payload_bytes"]
    print(f"one request of the largest accepted image: {size} bytes ({size / MIB:.1f} MiB), "
          f"sealed reply {res['sealed_bytes'] / MIB:.1f} MiB, {res['seconds']:.1f} s")
    print(f"{'node':>4} {'sealed':>6} {'before MiB':>10} {'peak MiB':>9} "
          f"{'peak-before / payload':>21} {'after MiB':>9}")
    for r in res["rows"]:
        print(f"{r['node']:>4} {'*' if r['sealed'] else '':>6} {r['before_mib']:>10.0f} "
              f"{r['peak_mib']:>9.0f} {r['peak_over_payload']:>21.2f} {r['after_mib']:>9.0f}")
    if args.trace:
        base = next(r["before_mib"] for r in res["rows"] if r["sealed"])
        print(f"{'s':>6} {'RSS MiB':>8} {'over before / payload':>21}  (the sealing node)")
        for t, v in res["sealer_trace"]:
            print(f"{t:>6.2f} {v:>8.0f} {(v - base) * MIB / size:>21.2f}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
