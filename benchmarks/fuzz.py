"""`python -m benchmarks.fuzz --target {frames,fragments,messages,unseal} --minutes M [--corpus DIR]`

TI-9: coverage-guided fuzzing with atheris (libFuzzer) of the targets in `benchmarks.fuzz_targets`.
The corpus lives in `tests/fuzz_corpus/<target>/` (seeded with valid inputs when empty) and is
replayed by `tests/test_fuzz_corpus.py` without atheris. An input taking over 1 s of CPU is a
hang (`Hang`, saved like a crash); a crash, hang or out-of-memory input is written to the corpus
directory as `crash-*`, `timeout-*` or `oom-*`. `--minutes` counts CPU time of the fuzzing
process: processes on this machine are at times stopped for many seconds (state T; libFuzzer saw
18-22 s "slow units" that take under 1 ms when replayed), which a wall clock would count as
hangs. libFuzzer's wall-clock limits are only backstops. The last lines on stderr give
inputs run, CPU and wall seconds, the slowest input, then libFuzzer's final stats.

    --merge           minimise: libFuzzer -merge=1 of the corpus into a fresh directory, which
                      then replaces the corpus (keeps one input per new coverage feature)
    --libfuzzer ARGS  hand ARGS to libFuzzer as they are (--merge's child processes; --argv0 is
                      the program libFuzzer re-runs)

Needs the optional extra `fuzz` (pip install -e '.[fuzz]'); the targets themselves do not.
Run it niced, one target at a time: `nice -n 19 python -m benchmarks.fuzz --target frames`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

TARGET_NAMES = ("frames", "fragments", "messages", "unseal")
CORPUS_ROOT = Path("tests") / "fuzz_corpus"
MAX_LEN = {"frames": 2048, "fragments": 8192, "messages": 4096, "unseal": 32768}
RSS_LIMIT_MB = 2048
HANG_S = 1.0  # CPU seconds per input
WALL_TIMEOUT_S = 120  # libFuzzer's wall-clock backstop for an input that never returns
INSTRUMENTED = ("codec", "transport", "benchmarks.fuzz_targets")


def _instrumented() -> ModuleType:
    """benchmarks.fuzz_targets with codec and transport, imported under atheris' coverage
    instrumentation (must come before anything else imports them: seeds are written after)."""
    import atheris

    if any(name in sys.modules for name in INSTRUMENTED):
        raise RuntimeError("codec/transport imported before instrumentation: no coverage")
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        from benchmarks import fuzz_targets
    return fuzz_targets


class Hang(Exception):
    """An input took more than HANG_S of CPU time (raised to libFuzzer, which saves it)."""


class CpuClock:
    """Measures each input in CPU seconds of this process (`time.process_time`): the host may
    pause low-priority jobs (SIGSTOP) for many seconds, which a wall clock would count.
    `budget_s`: CPU seconds of fuzzing after which libFuzzer is asked to stop (SIGUSR1: it
    finishes the unit and prints its final stats); None = no limit."""

    def __init__(self, target: str, budget_s: float | None) -> None:
        self.target = target
        self.start_cpu, self.start_wall = time.process_time(), time.monotonic()
        self.end = None if budget_s is None else self.start_cpu + budget_s
        self.inputs = 0
        self.worst = 0.0

    def run(self, fn: Callable[[str, bytes], str], data: bytes) -> None:
        before = time.process_time()
        fn(self.target, data)
        now = time.process_time()
        self.inputs += 1
        self.worst = max(self.worst, now - before)
        if now - before > HANG_S:
            raise Hang(f"{now - before:.2f} s of CPU for one input (bound {HANG_S} s)")
        if self.end is not None and now >= self.end:
            self.end = None
            print(f"fuzz {self.target}: {self.inputs} inputs in {now - self.start_cpu:.0f} s "
                  f"CPU ({time.monotonic() - self.start_wall:.0f} s wall), slowest input "
                  f"{self.worst * 1000:.1f} ms CPU", file=sys.stderr, flush=True)  # fmt: skip
            os.kill(os.getpid(), signal.SIGUSR1)


def _libfuzzer(target: str, args: list[str], argv0: str, budget_s: float | None) -> None:
    """Run libFuzzer in this process with `args` (exits the process when done)."""
    import atheris

    fuzz_targets = sys.modules.get("benchmarks.fuzz_targets") or _instrumented()
    clock = CpuClock(target, budget_s)

    def one_input(data: bytes) -> None:
        clock.run(fuzz_targets.run, data)

    atheris.Setup([argv0, *args], one_input)
    atheris.Fuzz()


def write_seeds(target: str, corpus: Path) -> int:
    """Write the seed inputs of `target` into `corpus` (named by SHA-1, like libFuzzer)."""
    from benchmarks.fuzz_seeds import seed_inputs

    corpus.mkdir(parents=True, exist_ok=True)
    seeds = seed_inputs(target)
    for data in seeds:
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(seeds)


def _flags(target: str, corpus: Path) -> list[str]:
    return [f"-max_len={MAX_LEN[target]}", f"-timeout={WALL_TIMEOUT_S}",
            f"-report_slow_units={WALL_TIMEOUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={corpus}{os.sep}", "-print_final_stats=1"]  # fmt: skip


def _merge(target: str, corpus: Path) -> None:
    """Minimise `corpus` with -merge=1 into a fresh directory, then swap it in (crash files
    stay). libFuzzer runs the merge in child processes that re-run argv[0] with its own flags:
    a small wrapper script that calls this module with --libfuzzer."""
    fresh = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(f'#!/bin/sh\nexec "{sys.executable}" -m benchmarks.fuzz --target {target} '
                f'--argv0 "$0" --libfuzzer "$@"\n')  # fmt: skip
    wrapper = Path(f.name)
    wrapper.chmod(0o755)
    try:
        cmd = [str(wrapper), *_flags(target, corpus), "-merge=1", str(fresh), str(corpus)]
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise SystemExit(f"merge failed (exit {done.returncode})")
        for old in corpus.iterdir():
            if not old.name.startswith(("crash-", "timeout-", "oom-")):
                old.unlink()
        for new in fresh.iterdir():
            shutil.move(str(new), corpus / new.name)
    finally:
        wrapper.unlink()
        shutil.rmtree(fresh, ignore_errors=True)
    print(f"{target}: corpus minimised to {sum(1 for _ in corpus.iterdir())} files", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=TARGET_NAMES, required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--corpus", type=Path, help="default: tests/fuzz_corpus/<target>")
    ap.add_argument("--merge", action="store_true", help="minimise the corpus, no fuzzing")
    ap.add_argument("--libfuzzer", nargs=argparse.REMAINDER, help="raw libFuzzer arguments")
    ap.add_argument("--argv0", default=sys.argv[0], help="what libFuzzer re-runs (--merge)")
    args = ap.parse_args(argv)
    if args.libfuzzer is not None:
        _libfuzzer(args.target, args.libfuzzer, args.argv0, None)
        return 0
    _instrumented()
    corpus: Path = args.corpus or CORPUS_ROOT / args.target
    if not corpus.is_dir() or not any(corpus.iterdir()):
        print(f"{args.target}: {write_seeds(args.target, corpus)} seed inputs in {corpus}")
    if args.merge:
        _merge(args.target, corpus)
        return 0
    budget = args.minutes * 60
    backstop = f"-max_total_time={round(budget * 10) + 600}"  # wall: the host may pause us
    _libfuzzer(args.target, [*_flags(args.target, corpus), backstop, str(corpus)], sys.argv[0],
               budget)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
