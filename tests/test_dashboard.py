"""The dashboard (issue 20): its HTTP server, its JSON state, and the page as a real browser
renders it over the real embedded cloud on loopback.

The browser test reads the DOM that headless Chromium renders (`--dump-dom`), not only the JSON:
3 nodes up and the token holder; a SIGSTOPped node shown unreachable, then up again after
SIGCONT with the same pid; a SIGKILLed node restarted by the embedded cloud shown with a new pid
and a period away on the timeline; the banner once no node answers. It skips, saying why, where
Debian's `chromium` is missing (`.ci/run` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

import config
from actors.dashboard.server import Poller, handler_for, is_loopback
from actors.status import row
from benchmarks.localcloud import REPO, EmbeddedCloud, env

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---- the HTTP server, with polls injected -------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Poller]]:
    from http.server import ThreadingHTTPServer

    from benchmarks.localcloud import write_config

    cfg = config.load(write_config(tmp_path / "c.toml", [(1, "127.0.0.1", 40001, 40002),
                                                         (2, "127.0.0.1", 40003, 40004)]))
    answers = [[dict(row(None, 1), state="up", pid=11, served=3, token=True), row(None, 2)]]
    poller = Poller(cfg, lambda: answers[0], clock=lambda: 1000.0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(poller))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", poller
    finally:
        httpd.shutdown()
        httpd.server_close()


def get(url: str, method: str = "GET", host: str | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"] or "", e.read()


def test_the_page_and_its_files_are_served_from_the_package(served: tuple[str, Poller]) -> None:
    base, _ = served
    status, ctype, body = get(base + "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert b'<script src="/static/dashboard.js">' in body
    assert b"://" not in body  # nothing fetched from elsewhere
    for name, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        status, ctype, body = get(f"{base}/static/{name}")
        assert status == 200 and ctype.startswith(kind) and len(body) > 500
        assert b"https://" not in body and b"//cdn" not in body


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/timeline.py", "/api",
                                  "/static/", "/%2e%2e/pyproject.toml", "/api/state/x"])
def test_anything_else_is_not_found(served: tuple[str, Poller], path: str) -> None:
    base, _ = served
    assert get(base + path)[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_it_is_read_only(served: tuple[str, Poller], method: str) -> None:
    base, _ = served
    assert get(base + "/api/state", method)[0] == 501


def test_the_state_endpoint_is_the_timeline_snapshot(served: tuple[str, Poller]) -> None:
    base, poller = served
    status, ctype, body = get(base + "/api/state")
    assert (status, ctype) == (200, "application/json")
    before = json.loads(body)
    assert before["polls"] == 0 and [n["state"] for n in before["nodes"]] == ["unknown"] * 2
    poller.poll_once()
    state = json.loads(get(base + "/api/state")[2])
    assert state["polls"] == 1 and state["holder"] == 1 and state["answering"] == 1
    assert [(n["id"], n["state"], n["pid"], n["address"]) for n in state["nodes"]] == [
        (1, "up", 11, "127.0.0.1:40001"), (2, "unreachable", 0, "127.0.0.1:40003")]


@pytest.mark.parametrize("host", ["evil.example:8600", "evil.example", "192.0.2.7:8600",
                                  "127.0.0.1.evil.example", "[2001:db8::1]:80"])
def test_a_foreign_host_header_is_refused(served: tuple[str, Poller], host: str) -> None:
    """DNS rebinding: a page of another site whose name resolves to 127.0.0.1 sends its own
    name as Host; the dashboard does not answer it."""
    base, _ = served
    for path in ("/", "/api/state", "/static/dashboard.js"):
        status, _, body = get(base + path, host=host)
        assert status == 403 and b"cloud" not in body and b"nodes" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:8600", "localhost:8600", "[::1]:8600", "127.0.0.1"])
def test_a_loopback_host_header_is_answered(served: tuple[str, Poller], host: str) -> None:
    base, _ = served
    assert get(base + "/api/state", host=host)[0] == 200


def test_loopback_or_not() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.5.0.9", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.0.2.7", "::", "example.org"]))


def test_a_non_loopback_address_gets_a_warning(tmp_path: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is not an address of this host: the warning comes first, then the
    bind fails with one line; nothing listens anywhere."""
    from benchmarks.localcloud import write_config

    cfg = write_config(tmp_path / "c.toml", [(1, "127.0.0.1", 40001, 40002)])
    r = subprocess.run([sys.executable, "-m", "actors.server", "dashboard", "--host", "192.0.2.1",
                        "--port", "0", "--config", str(cfg)], capture_output=True, text=True,
                       env=env(), cwd=str(REPO), timeout=60, check=False)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == ("warning: the dashboard on 192.0.2.1 is not on loopback and has no "
                        "authentication: anyone who can reach that address sees the state of "
                        "the cloud")
    assert lines[1].startswith("dashboard: cannot listen on 192.0.2.1:0: ") and len(lines) == 2


# ---- the page in a real browser over the real cloud ---------------------------------------------
@dataclass
class Page:
    """What the rendered DOM shows."""

    nodes: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (state, pid)
    holder: int = -1
    banner: str = ""
    periods: list[tuple[int, str]] = field(default_factory=list)  # timeline bars (node, state)
    polls: int = 0


