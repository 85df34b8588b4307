"""The client's connection to the cloud: one UDP socket for nodes and peers alike.

`ClientSession` owns the transport, `state.db` (the request counter is persisted before an id
is used), the request/reply matching (`actors.client.rpc.Caller`), the directory session (Join, heartbeats,
Leave) and a cache of the directory. The sharing flows live in `actors.client.peer.Sharing`, which this
session creates. Methods return data and raise `SessionError` with a clear message; they never print.

Every session joins before its first command and applies whatever the nodes hand over at join
(pending updates) before running any command; `close()` leaves.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.client.client_store import ClientHome, StoreError
from actors.core.directory import token_digest
from actors.client.rpc import Caller, CallError
from codec import images
from codec.messages import (
    Ack,
    ClientHeartbeat,
    ConfirmUpdates,
    DirectoryQuery,
    DirectoryReply,
    EncryptReply,
    EncryptRequest,
    Join,
    JoinReply,
    Leave,
    Message,
    PostUpdate,
    Update,
    UserEntry,
)
from codec.names import check_name, image_name_for
from config import Config
from transport.udp import Delivery, Transport

log = logging.getLogger(__name__)

Addr = tuple[str, int]


class SessionError(Exception):
    """A command failed for a reason the user should read (`code` for scripts)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class EncryptOutcome:
    encrypted: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


