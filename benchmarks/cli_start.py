"""How long one `python -m shell -c "CMD"` takes against a running cloud, start to exit:
`python -m benchmarks.cli_start [--repeat N] [--json]`.

Starts a local 3-node cloud (benchmarks.localcloud), runs `-c status`, `-c users` and
`-c "status; users"` `--repeat` times each as a new process (a script's way of using the
client: each call starts an interpreter, loads the client, joins, runs, leaves), and prints the
median and the spread of the wall time. Then, in one fresh interpreter, the import time of the
client (`import shell.__main__`) and whether it loaded numpy (it should not: only sealing,
viewing and granting need it, and they load it when first used).

Bytecode: the runs use a bytecode cache made for this benchmark (PYTHONPYCACHEPREFIX), as a
normal install has one; with PYTHONDONTWRITEBYTECODE set and no cache, every run would compile
the sources again (about 0.5 s more per command on the reference machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.localcloud import REPO, Cloud, env

COMMANDS = ("status", "users", "status; users")
_IMPORTS = ("import sys, time; t = time.perf_counter(); import shell.__main__; "
            "print(time.perf_counter() - t, 'numpy' in sys.modules)")


def run(repeat: int, repo: Path = REPO) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vs-cli-") as tmp:
        root = Path(tmp)
        environ = {**env(), "PYTHONPYCACHEPREFIX": str(root / "pyc"),
                   "PYTHONPATH": str(repo)}
        environ.pop("PYTHONDONTWRITEBYTECODE", None)
        cloud = Cloud(root, 3)
        cloud.start()
        try:
            base = [sys.executable, "-m", "shell", "--user", "alice", "--home",
                    str(root / "alice"), "--config", str(cloud.config)]
            subprocess.run([*base, "-c", "status"], env=environ, cwd=str(repo),
                           capture_output=True, check=True, timeout=120)  # fills the cache
            times: dict[str, list[float]] = {c: [] for c in COMMANDS}
            for _ in range(repeat):
                for command in COMMANDS:
                    start = time.perf_counter()
                    subprocess.run([*base, "-c", command], env=environ, cwd=str(repo),
                                   capture_output=True, check=True, timeout=120)
                    times[command].append(time.perf_counter() - start)
            probe = [subprocess.run([sys.executable, "-c", _IMPORTS], env=environ, cwd=str(repo),
                                    capture_output=True, text=True, check=True,
                                    timeout=60).stdout.split() for _ in range(repeat)]
        finally:
            cloud.stop()
    return {
        "commands": {c: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
                     for c, v in times.items()},
        "import_s": statistics.median(float(p[0]) for p in probe),
        "numpy_at_start": any(p[1] == "True" for p in probe),
        "repeat": repeat,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cli_start", description=__doc__)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="the checkout whose client is timed (the cloud is this one's)")
    args = ap.parse_args(argv)
    r = run(args.repeat, args.repo.resolve())
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"python -m shell -c CMD against a 3-node cloud, {args.repeat} runs each, client of "
          f"{args.repo}")
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'max s':>7}")
    for command, row in r["commands"].items():
        print(f"{command:<16} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['max_s']:7.3f}")
    print(f"import shell.__main__: {r['import_s']:.3f} s; numpy loaded at start: "
          f"{'yes' if r['numpy_at_start'] else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
