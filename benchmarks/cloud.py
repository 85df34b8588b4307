"""`python -m benchmarks.cloud`: the reference evaluation of the encrypt service.

(a) 1 client, 50 images 1 s apart; (b) 1..6 clients back to back, 500 images in all; each with
1 node (no load balancing) and with 3 nodes. Per row: average, p50 and p95 response time,
images/s, failure rate, election p50 and p99, the CPU per image of the node processes and of the
clients (user + system, from the common start to the last reply), and how the requests spread
over the nodes.
(c) per-phase p50 (upload, election, seal, download) of the photo, sealed `--photos` times by one
client on each freshly started cloud (the first request, which pays for anything a node does
lazily, is shown apart and counts in the p50), and of the small images of (b) at 1 and 6
clients. (d) a summary: the 3-node / 1-node ratio of 6-client images/s, election p50/p99 at 1
and 6 clients, and the CPU budget at 6 clients: node and client CPU ms per image and the
images/s the host's cores would give if they did nothing but that work (when nodes and clients
share the cores, as here, images/s cannot pass it).
(e) with `--paired N`: the same ratio taken so that the host's drift cancels. The ratio of (d)
compares two runs minutes apart, and this shared host's speed drifts by a factor of 1.5-2 in
that time (the seventeenth session saw 0.45-0.95 over eight runs of one code). Here both clouds
stay up, and N batches of the most clients on the 3-node cloud alternate with N + 1 on the
1-node cloud (A B A B ... A); each 3-node batch is divided by the mean of the two 1-node
batches around it (`bracketed_ratios`: a drift linear over a pair cancels). Prints each pair
and the median. The cloud not measured idles meanwhile (its nodes' heartbeats: about 30 ms of
CPU a second per node).

Images are generated deterministically (small PNGs of 3-5 KB, one photo-like JPEG of ~1.9 MB),
or taken from `--images DIR`. Every client is its own process (its own socket and GIL). The
cloud runs with the failure simulation off. Prints tables; `--plot [PNG]` saves a plot of
response time against clients for each cloud size (matplotlib, the bench extras); `--json`
prints the figures as one JSON object. `--client-nice N` is a diagnostic, not the reference:
the client processes run at niceness N, so the nodes get a core before them, as they would with
the clients on hosts of their own (the tables say so; issue 19's figures are taken without it).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.localcloud import Cloud

STARTUP_S = 4.0  # time given to the client processes to start before they all begin
PHASES = ("upload_ms", "election_ms", "seal_ms", "download_ms")
CLIENT_NICE = 0  # --client-nice (a diagnostic): the niceness the client processes run at


# ---- images -------------------------------------------------------------------------------------
def small_png(i: int) -> bytes:
    """A deterministic PNG of about 3-5 KB (a gradient with some noise), different per i."""
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:48, 0:48]
    base = np.stack([(x * 5 + i) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1)
    noisy = (base + rng.integers(0, 24, base.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buf, "PNG")
    return buf.getvalue()


def photo_jpeg(target: int = 1_900_000) -> bytes:
    """A deterministic photo-like JPEG of about `target` bytes (noise over smooth gradients)."""
    rng = np.random.default_rng(7)
    w, h = 2400, 1800
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / 170), 128 + 100 * np.cos(y / 130),
                    128 + 90 * np.sin((x + y) / 210)], axis=-1)
    img += rng.normal(0, 28, img.shape)
    arr = img.clip(0, 255).astype(np.uint8)
    best = b""
    for q in range(95, 40, -1):  # the best quality at most 5 % over target (1.95 MB)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=q)
        best = buf.getvalue()
        if len(best) <= target * 1.05:
            break
    return best


def load_images(folder: Path | None, count: int) -> list[tuple[str, bytes]]:
    if folder is None:
        return [(f"img{i:04d}.png", small_png(i)) for i in range(count)]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [(files[i % len(files)].name, files[i % len(files)].read_bytes()) for i in range(count)]


# ---- clients --------------------------------------------------------------------------------------
def _client(args: tuple[str, str, str, list[tuple[str, bytes]], float, float, int]
            ) -> list[dict[str, Any]]:
    config_path, user, home, items, spacing, start_at, nice = args
    import config as config_mod
    from actors.client.client_session import ClientSession, SessionError

    if nice:
        os.nice(nice)  # --client-nice: the nodes get a core before this client does
    cfg = config_mod.load(config_path)
    session = ClientSession(user, Path(home), cfg)
    out: list[dict[str, Any]] = []
    time.sleep(max(0.0, start_at - time.time()))  # every client starts together, ready
    cpu0 = time.process_time()
    try:
        for name, data in items:
            start = time.perf_counter()
            try:
                t = session.timed_seal(name, data)
                out.append({"ms": (time.perf_counter() - start) * 1000, "node": t["node"],
                            **{k: t[k] for k in PHASES}, "ok": True})
            except SessionError as exc:
                out.append({"ms": (time.perf_counter() - start) * 1000, "ok": False,
                            "error": str(exc)})
            if spacing:
                time.sleep(spacing)
        out.append({"stats": vars(session.caller.stats), "end": time.time(),
                    "cpu_s": time.process_time() - cpu0})
    finally:
        session.close()
    return out


def run_clients(cloud: Cloud, n_clients: int, images: list[tuple[str, bytes]], spacing: float,
                root: Path) -> dict[str, Any]:
    shares = [images[i::n_clients] for i in range(n_clients)]
    # processes take a second or two to start (imports, sockets): the cloud is measured from a
    # common start moment, once every client is ready, to the last reply
    start_at = time.time() + STARTUP_S
    jobs = [(str(cloud.config), f"bench{c}", str(root / f"home{c}"), shares[c], spacing, start_at,
             CLIENT_NICE) for c in range(n_clients)]
    pids = [proc.pid for proc in getattr(cloud, "procs", {}).values()]
    node_cpu: list[float] = []  # the nodes' CPU at the common start (taken then by a timer)
    timer = threading.Timer(max(0.0, start_at - time.time()),
                            lambda: node_cpu.append(sum(map(cpu_s, pids))))
    timer.start()
    with mp.get_context("spawn").Pool(n_clients) as pool:
        results = pool.map(_client, jobs)
    timer.join()
    node_cpu.append(sum(map(cpu_s, pids)))
    wall = max(r["end"] for res in results for r in res if "end" in r) - start_at
    rows = [r for res in results for r in res if "ms" in r]
    dups = sum(r["stats"]["duplicates"] for res in results for r in res if "stats" in r)
    ok = [r["ms"] for r in rows if r["ok"]]
    nodes: dict[int, int] = {}
    for r in rows:
        if r["ok"]:
            nodes[r["node"]] = nodes.get(r["node"], 0) + 1
    q = statistics.quantiles(ok, n=20) if len(ok) >= 2 else [0.0] * 19
    elections = [r["election_ms"] for r in rows if r["ok"]]
    return {
        "clients": n_clients, "images": len(rows), "avg_ms": statistics.fmean(ok) if ok else 0.0,
        "p50_ms": statistics.median(ok) if ok else 0.0, "p95_ms": q[18],
        "images_per_s": len(ok) / wall if wall else 0.0,
        "failure_rate": 1 - len(ok) / len(rows) if rows else 0.0,
        "election_p50_ms": statistics.median(elections) if elections else 0.0,
        "election_p99_ms": (statistics.quantiles(elections, n=100)[98] if len(elections) >= 2
                            else 0.0),
        "by_node": {str(k): v for k, v in sorted(nodes.items())}, "duplicate_replies": dups,
        "phases_p50": phase_p50([r for r in rows if r["ok"]]),
        # CPU (user + system) per sealed image: all node processes together, and all clients
        # (their loops); with the cores, what bounds images/s when the CPU is the limit
        "node_cpu_ms": 1000 * (node_cpu[1] - node_cpu[0]) / len(ok) if ok and pids else math.nan,
        "client_cpu_ms": (1000 * sum(r["cpu_s"] for res in results for r in res if "cpu_s" in r)
                          / len(ok) if ok else math.nan),
    }


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase_p50(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each phase (PHASES) over `rows` of `timed_seal` figures. A phase the
    client could not time (NaN: the upload when the reply came before the winner's
    acknowledgement) is left out of that phase's median; NaN only when no row has it."""
    out = {}
    for k in PHASES:
        values = [r[k] for r in rows if not math.isnan(r[k])]
        out[k] = statistics.median(values) if values else math.nan
    return out


