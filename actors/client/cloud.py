"""The calling side of `ClientSessionActor`: what a command, a peer worker or the name refresher
uses to ask the cloud (or a peer) something and wait for the answer.

`Cloud.call` makes a pykka future, tells the actor `StartCall` and waits on the future in the
calling thread, printing the call's retry notice (at most one) through `notify` from that same
thread. The call belongs to the calling thread's cancel scope (actors.client.scope). Errors come
back as SessionError (actors.client.errors). `DirectoryCache` keeps the online users for 2 s.

Callers: actors.client.client_session (builds both), the sharing code through its context.
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pykka

from actors.client.errors import SessionError
from actors.client.scope import CancelScope, current_scope
from actors.client.session_messages import NO_CLOUD_S, CallResult, SessionState, StartCall
from actors.client.session_messages import CancelScope as CancelMsg
from actors.core.calls import CallError
from actors.core.directory import token_digest
from actors.direct import DirectEntry
from codec.messages import (
    Ack,
    ConfirmUpdates,
    DirectoryQuery,
    DirectoryReply,
    EncryptOffer,
    EncryptReply,
    EncryptRequest,
    Message,
    PostUpdate,
    Update,
    UserEntry,
)

Addr = tuple[str, int]
WAIT_POLL_S = 0.1  # how often a waiting caller looks for its call's notice
DIRECTORY_CACHE_S = 2.0
HOLD_PER_MB_S = 0.25  # the cloud seals about 10 MB/s here: patience after an acknowledged upload
# from this size on an image is offered (EncryptOffer to every node) and uploaded once, to the
# election's winner; smaller ones go to every node (see README, "one upload")
OFFER_MIN_BYTES = 64 * 1024
# a seal refused with `id_in_use` (another client of this user holds the id) is asked again
# under a fresh id, each time past twice as many ids as before: 1, 2, 4, ... (24 tries pass
# 16 million ids: any counter another home of the user could have used in the nodes' memory)
ID_IN_USE_TRIES = 24


class CallFuture(pykka.Future[Any]):
    """The future of one call (set once by the session actor, waited on by the caller): the part
    of pykka.ThreadingFuture the session uses (`set`, `set_exception`, `get` with a timeout,
    raising pykka.Timeout), on one lock held until the result is in instead of a Condition (a
    call's future is made and waited on per request: issue 19)."""

    def __init__(self) -> None:
        super().__init__()
        self._ready = threading.Lock()
        self._ready.acquire()
        self._value: Any = None
        self._exc_info: Any = None
        self._done = False

    def get(self, *, timeout: float | None = None) -> Any:
        if not self._ready.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise pykka.Timeout(f"{timeout} seconds")
        self._ready.release()  # a later get returns at once
        if self._exc_info is not None:
            exc_type, exc_value, exc_traceback = self._exc_info
            if exc_value is None:
                exc_value = exc_type()
            if exc_value.__traceback__ is not exc_traceback:
                raise exc_value.with_traceback(exc_traceback)
            raise exc_value
        return self._value

    def _finish(self, value: Any, exc_info: Any) -> None:
        with self._lock:
            if self._done:
                raise queue.Full
            self._done = True
        self._value, self._exc_info = value, exc_info
        self._ready.release()

    def set(self, value: Any | None = None) -> None:
        self._finish(value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        self._finish(None, exc_info if exc_info is not None else sys.exc_info())

    def set_get_hook(self, func: Any) -> None:
        raise NotImplementedError("a call's future has no get hook")

    _lock = threading.Lock()  # guards `_done` of every CallFuture: set at most once


class Cloud:
    """Blocking calls through the session actor (thread-safe)."""

    def __init__(self, actor: Any, *, user: str, nodes: Sequence[Addr], retry_s: float,
                 next_rid: Callable[[], str], notify: Callable[[str], None],
                 state: SessionState, rng: random.Random | None = None,
                 entry: DirectEntry | None = None,
                 encrypt_rid: Callable[[], str] | None = None,
                 skip_encrypt_ids: Callable[[int], None] | None = None) -> None:
        self._actor = actor
        # a StartCall runs on the calling thread while the actor is idle (actors.direct)
        self._start = entry.tell if entry is not None else actor.tell
        self.user = user
        self.nodes = list(nodes)
        self.retry_s = retry_s
        self.next_rid = next_rid
        # an encrypt's id: unique, in no order (state_db.RequestIdBlock: one commit per block)
        self.encrypt_rid = encrypt_rid or next_rid
        self.skip_encrypt_ids = skip_encrypt_ids  # see `seal`; None: `id_in_use` is final
        self._notify = notify
        self._told_id_in_use = False  # `seal` says it once a session (a batch meets it thrice)
        self.state = state
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    def query_rid(self) -> str:
        """A request id for a read-only query: not persisted (reusing one is harmless), drawn
        above 2**52 so it never meets the persisted counter."""
        with self._rng_lock:
            return f"{self.user}#{2**52 + self._rng.randrange(2**52)}"

    def require_token(self) -> bytes:
        token = self.state.token
        if token is None:
            raise SessionError("not_joined", "not connected to the cloud's directory")
        return token

    def call_result(self, build: Callable[[str, int], Message], targets: Sequence[Addr] | None = None,
                    deadline_s: float | None = None, rid: str | None = None,
                    hold_s: float | None = None, quorum: int = 1,
                    fetch: Callable[[str, int], Message] | None = None,
                    silent_s: float | None = None) -> CallResult:
        """One request (a fresh id unless `rid`) to the nodes or `targets`; raises SessionError.
        `quorum`: replies needed (see actors.core.calls). `fetch`: the request is an offer; a
        node's FetchPayload(attempt) gets `fetch(rid, attempt)` back. `silent_s`: fail as
        `no_cloud` if no target acknowledged anything by then (a peer that is gone)."""
        scope = current_scope.get()
        if scope is not None and scope.cancelled:
            raise SessionError("cancelled", "cancelled")
        if scope is None:  # a call of its own, so that Ctrl-C (below) can cancel it
            scope = CancelScope()
        rid = rid or self.next_rid()
        fut = CallFuture()
        notices: queue.SimpleQueue[str] = queue.SimpleQueue()
        start = StartCall(rid, lambda attempt: build(rid, attempt), tuple(targets or self.nodes),
                          fut, deadline_s=deadline_s, hold_s=hold_s, silent_s=silent_s,
                          notices=notices,
                          scope=scope, quorum=quorum,
                          fetch=None if fetch is None else lambda attempt: fetch(rid, attempt))
        try:
            # inside the try: the start may run here, on this thread (actors.direct), so a
            # Ctrl-C can land in it, and a closed session raises ActorDeadError here
            self._start(start)
            result: CallResult = self.wait(fut, notices)
            return result
        except CallError as exc:
            if exc.code == "no_cloud" and targets is None:  # known silent (presence checks)
                raise SessionError("no_cloud", (
                    f"the cloud does not answer: no node acknowledged the request within "
                    f"{NO_CLOUD_S:g} s; try again once it is back")) from None
            raise SessionError(exc.code, str(exc)) from None
        except pykka.ActorDeadError:
            raise SessionError("closed", "the session is closed") from None
        except KeyboardInterrupt:  # Ctrl-C in this thread (-c): no further retries
            scope.cancel()
            try:
                self._actor.tell(CancelMsg(scope))
            except pykka.ActorDeadError:
                pass
            raise

    def call(self, build: Callable[[str, int], Message], targets: Sequence[Addr] | None = None,
             deadline_s: float | None = None, rid: str | None = None,
             hold_s: float | None = None, silent_s: float | None = None) -> Message:
        return self.call_result(build, targets, deadline_s, rid, hold_s, silent_s=silent_s).reply

    def wait(self, fut: pykka.Future[Any], notices: queue.SimpleQueue[str]) -> Any:
        while True:
            try:
                return fut.get(timeout=WAIT_POLL_S)
            except pykka.Timeout:
                pass
            finally:
                while not notices.empty():
                    self._notify(notices.get())

    # ---- the cloud's requests -------------------------------------------------------------------
    def seal(self, name: str, data: bytes, rid: str | None = None) -> CallResult:
        """Send bytes to the cloud to be sealed (request id `rid`, by default one of
        `encrypt_rid`'s): the EncryptReply's CallResult. Its `reply.rid` is the id it was
        sealed under: if the nodes refuse the id as in use by another client of this user
        (`id_in_use`: the same user in another home), the ids after it are skipped
        (`skip_encrypt_ids`, ID_IN_USE_TRIES times at most) and the image is sent again under
        a fresh one; the user is told once a session."""
        rid = rid or self.encrypt_rid()
        for attempt in range(ID_IN_USE_TRIES - 1):
            try:
                return self._seal_once(name, data, rid)
            except SessionError as exc:
                if exc.code != "id_in_use" or self.skip_encrypt_ids is None:
                    raise
                if not self._told_id_in_use:
                    self._told_id_in_use = True
                    self._notify(f"request id {rid} is in use by another client of {self.user} "
                                 "(another home?); sending again under a fresh id")
                self.skip_encrypt_ids(2**attempt)
                rid = self.encrypt_rid()
        return self._seal_once(name, data, rid)  # the last try: its refusal is the answer

    def _seal_once(self, name: str, data: bytes, rid: str) -> CallResult:
        hold = 4 * self.retry_s + HOLD_PER_MB_S * len(data) / 1e6

        def request(r: str, attempt: int) -> Message:
            return EncryptRequest(rid=r, image=name, data=data, attempt=attempt)

        if len(data) >= OFFER_MIN_BYTES:  # uploaded once, to the winner of the election
            res = self.call_result(lambda r, attempt: EncryptOffer(rid=r, image=name,
                                                                   size=len(data),
                                                                   attempt=attempt),
                                   rid=rid, hold_s=hold, fetch=request)
        else:  # small: to every node, cheaper than the fetch's round trip
            res = self.call_result(request, rid=rid, hold_s=hold)
        if not isinstance(res.reply, EncryptReply):
            raise SessionError("protocol", f"unexpected answer {type(res.reply).__name__}")
        return res

    def post_update(self, update: Update) -> None:
        """Store an update on the nodes for an offline addressee: stored once a majority of the
        nodes acknowledged it, each after its commit (on a majority's disk)."""
        tok = self.require_token()
        reply = self.call_result(lambda rid, _a: PostUpdate(rid=rid, user=self.user, token=tok,
                                                            update=update),
                                 quorum=len(self.nodes) // 2 + 1).reply
        if not isinstance(reply, Ack):
            raise SessionError("protocol", "the cloud did not acknowledge the update")

    def confirm(self, ids: list[str]) -> None:
        tok = self.require_token()
        self.call(lambda rid, _a: ConfirmUpdates(rid=rid, user=self.user, token=tok,
                                                 ids=tuple(ids)))


class DirectoryCache:
    """The directory of online users as the cloud last told it (thread-safe)."""

    def __init__(self, cloud: Cloud, clock: Callable[[], float] = time.monotonic) -> None:
        self._cloud = cloud
        self._clock = clock
        self._lock = threading.Lock()
        self._dir: dict[str, UserEntry] = {}
        self._at = float("-inf")

    def directory(self, refresh: bool = True) -> list[UserEntry]:
        if refresh or self._clock() - self._at > DIRECTORY_CACHE_S:
            c = self._cloud
            reply = c.call(lambda rid, _a: DirectoryQuery(rid=rid), rid=c.query_rid())
            if not isinstance(reply, DirectoryReply):
                raise SessionError("protocol", "unexpected answer to the directory query")
            with self._lock:
                self._dir = {e.user: e for e in reply.users}
                self._at = self._clock()
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


__all__ = ["CallFuture", "Cloud", "DirectoryCache"]
