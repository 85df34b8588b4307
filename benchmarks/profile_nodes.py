"""`python -m benchmarks.profile_nodes`: where the node processes of a 3-node cloud spend their CPU.

Starts a local cloud (failures off), attaches `py-spy record --nonblocking --format raw` to every
node process, and runs two phases of the `benchmarks.cloud` workload: (1) one client seals the
photo `--photos` times, the first on the fresh cloud; (2) `--clients` client processes seal
`--total` small images back to back. Prints, per phase, the functions with the most self time and
the most inclusive time as a markdown table (% of the CPU the nodes used: the samples of all
nodes added up, with idle waits removed: a blocking select of the transport's reader, a
`Condition.wait`/`Event.wait`, an actor waiting on its mailbox, an idle worker of a thread pool;
the readers' polls after datagrams moved, `transport.poll_after_io_us`, are counted apart). The
raw profiles stay in `--out`.
py-spy counts a thread that waits for the GIL as running, so on a busy host the shares blur.
Needs py-spy (`pip install py-spy`) and the right to trace the node processes (root, or
ptrace_scope 0). Used for docs/profile-before.md and docs/profile-after.md (issue 19).
"""

from __future__ import annotations

import argparse
import collections
import json
import linecache
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cloud import load_images, photo_jpeg, run_clients
from benchmarks.localcloud import REPO, Cloud

# a leaf frame is idle when its function and source line are one of these waits
IDLE_WAITS = (
    ("Condition.wait", "waiter.acquire("),
    ("Event.wait", ""),
    ("Reactor._wait", "select.select(fds, [], [], timeout)"),
    ("_worker", "work_queue.get(block=True)"),
    # an actor waiting for its next message: a SimpleQueue mailbox (transport.mailbox) waits in
    # C, so the loop's own line is the leaf (pykka's queue.Queue waited in Condition.wait)
    ("Actor._actor_loop_running", "envelope = self.actor_inbox.get()"),
)
# a leaf frame is the reader's poll after datagrams moved (transport.poll_after_io_us): CPU
# spent on purpose (and given up to anything else ready), shown apart from the functions
POLLS = (
    ("Reactor._wait", "select.select(fds, [], [], 0)"),
    ("Reactor._wait", "os.sched_yield()"),
)
_FRAME = re.compile(r"(?P<func>.*?) \((?P<path>.*?):(?P<line>\d+)\)$")


def py_spy() -> str | None:
    """The py-spy executable: on the PATH, else beside this Python (a venv's bin/); None."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return spy if Path(spy).exists() else None


def record(pids: dict[int, int], out: Path, tag: str, seconds: int,
           gil: bool = False) -> list[subprocess.Popen[bytes]]:
    """One py-spy per node, sampling `seconds` at 100 Hz into out/<tag>-node<N>.txt; with `gil`,
    only samples of the thread that holds the GIL (Python work, not waits for the GIL)."""
    spy = py_spy() or "py-spy"  # (missing: Popen says so)
    procs = [subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
                               *(["--gil"] if gil else []),
                               "--format", "raw", "--duration", str(seconds),
                               "-o", str(out / f"{tag}-node{node}.txt")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for node, pid in pids.items()]
    time.sleep(1.0)  # py-spy attaches
    return procs


def _source_line(path: str, line: int) -> str:
    for base in (REPO, *map(Path, sys.path)):
        candidate = base / path
        if candidate.is_file():
            return linecache.getline(str(candidate), line)
    return ""


LINES_FILE = "lines.json"  # beside the raw profiles: each leaf frame's source line, as recorded


def _matches(frame: str, waits: tuple[tuple[str, str], ...],
             lines: dict[str, str] | None = None) -> bool:  # fmt: skip
    """Whether `frame` is one of `waits`: its function, and its line's text (from `lines`, the
    text recorded with the profile, else the source as it is now)."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return False
    key = f"{m['path']}:{m['line']}"
    for func, text in waits:
        if m["func"] != func:
            continue
        if not text:
            return True
        line = lines[key] if lines and key in lines else _source_line(m["path"], int(m["line"]))
        if text in line:
            return True
    return False


def is_idle(frame: str, lines: dict[str, str] | None = None) -> bool:
    return _matches(frame, IDLE_WAITS, lines)


def is_poll(frame: str, lines: dict[str, str] | None = None) -> bool:
    return _matches(frame, POLLS, lines)


def save_lines(files: list[Path]) -> Path:
    """Write LINES_FILE beside `files`: the source text of every leaf frame in them, read now,
    while the checkout is the code that was profiled. A profile read later, after the code
    changed, is then still classified by the lines it sampled (line numbers move with edits:
    read from the new code, the sixteenth session's profile showed its reader's blocking
    select as 37 % of the CPU)."""
    out: dict[str, str] = {}
    for f in files:
        for line in f.read_text().splitlines():
            m = _FRAME.match(line.rpartition(" ")[0].split(";")[-1].strip())
            if m is not None:
                key = f"{m['path']}:{m['line']}"
                if key not in out:
                    out[key] = _source_line(m["path"], int(m["line"]))
    path = files[0].parent / LINES_FILE
    path.write_text(json.dumps(out, indent=0, sort_keys=True))
    return path