def photo_phases(cloud: Cloud, root: Path, count: int) -> dict[str, Any]:
    """One client seals the photo `count` times back to back on `cloud`, which must be freshly
    started (nothing sealed yet): the first request is the one that pays for what a node
    prepares lazily. Total and per-phase times: the first request's and the p50 of all."""
    import config as config_mod
    from actors.client.client_session import ClientSession

    data = photo_jpeg()
    session = ClientSession("photo", root / "photo", config_mod.load(cloud.config))
    try:
        runs = [session.timed_seal(f"photo{i}.jpg", data) for i in range(count)]
    finally:
        session.close()
    return {"request": f"photo, {len(data) / 1e6:.2f} MB", "bytes": len(data), "requests": count,
            "first_ms": runs[0]["total_ms"],
            "p50_ms": statistics.median(r["total_ms"] for r in runs), **phase_p50(runs)}


def small_phases(load: list[dict[str, Any]], n_nodes: int) -> list[dict[str, Any]]:
    """Per-phase p50 of the small images of (b) at 1 client and at the most clients."""
    rows = [r for r in load if r["nodes"] == n_nodes]
    if not rows:
        return []
    picked = {rows[0]["clients"]: rows[0], rows[-1]["clients"]: rows[-1]}
    return [{"request": f"small, {c} client{'s' if c > 1 else ''}",
             "requests": r["images"], "first_ms": None, "p50_ms": r["p50_ms"],
             **r["phases_p50"]} for c, r in sorted(picked.items())]


