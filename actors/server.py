"""Entry point of the cloud: `python -m actors.server`.

- no arguments: the embedded default. Starts every node of the cluster file as a child process
  (`--node ID`), prints where each listens, restarts a node that dies (its durable state is in
  its data dir; one that keeps crashing with a growing back-off, actors.backoff), stops them all
  on Ctrl-C, SIGTERM or SIGHUP. Children die with the supervisor even when
  it is SIGKILLed (PR_SET_PDEATHSIG), so no orphan keeps a port.
- `--node ID`: one node (for a real multi-host cloud, one per host).
- `status [--json]`: asks every node over its client socket (works from any host).
- `stop [--data DIR]`: stops the embedded cloud of that data root, and only that one: at start
  the supervisor checks that none of its ports is taken (one line and exit 1 if one is) and writes
  its pid to `<data root>/cloud.pid`; `stop` signals that process (a stale pid file, whose process
  is gone or is another program, is reported and removed).
- `dashboard [--port P] [--host H]`: a live, read-only web page of the cloud (actors.dashboard).

With VEILSHARE_STOP_WITH=PID in its environment, the cloud or node stops (as on SIGTERM) once
process PID has exited, checked every STOP_WITH_PERIOD_S: what the tests and benchmarks set
(benchmarks.localcloud), so that a runner killed with SIGKILL leaves no node behind. Children
inherit the variable and watch the same process.

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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

import config
from actors import pidfile
from actors.backoff import Restart, RestartBackoff
from config import Config, ConfigError

PR_SET_PDEATHSIG = 1
STOP_WITH_ENV = "VEILSHARE_STOP_WITH"
STOP_WITH_PERIOD_S = 0.5
STOP_WAIT_S = 15.0  # the supervisor gives its nodes 5 s to stop, then kills them


def default_data_root() -> Path:
    """Where nodes keep durable state when --data is not given (survives restarts)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "veilshare" / "nodes"


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not glibc: the children stop with us only on a clean stop
        return None


