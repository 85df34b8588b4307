"""The client's connection to the cloud: one UDP socket for nodes and peers alike.

`ClientSession` is the facade the shell uses. It builds the parts and wires them, and holds no
logic of its own beyond the encrypt command:
- the transport (one socket) and `ClientSessionActor` (actors.client.session_actor), which owns
  the transport subscription, the calls in flight, the directory session (join, heartbeats,
  the check that the cloud still knows us, rejoin, leave) and hands peer requests to sharing;
- `Cloud` and `DirectoryCache` (actors.client.cloud): blocking calls through the actor, for the
  command thread, the sharing workers and the name refresher;
- the sharing parts (grants, owner side, peer flows), each given a `ClientContext`, never the
  session.
Methods return data and raise `SessionError` with a clear message; they never print.

Every session joins before its first command and applies whatever the nodes hand over at join
(pending updates) before running any command; `close()` leaves. When no node answers anything
at join within a few seconds, `join` fails at once with the hint to start the cloud. A session
the nodes no longer know (expiry, cloud restart) is joined again by the actor, which says
`rejoined the cloud` once; `connection` is what the toolbar shows.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import queue
import random
import stat
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from actors.client.client_store import ClientHome, RequestIdBlock, StoreError
from actors.client.cloud import Cloud, DirectoryCache
from actors.client.context import ClientContext
from actors.client.errors import SessionError
from actors.client.grants import Grants
from actors.client.keys import ClientKeys
from actors.client.peer import Sharing
from actors.client.scope import (
    CancelScope,
    cancelled,
    current_notices,
    current_scope,
    within,
)
from actors.client.session_actor import ClientSessionActor
from actors.client.session_messages import (
    NO_CLOUD_S,
    JoinCloud,
    LeaveCloud,
    SessionState,
    UseToken,
)
from actors.client.session_messages import CancelScope as CancelMsg
from actors.core.calls import CallError, CallStats
from actors.core.encrypt_flow import too_large
from actors.direct import DirectEntry
from codec import images
from codec.messages import EncryptReply, JoinReply, Message, Update, UserEntry
from codec.names import check_name, image_name_for
from config import Config
from transport.udp import Transport

log = logging.getLogger(__name__)

Addr = tuple[str, int]
START_CLOUD_HINT = "start it with: python -m actors.server"
# images of one `encrypt` in flight at once: the nodes elect a winner per image, so a batch keeps
# several of them sealing while the next file is read (see benchmarks.batch)
ENCRYPT_IN_FLIGHT = 3

__all__ = ["ClientSession", "EncryptOutcome", "SessionError"]


@dataclass
class EncryptOutcome:
    encrypted: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


class _Notifier:
    """The current notice printer (the shell swaps it while its prompt runs); a thread running
    a command handed over by another process prints to that caller (scope.current_notices)."""

    def __init__(self, fn: Callable[[str], None] | None) -> None:
        self.fn: Callable[[str], None] = fn or (lambda _text: None)

    def __call__(self, text: str) -> None:
        (current_notices.get() or self.fn)(text)


@dataclass
class _CallerStats:
    """`session.caller.stats`: the counters of the call table (shell, benchmarks)."""

    stats: CallStats


class _Relay:
    """A callable whose target is set once the part it calls exists (built after the actor)."""

    def __init__(self) -> None:
        self.target: Callable[..., None] = lambda *_args: None

    def __call__(self, *args: Any) -> None:
        self.target(*args)


class _Handover:
    """After a rejoin (worker thread): apply the updates handed over, confirm, say each."""

    def __init__(self, sharing: Sharing, cloud: Cloud, notify: Callable[[str], None],
                 worker: ThreadPoolExecutor) -> None:
        self.sharing = sharing
        self.cloud = cloud
        self.notify = notify
        self.worker = worker

    def apply(self, updates: tuple[Update, ...]) -> list[str]:
        notices = self.sharing.apply_updates(updates)
        if updates:
            self.cloud.confirm([u.id for u in updates])
        return notices

    def __call__(self, updates: tuple[Update, ...]) -> None:
        """(actor thread) hand the work to the worker: applying may call the cloud."""
        def work() -> None:
            try:
                for notice in self.apply(updates):
                    self.notify(notice)
            except Exception as exc:  # noqa: BLE001 - the ids stay with the nodes: next join
                log.warning("applying the updates handed over at rejoin failed: %s", exc)

        try:
            self.worker.submit(work)
        except RuntimeError:  # the session is closing
            pass


class ClientSession:
    def __init__(self, user: str, home: Path, cfg: Config, *, port: int = 0,
                 host: str = "127.0.0.1",
                 notify: Callable[[str], None] | None = None,
                 transport: Any = None, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.user = check_name(user, "user name")
        self.cfg = cfg
        self.home = ClientHome(home)
        self.db = self.home.open_state()
        self._notify = _Notifier(notify)
        keys_existed = ClientKeys.exist(self.home.root)
        self.keys = ClientKeys.load_or_create(self.home.root)
        if keys_existed and self.db.last_request_number(self.user) == 0:
            # keys without a counter: this user's keys were used before, from another home or
            # with a state.db since lost, whose ids the nodes and the borrowers remember (Done
            # for 5 minutes, update ids for good: one of them again would be dropped as a
            # duplicate). Start above any counter that began at 1: at the wall clock in us.
            self.db.raise_counter(self.user, time.time_ns() // 1000)
        self.node_addrs: list[Addr] = [n.client_addr for n in cfg.nodes]
        self.transport = transport if transport is not None else \
            Transport.start((host, port), cfg.transport, name=f"client-{user}")
        self.state = SessionState()
        self.caller = _CallerStats(CallStats())
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session")
        self._closed = False
        rng = rng or random.Random()
        on_peer, on_rejoined = _Relay(), _Relay()
        next_rid = functools.partial(self.db.next_request_id, self.user)
        entry = DirectEntry()  # replies and call starts skip the actor's mailbox when idle
        self.actor = ClientSessionActor.start(
            user=self.user, nodes=self.node_addrs, transport=self.transport,
            retry_s=cfg.client.retry_s, deadline_s=cfg.client.request_deadline_s,
            heartbeat_s=cfg.directory.heartbeat_s,
            keys=self.keys, next_rid=next_rid,
            on_peer=on_peer, on_rejoined=on_rejoined, notify=self._notify,
            clock=clock, rng=random.Random(rng.getrandbits(64)), state=self.state,
            stats=self.caller.stats, entry=entry)
        self.cloud = Cloud(self.actor, user=self.user, nodes=self.node_addrs,
                           retry_s=cfg.client.retry_s, next_rid=next_rid,
                           notify=self._notify, state=self.state,
                           rng=random.Random(rng.getrandbits(64)), entry=entry,
                           encrypt_rid=(ids := RequestIdBlock(self.db, self.user)).next,
                           skip_encrypt_ids=ids.skip)
        self.dir = DirectoryCache(self.cloud)
        self.ctx = ClientContext(user=self.user, cfg=cfg, home=self.home, db=self.db,
                                 keys=self.keys, cloud=self.cloud, directory=self.dir,
                                 send=self.transport.send, notify=self._notify)
        self.grants = Grants(self.ctx)
        self.sharing = Sharing(self.ctx, self.grants)
        self._handover = _Handover(self.sharing, self.cloud, self._notify, self._worker)
        on_peer.target = self.sharing.on_peer_message
        on_rejoined.target = self._handover

    # ---- plumbing ---------------------------------------------------------------------------
    @property
    def notify(self) -> Callable[[str], None]:
        return self._notify.fn

    @notify.setter
    def notify(self, fn: Callable[[str], None]) -> None:
        self._notify.fn = fn

    @property
    def token(self) -> bytes | None:
        return self.state.token

    @token.setter
    def token(self, token: bytes) -> None:
        """Adopt a token from a Join sent by hand (tests playing a modified client)."""
        self.actor.ask(UseToken(token))

    @property
    def connection(self) -> str:
        """What the toolbar shows: not joined, joining, joined, rejoining, cloud unreachable."""
        return self.state.connection

    def next_rid(self) -> str:
        return self.db.next_request_id(self.user)

    def query_rid(self) -> str:
        return self.cloud.query_rid()

    def call(self, build: Callable[[str, int], Message], targets: list[Addr] | None = None,
             deadline_s: float | None = None, rid: str | None = None) -> Message:
        """One request (a fresh id unless `rid`) to the nodes or `targets`; raises SessionError."""
        return self.cloud.call(build, targets, deadline_s, rid or self.next_rid())

    def cancel(self, scope: CancelScope) -> None:
        """Ctrl-C: the calls of `scope` fail as `cancelled`, nothing more is sent or stored."""
        scope.cancel()
        try:
            self.actor.tell(CancelMsg(scope))
        except pykka.ActorDeadError:
            pass

    # ---- directory session ----------------------------------------------------------------------
    def join(self) -> list[str]:
        """Join the directory; apply the updates handed over. Returns notices for the user."""
        fut: pykka.Future[JoinReply] = pykka.ThreadingFuture()
        notices: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.actor.tell(JoinCloud(fut, NO_CLOUD_S, notices, rid=self.next_rid()))
        try:
            reply = self.cloud.wait(fut, notices)
        except CallError as exc:
            if exc.code == "no_cloud":
                where = ", ".join(f"{h}:{p}" for h, p in self.node_addrs)
                raise SessionError("no_cloud", (
                    f"no node of the cloud answers ({where}) within {NO_CLOUD_S:g} s: is it "
                    f"running? {START_CLOUD_HINT}")) from None
            raise SessionError(exc.code, str(exc)) from None
        return self._handover.apply(reply.updates)

    def confirm(self, ids: list[str]) -> None:
        self.cloud.confirm(ids)

    def leave(self) -> None:
        fut: pykka.Future[None] = pykka.ThreadingFuture()
        try:
            self.actor.tell(LeaveCloud(fut))
            fut.get(timeout=5.0)  # the actor gives up after LEAVE_WAIT_S by itself
        except (pykka.ActorDeadError, pykka.Timeout):
            pass

    def require_token(self) -> bytes:
        return self.cloud.require_token()

    def directory(self, refresh: bool = True) -> list[UserEntry]:
        return self.dir.directory(refresh)

    def lookup(self, user: str, refresh: bool = False) -> UserEntry | None:
        """The directory entry of an online user (cached for 2 s unless refresh)."""
        return self.dir.lookup(user, refresh)

    def peer_token_ok(self, user: str, token: bytes, addr: Addr) -> bool:
        return self.dir.peer_token_ok(user, token, addr)

    def post_update(self, update: Update) -> None:
        """Store an update on the nodes for an offline addressee (durable when acked)."""
        self.cloud.post_update(update)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.leave()
        finally:
            try:
                self.actor.stop(block=True, timeout=5.0)  # calls in flight fail as "closed"
            except pykka.Timeout:
                log.warning("the session actor did not stop in time")
            self._worker.shutdown(wait=True, cancel_futures=True)
            self.sharing.close()
            self.transport.stop()
            self.db.close()

    # ---- encrypt ------------------------------------------------------------------------------
    def seal_through_cloud(self, name: str, data: bytes, rid: str | None = None) -> tuple[bytes, int]:
        """Send bytes to the cloud to be sealed (request id `rid`, a fresh one by default; a
        fresh one too if the nodes refuse it as in use: `Cloud.seal`); returns (png, node that
        sealed)."""
        reply = self.cloud.seal(name, data, rid=rid).reply
        assert isinstance(reply, EncryptReply)  # Cloud.seal checked it
        return reply.sealed, reply.node

    def timed_seal(self, name: str, data: bytes) -> dict[str, Any]:
        """One seal with its phases in ms (benchmarks): upload (until the node that answered
        acknowledged the request), election (the node's wait before sealing), seal, download
        (the rest: the reply's transfer). For an offered image (cloud.OFFER_MIN_BYTES) upload is
        the offer's, and election also holds the winner's fetch and the upload to it."""
        start = time.perf_counter()
        res = self.cloud.seal(name, data)
        total = (time.perf_counter() - start) * 1000
        reply = res.reply
        assert isinstance(reply, EncryptReply)
        winner = self.cfg.node(reply.node).client_addr
        upload = (res.acks.get(winner, float("nan")) - res.started) * 1000
        return {"node": reply.node, "total_ms": total, "upload_ms": upload,
                "election_ms": reply.wait_ms,
                "seal_ms": reply.seal_ms,
                "download_ms": max(0.0, total - upload - reply.wait_ms - reply.seal_ms)}

    @functools.cached_property
    def max_image(self) -> int:
        """The largest image the cloud can seal and send back (codec.seal.max_image_bytes)."""
        from codec import seal  # numpy and Pillow: loaded here, not at every client start

        return seal.max_image_bytes(self.cfg.seal, self.cfg.transport.max_message)

    def encrypt_file(self, path: Path, base: Path | None = None) -> dict[str, Any]:
        """Seal one file through the cloud into encrypted/. Raises SessionError. The image's
        name comes from the file name (codec.names.image_name_for): made valid, and made unique
        when high/ holds another image of that name. An image whose sealed reply could not fit a
        message is refused here, before anything is read or sent (`too_large`). A relative `path`
        is read from `base` when given (the folder of the process that handed the command over)
        and shown as given."""
        return self._seal_file(self._read_image(path, base, {}))

    def _read_image(self, path: Path, base: Path | None,
                    named: dict[str, bytes]) -> tuple[Path, str, bytes]:
        """(path, image name, bytes) of a file to seal; raises SessionError. `named`: the names
        an `encrypt` gave earlier files of its own and their bytes (their high/ copies are not
        written yet: another file's bytes under one of them get the next free name)."""
        full = base / path if base is not None else path
        try:
            st = full.stat()
            if stat.S_ISDIR(st.st_mode):
                raise SessionError("unreadable", f"{path} is a folder: encrypt "
                                                 f"{os.path.join(path, '*')} seals the files in it")
            size = st.st_size
            if size > self.max_image:
                raise SessionError("too_large", too_large(size, self.max_image))
            data = full.read_bytes()
        except OSError as exc:
            raise SessionError("unreadable", f"cannot read {path}: {exc.strerror}") from None
        if len(data) > self.max_image:  # it grew while we looked
            raise SessionError("too_large", too_large(len(data), self.max_image))

        def taken(n: str) -> bool:
            if n in named:
                return named[n] != data
            return (h := self.home.high_path(n)).exists() and h.read_bytes() != data

        name = image_name_for(path.name, taken)
        try:
            images.probe(data, images.max_user_pixels(self.cfg))
        except images.ImageError as exc:
            raise SessionError("not_an_image", str(exc)) from None
        named[name] = data
        return path, name, data

    def _seal_file(self, job: tuple[Path, str, bytes]) -> dict[str, Any]:
        path, name, data = job
        started = time.time()  # wall clock: a harness compares it with its own moments
        start = time.perf_counter()
        reply = self.cloud.seal(name, data).reply
        assert isinstance(reply, EncryptReply)  # Cloud.seal checked it
        png, node, rid = reply.sealed, reply.node, reply.rid  # rid: the id it was sealed under
        if cancelled():  # Ctrl-C while the reply came: what was not stored is not stored
            raise SessionError("cancelled", "cancelled")
        try:
            target = self.home.write(self.home.encrypted_path(images.sealed_name(name)), png)
            high = self.home.high_path(name)  # what the user may share from now on
            if not high.exists() or high.read_bytes() != data:
                self.home.write(high, data)
        except (OSError, StoreError) as exc:
            raise SessionError("write_failed", f"cannot store the sealed image: {exc}") from None
        self.home.accept_reply(rid)  # counted per request id: a second one is `accepted_twice`
        return {"file": path.name, "path": self.home.relative(target),
                "ms": round((time.perf_counter() - start) * 1000, 1), "node": node,
                "image": name, "started": round(started, 3)}

    def encrypt(self, paths: list[Path],
                progress: Callable[[int, int, str], None] | None = None,
                base: Path | None = None, in_flight: int = ENCRYPT_IN_FLIGHT) -> EncryptOutcome:
        """Seal `paths` (see encrypt_file), up to `in_flight` at once: each file is read and
        named here, in order, when a place is free (the names are the ones a one-by-one run
        gives), and sealed on a worker thread of this call, inside the caller's cancel scope
        (one of its own if it has none, which a Ctrl-C here cancels). Rows in the order given.
        `progress(done, total, file)`: before each file is read, and once at the end. A file
        named twice (`encrypt *.png cat.png`, or `a.png ./a.png`) is sealed once, one row."""
        paths = _distinct_files(paths, base)
        n = len(paths)
        slots = max(1, in_flight)
        rows: list[tuple[str, dict[str, Any]] | None] = [None] * n
        scope = current_scope.get()
        own = scope is None
        if scope is None:
            scope = CancelScope()
        named: dict[str, bytes] = {}
        running: dict[Future[dict[str, Any]], int] = {}
        done = 0

        def fail(i: int, exc: SessionError) -> None:
            rows[i] = ("failed", {"file": paths[i].name, "error": str(exc), "code": exc.code})

        def settle(block: bool) -> None:
            nonlocal done
            if not running:
                return
            ready, _ = wait(running, timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for fut in ready:
                i = running.pop(fut)
                done += 1
                try:
                    rows[i] = ("ok", fut.result())
                except SessionError as exc:
                    fail(i, exc)

        with within(scope), ThreadPoolExecutor(slots, thread_name_prefix="encrypt") as pool:
            try:
                for i, path in enumerate(paths):
                    while len(running) >= slots:
                        settle(block=True)
                    settle(block=False)
                    if cancelled():
                        fail(i, SessionError("cancelled", "cancelled"))
                        continue
                    if progress is not None:
                        progress(done, n, path.name)
                    try:
                        job = self._read_image(path, base, named)
                    except SessionError as exc:
                        fail(i, exc)
                        done += 1
                        continue
                    ctx = contextvars.copy_context()  # the scope, and where notices go
                    running[pool.submit(ctx.run, self._seal_file, job)] = i
                while running:
                    settle(block=True)
            except KeyboardInterrupt:  # Ctrl-C on this thread (-c): the workers' calls end
                if own:
                    self.cancel(scope)
                raise
        if progress is not None:
            progress(n, n, "")
        out = EncryptOutcome()
        for row in rows:
            assert row is not None
            (out.encrypted if row[0] == "ok" else out.failed).append(row[1])
        return out

    # ---- status -------------------------------------------------------------------------------
    def node_status(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        from actors.status import query_status

        return query_status(self.cfg, timeout_s=timeout_s, transport=self.transport)


def _distinct_files(paths: list[Path], base: Path | None) -> list[Path]:
    """`paths` without the later mentions of a file already in it (the same file by another
    path too: `a.png`, `./a.png`, a symbolic link), in the order given."""
    seen: set[Path] = set()
    out: list[Path] = []
    for path in paths:
        full = base / path if base is not None else path
        try:
            key = full.resolve()
        except (OSError, RuntimeError):  # a link loop: read (and refused) as given
            key = full.absolute()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out
