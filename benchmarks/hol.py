"""`python -m benchmarks.hol`: head-of-line blocking on a node, measured (issue 14).

Offline updates cost a node an fsync each (sqlite, synchronous=FULL). On a one-thread node they
ran ahead of elections and heartbeats; with one actor per concern they run on the
PendingUpdateActor's thread. This runs, on one 3-node cloud (failures off), the 6-client encrypt
load of benchmarks.cloud twice: alone, and while a poster sends `--rate` updates per second
(grants to a user who is offline, each acknowledged only once on disk). It prints the election
latency (the winner's wait before sealing, from the reply) p50/p99 of both runs and their ratio:
the target is a p99 within 1.5x of the run without updates.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cloud import load_images, run_clients, table
from benchmarks.localcloud import Cloud


def _poster(args: tuple[str, str, float, float, Any]) -> dict[str, Any]:
    """Join as `user` and post grants for the offline user "nobody" at `rate` per second until
    `stop` is set; returns how many were acknowledged and their latency."""
    config_path, home, rate, _unused, stop = args
    import config as config_mod
    from actors.client.client_session import ClientSession, SessionError
    from codec.records import Update

    cfg = config_mod.load(config_path)
    session = ClientSession("poster", Path(home), cfg)
    acked, failed, lat = 0, 0, []
    try:
        session.join()
        period = 1.0 / rate
        nxt = time.perf_counter()
        while not stop.is_set():
            rid = session.next_rid()
            u = Update(
                id=rid,
                kind="grant",
                owner="poster",
                borrower="nobody",
                image="x.png",
                delta=1,
                addressee="nobody",
                grant=b"\x00",
                created=time.time(),
            )
            t0 = time.perf_counter()
            try:
                session.post_update(u)
                acked += 1
                lat.append((time.perf_counter() - t0) * 1000)
            except SessionError:
                failed += 1
            nxt += period
            time.sleep(max(0.0, nxt - time.perf_counter()))
    finally:
        session.close()
    lat.sort()
    return {
        "acked": acked,
        "failed": failed,
        "ack_p50_ms": lat[len(lat) // 2] if lat else 0.0,
        "ack_p99_ms": lat[int(len(lat) * 0.99)] if lat else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hol", description=__doc__.split("\n")[0])
    p.add_argument("--total", type=int, default=1500, help="images per run (6 clients)")
    p.add_argument("--rate", type=float, default=50.0, help="offline updates per second")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    images = load_images(None, args.total)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cloud = Cloud(root, 3).start()
        try:
            run_clients(cloud, args.clients, images[:60], 0.0, root)  # warm-up
            rows.append({"updates_per_s": 0, **run_clients(cloud, args.clients, images, 0.0, root)})
            ctx = mp.get_context("spawn")
            stop = ctx.Manager().Event()
            with ctx.Pool(1) as pool:
                posted = pool.apply_async(
                    _poster, ((str(cloud.config), str(root / "poster"), args.rate, 0.0, stop),)
                )
                time.sleep(2.0)  # the poster is joined and posting
                loaded = run_clients(cloud, args.clients, images, 0.0, root)
                stop.set()
                post = posted.get(timeout=120)
            rows.append({"updates_per_s": args.rate, **loaded, **post})
        finally:
            cloud.stop()
    base, hol = rows[0]["election_p99_ms"], rows[1]["election_p99_ms"]
    ratio = hol / base if base else float("nan")
    if args.json:
        print(json.dumps({"rows": rows, "p99_ratio": ratio}))
        return 0
    print(
        table(
            rows,
            [
                "updates_per_s",
                "clients",
                "images",
                "images_per_s",
                "p50_ms",
                "election_p50_ms",
                "election_p99_ms",
                "acked",
                "ack_p50_ms",
                "ack_p99_ms",
            ],
        )
    )
    print(f"\nelection p99 with updates / without: {ratio:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
