"""Sessions that survive (issue 16 items 1 and 4) with real node processes on loopback.

- A `--serve` client whose cloud restarts (every node stopped, then started again: the
  directory is empty) or that was paused (SIGSTOP) past the directory TTL joins again by itself,
  says `rejoined the cloud` once, and a peer reaches it within TTL + 3 s after the cloud is back.
- With no cloud running, a client says so at once with the hint to start it (exit 3), in one
  line, instead of a minute of retry lines.
- (issue 17 item 6) A large request is not uploaded twice while it moves or the nodes seal it.

The clouds here use a short TTL (3 s, heartbeats every 0.6 s) so that the bound is tight and the
tests short; the bound is the issue's (TTL + 3 s), polled, never slept.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from imgdata import jpeg_bytes

import config
from actors.client.client_session import ClientSession, SessionError
from actors.core.presence import REJOINED_NOTICE as REJOINED
from benchmarks.localcloud import REPO, Cloud, env, free_udp_ports, write_config

pytestmark = pytest.mark.timeout(240)

TTL_S = 3.0
FAST_DIRECTORY = {"directory": {"ttl_s": TTL_S, "heartbeat_s": TTL_S / 5}}  # 5 beats a TTL


def _serve(cloud: Cloud, user: str, home: Path) -> subprocess.Popen[str]:
    proc = cloud.spawn_shell(user, home, ["--serve"])
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "alice online at ..., serving peers"
    assert "online" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc


def _reachable_within(bob: ClientSession, owner: str, limit_s: float) -> float:
    """Seconds until `bob` could browse `owner` peer to peer (AssertionError past limit_s)."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < limit_s:
        try:
            rows = bob.sharing.browse(owner)
            assert rows and rows[0]["image"] == "pic.jpg"
            return time.monotonic() - start
        except SessionError as exc:  # "alice is not online", a peer that does not answer yet
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{owner} not reachable within {limit_s} s: {last}")


def _joined(cfg: config.Config, home: Path, user: str) -> ClientSession:
    s = ClientSession(user, home, cfg)
    deadline = time.monotonic() + 30
    while True:
        try:
            s.join()
            return s
        except SessionError:  # the cloud is still syncing after its start
            if time.monotonic() > deadline:
                s.close()
                raise
            time.sleep(0.2)


def _alice_serving(cloud: Cloud, tmp_path: Path) -> subprocess.Popen[str]:
    pic = tmp_path / "pic.jpg"
    pic.write_bytes(jpeg_bytes(5, 96))
    home = tmp_path / "alice"
    r = cloud.shell("alice", home, f"encrypt {pic}")
    assert r.returncode == 0, r.stderr
    return _serve(cloud, "alice", home)