class ClientSession:
    def __init__(self, user: str, home: Path, cfg: Config, *, port: int = 0,
                 host: str = "127.0.0.1",
                 notify: Callable[[str], None] | None = None) -> None:
        self.user = check_name(user, "user name")
        self.cfg = cfg
        self.home = ClientHome(home)
        self.db = self.home.open_state()
        self.notify = notify or (lambda _text: None)
        self.transport = Transport.start((host, port), cfg.transport, name=f"client-{user}")
        self.caller = Caller(self._send, retry_s=cfg.client.retry_s,
                             deadline_s=cfg.client.request_deadline_s,
                             on_retry=self._on_retry)
        self.node_addrs: list[Addr] = [n.client_addr for n in cfg.nodes]
        self.token: bytes | None = None
        self._dir: dict[str, UserEntry] = {}
        self._dir_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timing: dict[str, dict[Addr, float]] = {}  # rid -> ack time per node (benchmarks)
        self._heartbeat: threading.Thread | None = None
        from actors.client.grants import Grants
        from actors.client.keys import ClientKeys
        from actors.client.peer import Sharing  # the sharing flows use this session

        self.keys = ClientKeys.load_or_create(self.home.root)
        self.grants = Grants(self, self.keys)
        self.sharing = Sharing(self)
        self.transport.subscribe(self._on_delivery)

    # ---- plumbing ---------------------------------------------------------------------------
    def _send(self, addr: Addr, msg: Message) -> None:
        acks = self._timing.get(getattr(msg, "rid", ""))
        if acks is None:
            self.transport.send(addr, msg)
            return

        def record(err: object) -> None:
            acks.setdefault(addr, time.perf_counter() if err is None else float("nan"))

        self.transport.send(addr, msg, on_done=record)

    def _on_retry(self, rid: str, reason: str) -> None:
        self.notify(f"request {rid}: {reason}; trying again")

    def _on_delivery(self, delivery: Delivery) -> None:
        if self.caller.deliver(delivery.msg):
            return
        self.sharing.on_peer_message(delivery.addr, delivery.msg)

    def next_rid(self) -> str:
        return self.db.next_request_id(self.user)

    def call(self, build: Callable[[str, int], Message], targets: list[Addr] | None = None,
             deadline_s: float | None = None, rid: str | None = None) -> Message:
        """One request (a fresh id unless `rid`) to the nodes or `targets`; raises SessionError."""
        rid = rid or self.next_rid()
        try:
            return self.caller.call(rid, lambda attempt: build(rid, attempt),
                                    targets or self.node_addrs, deadline_s=deadline_s)
        except CallError as exc:
            raise SessionError(exc.code, str(exc)) from None

    # ---- directory session ----------------------------------------------------------------------
    def join(self) -> list[str]:
        """Join the directory; apply the updates handed over. Returns notices for the user."""
        sign_key, box_key = self.sharing.public_keys()
        reply = self.call(lambda rid, _a: Join(rid=rid, user=self.user, sign_key=sign_key,
                                               box_key=box_key))
        if not isinstance(reply, JoinReply):
            raise SessionError("protocol", f"unexpected answer {type(reply).__name__} to join")
        self.token = reply.token
        notices = self.sharing.apply_updates(reply.updates)
        if reply.updates:
            self.confirm([u.id for u in reply.updates])
        self._heartbeat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat.start()
        return notices

    def confirm(self, ids: list[str]) -> None:
        tok = self.require_token()
        self.call(lambda rid, _a: ConfirmUpdates(rid=rid, user=self.user, token=tok,
                                                 ids=tuple(ids)))

    def _beat(self) -> None:
        period = self.cfg.directory.heartbeat_s
        while not self._stop.wait(period):
            tok = self.token
            if tok is None:
                continue
            for addr in self.node_addrs:
                self.transport.send(addr, ClientHeartbeat(user=self.user, token=tok))

    def leave(self) -> None:
        tok, self.token = self.token, None
        if tok is None:
            return
        futures = [self.transport.send(a, Leave(user=self.user, token=tok))
                   for a in self.node_addrs]
        for f in futures:  # best effort, bounded: a node that is down must not hold us up
            try:
                f.get(timeout=1.0)
            except Exception:
                pass

    def require_token(self) -> bytes:
        if self.token is None:
            raise SessionError("not_joined", "not connected to the cloud's directory")
        return self.token

    def query_rid(self) -> str:
        """A request id for a read-only query: not persisted (reusing one is harmless), drawn
        above 2**52 so it never meets the persisted counter."""
        return f"{self.user}#{2**52 + secrets.randbelow(2**52)}"

    def directory(self, refresh: bool = True) -> list[UserEntry]:
        if refresh or time.monotonic() - self._dir_at > 2.0:
            reply = self.call(lambda rid, _a: DirectoryQuery(rid=rid), rid=self.query_rid())
            if not isinstance(reply, DirectoryReply):
                raise SessionError("protocol", "unexpected answer to the directory query")
            with self._lock:
                self._dir = {e.user: e for e in reply.users}
                self._dir_at = time.monotonic()
        with self._lock:
            return sorted(self._dir.values(), key=lambda e: e.user)

    def lookup(self, user: str, refresh: bool = False) -> UserEntry | None:
        """The directory entry of an online user (cached for 2 s unless refresh)."""
        self.directory(refresh=refresh)
        with self._lock:
            return self._dir.get(user)

    def peer_token_ok(self, user: str, token: bytes, addr: Addr) -> bool:
        """A peer request is accepted only if the sender's token matches the directory."""
        for refresh in (False, True):
            entry = self.lookup(user, refresh=refresh)
            if entry is not None and entry.token_digest == token_digest(token) \
                    and (entry.host, entry.port) == addr:
                return True
        return False

    def post_update(self, update: Update) -> None:
        """Store an update on the nodes for an offline addressee (durable when acked)."""
        tok = self.require_token()
        reply = self.call(lambda rid, _a: PostUpdate(rid=rid, user=self.user, token=tok,
                                                     update=update))
        if not isinstance(reply, Ack):
            raise SessionError("protocol", "the cloud did not acknowledge the update")

    def close(self) -> None:
        self._stop.set()
        try:
            self.leave()
        finally:
            self.sharing.close()
            self.transport.stop()
            self.db.close()

    # ---- encrypt ------------------------------------------------------------------------------
    def seal_through_cloud(self, name: str, data: bytes) -> tuple[bytes, int]:
        """Send bytes to the cloud to be sealed; returns (png, node that sealed)."""
        reply = self.call(lambda rid, attempt: EncryptRequest(rid=rid, image=name, data=data,
                                                              attempt=attempt))
        if not isinstance(reply, EncryptReply):
            raise SessionError("protocol", f"unexpected answer {type(reply).__name__}")
        return reply.sealed, reply.node

    def timed_seal(self, name: str, data: bytes) -> dict[str, Any]:
        """One seal with its phases in ms (benchmarks): upload (until the node that answered
        acknowledged the request), election (the node's wait before sealing), seal, download
        (the rest: the reply's transfer)."""
        rid = self.next_rid()
        acks: dict[Addr, float] = {}
        self._timing[rid] = acks
        start = time.perf_counter()
        try:
            reply = self.caller.call(rid, lambda a: EncryptRequest(rid=rid, image=name, data=data,
                                                                   attempt=a), self.node_addrs)
        except CallError as exc:
            raise SessionError(exc.code, str(exc)) from None
        finally:
            self._timing.pop(rid, None)
        total = (time.perf_counter() - start) * 1000
        if not isinstance(reply, EncryptReply):
            raise SessionError("protocol", f"unexpected answer {type(reply).__name__}")
        winner = self.cfg.node(reply.node).client_addr
        upload = (acks.get(winner, float("nan")) - start) * 1000
        return {"node": reply.node, "total_ms": total, "upload_ms": upload,
                "election_ms": reply.wait_ms,
                "seal_ms": reply.seal_ms,
                "download_ms": max(0.0, total - upload - reply.wait_ms - reply.seal_ms)}

    def encrypt_file(self, path: Path) -> dict[str, Any]:
        """Seal one file through the cloud into encrypted/. Raises SessionError. The image's
        name comes from the file name (codec.names.image_name_for): made valid, and made unique
        when high/ holds another image of that name."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SessionError("unreadable", f"cannot read {path}: {exc.strerror}") from None
        name = image_name_for(path.name, lambda n: (h := self.home.high_path(n)).exists()
                              and h.read_bytes() != data)
        try:
            images.probe(data, images.max_user_pixels(self.cfg))
        except images.ImageError as exc:
            raise SessionError("not_an_image", str(exc)) from None
        start = time.perf_counter()
        png, node = self.seal_through_cloud(name, data)
        try:
            target = self.home.write(self.home.encrypted_path(images.sealed_name(name)), png)
            high = self.home.high_path(name)  # what the user may share from now on
            if not high.exists() or high.read_bytes() != data:
                self.home.write(high, data)
        except (OSError, StoreError) as exc:
            raise SessionError("write_failed", f"cannot store the sealed image: {exc}") from None
        return {"file": path.name, "path": self.home.relative(target),
                "ms": round((time.perf_counter() - start) * 1000, 1), "node": node,
                "image": name}

    def encrypt(self, paths: list[Path],
                progress: Callable[[int, int, str], None] | None = None) -> EncryptOutcome:
        out = EncryptOutcome()
        for i, path in enumerate(paths):
            if progress is not None:
                progress(i, len(paths), path.name)
            try:
                out.encrypted.append(self.encrypt_file(path))
            except SessionError as exc:
                out.failed.append({"file": path.name, "error": str(exc), "code": exc.code})
        if progress is not None:
            progress(len(paths), len(paths), "")
        return out

    # ---- status -------------------------------------------------------------------------------
    def node_status(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        from actors.status import query_status

        return query_status(self.cfg, timeout_s=timeout_s, transport=self.transport)
