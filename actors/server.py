"""Entry point of the cloud: `python -m actors.server`.

- no arguments: the embedded default. Starts every node of the cluster file as a child process
  (`--node ID`), prints where each listens, restarts a node that dies (its durable state is in
  its data dir), stops them all on Ctrl-C or SIGTERM. Children die with the supervisor even when
  it is SIGKILLed (PR_SET_PDEATHSIG), so no orphan keeps a port.
- `--node ID`: one node (for a real multi-host cloud, one per host).
- `status [--json]`: asks every node over its client socket (works from any host).

A wrong configuration is reported as one line naming the key, exit status 2.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import config
from config import Config, ConfigError

PR_SET_PDEATHSIG = 1
RESTART_DELAY_S = 1.0


def default_data_root() -> Path:
    """Where nodes keep durable state when --data is not given (survives restarts)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "veilshare" / "nodes"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _node_command(node_id: int, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "actors.server", "--node", str(node_id)]
    if args.config:
        cmd += ["--config", str(args.config)]
    data_root = Path(args.data) if args.data else default_data_root()
    cmd += ["--data", str(data_root / f"node-{node_id}")]
    if args.no_failures:
        cmd.append("--no-failures")
    if args.log_level:
        cmd += ["--log-level", args.log_level]
    return cmd


def run_cloud(cfg: Config, args: argparse.Namespace) -> int:
    """Start every node as a child; forward Ctrl-C/SIGTERM; return when all have stopped."""
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(_sig: int = 0, _frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for proc in children.values():
            if proc.poll() is None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for node in cfg.nodes:
        children[node.id] = subprocess.Popen(
            _node_command(node.id, args), preexec_fn=_die_with_parent
        )
        print(
            f"node {node.id}: clients {node.host}:{node.client_port}, "
            f"peers {node.host}:{node.peer_port} (pid {children[node.id].pid})",
            flush=True,
        )
    failures = "off" if args.no_failures or not cfg.failures.enabled else "on"
    print(f"cloud of {len(cfg.nodes)} nodes running (failure simulation {failures}); Ctrl-C stops it",
          flush=True)
    try:
        while not stopping:
            for node_id, proc in list(children.items()):
                if proc.poll() is not None and not stopping:
                    print(f"node {node_id} exited with status {proc.returncode}; restarting it "
                          f"(its pending updates are on disk)", flush=True)
                    time.sleep(RESTART_DELAY_S)
                    if not stopping:
                        children[node_id] = subprocess.Popen(
                            _node_command(node_id, args), preexec_fn=_die_with_parent)
            time.sleep(0.2)
    finally:
        stop()
        deadline = time.monotonic() + 5
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print("cloud stopped", flush=True)
    return 0


def _print_status(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"nodes": rows}))
        return
    from shell.render import table  # local import: the server itself does not need the shell

    for r in rows:
        since = r.get("down_since") or 0.0
        r["down since"] = time.strftime("%H:%M:%S", time.localtime(since)) if since else "-"
        r["token"] = "yes" if r["token"] else ("-" if r["state"] != "up" else "no")
    print(table(rows, ["id", "state", "served", "cached", "token", "users", "pending",
                       "down since"]))
    holders = {int(r["token_holder"]) for r in rows if r.get("token_holder")}
    if holders:
        print(f"failure token held by node {', '.join(map(str, sorted(holders)))}")


def status(cfg: Config, args: argparse.Namespace) -> int:
    from actors.status import query_status

    rows = query_status(cfg, timeout_s=args.timeout)
    _print_status(rows, args.json)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m actors.server", description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", choices=["status"], help="status: ask every node")
    p.add_argument("--node", type=int, help="run only this node id")
    p.add_argument("--config", type=Path, help="cluster file (default config/cluster.toml)")
    p.add_argument("--data", help="data dir (with --node) or root of per-node data dirs")
    p.add_argument("--no-failures", action="store_true", help="turn the failure simulation off")
    p.add_argument("--json", action="store_true", help="status: one JSON object")
    p.add_argument("--timeout", type=float, default=1.0, help="status: seconds to wait per node")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = config.load(args.config)
        if args.command == "status":
            return status(cfg, args)
        if args.node is not None:
            from actors.node.supervisor import run_node

            data = Path(args.data) if args.data else default_data_root() / f"node-{args.node}"
            return run_node(cfg, args.node, data, failures=not args.no_failures,
                            log_level=args.log_level)
        return run_cloud(cfg, args)
    except ConfigError as exc:
        print(f"veilshare: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