def _recorded_lines(files: list[Path]) -> dict[str, str]:
    lines: dict[str, str] = {}
    for folder in {f.parent for f in files}:
        path = folder / LINES_FILE
        if path.exists():
            lines.update(json.loads(path.read_text()))
    return lines


def load(files: list[Path]) -> tuple[collections.Counter[str], int]:
    """Collapsed stacks of `files` added up, idle ones and the readers' polls left out, and
    the polls' samples. Leaf lines are read from LINES_FILE beside the files when it is there
    (`save_lines`), else from the source as it is now."""
    stacks: collections.Counter[str] = collections.Counter()
    polls = 0
    kind: dict[str, str] = {}
    lines = _recorded_lines(files)
    for f in files:
        for line in f.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            leaf = stack.split(";")[-1]
            if leaf not in kind:
                kind[leaf] = ("idle" if is_idle(leaf, lines) else "poll" if is_poll(leaf, lines)
                              else "cpu")
            if not stack or kind[leaf] == "idle":
                continue
            if kind[leaf] == "poll":
                polls += int(n)
                continue
            stacks[stack] += int(n)
    return stacks, polls


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip()
    return f"{m['func']} ({'/'.join(m['path'].split('/')[-2:])})"


def summary(title: str, files: list[Path], top: int = 15) -> str:
    """Markdown: the `top` functions by self time and by inclusive time."""
    stacks, polls = load(files)
    total = sum(stacks.values()) or 1
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for stack, n in stacks.items():
        frames = [_name(f) for f in stack.split(";") if "(" in f]
        if frames:
            own[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    poll = (f"; the readers' polls after datagrams moved, {polls} samples more "
            f"({100 * polls / (total + polls):.1f} % of all), left out of the shares"
            if polls else "")
    lines = [f"### {title}: {sum(stacks.values())} samples at 100 Hz, idle waits removed{poll}",
             "", "| function (self time) | % of node CPU |", "| --- | --- |"]
    lines += [f"| `{fr}` | {100 * n / total:.1f} |" for fr, n in own.most_common(top)]
    lines += ["", "| function (inclusive) | % of node CPU |", "| --- | --- |"]
    plumbing = ("Thread.", "Actor._actor_loop", "_bootstrap", "<module>", "_run_module")
    shown = [(fr, n) for fr, n in incl.most_common() if not fr.startswith(plumbing)][:top]
    lines += [f"| `{fr}` | {100 * n / total:.1f} |" for fr, n in shown]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_nodes",
                                description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=int, default=15)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--total", type=int, default=500)
    p.add_argument("--seconds", type=int, default=15, help="sampling time of each phase")
    p.add_argument("--out", type=Path, default=Path("bench-out/profile"))
    p.add_argument("--gil", action="store_true",
                   help="sample only the thread holding the GIL (py-spy --gil): Python work, "
                        "without the threads that wait for it or sit in a system call")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import config as config_mod
    from actors.client.client_session import ClientSession

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cloud = Cloud(root, 3).start()
        try:
            pids = {node: proc.pid for node, proc in cloud.procs.items()}
            photo = photo_jpeg()
            if args.photos > 0:  # --photos 0: the small images alone
                spies = record(pids, args.out, "photo", args.seconds, args.gil)
                session = ClientSession("profile", root / "photo", config_mod.load(cloud.config))
                try:
                    runs = [session.timed_seal(f"p{i}.jpg", photo) for i in range(args.photos)]
                finally:
                    session.close()
                for spy in spies:
                    spy.wait()
                figures["photo"] = {"bytes": len(photo), "first": runs[0],
                                    "p50_ms": statistics.median(r["total_ms"] for r in runs)}
            spies = record(pids, args.out, "small", args.seconds, args.gil)
            figures["small"] = run_clients(cloud, args.clients, load_images(None, args.total),
                                           0.0, root)
            for spy in spies:
                spy.wait()
        finally:
            cloud.stop()
    raw = sorted(args.out.glob("photo-node*.txt")) + sorted(args.out.glob("small-node*.txt"))
    if raw:
        save_lines(raw)  # while the checkout is the profiled code (see save_lines)
    if args.photos > 0:
        print(summary(f"{args.photos} photo requests of {len(photo) / 1e6:.2f} MB, the first on "
                      "a fresh cloud (3 nodes)", sorted(args.out.glob("photo-node*.txt"))))
    print(summary(f"{args.clients} clients, {args.total} small images (3 nodes)",
                  sorted(args.out.glob("small-node*.txt"))))
    print("client-side figures:", json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