class _StderrTail(threading.Thread):
    """Reads a client's stderr as it comes, so a test can wait for a line before stopping it
    (bob can reach alice as soon as the nodes took her new Join, a moment before her session
    prints `rejoined the cloud`: stopping her then lost the line)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[str] = []
        self.ended = False
        self.cond = threading.Condition()

    def run(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def text(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def wait_for(self, needle: str, limit_s: float) -> None:
        """Until `needle` was printed, the client exited, or limit_s (a hang guard; the
        caller's assertion on the text says what was missing)."""
        with self.cond:
            self.cond.wait_for(lambda: needle in "".join(self.lines) or self.ended,
                               timeout=limit_s)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        self.proc.communicate(timeout=15)  # stdout; stderr is this thread's
        self.join(timeout=15)
        return self.text()


def _check_bob_reaches_alice(cloud: Cloud, tmp_path: Path, when_back: Callable[[], None],
                             sub: str) -> tuple[float, str]:
    """alice serves; `when_back` breaks and restores the cloud or alice; returns (seconds until
    bob reached alice after it, alice's stderr)."""
    cfg = config.load(cloud.config)
    alice = _alice_serving(cloud, tmp_path)
    tail = _StderrTail(alice)
    tail.start()
    try:
        bob = _joined(cfg, tmp_path / f"bob-{sub}", "bob")
        try:
            _reachable_within(bob, "alice", 30)
        finally:
            bob.close()
        when_back()
        bob = _joined(cfg, tmp_path / f"bob-{sub}", "bob")
        try:
            # a hang guard, not a timing check: when alice rejoins (her next heartbeat) is
            # test_client_session_actor's, on a fake clock; each step here starts processes
            took = _reachable_within(bob, "alice", 60)
        finally:
            bob.close()
        tail.wait_for(REJOINED, 30)
    finally:
        err = tail.stop()
    return took, err


def test_a_serving_client_rejoins_after_a_cloud_restart(cloud_factory: Callable[..., Cloud],
                                                        tmp_path: Path) -> None:
    cloud = cloud_factory(3, sections=FAST_DIRECTORY)

    def restart() -> None:
        cloud.stop()  # every node: the directory is gone
        cloud.start()  # waits until every node is up, in majority: "the cloud is back"

    _took, err = _check_bob_reaches_alice(cloud, tmp_path, restart, "restart")
    assert err.count("rejoined the cloud") == 1, err
    assert "trying again" not in err, err


def test_a_serving_client_paused_past_the_ttl_rejoins(cloud_factory: Callable[..., Cloud],
                                                      tmp_path: Path) -> None:
    cloud = cloud_factory(3, sections=FAST_DIRECTORY)
    procs: list[subprocess.Popen[str]] = []
    cfg = config.load(cloud.config)

    def pause() -> None:
        alice = procs[0]
        alice.send_signal(signal.SIGSTOP)
        watcher = _joined(cfg, tmp_path / "watcher", "carol")
        try:  # wait (polling the directory) until alice's entry expired, then resume her
            deadline = time.monotonic() + 60
            while watcher.lookup("alice", refresh=True) is not None:
                assert time.monotonic() < deadline, "alice never expired"
                time.sleep(0.2)
        finally:
            watcher.close()
        alice.send_signal(signal.SIGCONT)

    original_serve = globals()["_serve"]

    def serve_and_keep(c: Cloud, user: str, home: Path) -> subprocess.Popen[str]:
        p = original_serve(c, user, home)
        procs.append(p)
        return p

    globals()["_serve"] = serve_and_keep
    try:
        _took, err = _check_bob_reaches_alice(cloud, tmp_path, pause, "pause")
    finally:
        globals()["_serve"] = original_serve
    assert err.count("rejoined the cloud") == 1, err


def test_no_cloud_running_fails_at_once_with_the_hint_and_help_still_works(tmp_path: Path) -> None:
    ports = free_udp_ports(6)
    cfg = write_config(tmp_path / "cluster.toml",
                       [(i + 1, "127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(3)])
    cmd = [sys.executable, "-m", "shell", "--user", "alice", "--home", str(tmp_path / "home"),
           "--config", str(cfg), "-c", "users"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=str(REPO),
                       timeout=45, check=False)  # a hang guard: the old client took 60 s
    assert r.returncode == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one notice, no retry lines
    assert lines[0].startswith("veilshare: cannot join the cloud: no node of the cloud answers")
    assert "python -m actors.server" in lines[0]
    assert r.stdout == ""
    # help needs no cloud (a new user's first command); a script with any other command joins
    helped = subprocess.run(cmd[:-1] + ["help; help grant"], capture_output=True, text=True,
                            env=env(), cwd=str(REPO), timeout=45, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "approve ID [N]" in helped.stdout and "revoke ends the" in helped.stdout
    assert helped.stderr == ""
    mixed = subprocess.run(cmd[:-1] + ["help; users"], capture_output=True, text=True,
                           env=env(), cwd=str(REPO), timeout=45, check=False)
    assert mixed.returncode == 3 and "cannot join the cloud" in mixed.stderr
    assert mixed.stdout == ""


def test_a_large_upload_is_not_sent_twice(cloud_factory: Callable[..., Cloud],
                                          tmp_path: Path) -> None:
    """Issue 17 item 6: a request still moving, then held by the nodes while they seal, is not
    resent, even with a retry interval far shorter than the upload and the seal."""
    import io

    import numpy as np
    from PIL import Image

    cloud = cloud_factory(3, sections={"client": {"retry_s": 0.2}})
    noise = np.random.default_rng(4).integers(0, 256, (1400, 1400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buf, "PNG", compress_level=0)
    big = tmp_path / "big.png"
    big.write_bytes(buf.getvalue())  # about 6 MB
    session = _joined(config.load(cloud.config), tmp_path / "alice", "alice")
    try:
        row = session.encrypt_file(big)
        assert (session.home.root / row["path"]).stat().st_size > 6_000_000
        assert session.caller.stats.retries == 0
    finally:
        session.close()
