"""`python -m benchmarks.thread_cpu`: a node's CPU per small request, thread by thread.

Starts a local cloud (`--nodes`, failures off), warms it with 50 requests, then runs `--clients`
client processes back to back over `--total` small images (`benchmarks.cloud.run_clients`) and
prints, per node and request, the user and system CPU time and the voluntary and involuntary
context switches of each of its threads, from /proc/<pid>/task/<tid>/ (Linux), with the threads'
Python names (transport readers, actors, the ticker) read by `py-spy dump` when py-spy is
installed (else the kernel's thread ids). Unlike a sampling profiler this counts CPU only: a
thread waiting for the GIL is not running. Used for the README's twelfth-session figures
(issue 19).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks.cloud import load_images, run_clients
from benchmarks.localcloud import Cloud
from benchmarks.profile_nodes import py_spy

Counts = tuple[int, int, int, int]  # user ticks, system ticks, voluntary, involuntary switches


def thread_counts(pid: int) -> dict[int, Counts]:
    """Per thread of `pid`: (user ticks, system ticks, voluntary, involuntary switches)."""
    out: dict[int, Counts] = {}
    task = Path(f"/proc/{pid}/task")
    for entry in task.iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        vol, invol = (int(fields[k]) for k in ("voluntary_ctxt_switches",
                                               "nonvoluntary_ctxt_switches"))
        out[int(entry.name)] = (int(stat[11]), int(stat[12]), vol, invol)
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from `py-spy dump` ({} without py-spy)."""
    spy = py_spy()
    if spy is None:
        return {}
    try:
        dump = subprocess.run([spy, "dump", "--pid", str(pid)], check=False,
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for m in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) .*?"([^"]*)"', dump, re.MULTILINE):
        tid = m[1]
        names[int(tid, 16) if tid.startswith("0x") else int(tid)] = m[2]
    return names


def per_request(before: dict[int, Counts], after: dict[int, Counts], names: dict[int, str],
                requests: int) -> list[tuple[str, float, float, float, float]]:
    """Rows (thread, user ms, system ms, voluntary, involuntary) per request, busiest first;
    threads that did nothing are left out."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    rows = []
    for tid, now in after.items():
        was = before.get(tid, (0, 0, 0, 0))
        d = [a - b for a, b in zip(now, was, strict=True)]
        if any(d):
            rows.append((names.get(tid, f"thread {tid}"), d[0] * tick_ms / requests,
                         d[1] * tick_ms / requests, d[2] / requests, d[3] / requests))
    return sorted(rows, key=lambda r: -(r[1] + r[2]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.thread_cpu",
                                description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--total", type=int, default=1000)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cloud = Cloud(root, args.nodes).start()
        try:
            images = load_images(None, args.total)
            run_clients(cloud, args.clients, images[:50], 0.0, root)  # warm: covers, sessions
            pids = {node: proc.pid for node, proc in cloud.procs.items()}
            names = {node: thread_names(pid) for node, pid in pids.items()}
            before = {node: thread_counts(pid) for node, pid in pids.items()}
            result = run_clients(cloud, args.clients, images, 0.0, root)
            after = {node: thread_counts(pid) for node, pid in pids.items()}
        finally:
            cloud.stop()
    print(f"{args.nodes} nodes, {args.clients} clients, {args.total} small images: "
          f"{result['images_per_s']:.1f} images/s, failure rate {result['failure_rate']:.3f}")
    print("CPU ms and context switches per request, per node thread (from /proc)\n")
    for node in sorted(pids):
        rows = per_request(before[node], after[node], names[node], args.total)
        user, system = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"node {node}: user {user:.2f} ms, system {system:.2f} ms, voluntary "
              f"{sum(r[3] for r in rows):.1f}, involuntary {sum(r[4] for r in rows):.1f}")
        print(f"  {'thread':32s} {'user_ms':>8s} {'sys_ms':>8s} {'vol':>6s} {'invol':>6s}")
        for name, u, s, v, i in rows:
            print(f"  {name:32s} {u:8.3f} {s:8.3f} {v:6.2f} {i:6.2f}")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
