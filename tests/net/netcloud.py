"""The real cloud on namespace hosts (issue 9): node processes in n1..n3, clients in c1/c2.

`NetCloud` is `benchmarks.localcloud.Cloud` moved onto `hosts.Net`: it writes the cluster file
(node i at host n<i>'s address, fresh secret, knobs overridden per test, optionally per node),
starts `python -m actors.server --node I` inside host n<i> with `Host.run`, runs
`python -m shell --host <client address>` and the driver (tests/net/driver.py) inside client
hosts, and asks `status` through a transport living in a client host (`status_host`), so the
test process itself never needs a route into the test subnet. `Net.close` kills whatever is
still running; `stop()` ends the nodes politely first.

`NsSampler` is `benchmarks.chaos.Sampler` whose transport lives in a client host.
Callers: tests/net/test_cloud_net.py, test_security.py, test_fuzz.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import config as config_mod
from benchmarks.chaos import Sampler
from benchmarks.localcloud import REPO, Cloud, env, json_lines
from benchmarks.terminal import run_on_terminal
from transport.udp import Transport

from .hosts import Host, Net

DRIVER = Path(__file__).resolve().parent / "driver.py"
__all__ = ["DRIVER", "NetCloud", "NsSampler", "json_lines", "stop_proc"]


class NetCloud(Cloud):
    """Three node processes on hosts n1..n3 of `net` (kill, restart, stop, log_text, wait_up
    as in `Cloud`). `sections` override knobs for everyone, `node_sections[i]` for node i only
    (its own cluster file, same secret and nodes); `node_env` is added to every node's
    environment and `client_env` to every client's. Nodes in `in_process` run their actors in
    the test process (sockets in their host) so tests can read their transport counters."""

    def __init__(self, net: Net, root: Path, *, failures: bool = False,
                 sections: dict[str, dict[str, Any]] | None = None,
                 node_sections: dict[int, dict[str, dict[str, Any]]] | None = None,
                 node_env: dict[str, str] | None = None,
                 client_env: dict[str, str] | None = None,
                 status_host: str = "c2", in_process: frozenset[int] = frozenset()) -> None:  # fmt: skip
        self.net = net
        self.in_process = in_process
        self.inproc: dict[int, tuple[Any, Any]] = {}
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        secs = {"failures": {"enabled": failures}, **(sections or {})}
        self.config = root / "cluster.toml"
        self.config.write_text(net.cluster_toml(sections=secs))
        self.cfg = config_mod.load(self.config)
        self.nodes = [(n.id, n.host, n.client_port, n.peer_port) for n in self.cfg.nodes]
        self.node_configs: dict[int, Path] = {}
        for node in self.cfg.nodes:
            own = (node_sections or {}).get(node.id)
            if own is None:
                self.node_configs[node.id] = self.config
                continue
            merged = {k: {**secs.get(k, {}), **v} for k, v in own.items()}
            path = root / f"cluster-node{node.id}.toml"
            path.write_text(net.cluster_toml(sections={**secs, **merged}, secret=self.cfg.secret))
            self.node_configs[node.id] = path
        self.failures = failures
        self.node_env = {**env(), **(node_env or {})}
        self.client_env = {**env(), **(client_env or {})}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}
        self.status_host = net[status_host]
        self._status_tp: Transport | None = None

    # ---- nodes ---------------------------------------------------------------------------
    def host_of(self, node_id: int) -> Host:
        return self.net[f"n{node_id}"]

    def start_node(self, node_id: int) -> None:
        if node_id in self.in_process:
            self._start_in_process(node_id)
            return
        log = self.root / f"node-{node_id}.log"
        self.logs[node_id] = log
        cmd = [sys.executable, "-m", "actors.server", "--node", str(node_id), "--config",
               str(self.node_configs[node_id]), "--data", str(self.root / f"data-{node_id}"),
               "--log-level", os.environ.get("VS_NET_LOG", "INFO")]  # fmt: skip
        if not self.failures:
            cmd.append("--no-failures")
        with open(log, "ab") as fh:
            self.procs[node_id] = self.host_of(node_id).run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.node_env, cwd=str(REPO)
            )

    def _start_in_process(self, node_id: int) -> None:
        """The node's actors in this process, its sockets in its host (for exact counters)."""
        from actors.node.supervisor import start_node

        cfg = config_mod.load(self.node_configs[node_id])
        data = self.root / f"data-{node_id}"
        failures = self.failures and cfg.failures.enabled
        self.inproc[node_id] = self.host_of(node_id).call(
            lambda: start_node(cfg, node_id, data, failures=failures))

    def stop_in_process(self, node_id: int) -> None:
        _ref, stop = self.inproc.pop(node_id)
        stop()

    def transport_stats(self, node_id: int, which: str = "peer") -> dict[str, int]:
        """Counters of an in-process node's "peer" or "client" transport (Transport.stats)."""
        ref, _stop = self.inproc[node_id]
        tp = getattr(ref.proxy(), f"{which}_tp").get()
        return dict(tp.stats())

    def node_counters(self, node_id: int) -> dict[str, int]:
        """The in-process node actor's own counters (peer_unknown_sender, ...)."""
        return dict(self.inproc[node_id][0].ask({"query": "counters"}))

    def start(self, wait: bool = True) -> Self:
        super().start(wait)
        return self

    def pid(self, node_id: int) -> int:
        return self.procs[node_id].pid

    def stop(self) -> None:
        """Stop the status transport, then every node (as `Cloud.stop`)."""
        if self._status_tp is not None:
            self._status_tp.stop()
            self._status_tp = None
        for node_id in list(self.inproc):
            self.stop_in_process(node_id)
        super().stop()

    # ---- status --------------------------------------------------------------------------
    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Every node's status row, asked from the status host (one shared transport)."""
        from actors.status import query_status

        if self._status_tp is None:
            host = self.status_host
            self._status_tp = host.call(
                lambda: Transport.start((host.addr, 0), self.cfg.transport, name="status")
            )
        return query_status(self.cfg, timeout_s=timeout, transport=self._status_tp)

    def converge(self, limit_s: float = 10.0) -> tuple[float, list[dict[str, Any]]]:
        """Seconds until all nodes are up with one digest and one pending count (-1.0 if not
        within `limit_s`), and the last rows seen."""
        start = time.monotonic()
        rows: list[dict[str, Any]] = []
        while time.monotonic() - start < limit_s:
            rows = self.status(timeout=0.5)
            up = [r for r in rows if r["state"] == "up"]
            if len(up) == len(rows) and len({(r["digest"], r["pending"]) for r in up}) == 1:
                return round(time.monotonic() - start, 2), rows
            time.sleep(0.1)
        return -1.0, rows

    # ---- clients -------------------------------------------------------------------------
    def client(self, client: str, argv: list[str], stdin: bool = False) -> subprocess.Popen[str]:
        """Start `python ARGV...` in client host `client` (client environment, text pipes)."""
        return self.net[client].run([sys.executable, *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True,
                                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                    env=self.client_env, cwd=str(REPO))  # fmt: skip

    def _shell(self, client: str, user: str, home: Path, args: list[str]) -> subprocess.Popen[str]:
        return self.client(client, ["-m", "shell", "--user", user, "--home", str(home), "--config",
                                    str(self.config), "--host", self.net[client].addr, *args])  # fmt: skip

    def spawn_in(self, client: str, user: str, home: Path, commands: str) -> subprocess.Popen[str]:
        """`python -m shell -c COMMANDS --json` started in client host `client` (not waited)."""
        return self._shell(client, user, home, ["-c", commands, "--json"])

    def ok(self, client: str, user: str, home: Path, commands: str,
           timeout: float = 120) -> list[dict[str, Any]]:  # fmt: skip
        """The JSON outputs of a shell run in `client` that must succeed (exit status 0). Its
        stderr is a terminal, where `view` draws (benchmarks.terminal closes each picture)."""
        argv = [sys.executable, "-m", "shell", "--user", user, "--home", str(home), "--config",
                str(self.config), "--host", self.net[client].addr, "-c", commands, "--json"]
        r = run_on_terminal(argv, on="stderr", env=self.client_env, cwd=str(REPO),
                            timeout=timeout, popen=self.net[client].run)
        assert r.returncode == 0, (commands, r.stdout, r.stderr[-3000:])
        return json_lines(r.stdout)

    def serve(self, client: str, user: str, home: Path) -> subprocess.Popen[str]:
        """`python -m shell --serve` in `client`, returned once it says it is online."""
        proc = self._shell(client, user, home, ["--serve"])
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "online" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        return proc

    def driver(self, client: str, user: str, home: Path, mode: str, *args: str,
               stdin: bool = False) -> subprocess.Popen[str]:  # fmt: skip
        """tests/net/driver.py MODE in client host `client` (JSON lines on stdout)."""
        return self.client(client, [str(DRIVER), mode, "--config", str(self.config), "--user",
                                    user, "--home", str(home), "--host", self.net[client].addr,
                                    *args], stdin=stdin)  # fmt: skip


def stop_proc(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """SIGTERM a client process and collect its output."""
    if proc.poll() is None:
        proc.terminate()
    return proc.communicate(timeout=timeout)


class NsSampler(Sampler):
    """`benchmarks.chaos.Sampler` (status of every node every `period_s`, I5/I6 checks)
    polling from a transport that lives in `host`."""

    def __init__(self, cloud: NetCloud, host: Host, period_s: float = 0.1) -> None:
        super().__init__(cloud, period_s)  # type: ignore[arg-type]
        self.host = host

    def open_transport(self) -> Any:
        host = self.host
        return host.call(lambda: Transport.start((host.addr, 0), self.cfg.transport,
                                                 name="sampler"))

    def between(self, t0: float, t1: float) -> list[list[dict[str, Any]]]:
        return [rows for t, rows in self.samples if t0 <= t <= t1]



def brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Status rows as (id, state, pending, users, digest) for an assertion message (pytest cuts
    long dicts before the fields that differ)."""
    return [(r["id"], r["state"], r["pending"], r.get("users"), r["digest"]) for r in rows]
