"""A real local cloud for tests and benchmarks: node processes on 127.0.0.1 with free ports, a temp config.

Each node runs as its own process (`python -m actors.server --node ID`), so a test can SIGKILL,
SIGSTOP or restart one. `Cloud.stop()` ends every process it started; the `cloud` fixtures in
conftest.py call it even when the test fails.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.server import STOP_WITH_ENV
from benchmarks.terminal import run_on_terminal

REPO = Path(__file__).resolve().parent.parent  # the checkout (benchmarks/ sits in it)
SECRET = "test-secret-" + "0123456789abcdef" * 3


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
PORTS_LOW = 10000  # the lowest port a cloud of tests or benchmarks takes
SLICES = 4  # of the range below the ephemeral ports: one per pytest-xdist worker (mod SLICES)


def port_slice(worker: str | None = None) -> range:
    """The ports a cloud of this process picks from: below the kernel's ephemeral range, so no
    socket bound to port 0 (a client, a shell, another test's socket) ever takes one, not even
    while its node restarts; and one slice of that range per pytest-xdist worker
    (`PYTEST_XDIST_WORKER`, "gw0", "gw1" ...), so the clouds of two workers never pick the same
    port between choosing it and their node binding it."""
    try:
        high = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        high = 32768  # Linux's default start of the ephemeral range
    if high - PORTS_LOW < SLICES * 1000:  # an unusual range: share what there is
        return range(1024, max(high, 2048))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    k = int(worker[2:]) % SLICES if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (high - PORTS_LOW) // SLICES
    return range(PORTS_LOW + k * size, PORTS_LOW + (k + 1) * size)


def free_udp_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` different ports of `port_slice()` free for UDP right now (each tried by binding it,
    all kept bound until every one is chosen), picked at random."""
    ports = port_slice()
    socks: list[socket.socket] = []
    try:
        for _ in range(200 * n):
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((host, random.choice(ports)))
            except OSError:  # taken
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise OSError(f"no {n} free UDP ports in {ports.start}-{ports.stop - 1} on {host}")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def write_config(path: Path, nodes: list[tuple[int, str, int, int]],
                 sections: dict[str, dict[str, Any]] | None = None) -> Path:
    lines = ["[cluster]", f'secret = "{SECRET}"', ""]
    for node_id, host, cport, pport in nodes:
        lines += ["[[nodes]]", f"id = {node_id}", f'host = "{host}"',
                  f"client_port = {cport}", f"peer_port = {pport}", ""]
    for name, values in (sections or {}).items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _embedded_loopback_fragment_size() -> int:
    import config

    return config.load(config.DEFAULT_PATH).transport.loopback_fragment_size


def env() -> dict[str, str]:
    """The environment of the processes started here: this checkout first on the path, and
    the clouds and nodes stop once this process has exited (actors.server's
    VEILSHARE_STOP_WITH), even when it was killed before it could stop them."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("PYTHONUNBUFFERED", "1")
    e[STOP_WITH_ENV] = str(os.getpid())
    return e


class Cloud:
    def __init__(self, root: Path, n: int = 3, *, failures: bool = False,
                 sections: dict[str, dict[str, Any]] | None = None,
                 node_env: Callable[[int], dict[str, str]] | None = None,
                 log_level: str = "INFO") -> None:
        self.root = root
        self.log_level = log_level  # of the node processes (DEBUG: the election's messages)
        self.node_env = node_env  # extra environment of node i (e.g. its peer policy file)
        ports = free_udp_ports(2 * n)
        self.nodes = [(i + 1, "127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(n)]
        # the embedded default's loopback fragments (config/cluster.toml): what the README's
        # local cloud runs with; the rest of the transport keeps the code defaults
        secs: dict[str, dict[str, Any]] = {
            "failures": {"enabled": failures},
            "transport": {"loopback_fragment_size": _embedded_loopback_fragment_size()},
        }
        for k, v in (sections or {}).items():
            secs.setdefault(k, {}).update(v)
        self.config = write_config(root / "cluster.toml", self.nodes, secs)
        self.failures = failures
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}

    # ---- processes ------------------------------------------------------------------------
    def start_node(self, node_id: int) -> None:
        log = self.root / f"node-{node_id}.log"
        self.logs[node_id] = log
        cmd = [sys.executable, "-m", "actors.server", "--node", str(node_id), "--config",
               str(self.config), "--data", str(self.root / f"data-{node_id}"),
               "--log-level", self.log_level]
        if not self.failures:
            cmd.append("--no-failures")
        with open(log, "ab") as fh:
            extra = self.node_env(node_id) if self.node_env is not None else {}
            self.procs[node_id] = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                                   env={**env(), **extra}, cwd=str(REPO))

    def start(self, wait: bool = True) -> Cloud:
        for node_id, *_ in self.nodes:
            self.start_node(node_id)
        if wait:
            self.wait_up()
        return self

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[node_id]
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=10)

    def restart(self, node_id: int) -> None:
        proc = self.procs.get(node_id)
        if proc is not None and proc.poll() is None:
            self.kill(node_id)
        self.start_node(node_id)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_text(self, node_id: int) -> str:
        return self.logs[node_id].read_text(errors="replace")

    # ---- queries ---------------------------------------------------------------------------
    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        """Every node's row, as `python -m actors.server status --json` prints them, asked from
        this process (a poll costs no interpreter start: 0.3 to 2.5 s each beside booting nodes)."""
        import config as config_mod
        from actors.status import query_status

        return query_status(config_mod.load(self.config), timeout_s=timeout)

    def wait_up(self, timeout: float = 30.0, ids: list[int] | None = None) -> None:
        want = set(ids or [n[0] for n in self.nodes])
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.status(timeout=0.5)
            up = {r["id"] for r in last if r["state"] == "up" and r.get("majority", True)}
            if want <= up:
                return
            time.sleep(0.05)
        logs = {i: self.log_text(i)[-2000:] for i in self.logs}
        raise AssertionError(f"nodes {sorted(want)} not up within {timeout}s: {last}\n{logs}")

    def shell(self, user: str, home: Path, commands: str, *, json_out: bool = True,
              timeout: float = 120, extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "shell", "--user", user, "--home", str(home), "--config",
               str(self.config), "-c", commands]
        if json_out:
            cmd.append("--json")
        cmd += extra or []
        # the picture's stream on a terminal, as at a person's prompt (`view` draws only there)
        return run_on_terminal(cmd, on="stderr" if json_out else "stdout", env=env(),
                               cwd=str(REPO), timeout=timeout)

    def spawn_shell(self, user: str, home: Path, args: list[str]) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "shell", "--user", user, "--home", str(home), "--config",
               str(self.config), *args]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env(), cwd=str(REPO))


def serve_shell(cloud: Cloud, user: str, home: Path) -> subprocess.Popen[str]:
    """`python -m shell --user USER --serve` of `home`, once it said it is online."""
    proc = cloud.spawn_shell(user, home, ["--serve"])
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()  # "alice online at ..., serving peers"
    if "online" not in line:
        raise AssertionError(proc.stderr.read() if proc.poll() is not None else line)
    return proc


def stop_shell(proc: subprocess.Popen[str]) -> str:
    """Stop a client process of `serve_shell` or `spawn_shell` (resumed first, should a test have
    paused it) and return what it wrote to stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    return proc.communicate(timeout=15)[1] or ""


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


class EmbeddedCloud:
    """The embedded cloud (`python -m actors.server --config F --data D`): one supervisor process
    that starts every node and restarts one that exits. Free ports, a temp config, a log file;
    node pids come from `status` (its `pid` field). `stop()` ends the supervisor (its nodes die
    with it) even when a test failed."""

    def __init__(self, root: Path, n: int = 3, *, failures: bool = False,
                 sections: dict[str, dict[str, Any]] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.data = root / "data"
        self.cloud = Cloud(root, n, failures=failures, sections=sections)  # config, queries
        self.config = self.cloud.config
        self.log = root / "supervisor.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "actors.server", *args, "--config", str(self.config),
                "--data", str(self.data)]

    def start(self, wait: bool = True) -> EmbeddedCloud:
        cmd = self.command() + ([] if self.cloud.failures else ["--no-failures"])
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env(),
                                         cwd=str(REPO))
        if wait:
            self.wait_up()
        return self

    def wait_up(self, timeout: float = 30.0, ids: list[int] | None = None) -> None:
        try:
            self.cloud.wait_up(timeout, ids)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nsupervisor log:\n{self.log_text()[-3000:]}") from None

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        return self.cloud.status(timeout)

    def pids(self) -> dict[int, int]:
        """Node id -> pid, as the nodes report them (0 for a node that did not answer)."""
        return {r["id"]: r["pid"] for r in self.status()}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its nodes get SIGTERM (PR_SET_PDEATHSIG)
            self.proc.wait()