def summary(load: list[dict[str, Any]], cores: int | None = None) -> list[dict[str, Any]]:
    """Per cloud size: images/s at the most clients and its ratio to the smallest cloud's,
    election p50/p99 at 1 client and at the most clients, the CPU per image at the most clients
    and the images/s that `cores` (default: this host's) would give doing only that work."""
    cores = cores or os.cpu_count() or 1
    out = []
    base: float | None = None
    for n in sorted({r["nodes"] for r in load}):
        rows = [r for r in load if r["nodes"] == n]
        one, most = rows[0], rows[-1]
        base = most["images_per_s"] if base is None else base
        out.append({
            "nodes": n, "clients": most["clients"], "images_per_s": most["images_per_s"],
            "ratio_to_smallest": most["images_per_s"] / base if base else 0.0,
            "election_p50_1_ms": one["election_p50_ms"],
            "election_p99_1_ms": one["election_p99_ms"],
            "election_p50_most_ms": most["election_p50_ms"],
            "election_p99_most_ms": most["election_p99_ms"],
            "node_cpu_ms": most["node_cpu_ms"], "client_cpu_ms": most["client_cpu_ms"],
            # images/s if the host's cores did nothing but this CPU work
            "cpu_bound_per_s": cores * 1000 / (most["node_cpu_ms"] + most["client_cpu_ms"]),
        })
    return out


def bracketed_ratios(one: list[float], three: list[float]) -> list[float]:
    """(e): batches run as one[0], three[0], one[1], three[1], ..., one[n]: each three[i] over
    the mean of one[i] and one[i + 1], the runs just before and after it on the smaller cloud
    (a drift of the host that is linear over the pair cancels)."""
    if len(one) != len(three) + 1:
        raise ValueError(f"need one more 1-node batch than 3-node ones: {len(one)}, {len(three)}")
    return [t / ((one[i] + one[i + 1]) / 2) for i, t in enumerate(three)]


def paired(tmp: Path, sections: dict[str, dict[str, Any]], images: list[tuple[str, bytes]],
           clients: int, n: int) -> dict[str, Any]:
    """(e): a 1-node and a 3-node cloud up at once, `n` 3-node batches of `clients` clients
    bracketed by `n` + 1 1-node ones, in turn; their images/s and `bracketed_ratios`."""
    clouds = {}
    try:
        for size in (1, 3):
            root = tmp / f"paired{size}"
            root.mkdir()
            clouds[size] = (Cloud(root, size, sections=sections).start(), root)
        for cloud, root in clouds.values():  # warm: a fresh cloud's first batch pays lazy work
            run_clients(cloud, clients, images[: 10 * clients], 0.0, root)
        one: list[float] = []
        three: list[float] = []
        for i in range(2 * n + 1):
            size = 1 if i % 2 == 0 else 3
            cloud, root = clouds[size]
            r = run_clients(cloud, clients, images, 0.0, root)
            (one if size == 1 else three).append(r["images_per_s"])
    finally:
        for cloud, _ in clouds.values():
            cloud.stop()
    ratios = bracketed_ratios(one, three)
    rows = [{"pair": i + 1, "one_before": one[i], "three": t, "one_after": one[i + 1],
             "ratio": ratios[i]} for i, t in enumerate(three)]
    return {"rows": rows, "median": statistics.median(ratios), "min": min(ratios),
            "max": max(ratios), "three_median": statistics.median(three)}


