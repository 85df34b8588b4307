"""`python -m benchmarks.msg_count`: what one small request costs in messages, per node.

Starts a local cloud (failures off) whose node processes load `benchmarks/countsite` (counting
hooks: `benchmarks.count_hooks`), seals `--total` small images back to back from one client in
this process (hooked too), and prints per request: datagrams sent by kind (DATA, ACK) and send
system calls, actor messages (pykka tell/ask by receiving actor and message type, and by the
function that told), thread wake-ups (`Condition.notify` that found a waiting thread) and
blocking `select` returns, for each node and the client. The background (heartbeats, ticks) is
measured over an idle window first and subtracted at its rate. Counts below `--min` per request
are left out. Also the CPU time (user + system, from /proc) each node process used per request.
`--no-hooks`: nodes without the hooks (their cost is then not in the CPU figure), CPU and
latency only; `--clients N` (N > 1): N client processes back to back
(`benchmarks.cloud.run_clients`), for the CPU per request and the nodes' counts under load (the
client processes are not hooked: no client section then). Used for
docs/profile-after.md (issue 19)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import count_hooks
from benchmarks.cloud import cpu_s, load_images, run_clients
from benchmarks.localcloud import REPO, Cloud, env

SITE = Path(__file__).resolve().parent / "countsite"


def read(folder: Path | None, pids: dict[int, int]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if folder is not None:
        time.sleep(0.35)  # the hooks write every 0.1 s
    for node, pid in pids.items():
        counts = json.loads((folder / f"{pid}.json").read_text()) if folder is not None else {}
        out[f"node {node}"] = {**counts, "cpu ms": cpu_s(pid) * 1000}
    out["client"] = {**count_hooks.snapshot()} if folder is not None else {}
    return out


def diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]
         ) -> dict[str, dict[str, float]]:
    return {who: {k: v - a[who].get(k, 0) for k, v in b[who].items() if v - a[who].get(k, 0)}
            for who in b}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.msg_count",
                                description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--total", type=int, default=200)
    p.add_argument("--idle", type=float, default=3.0, help="seconds of idle background measured")
    p.add_argument("--min", type=float, default=0.05, help="smallest count per request shown")
    p.add_argument("--no-hooks", dest="hooks", action="store_false",
                   help="no counting hooks: CPU per request and latency only")
    p.add_argument("--clients", type=int, default=1,
                   help="client processes (not hooked: the nodes alone are counted)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import config as config_mod
    from actors.client.client_session import ClientSession

    if args.hooks:
        count_hooks.install()
    latency: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "counts" if args.hooks else None
        extra: dict[str, str] = {}
        if folder is not None:
            folder.mkdir()
            extra = {"PYTHONPATH": f"{SITE}{os.pathsep}{env()['PYTHONPATH']}",
                     "VEILSHARE_COUNT_DIR": str(folder)}
        cloud = Cloud(root, args.nodes, node_env=lambda _n: extra).start()
        try:
            pids = {node: proc.pid for node, proc in cloud.procs.items()}
            session = ClientSession("count", root / "home", config_mod.load(cloud.config))
            images = load_images(None, args.total + 20)
            try:
                for name, data in images[:20]:  # warm up
                    session.timed_seal(name, data)
                t0 = time.monotonic()
                a = read(folder, pids)
                time.sleep(args.idle)
                b = read(folder, pids)
                idle_s = time.monotonic() - t0
                t1 = time.monotonic()
                if args.clients == 1:
                    ms = [session.timed_seal(name, data)["total_ms"]
                          for name, data in images[20:]]
                    latency = {"p50_ms": statistics.median(ms)}
                else:
                    r = run_clients(cloud, args.clients, images[20:], 0.0, root)
                    latency = {"p50_ms": r["p50_ms"], "images_per_s": r["images_per_s"]}
                c = read(folder, pids)
                load_s = time.monotonic() - t1
            finally:
                session.close()
        finally:
            cloud.stop()
    idle, load = diff(a, b), diff(b, c)
    if args.clients > 1:  # the client processes are not hooked: only this idle session is
        load.pop("client", None)
    per: dict[str, dict[str, float]] = {}
    for who, counts in load.items():
        per[who] = {}
        for k, v in counts.items():
            net = (v - idle.get(who, {}).get(k, 0) * load_s / idle_s) / args.total
            if abs(net) >= args.min:
                per[who][k] = round(net, 2)
    per["nodes"] = {"cpu ms": round(sum(v.get("cpu ms", 0.0) for k, v in per.items()
                                        if k.startswith("node")), 2)}
    if args.json:
        print(json.dumps({"per_request": per, **latency}, indent=1, sort_keys=True))
        return 0
    print(f"per request ({args.total} small images back to back, {args.clients} client(s), "
          f"{args.nodes} nodes; background at its idle rate subtracted; {REPO}): "
          + ", ".join(f"{k} {v:.2f}" for k, v in latency.items()))
    for who, counts in per.items():
        print(f"\n## {who}")
        for k, v in sorted(counts.items(), key=lambda kv: (kv[0].split(" ")[0], -kv[1])):
            print(f"{v:8.2f}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
