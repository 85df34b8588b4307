"""`python -m benchmarks.fuzz --target {frames,fragments,messages,unseal} --minutes M [--corpus DIR]`

TI-9: coverage-guided fuzzing with atheris (libFuzzer) of the targets in `benchmarks.fuzz_targets`.
The corpus lives in `tests/fuzz_corpus/<target>/` (seeded with valid inputs when empty) and is
replayed by `tests/test_fuzz_corpus.py` without atheris. An input taking over 1 s is a hang
(`-timeout=1`); a crash, hang or out-of-memory input is written to the corpus directory as
`crash-*`, `timeout-*` or `oom-*`.

    --merge           minimise: libFuzzer -merge=1 of the corpus into a fresh directory, which
                      then replaces the corpus (keeps one input per new coverage feature)
    --libfuzzer ARGS  hand ARGS to libFuzzer as they are (--merge's child processes; --argv0 is
                      the program libFuzzer re-runs)

Needs the optional extra `fuzz` (pip install -e '.[fuzz]'); the targets themselves do not.
Run it niced, one target at a time: `nice -n 19 python -m benchmarks.fuzz --target frames`.
libFuzzer's final stats (stat::number_of_executed_units, corpus size) go to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

TARGET_NAMES = ("frames", "fragments", "messages", "unseal")
CORPUS_ROOT = Path("tests") / "fuzz_corpus"
MAX_LEN = {"frames": 2048, "fragments": 8192, "messages": 4096, "unseal": 32768}
RSS_LIMIT_MB = 2048
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


def _libfuzzer(target: str, args: list[str], argv0: str) -> None:
    """Run libFuzzer in this process with `args` (exits the process when done)."""
    import atheris

    fuzz_targets = sys.modules.get("benchmarks.fuzz_targets") or _instrumented()

    def one_input(data: bytes) -> None:
        fuzz_targets.run(target, data)

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
    return [f"-max_len={MAX_LEN[target]}", "-timeout=1", f"-rss_limit_mb={RSS_LIMIT_MB}",
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
        _libfuzzer(args.target, args.libfuzzer, args.argv0)
        return 0
    _instrumented()
    corpus: Path = args.corpus or CORPUS_ROOT / args.target
    if not corpus.is_dir() or not any(corpus.iterdir()):
        print(f"{args.target}: {write_seeds(args.target, corpus)} seed inputs in {corpus}")
    if args.merge:
        _merge(args.target, corpus)
        return 0
    seconds = max(1, round(args.minutes * 60))
    _libfuzzer(args.target, [*_flags(args.target, corpus), f"-max_total_time={seconds}",
                             str(corpus)], sys.argv[0])  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