# ---- report ---------------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    from shell.render import table as render

    fmt = [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    return render(fmt, cols)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cloud", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=Path, help="folder of images to use instead of generated ones")
    p.add_argument("--total", type=int, default=500, help="images in all for (b)")
    p.add_argument("--spaced", type=int, default=50, help="images for (a)")
    p.add_argument("--spacing", type=float, default=1.0, help="seconds between images in (a)")
    p.add_argument("--max-clients", type=int, default=6)
    p.add_argument("--nodes", default="1,3", help="cloud sizes to measure (\"\": none, for --paired alone)")
    p.add_argument("--pool", type=int, default=None, help="encoder pool size per node")
    p.add_argument("--photos", type=int, default=10,
                   help="photo requests per cloud for (c), the first on the fresh cloud")
    p.add_argument("--plot", type=Path, nargs="?", const=Path("bench-out/cloud.png"),
                   help="save a PNG of response time against clients (default path "
                   "bench-out/cloud.png)")
    p.add_argument("--paired", type=int, default=0, metavar="N",
                   help="(e): N 3-node batches of the most clients bracketed by N + 1 1-node "
                   "ones, both clouds up (see above); 0: skip")
    p.add_argument("--client-nice", type=int, default=0, metavar="N",
                   help="a diagnostic, not the reference: run the clients at niceness N (0-19), "
                   "so that the nodes get a core first, as they would with the clients on "
                   "other hosts; the tables say so")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not 0 <= args.client_nice <= 19:
        p.error("--client-nice must be 0-19")
    global CLIENT_NICE
    CLIENT_NICE = args.client_nice
    if args.paired < 0:
        p.error("--paired must be 0 or more")
    out: dict[str, Any] = {"spaced": [], "load": [], "breakdown": [], "summary": [],
                           "client_nice": args.client_nice}
    sections = {"encoder": {"pool_size": args.pool}} if args.pool else {}
    images = load_images(args.images, max(args.total, args.spaced))
    sizes = [int(x) for x in args.nodes.split(",") if x.strip()]  # "": (e) alone
    with tempfile.TemporaryDirectory() as tmp:
        for n_nodes in sizes:
            root = Path(tmp) / f"n{n_nodes}"
            root.mkdir()
            cloud = Cloud(root, n_nodes, sections=sections).start()
            try:
                if args.photos:  # first, while the cloud is fresh
                    out["breakdown"].append({"nodes": n_nodes,
                                             **photo_phases(cloud, root, args.photos)})
                if args.spaced:
                    r = run_clients(cloud, 1, images[: args.spaced], args.spacing, root)
                    out["spaced"].append({"nodes": n_nodes, **r})
                for c in range(1, args.max_clients + 1):
                    r = run_clients(cloud, c, images[: args.total], 0.0, root)
                    out["load"].append({"nodes": n_nodes, **r})
            finally:
                cloud.stop()
            out["breakdown"] += [{"nodes": n_nodes, **r} for r in small_phases(out["load"], n_nodes)]
        if args.paired:
            out["paired"] = paired(Path(tmp), sections, images[: args.total], args.max_clients,
                                   args.paired)
    out["summary"] = summary(out["load"])
    if args.json:
        print(json.dumps(out))
    else:
        if args.client_nice:
            print(f"DIAGNOSTIC: clients at niceness {args.client_nice} (the nodes get a core "
                  "first); not the reference figures\n")
        cols = ["nodes", "clients", "images", "avg_ms", "p50_ms", "p95_ms", "images_per_s",
                "failure_rate", "election_p50_ms", "election_p99_ms", "node_cpu_ms",
                "client_cpu_ms", "by_node"]
        print("(a) one client, images spaced", args.spacing, "s apart")
        print(table(out["spaced"], cols))
        print("\n(b) clients back to back,", args.total, "images in all")
        print(table(out["load"], cols))
        print(f"\n(c) by phase, p50 (ms); photo: {args.photos} requests on a fresh cloud, "
              "first_ms is the first")
        print(table(out["breakdown"], ["nodes", "request", "requests", "first_ms", "p50_ms",
                                       *PHASES]))
        print("\n(d) summary: images/s at the most clients and its ratio to the smallest cloud's;"
              " election p50/p99 (ms) at 1 client and the most clients; CPU ms per image at the"
              " most clients (nodes, clients) and the images/s the host's cores would allow if"
              " they did nothing else")
        print(table(out["summary"], list(out["summary"][0]) if out["summary"] else []))
        if args.paired:
            pr = out["paired"]
            print(f"\n(e) paired: {args.max_clients} clients, {args.total} images a batch, "
                  "1-node and 3-node batches in turn on two clouds up at once; each 3-node "
                  "batch over the mean of the 1-node batches before and after it")
            shown = [{**r, "ratio": f"{r['ratio']:.2f}"} for r in pr["rows"]]
            print(table(shown, ["pair", "one_before", "three", "one_after", "ratio"]))
            print(f"ratio median {pr['median']:.2f} (min {pr['min']:.2f}, max {pr['max']:.2f}); "
                  f"3 nodes median {pr['three_median']:.1f} images/s")
    if args.plot is not None:
        plot(out["load"], args.plot)
    return 0


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in sorted({r["nodes"] for r in rows}):
        pts = [r for r in rows if r["nodes"] == n]
        ax.plot([r["clients"] for r in pts], [r["p50_ms"] for r in pts], marker="o",
                label=f"{n} node{'s' if n > 1 else ''} p50")
        ax.plot([r["clients"] for r in pts], [r["p95_ms"] for r in pts], marker="x",
                linestyle="--", label=f"{n} node{'s' if n > 1 else ''} p95")
    ax.set_xlabel("clients (back to back)")
    ax.set_ylabel("response time (ms)")
    ax.set_title("Veilshare encrypt: response time against clients")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot saved to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