# loaded here, not between fork and exec: the child then only calls prctl, and no lock another
# thread of ours held at the fork (the stop-with watcher's, say) can be one it needs
_LIBC = _libc()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _gone(proc: psutil.Process) -> bool:
    """Whether `proc` has exited (a zombie has: it only waits for its parent to reap it; a pid
    taken since by another process is not `proc`: is_running() compares start times)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop_with(value: str, period_s: float = STOP_WITH_PERIOD_S,
              stop: Callable[[], None] | None = None) -> threading.Thread | None:
    """Watch process `value` (a pid, from STOP_WITH_ENV) on a daemon thread and call `stop` (by
    default: SIGTERM to this process, so the usual handlers stop it cleanly) once it has exited,
    at once if it is gone already. A value that is not a pid is reported and ignored."""
    try:
        pid = int(value)
        if pid <= 0:
            raise ValueError(value)
    except ValueError:
        print(f"veilshare: {STOP_WITH_ENV}={value!r} is not a process id: ignored",
              file=sys.stderr)
        return None
    try:
        watched: psutil.Process | None = psutil.Process(pid)  # is_running() checks its start time
    except psutil.NoSuchProcess:
        watched = None
    halt = stop if stop is not None else (lambda: os.kill(os.getpid(), signal.SIGTERM))

    def watch() -> None:
        while watched is not None and not _gone(watched):
            time.sleep(period_s)
        print(f"veilshare: process {pid} ({STOP_WITH_ENV}) has exited: stopping",
              file=sys.stderr, flush=True)
        halt()

    thread = threading.Thread(target=watch, name="stop-with", daemon=True)
    thread.start()
    return thread


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
    """The embedded cloud: refuse to start over a running one, then supervise every node."""
    data_root = Path(args.data) if args.data else default_data_root()
    try:
        busy = pidfile.busy_ports(cfg)
    except OSError as exc:
        print(f"veilshare: cannot bind the configured addresses: {exc}", file=sys.stderr)
        return 1
    if busy:
        print(f"port {busy[0]} is in use: a cloud is already running? see: "
              f"{_hint('status', args)}", file=sys.stderr)
        return 1
    found = pidfile.read(data_root)
    if found is not None and found.live:
        print(f"data root {data_root} is used by the running cloud of pid {found.pid}; stop it "
              f"first: {_hint('stop', args)}", file=sys.stderr)
        return 1
    if found is not None:
        print(f"stale pid file {found.path} ({found.problem}): replacing it", flush=True)
    try:
        pidfile.write(data_root, str(cfg.path or ""))
    except OSError as exc:
        print(f"veilshare: cannot write the pid file in {data_root}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    try:
        return Supervisor(cfg, args, RestartBackoff()).run()
    finally:
        pidfile.remove_if_ours(data_root)


def _hint(command: str, args: argparse.Namespace) -> str:
    extra = [f"--config {args.config}"] if args.config else []
    if command == "stop" and args.data:
        extra.append(f"--data {args.data}")
    return " ".join(["python -m actors.server", command, *extra])


class Supervisor:
    """Runs every node as a child, restarts one that exits (with a growing back-off when it
    keeps crashing) and stops them all on Ctrl-C, SIGTERM or SIGHUP."""

    def __init__(self, cfg: Config, args: argparse.Namespace, backoff: RestartBackoff) -> None:
        self.cfg = cfg
        self.args = args
        self.backoff = backoff
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.due: dict[int, float] = {}  # node id -> when to start it again (monotonic s)
        self.stopping = False

    def stop(self, _sig: int = 0, _frame: Any = None) -> None:
        self.stopping = True
        for proc in self.children.values():
            if proc.poll() is None:
                proc.terminate()

    def start(self, node_id: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(_node_command(node_id, self.args), preexec_fn=_die_with_parent)
        self.children[node_id] = proc
        self.backoff.started(node_id, time.monotonic())
        return proc

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        # the terminal it was started from closed (a tmux pane, an ssh session): stop cleanly,
        # nodes and pid file, instead of dying with the pid file left behind
        signal.signal(signal.SIGHUP, self.stop)
        for node in self.cfg.nodes:
            proc = self.start(node.id)
            print(f"node {node.id}: clients {node.host}:{node.client_port}, "
                  f"peers {node.host}:{node.peer_port} (pid {proc.pid})", flush=True)
        failures = "off" if self.args.no_failures or not self.cfg.failures.enabled else "on"
        print(f"cloud of {len(self.cfg.nodes)} nodes running (failure simulation {failures}); "
              f"stop it with Ctrl-C or: {_hint('stop', self.args)}", flush=True)
        try:
            while not self.stopping:
                self.step(time.monotonic())
                time.sleep(0.2)
        finally:
            self.stop()
            self._reap()
        print("cloud stopped", flush=True)
        return 0

    def step(self, now: float) -> None:
        """Notice exited nodes and start those whose back-off has run out."""
        for node_id, proc in list(self.children.items()):
            if proc.poll() is None or self.stopping:
                continue
            del self.children[node_id]
            r = self.backoff.exited(node_id, now)
            self.due[node_id] = r.at
            if r.announce:
                print(_exit_line(node_id, proc.returncode, r), flush=True)
        for node_id, at in list(self.due.items()):
            if now >= at and not self.stopping:
                del self.due[node_id]
                self.start(node_id)

    def _reap(self) -> None:
        deadline = time.monotonic() + 5
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _exit_line(node_id: int, status: int | None, r: Restart) -> str:
    wait = f"{r.delay_s:g} s"
    if r.step == 0:
        return (f"node {node_id} exited with status {status}; restarting it in {wait} "
                f"(its pending updates are on disk)")
    return (f"node {node_id} keeps exiting (status {status}, {r.step + 1} times in a row soon "
            f"after starting); restarting it in {wait}; the delay doubles while it keeps "
            f"failing (this is said once per delay)")


def _wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until process `pid` has exited (`_gone`: a zombie counts, its parent may be anyone)."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(proc):
            return True
        time.sleep(0.05)
    return False


def stop_cloud(args: argparse.Namespace) -> int:
    """`stop`: end the embedded cloud of one data root (its pid file), and nothing else."""
    data_root = Path(args.data) if args.data else default_data_root()
    found = pidfile.read(data_root)
    if found is None:
        print(f"no cloud to stop: no pid file {pidfile.pid_path(data_root)}", file=sys.stderr)
        return 1
    if not found.live:
        found.path.unlink(missing_ok=True)
        print(f"stale pid file {found.path} ({found.problem}): removed it; no cloud was "
              f"running for {data_root}", file=sys.stderr)
        return 1
    try:
        os.kill(found.pid, signal.SIGTERM)
    except PermissionError:
        print(f"the cloud of {data_root} (pid {found.pid}) belongs to another user: not stopped",
              file=sys.stderr)
        return 1
    if not _wait_gone(found.pid, STOP_WAIT_S):
        os.kill(found.pid, signal.SIGKILL)  # its nodes die with it (PR_SET_PDEATHSIG)
        found.path.unlink(missing_ok=True)
        print(f"the cloud of {data_root} (pid {found.pid}) did not stop within {STOP_WAIT_S:g} s:"
              f" killed it", file=sys.stderr)
        return 1
    print(f"stopped the cloud of {data_root} (pid {found.pid})")
    return 0


def _print_status(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"nodes": rows}))
        return
    from shell.render import status_table  # local import: the server does not need the shell

    print(status_table(rows, pids=True))


def status(cfg: Config, args: argparse.Namespace) -> int:
    from actors.status import query_status

    rows = settled_status(lambda: query_status(cfg, timeout_s=args.timeout))
    _print_status(rows, args.json)
    return 0


SETTLE_TRIES = 4  # status asked again while the nodes name different token holders ...
SETTLE_PAUSE_S = 0.2  # ... a heartbeat apart (each pass of the token, every token_hold_s, is
# learnt by the peers from the holder's next heartbeat: a query in between saw two holders)


def settled_status(query: Callable[[], list[dict[str, Any]]], tries: int = SETTLE_TRIES,
                   pause_s: float = SETTLE_PAUSE_S) -> list[dict[str, Any]]:
    """The rows of `query()`, asked again (up to `tries` times in all) while the nodes that
    answered name more than one failure token holder: the token was passing. Still split after
    that, the rows are shown as they are."""
    rows = query()
    for _ in range(tries - 1):
        if len({r["token_holder"] for r in rows if r.get("token_holder")}) <= 1:
            break
        time.sleep(pause_s)
        rows = query()
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m actors.server", description=__doc__.split("\n")[0])
    p.add_argument("command", nargs="?", choices=["status", "stop", "dashboard"],
                   help="status: ask every node; stop: stop the local cloud of --data; "
                        "dashboard: a live web page of the cloud")
    p.add_argument("--node", type=int, help="run only this node id")
    p.add_argument("--config", type=Path, help="cluster file (default config/cluster.toml)")
    p.add_argument("--data", help="data dir (with --node) or root of per-node data dirs")
    p.add_argument("--no-failures", action="store_true", help="turn the failure simulation off")
    p.add_argument("--json", action="store_true", help="status: one JSON object")
    p.add_argument("--timeout", type=float, default=1.0, help="status: seconds to wait per node")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    p.add_argument("--port", type=int, default=8600, help="dashboard: HTTP port (0: any free)")
    p.add_argument("--host", default="127.0.0.1",
                   help="dashboard: address to bind (not loopback: anyone who reaches it sees "
                        "the cloud; there is no authentication)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "stop":
            return stop_cloud(args)
        cfg = config.load(args.config)
        if args.command == "status":
            return status(cfg, args)
        if args.command == "dashboard":
            from actors.dashboard.server import serve

            return serve(cfg, host=args.host, port=args.port)
        if os.environ.get(STOP_WITH_ENV):
            stop_with(os.environ[STOP_WITH_ENV])
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
