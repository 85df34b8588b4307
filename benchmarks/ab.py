"""`python -m benchmarks.ab --rounds N DIR [DIR ...]`: checkouts compared in turn, order rotated.

Each DIR is a checkout of this project (a `git worktree` of another commit, say). For every round
each checkout runs the quick harness once, from its own directory with its own code: a fresh
3-node cloud, a warm-up, 6 clients x 500 small images back to back, then 1 client x 300. The
order of the checkouts rotates from one round to the next (round r starts with checkout r mod
the count): on this project's shared 2-core host, three sets that always ran the older code
first favoured it, and a rotated set did not (eighteenth session, docs/perf-history.md).

Prints per checkout the medians (6 clients: images/s, node and client CPU ms per image; 1
client: p50 and election p50 ms) and, against the first checkout, in how many rounds each one
was better (more images/s, a lower p50). A round's runs are minutes apart at most, so compare
within rounds; the host's drift between rounds is what the medians and the counts of wins are
for. `--one` is the single run, printed as JSON (what each round starts in each checkout; it
only needs `benchmarks.cloud.load_images`, `run_clients` and `benchmarks.localcloud.Cloud`,
which checkouts of the last several sessions all have).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FIGURES = ("images_per_s", "node_cpu_ms", "client_cpu_ms", "p50_ms", "election_p50_ms")


def rotations(count: int, rounds: int) -> list[list[int]]:
    """The order of the `count` checkouts in each round: round r starts with checkout r."""
    return [[(r + k) % count for k in range(count)] for r in range(rounds)]


def summarize(names: list[str], runs: list[list[dict[str, float]]]) -> list[dict[str, Any]]:
    """`runs[r][i]`: checkout i's figures in round r. Per checkout: the median of each figure
    and, against checkout 0 in the same round, the rounds with more images/s and those with a
    lower 1-client p50."""
    rows = []
    for i, name in enumerate(names):
        mine = [r[i] for r in runs]
        row: dict[str, Any] = {"checkout": name, "rounds": len(mine)}
        for f in FIGURES:
            row[f] = statistics.median(m[f] for m in mine)
        if i:
            row["more_images_per_s"] = sum(r[i]["images_per_s"] > r[0]["images_per_s"]
                                           for r in runs)
            row["lower_p50"] = sum(r[i]["p50_ms"] < r[0]["p50_ms"] for r in runs)
        rows.append(row)
    return rows


def one() -> dict[str, float]:
    """The quick harness on this checkout (the current directory's code)."""
    from benchmarks.cloud import load_images, run_clients
    from benchmarks.localcloud import Cloud

    images = load_images(None, 500)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cloud = Cloud(root, 3).start()
        try:
            run_clients(cloud, 6, images[:60], 0.0, root)  # warm
            six = run_clients(cloud, 6, images, 0.0, root)
            single = run_clients(cloud, 1, images[:300], 0.0, root)
        finally:
            cloud.stop()
    return {"images_per_s": six["images_per_s"], "node_cpu_ms": six["node_cpu_ms"],
            "client_cpu_ms": six["client_cpu_ms"], "p50_ms": single["p50_ms"],
            "election_p50_ms": single["election_p50_ms"]}


def run_in(checkout: Path) -> dict[str, float]:
    """`--one` in `checkout`, with its code (its directory first on the import path)."""
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one"], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{checkout}: the run failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-800:]}")
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n")[0])
    p.add_argument("checkouts", nargs="*", type=Path, help="checkouts to compare (the first is "
                   "the reference of the win counts)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--one", action="store_true", help="one run here, as JSON (see above)")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one()))
        return 0
    if len(args.checkouts) < 2 or args.rounds < 1:
        p.error("give two checkouts or more and --rounds 1 or more")
    dirs = [d.resolve() for d in args.checkouts]
    names = [d.name for d in dirs]
    runs: list[list[dict[str, float]]] = []
    for r, order in enumerate(rotations(len(dirs), args.rounds)):
        got: dict[int, dict[str, float]] = {}
        for i in order:
            got[i] = run_in(dirs[i])
            print(f"round {r + 1}: {names[i]} {json.dumps(got[i])}", flush=True)
        runs.append([got[i] for i in range(len(dirs))])
    from benchmarks.cloud import table

    cols = ["checkout", "rounds", *FIGURES, "more_images_per_s", "lower_p50"]
    print(table(summarize(names, runs), cols))
    return 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a file (in another checkout): import that checkout's code
    raise SystemExit(main())
