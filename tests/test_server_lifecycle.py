"""The embedded cloud starts and stops like a service (issue 16, items 2 and 3), real processes.

- a second `python -m actors.server` over a running cloud exits 1 with one line; the first
  keeps serving;
- `stop --data D` stops the cloud of that data root and no other; a stale pid file (process
  gone, or a pid now used by another program) is reported, removed, and nothing is signalled;
- `status` shows each node's pid;
- a node that keeps crashing is restarted with a growing back-off, said once per step.
Every cloud binds 127.0.0.1 on free ports and is stopped even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from actors.pidfile import pid_path
from benchmarks.localcloud import REPO, EmbeddedCloud, env

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(180)]


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[Callable[..., EmbeddedCloud]]:
    made: list[EmbeddedCloud] = []

    def make(start: bool = True) -> EmbeddedCloud:
        c = EmbeddedCloud(tmp_path / f"cloud{len(made)}")
        made.append(c)
        return c.start() if start else c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


def server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.server", *args], capture_output=True,
                          text=True, env=env(), cwd=str(REPO), timeout=60, check=False)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def node_pids(c: EmbeddedCloud) -> set[int]:
    assert c.proc is not None
    return {p.pid for p in psutil.Process(c.proc.pid).children()}


def test_status_shows_the_pid_of_each_node(clouds: Callable[..., EmbeddedCloud]) -> None:
    a = clouds()
    pids = a.pids()
    assert set(pids) == {1, 2, 3}
    assert set(pids.values()) == node_pids(a)
    table = server("status", "--config", str(a.config)).stdout.splitlines()
    assert table[0].split()[:3] == ["id", "state", "pid"]
    assert [line.split()[:3] for line in table[2:5]] == [
        [str(i), "up", str(pids[i])] for i in (1, 2, 3)]


def test_a_second_start_exits_1_with_one_line_and_the_first_keeps_serving(
        clouds: Callable[..., EmbeddedCloud], tmp_path: Path) -> None:
    a = clouds()
    before = a.pids()
    port = a.cloud.nodes[0][2]
    r = server("--config", str(a.config), "--data", str(tmp_path / "other"), "--no-failures")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        (f"port {port} is in use: a cloud is already running? see: python -m actors.server "
         f"status --config {a.config}")]
    assert r.stdout == "" and not (tmp_path / "other").exists()
    a.wait_up()
    assert a.pids() == before
    assert a.proc is not None and a.proc.poll() is None


def test_a_second_cloud_on_the_same_data_root_is_refused(
        clouds: Callable[..., EmbeddedCloud]) -> None:
    a = clouds()
    b = clouds(start=False)  # other ports, same data root
    r = server("--config", str(b.config), "--data", str(a.data), "--no-failures")
    assert r.returncode == 1
    assert a.proc is not None
    assert r.stderr.splitlines() == [
        (f"data root {a.data} is used by the running cloud of pid {a.proc.pid}; stop it first: "
         f"python -m actors.server stop --config {b.config} --data {a.data}")]
    assert json.loads(pid_path(a.data).read_text())["pid"] == a.proc.pid
    assert {r["state"] for r in b.status(timeout=0.3)} == {"unreachable"}


def test_stop_stops_only_the_cloud_of_its_data_root(
        clouds: Callable[..., EmbeddedCloud]) -> None:
    a, b = clouds(), clouds()
    a_nodes, b_pids = node_pids(a), b.pids()
    assert a.proc is not None and pid_path(a.data).exists()
    r = server("stop", "--data", str(a.data), "--config", str(a.config))
    assert (r.returncode, r.stdout) == (0, f"stopped the cloud of {a.data} (pid {a.proc.pid})\n")
    assert a.proc.wait(timeout=30) == 0
    assert not any(map(running, a_nodes))
    assert not pid_path(a.data).exists()
    assert "cloud stopped" in a.log_text()
    assert {r["state"] for r in a.status(timeout=0.3)} == {"unreachable"}
    b.wait_up()
    assert b.pids() == b_pids and b.proc is not None and b.proc.poll() is None
    again = server("stop", "--data", str(a.data))
    assert again.returncode == 1
    assert again.stderr == f"no cloud to stop: no pid file {pid_path(a.data)}\n"
    assert server("stop", "--data", str(b.data)).returncode == 0
    assert b.proc.wait(timeout=30) == 0


def test_a_hangup_stops_the_cloud_and_removes_its_pid_file(
        clouds: Callable[..., EmbeddedCloud]) -> None:
    """The terminal a cloud was started from closes (SIGHUP): it stops like on SIGTERM, nodes
    and pid file, so the next `stop` finds no stale file (before: killed, the file left)."""
    c = clouds()
    nodes = node_pids(c)
    assert c.proc is not None and pid_path(c.data).exists()
    c.proc.send_signal(signal.SIGHUP)
    assert c.proc.wait(timeout=30) == 0
    assert not any(map(running, nodes))
    assert not pid_path(c.data).exists()
    assert "cloud stopped" in c.log_text()


def _pid_file(data: Path, pid: int, started: float) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    path = pid_path(data)
    path.write_text(json.dumps({"pid": pid, "started": started, "config": "x.toml"}))
    return path


def test_a_stale_pid_file_whose_process_is_gone_is_reported_and_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = _pid_file(tmp_path / "d", gone.pid, 1.0)
    r = server("stop", "--data", str(tmp_path / "d"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"stale pid file {path} (process {gone.pid} is gone): removed it; "
                        f"no cloud was running for {tmp_path / 'd'}\n")
    assert not path.exists()


def test_a_pid_file_naming_another_program_signals_nothing(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        # the right pid and start time, but not a cloud; then a reused pid (another start time)
        for started in (psutil.Process(other.pid).create_time(), 1.0):
            path = _pid_file(tmp_path / "d", other.pid, started)
            r = server("stop", "--data", str(tmp_path / "d"))
            assert r.returncode == 1
            assert r.stderr.startswith(f"stale pid file {path} (process {other.pid} is not "
                                       f"that cloud (pid reused by ")
            assert not path.exists()
            assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_cloud_starts_over_a_stale_pid_file_and_replaces_it(
        clouds: Callable[..., EmbeddedCloud]) -> None:
    a = clouds(start=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = _pid_file(a.data, gone.pid, 1.0)
    a.start()
    assert a.proc is not None
    assert json.loads(path.read_text())["pid"] == a.proc.pid
    assert f"stale pid file {path} (process {gone.pid} is gone): replacing it" in a.log_text()
    assert server("stop", "--data", str(a.data)).returncode == 0
    assert a.proc.wait(timeout=30) == 0 and not path.exists()


def test_a_node_that_keeps_crashing_is_restarted_with_a_growing_back_off(
        clouds: Callable[..., EmbeddedCloud]) -> None:
    """Node 2's data dir is a file: the node exits at start, every time. The supervisor says
    so once per back-off step (1 s, 2 s, 4 s ...), not once per crash in a tight loop; the two
    other nodes serve meanwhile."""
    a = clouds(start=False)
    a.data.mkdir(parents=True)
    (a.data / "node-2").write_text("not a directory\n")
    a.start(wait=False)
    a.wait_up(ids=[1, 3])

    def lines() -> list[str]:
        return [x for x in a.log_text().splitlines() if x.startswith("node 2 ")]

    wait_for(lambda: any("restarting it in 4 s" in x for x in lines()), "third back-off step")
    said = lines()
    assert said[:3] == [
        "node 2 exited with status 1; restarting it in 1 s (its pending updates are on disk)",
        ("node 2 keeps exiting (status 1, 2 times in a row soon after starting); restarting it "
         "in 2 s; the delay doubles while it keeps failing (this is said once per delay)"),
        ("node 2 keeps exiting (status 1, 3 times in a row soon after starting); restarting it "
         "in 4 s; the delay doubles while it keeps failing (this is said once per delay)")]
    assert len(said) == 3  # the supervisor said nothing between steps
    assert a.log_text().count("FileExistsError") <= 4  # one traceback per crash, not a flood
    assert [r["state"] for r in a.status()] == ["up", "unreachable", "up"]
    assert os.path.isfile(a.data / "node-2")


def test_status_asks_again_while_the_nodes_name_two_token_holders() -> None:
    """`python -m actors.server status`: caught while the failure token passes (the nodes name
    different holders until the holder's next heartbeat), it asks again, a heartbeat apart, and
    shows one settled answer; a split that lasts is shown as it is, after `tries` asks."""
    from actors.server import settled_status

    def rows(*holders: int) -> list[dict[str, object]]:
        return [{"id": i + 1, "token_holder": h} for i, h in enumerate(holders)]

    answers = [rows(2, 3, 3), rows(0, 3, 3), rows(3, 3, 3), rows(2, 2, 2)]
    asked: list[int] = []

    def query() -> list[dict[str, object]]:
        asked.append(1)
        return answers[len(asked) - 1]

    # the second answer agrees: node 1 has no view yet (0), the others name node 3
    assert settled_status(query, tries=4, pause_s=0.0) == rows(0, 3, 3)
    assert len(asked) == 2
    split = rows(2, 3, 3)
    asked.clear()
    assert settled_status(lambda: (asked.append(1), split)[1], tries=4, pause_s=0.0) == split
    assert len(asked) == 4


# ---- VEILSHARE_STOP_WITH: no cloud outlives the runner that started it ----------------------
@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process to watch: the stand-in for a test runner that gets SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_the_test_processes_stop_with_the_process_that_started_them() -> None:
    from actors.server import STOP_WITH_ENV

    assert env()[STOP_WITH_ENV] == str(os.getpid())


def test_stop_with_calls_stop_once_the_watched_process_exits(
        sleeper: subprocess.Popen[bytes]) -> None:
    import threading

    from actors.server import stop_with

    stopped = threading.Event()
    watcher = stop_with(str(sleeper.pid), period_s=0.01, stop=stopped.set)
    assert watcher is not None
    # while it lives, nothing: twenty periods and more, and the watcher still watches
    assert not stopped.wait(0.3) and watcher.is_alive()
    sleeper.kill()  # SIGKILL: no goodbye; the watcher sees a zombie, then nothing
    assert stopped.wait(30)
    watcher.join(30)
    assert not watcher.is_alive()


def test_stop_with_a_process_gone_already_or_a_zombie_stops_at_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from actors.server import stop_with

    zombie = subprocess.Popen(["true"])  # exits, not reaped yet: a zombie
    wait_for(lambda: not running(zombie.pid), "the child to exit")
    try:
        stopped = threading.Event()
        stop_with(str(zombie.pid), period_s=60, stop=stopped.set)
        assert stopped.wait(30)  # the first check, not a period later
    finally:
        zombie.wait()
    gone = zombie.pid  # reaped now: no such process
    stopped = threading.Event()
    stop_with(str(gone), period_s=60, stop=stopped.set)
    assert stopped.wait(30)
    assert f"process {gone} (VEILSHARE_STOP_WITH) has exited: stopping" in capsys.readouterr().err
    assert stop_with("not-a-pid", stop=stopped.set) is None
    assert "is not a process id: ignored" in capsys.readouterr().err


def test_a_node_stops_cleanly_when_the_process_it_stops_with_is_killed(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    from benchmarks.localcloud import STOP_WITH_ENV, Cloud

    cloud = Cloud(tmp_path, 1, node_env=lambda _i: {STOP_WITH_ENV: str(sleeper.pid)})
    try:
        cloud.start()  # up while the watched process lives
        sleeper.kill()
        assert cloud.procs[1].wait(timeout=60) == 0  # SIGTERM's clean stop, not a kill
        assert "has exited: stopping" in cloud.log_text(1)
    finally:
        cloud.stop()


def test_an_embedded_cloud_stops_with_its_runner_nodes_and_pid_file(
        tmp_path: Path, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import localcloud

    real_env = localcloud.env
    monkeypatch.setattr(localcloud, "env",
                        lambda: {**real_env(), localcloud.STOP_WITH_ENV: str(sleeper.pid)})
    c = EmbeddedCloud(tmp_path / "cloud")
    try:
        c.start()
        nodes = node_pids(c)
        assert c.proc is not None and len(nodes) == 3
        sleeper.kill()
        assert c.proc.wait(timeout=60) == 0
        wait_for(lambda: not any(map(running, nodes)), "the nodes to stop")
        assert not pid_path(c.data).exists()
        assert "cloud stopped" in c.log_text()
    finally:
        c.stop()


def test_the_nodes_die_with_a_cloud_killed_with_sigkill(
        clouds: Callable[..., EmbeddedCloud]) -> None:
    """No handler runs on SIGKILL: the nodes go because the kernel signals them
    (PR_SET_PDEATHSIG, set between fork and exec), not because the cloud stopped them."""
    c = clouds()
    nodes = node_pids(c)
    assert c.proc is not None and len(nodes) == 3
    c.proc.kill()
    c.proc.wait(timeout=30)
    wait_for(lambda: not any(map(running, nodes)), "the nodes to die with the cloud")
