"""`python -m benchmarks.transport_seeds`: the TP-2 long run (RELIABILITY.md 6.1), many seeds per cell.

A cell is a message size and a schedule, both ways (data and ACKs impaired independently, each
direction its own loss model). Sizes: 1frag (one full fragment), bs+1 (block_size + 1 fragments),
1MiB, 16MiB. Schedules, each at a mean loss of 10 % and of 30 % per direction:

    bern   independent loss (Bernoulli p)
    burst  bursts of at most 3 drops (`Bursty`, continue 0.5; start probability set for the mean)
    ge     Gilbert-Elliott (bad state drops 90 %; good->bad 0.025 or 0.1, bad->good 0.2)
    dupshuf  Bernoulli p, 10 % duplicates, shuffled: delay 5 ms + uniform 0-20 ms jitter, no FIFO

Seed s sends `payload(s, size)` (random, no zero byte) over `transport.sim.transfer` with a 60 s
deadline. A seed fails unless the send is done and the body delivered exactly once, bit-exact,
nothing delivered after a failure, nothing left held. Efficiency = data datagrams sent /
fragments. A cell passes with no failed seed, mean efficiency <= 1.35 (10 %) or <= 2.5 (30 %)
and p99 <= 1.5x that (not checked for 1frag: one fragment's repeats are geometric in p, the p99
is not a property of the protocol; the CI test skips it too). Exit code 1 if any cell fails.

Seeds: 0 .. N-1 (`--seeds`, default 10000), the CI test's 200 included. The 16MiB cells run
min(N, `--big-seeds`) seeds, default 1000: one seed costs ~0.15-0.2 s of CPU (12k fragments),
so 10k seeds would take ~30 min per cell and ~4 h for its eight schedules.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from config import TransportConfig
from transport.sim import (
    Bernoulli,
    Bursty,
    GilbertElliott,
    Impairment,
    payload,
    shuffled,
    transfer,
)

CFG = TransportConfig()
FS, BS = CFG.fragment_size, CFG.block_size
SIZES = {"1frag": FS, "bs+1": (BS + 1) * FS, "1MiB": 1 << 20, "16MiB": 16 << 20}
BIG = "16MiB"
BOUNDS = {0.1: 1.35, 0.3: 2.5}  # mean efficiency bound by mean loss; p99 bound is P99_FACTOR x
P99_FACTOR = 1.5
BURST_CONT = 0.5
DEADLINE_S = 60.0
SHOWN_FAILURES = 10  # failed seeds listed per cell


def _burst_start(p: float) -> float:
    """Start probability of `Bursty(start, BURST_CONT, 3)` whose mean loss is p: each fresh
    draw starts a burst of mean length e = 1 + c + c^2, so loss = s*e / (1 + s*(e - 1))."""
    e = 1 + BURST_CONT + BURST_CONT**2
    return p / (e - p * (e - 1))


def _impairment(kind: str, p: float) -> Impairment:
    """A fresh one-direction impairment (loss models keep state: one per direction and seed)."""
    if kind == "bern":
        return Impairment(loss=Bernoulli(p))
    if kind == "burst":
        return Impairment(loss=Bursty(_burst_start(p), BURST_CONT, max_burst=3))
    if kind == "ge":  # stationary bad share p_gb / (p_gb + p_bg) = p / 0.9
        return Impairment(loss=GilbertElliott(0.2 * p / (0.9 - p), 0.2, loss_bad=0.9))
    if kind == "dupshuf":
        return shuffled(p)
    raise ValueError(f"unknown schedule {kind!r}")


@dataclass(frozen=True, slots=True)
class Cell:
    size_name: str
    kind: str
    p: float  # mean loss per direction

    @property
    def name(self) -> str:
        return f"{self.size_name}/{self.kind}{round(self.p * 100)}"

    @property
    def size(self) -> int:
        return SIZES[self.size_name]


CELLS = [Cell(s, k, p) for s in SIZES for k in ("bern", "burst", "ge", "dupshuf") for p in BOUNDS]
BY_NAME = {c.name: c for c in CELLS}


def run_seed(cell: Cell, seed: int) -> tuple[float, list[str], tuple[int, int, int, int]]:
    """(efficiency, problems, (data lost, data sent, ACKs lost, ACKs sent)) of one seed."""
    fwd, back = _impairment(cell.kind, cell.p), _impairment(cell.kind, cell.p)
    t = transfer(CFG, seed, payload(seed, cell.size), fwd, back, deadline_s=DEADLINE_S)
    return t.efficiency, t.problems(), (t.lost[0], t.sent[0], t.lost[1], t.sent[1])


SeedResult = tuple[int, float, list[str], tuple[int, int, int, int]]


def run_chunk(job: tuple[str, int, int]) -> list[SeedResult]:
    """Seeds [lo, hi) of the named cell (a top-level function: multiprocessing pickles it)."""
    name, lo, hi = job
    cell = BY_NAME[name]
    return [(s, *run_seed(cell, s)) for s in range(lo, hi)]


def _chunks(name: str, seeds: int, jobs: int) -> list[tuple[str, int, int]]:
    step = max(1, min(200, seeds // (4 * jobs)))
    return [(name, lo, min(lo + step, seeds)) for lo in range(0, seeds, step)]


def p99(xs: list[float]) -> float:
    """The 99th percentile (nearest rank below, as the CI test takes it) of a non-empty list."""
    ys = sorted(xs)
    return ys[int(0.99 * (len(ys) - 1))]


def summarise(cell: Cell, results: list[SeedResult], seconds: float) -> dict[str, Any]:
    """One table row (JSON-ready) from the per-seed results of `cell`."""
    effs = [r[1] for r in results]
    failed = sorted((r[0], r[2]) for r in results if r[2])
    lost = [sum(r[3][i] for r in results) for i in range(4)]
    bound = BOUNDS[cell.p]
    bound_p99 = None if cell.size <= FS else P99_FACTOR * bound
    mean, q99 = statistics.fmean(effs), p99(effs)
    ok = not failed and mean <= bound and (bound_p99 is None or q99 <= bound_p99)
    return {
        "cell": cell.name, "size": cell.size, "schedule": cell.kind, "loss": cell.p,
        "seeds": len(results), "failures": len(failed),
        "failed_seeds": [{"seed": s, "problems": p} for s, p in failed[:SHOWN_FAILURES]],
        "mean": mean, "p99": q99, "max": max(effs), "bound_mean": bound, "bound_p99": bound_p99,
        "data_loss": lost[0] / max(1, lost[1]), "ack_loss": lost[2] / max(1, lost[3]),
        "seconds": seconds, "pass": ok,
    }  # fmt: skip


def run_cell(cell: Cell, seeds: int, pool: Any | None, jobs: int) -> dict[str, Any]:
    """Run seeds 0 .. seeds-1 of `cell` (in `pool` if given) and summarise them."""
    t0 = time.perf_counter()
    chunks = _chunks(cell.name, seeds, jobs)
    parts = pool.imap_unordered(run_chunk, chunks) if pool is not None else map(run_chunk, chunks)
    results = [r for part in parts for r in part]
    return summarise(cell, results, time.perf_counter() - t0)


HEADER = (f"{'cell':<16} {'seeds':>6} {'fail':>5} {'loss d/a %':>11} {'mean':>6} {'p99':>6} "
          f"{'max':>6} {'bound':>11} {'s':>7}  result")  # fmt: skip


def format_row(row: dict[str, Any]) -> str:
    """One text line of the table (same data as the JSON row)."""
    b99 = "-" if row["bound_p99"] is None else f"{row['bound_p99']:.3g}"
    loss = f"{100 * row['data_loss']:.1f}/{100 * row['ack_loss']:.1f}"
    return (f"{row['cell']:<16} {row['seeds']:>6} {row['failures']:>5} {loss:>11} "
            f"{row['mean']:>6.3f} {row['p99']:>6.3f} {row['max']:>6.2f} "
            f"{row['bound_mean']:>4.3g} / {b99:<4} {row['seconds']:>7.1f}  "
            f"{'pass' if row['pass'] else 'FAIL'}")  # fmt: skip


def select(patterns: Iterable[str]) -> list[Cell]:
    """Cells whose name matches any of the shell patterns (all cells for ["*"]), in table order.
    Raises ValueError for a pattern that matches nothing."""
    pats = list(patterns)
    for pat in pats:
        if not fnmatch.filter(BY_NAME, pat):
            raise ValueError(f"--cells {pat!r} matches no cell; cells: {' '.join(BY_NAME)}")
    return [c for c in CELLS if any(fnmatch.fnmatchcase(c.name, pat) for pat in pats)]


def run(cells: list[Cell], seeds: int, big_seeds: int, jobs: int,
        emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:  # fmt: skip
    """Run every cell (16MiB ones with min(seeds, big_seeds)); `emit` gets each row when done."""
    rows = []
    pool = multiprocessing.Pool(jobs) if jobs > 1 else None
    try:
        for cell in cells:
            n = min(seeds, big_seeds) if cell.size_name == BIG else seeds
            rows.append(run_cell(cell, n, pool, jobs))
            emit(rows[-1])
    finally:
        if pool is not None:
            pool.terminate()
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10_000, help="seeds per cell (default 10000)")
    ap.add_argument("--big-seeds", type=int, default=1_000,
                    help=f"at most this many seeds for the {BIG} cells (default 1000)")  # fmt: skip
    ap.add_argument("--cells", nargs="+", default=["*"], help="cell name patterns, e.g. '1MiB/*'")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.big_seeds < 1 or args.jobs < 1:
        ap.error("--seeds, --big-seeds and --jobs must be at least 1")
    try:
        args.selected = select(args.cells)
    except ValueError as exc:
        ap.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not args.json:
        print(f"TP-2: efficiency = data datagrams / fragments; seeds 0..N-1, {BIG} cells at most "
              f"{args.big_seeds} seeds (CPU cost); bound = mean / p99; jobs {args.jobs}")  # fmt: skip
        print(HEADER, flush=True)
    emit = (lambda row: None) if args.json else (lambda row: print(format_row(row), flush=True))
    t0 = time.perf_counter()
    rows = run(args.selected, args.seeds, args.big_seeds, args.jobs, emit)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        for row in rows:
            for f in row["failed_seeds"]:
                print(f"FAILED {row['cell']} seed {f['seed']}: {'; '.join(f['problems'])}")
        bad = sum(not r["pass"] for r in rows)
        print(f"{len(rows)} cells, {bad} failed, {time.perf_counter() - t0:.0f} s wall")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
