"""`python -m benchmarks.batch`: one `encrypt` of many files, sealed 1, 2, 3 ... at a time.

What a user's `encrypt *.png` costs end to end, through `ClientSession.encrypt` (reading and
naming each file, the request, the election, the seal, the reply, the writes of encrypted/ and
high/), on one 3-node cloud (failure simulation off) and one client session. Each round seals
the same files again as a new user in a fresh home (every image new to it) with each value of
`--in-flight` in turn, round after round (the host's speed drifts: compare values within a
round); prints per value the median over the rounds of the batch's wall time, images/s and the
ratio to one at a time. `--photos N` adds a batch of N copies of the ~1.9 MB photo-like JPEG
(each a distinct file: the last bytes differ).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cloud import photo_jpeg, small_png
from benchmarks.localcloud import Cloud


def write_files(folder: Path, small: int, photos: int) -> dict[str, list[Path]]:
    """The batches' input files: `small` PNGs of 3-5 KB, `photos` photo-like JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[Path]] = {}
    if small:
        sets[f"{small} small PNGs"] = []
        for i in range(small):
            p = folder / f"img{i:04d}.png"
            p.write_bytes(small_png(i))
            sets[f"{small} small PNGs"].append(p)
    if photos:
        base = photo_jpeg()
        sets[f"{photos} photos"] = []
        for i in range(photos):
            p = folder / f"photo{i:02d}.jpg"
            p.write_bytes(base + bytes([i]))  # after the JPEG's end marker: read as the same image
            sets[f"{photos} photos"].append(p)
    return sets


def run(small: int, photos: int, values: list[int], rounds: int) -> list[dict[str, Any]]:
    import config as config_mod
    from actors.client.client_session import ClientSession

    with tempfile.TemporaryDirectory(prefix="vs-batch-") as tmp:
        root = Path(tmp)
        sets = write_files(root / "files", small, photos)
        (root / "cloud").mkdir()
        cloud = Cloud(root / "cloud", 3)
        cloud.start()
        try:
            cfg = config_mod.load(cloud.config)
            walls: dict[tuple[str, int], list[float]] = {}
            failed: dict[str, int] = {}
            home = 0
            for r in range(rounds):
                for name, files in sets.items():
                    for k in values:
                        home += 1
                        session = ClientSession(f"batch{home}", root / f"home{home}", cfg)
                        try:
                            session.join()
                            t0 = time.perf_counter()
                            out = session.encrypt(files, in_flight=k)
                            wall = time.perf_counter() - t0
                        finally:
                            session.close()
                        failed[name] = failed.get(name, 0) + len(out.failed)
                        walls.setdefault((name, k), []).append(wall)
                        print(f"round {r + 1}: {name}, {k} at a time: {wall:.2f} s"
                              f"{f', {len(out.failed)} failed' if out.failed else ''}", flush=True)
            rows = []
            for name, files in sets.items():
                base = statistics.median(walls[(name, values[0])])
                for k in values:
                    w = statistics.median(walls[(name, k)])
                    rows.append({"batch": name, "in_flight": k, "wall_s": round(w, 3),
                                 "images_per_s": round(len(files) / w, 1),
                                 "speedup": round(base / w, 2), "rounds": rounds,
                                 "failed": failed[name]})
            return rows
        finally:
            cloud.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    ap.add_argument("--small", type=int, default=200, help="small PNGs in the small batch")
    ap.add_argument("--photos", type=int, default=12, help="photos in the photo batch")
    ap.add_argument("--in-flight", default="1,2,3,4", help="values to compare, the first is the base")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    values = [int(v) for v in a.in_flight.split(",")]
    rows = run(a.small, a.photos, values, a.rounds)
    if a.json:
        print(json.dumps(rows))
        return
    from benchmarks.cloud import table

    print()
    print(table(rows, ["batch", "in_flight", "wall_s", "images_per_s", "speedup", "rounds",
                       "failed"]))


if __name__ == "__main__":
    main()
