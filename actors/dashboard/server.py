"""`python -m actors.server dashboard`: a live, read-only web page of the cloud.

Two threads around one CloudTimeline:
- the poller asks every node for its status over its client socket (actors.status.query_status,
  one transport kept for the process) every POLL_S, feeds the rows to the timeline and keeps the
  JSON snapshot ready;
- the standard library's ThreadingHTTPServer serves the page (static HTML, CSS and JavaScript
  shipped in this package: no CDN, no build step, works offline) and `GET /api/state`, the
  snapshot (docs/json.md, `dashboard`), which the page fetches every second.
No new dependency: http.server is enough for one local reader. Only GET and HEAD are answered;
the page changes nothing; bound to loopback, it answers only requests whose Host is loopback. Binds 127.0.0.1 by default; another address prints a warning (there is
no authentication).
"""

from __future__ import annotations

import ipaddress
import json
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from actors.dashboard.timeline import CloudTimeline
from config import Config

POLL_S = 0.5  # between the starts of two polls
POLL_TIMEOUT_S = 0.8  # a node that has not answered by then is "unreachable" in that poll
STATIC = {"index.html": "text/html; charset=utf-8", "dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}


def static_file(name: str) -> bytes:
    return resources.files("actors.dashboard").joinpath("static", name).read_bytes()


class Poller(threading.Thread):
    """Polls the nodes into a CloudTimeline; `state()` is the latest snapshot as JSON bytes."""

    def __init__(self, cfg: Config, query: Callable[[], list[dict[str, Any]]],
                 clock: Callable[[], float] = time.time, period_s: float = POLL_S) -> None:
        super().__init__(name="dashboard-poller", daemon=True)
        self.cfg = cfg
        self.query = query
        self.clock = clock
        self.period_s = period_s
        self.timeline = CloudTimeline([n.id for n in cfg.nodes])
        self.addresses = {n.id: f"{n.host}:{n.client_port}" for n in cfg.nodes}
        self._lock = threading.Lock()
        self._state = self._render(clock())
        self._halt = threading.Event()

    def _render(self, now: float) -> bytes:
        snap = self.timeline.snapshot(now)
        for row in snap["nodes"]:
            row["address"] = self.addresses[row["id"]]
        return json.dumps(snap, separators=(",", ":")).encode()

    def poll_once(self) -> None:
        rows = self.query()
        now = self.clock()
        with self._lock:
            self.timeline.add(now, rows)
            self._state = self._render(now)

    def state(self) -> bytes:
        with self._lock:
            return self._state

    def run(self) -> None:
        failing = ""  # the last failure said, so that a lasting one is said once
        while not self._halt.is_set():
            start = time.monotonic()
            try:
                self.poll_once()
                if failing:
                    print("dashboard: polling works again", file=sys.stderr)
                failing = ""
            except Exception as exc:  # noqa: BLE001 (a bug must not end the dashboard)
                said = f"dashboard: poll failed: {type(exc).__name__}: {exc}"
                if said != failing:
                    print(said + " (said once while it lasts)", file=sys.stderr)
                failing = said
            self._halt.wait(max(0.0, self.period_s - (time.monotonic() - start)))

    def stop(self) -> None:
        self._halt.set()


class DashboardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a page closed while it was being answered: nothing to say
        super().handle_error(request, client_address)


def loopback_host_header(value: str | None) -> bool:
    """Whether an HTTP Host header names a loopback address ("localhost:8600", "[::1]:8600").
    A dashboard bound to loopback answers only those, so that a web page of another site whose
    name was made to resolve to 127.0.0.1 (DNS rebinding) cannot read it."""
    if value is None:
        return True  # no Host header: not a browser (browsers always send one)
    name = value.strip()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return is_loopback(name)


def handler_for(poller: Poller, *, loopback_only: bool = True) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "veilshare-dashboard"

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def _answer(self, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if loopback_only and not loopback_host_header(self.headers.get("Host")):
                self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8",
                           b"this dashboard answers only to a loopback Host\n", head)
            elif path == "/api/state":
                self._send(HTTPStatus.OK, "application/json", poller.state(), head)
            elif path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, STATIC["index.html"], static_file("index.html"), head)
            elif path.startswith("/static/") and path[len("/static/"):] in STATIC:
                name = path[len("/static/"):]
                self._send(HTTPStatus.OK, STATIC[name], static_file(name), head)
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n",
                           head)

        def _send(self, status: HTTPStatus, ctype: str, body: bytes, head: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request every second would drown the terminal

    return Handler


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(cfg: Config, *, host: str = "127.0.0.1", port: int = 8600) -> int:
    """Run the dashboard until Ctrl-C or SIGTERM; 1 if the address cannot be bound."""
    import signal

    from actors.status import query_status
    from transport.udp import Transport

    if not is_loopback(host):
        print(f"warning: the dashboard on {host} is not on loopback and has no authentication: "
              f"anyone who can reach that address sees the state of the cloud", file=sys.stderr)
    transports: list[Transport] = []  # started once the port is ours
    poller = Poller(cfg, lambda: query_status(cfg, timeout_s=POLL_TIMEOUT_S,
                                              transport=transports[0]))
    try:
        httpd = DashboardHTTPServer((host, port),
                                    handler_for(poller, loopback_only=is_loopback(host)))
    except OSError as exc:
        print(f"dashboard: cannot listen on {host}:{port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    local = all(is_loopback(n.host) for n in cfg.nodes)  # then so is the poller's socket
    transports.append(Transport.start(("127.0.0.1" if local else "0.0.0.0", 0), cfg.transport,
                                      name="dashboard"))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start())
    print(f"dashboard of {len(cfg.nodes)} nodes: http://{host}:{httpd.server_port}/ "
          f"(read-only; Ctrl-C stops it)", flush=True)
    poller.start()
    try:
        httpd.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        poller.stop()
        httpd.server_close()
        poller.join(timeout=5)
        transports[0].stop()
    return 0
