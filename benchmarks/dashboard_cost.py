"""`python -m benchmarks.dashboard_cost`: what an open dashboard costs the cloud's throughput.

The 6-client load of `benchmarks.cloud` (b) (`--total` images back to back over 6 client
processes, 3 nodes, failures off), measured without a dashboard and then with one: a
`python -m actors.server dashboard` process polling every node twice a second, and a reader
fetching its `/api/state` every second as the open page does. A warm-up run comes first (not
counted). Prints images/s of each run and the cost in percent; `--rounds N` alternates
off/on N times (each run is one figure; the machine's own noise shows in their spread).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.cloud import load_images, run_clients
from benchmarks.localcloud import REPO, Cloud, env


class OpenPage(threading.Thread):
    """Fetches the dashboard's state every second, as the page does."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.halt = threading.Event()
        self.fetches = 0

    def run(self) -> None:
        while not self.halt.wait(1.0):
            with urllib.request.urlopen(self.url + "api/state", timeout=10) as r:
                r.read()
            self.fetches += 1


def with_dashboard(cloud: Cloud, run: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, "-m", "actors.server", "dashboard", "--port", "0",
                             "--config", str(cloud.config)], stdout=subprocess.PIPE, text=True,
                            env=env(), cwd=str(REPO))
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[4]
        page = OpenPage(url)
        page.start()
        result = run()
        page.halt.set()
        with urllib.request.urlopen(url + "api/state", timeout=10) as r:
            state = json.loads(r.read())
        return result, {"polls": state["polls"], "page_fetches": page.fetches}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dashboard_cost",
                                description=__doc__.split("\n")[0])
    p.add_argument("--total", type=int, default=500, help="images per run")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--rounds", type=int, default=1, help="off/on pairs")
    args = p.parse_args(argv)
    images = load_images(None, args.total)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cloud = Cloud(root, 3).start()
        try:
            run_clients(cloud, args.clients, images[:60], 0.0, root)  # warm-up
            for _ in range(args.rounds):
                off = run_clients(cloud, args.clients, images, 0.0, root)
                rows.append({"dashboard": "off", "images_per_s": off["images_per_s"],
                             "p50_ms": off["p50_ms"], "failure_rate": off["failure_rate"]})
                on, seen = with_dashboard(
                    cloud, lambda: run_clients(cloud, args.clients, images, 0.0, root))
                rows.append({"dashboard": "on", "images_per_s": on["images_per_s"],
                             "p50_ms": on["p50_ms"], "failure_rate": on["failure_rate"], **seen})
        finally:
            cloud.stop()
    for r in rows:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))
    off_rate = sum(r["images_per_s"] for r in rows if r["dashboard"] == "off") / args.rounds
    on_rate = sum(r["images_per_s"] for r in rows if r["dashboard"] == "on") / args.rounds
    print(f"{args.clients} clients, {args.total} images per run: {off_rate:.1f} images/s "
          f"without a dashboard, {on_rate:.1f} with one polling: cost "
          f"{100 * (1 - on_rate / off_rate):.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