class _DomReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._in_banner = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-node" in a:
            self.page.nodes[int(a["data-node"])] = (a["data-state"], int(a["data-pid"]))
        elif a.get("id") == "holder":
            self.page.holder = int(a["data-holder"])
        elif a.get("id") == "banner":
            self._in_banner = a.get("data-visible") == "yes"
        elif tag == "rect" and "period" in a.get("class", ""):
            self.page.periods.append((int(a["data-node"]), a["data-state"]))
        elif tag == "body" and "data-polls" in a:
            self.page.polls = int(a["data-polls"])

    def handle_data(self, data: str) -> None:
        if self._in_banner:
            self.page.banner += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            self._in_banner = False


def render(url: str, profile: Path) -> Page:
    """The page as headless Chromium renders it, after its scripts ran for 2.5 s of virtual
    time (a few refreshes)."""
    out = subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=2500",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=False)
    reader = _DomReader()
    reader.feed(out.stdout)
    return reader.page


def wait_page(url: str, profile: Path, cond: Callable[[Page], bool], what: str,
              timeout: float = 60.0) -> Page:
    deadline = time.monotonic() + timeout
    page = Page()
    while time.monotonic() < deadline:
        page = render(url, profile)
        if cond(page):
            return page
        time.sleep(0.3)
    raise AssertionError(f"the page never showed {what} within {timeout} s; last: {page}")


@pytest.fixture
def dashboard_cloud(tmp_path: Path) -> Iterator[tuple[EmbeddedCloud, str]]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does)")
    never_down = {"enabled": True, "mean_up_s": 86_400.0, "token_hold_s": 1.0}
    cloud = EmbeddedCloud(tmp_path / "cloud", 3, failures=True,
                          sections={"failures": never_down})
    dash: subprocess.Popen[str] | None = None
    try:
        cloud.start()
        dash = subprocess.Popen(
            [sys.executable, "-m", "actors.server", "dashboard", "--port", "0", "--config",
             str(cloud.config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env(), cwd=str(REPO))
        assert dash.stdout is not None
        line = dash.stdout.readline()
        assert line.startswith("dashboard of 3 nodes: http://127.0.0.1:"), line
        yield cloud, line.split()[4]
    finally:
        for pid in cloud.pids().values() if cloud.proc and cloud.proc.poll() is None else []:
            if pid:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        if dash is not None:
            dash.terminate()
            _, err = dash.communicate(timeout=20)
            assert "Traceback" not in err, err
        cloud.stop()


@pytest.mark.cloud
@pytest.mark.timeout(300)
def test_the_page_shows_the_cloud_live_in_a_real_browser(
        dashboard_cloud: tuple[EmbeddedCloud, str], tmp_path: Path) -> None:
    cloud, url = dashboard_cloud
    profile = tmp_path / "chromium"
    pids = cloud.pids()

    page = wait_page(url, profile, lambda p: p.polls > 0 and p.holder in (1, 2, 3)
                     and p.nodes == {i: ("up", pids[i]) for i in (1, 2, 3)},
                     "3 nodes up with their pids and a token holder")
    assert page.banner == "" and page.periods == []

    os.kill(pids[2], signal.SIGSTOP)
    try:
        page = wait_page(url, profile, lambda p: p.nodes.get(2) == ("unreachable", pids[2]),
                         "node 2 unreachable")
        assert page.nodes[1][0] == "up" and page.nodes[3][0] == "up"
        assert (2, "unreachable") in page.periods
    finally:
        os.kill(pids[2], signal.SIGCONT)
    wait_page(url, profile, lambda p: p.nodes.get(2) == ("up", pids[2]),
              "node 2 up again with the same pid")

    os.kill(pids[3], signal.SIGKILL)
    page = wait_page(url, profile, lambda p: p.nodes.get(3, ("", 0))[0] == "up"
                     and p.nodes[3][1] not in (0, pids[3]), "node 3 up with a new pid")
    assert page.nodes[3][1] == cloud.pids()[3]
    assert {s for n, s in page.periods if n == 3} & {"unreachable", "restarted"}, page.periods
    assert f"node 3 exited with status {-signal.SIGKILL}" in cloud.log_text()

    cloud.stop()
    page = wait_page(url, profile, lambda p: p.banner != "", "the no-answer banner")
    assert page.banner.startswith("No node answers")
    assert {s for s, _ in page.nodes.values()} == {"unreachable"}


def test_a_failing_poll_is_said_once_and_the_poller_keeps_going(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.localcloud import write_config

    cfg = config.load(write_config(tmp_path / "c.toml", [(1, "127.0.0.1", 40001, 40002)]))
    calls = []
    done = threading.Event()

    def query() -> list[dict[str, object]]:
        calls.append(1)
        if len(calls) >= 8:
            done.set()
        if len(calls) <= 5:
            raise OSError("boom")
        return [dict(row(None, 1), state="up", pid=5)]

    poller = Poller(cfg, query, period_s=0.0)
    poller.start()
    try:
        assert done.wait(30)
    finally:
        poller.stop()
        poller.join(10)
    assert capsys.readouterr().err.splitlines() == [
        "dashboard: poll failed: OSError: boom (said once while it lasts)",
        "dashboard: polling works again"]
    assert json.loads(poller.state())["nodes"][0]["pid"] == 5
