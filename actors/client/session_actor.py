"""`ClientSessionActor`: the client's calls in flight and its directory session, on one thread.

It owns the client's transport subscription: every whole message arrives here as a `Delivery`.
A reply to a call of ours goes to the call table (actors.core.calls); anything else (a peer's
request) is handed to `on_peer`, the sharing code, whose own worker pool answers it. It owns the
directory session (actors.core.presence): join, heartbeats, the periodic check that the nodes
still know us, rejoin, leave.

Messages it takes (actors.client.session_messages; all `tell`; nothing inside it ever waits):
- `StartCall`: a request to multicast; the caller made a pykka future and waits on it (and on
  the call's `notices` queue, which gets at most one retry notice). The future gets a
  `CallResult` or fails with `CallError` (`cancelled`, `closed`, a refusal, `unreachable`...).
- `CancelScope`: fail every call of that scope as `cancelled` and forget them (Ctrl-C).
- `JoinCloud` / `LeaveCloud`: the first join (its future gets the JoinReply: the caller applies
  what was handed over) and the leave (its future resolves when every node acknowledged the
  Leave, or after LEAVE_WAIT_S).
- `Tick` (from the ticker thread, every `tick_s`): the actor reads `clock()` once and passes it
  to the cores. Tests drive an injected clock and send `Tick` themselves.
- transport callbacks: a send's outcome (for the retry rules) is not a message: the callback
  (on the transport's reader thread) appends it, stamped with `clock()`, to a queue that the
  actor reads before each message it handles. An outcome changes no state that anything reads
  before the actor's next message (the reply, a Tick), so waking the actor for each (three
  per request, one per node) only cost CPU and the reply's latency.

Replies and `StartCall` skip the mailbox while the actor is idle (`actors.direct`, as the node's
election hops do): the transport subscription and `Cloud` tell the actor's `DirectEntry`, so a
reply is handled on the transport's reader thread and a call starts on its caller's thread,
under the actor's lock; when the actor is busy (a Tick, another thread's message) the message
waits in the mailbox as before, never overtaking one queued there. That is two thread wake-ups
less per call (issue 19: `python -m benchmarks.msg_count`, the client's `tell` rows). Nothing
here waits, except two things left to the actor's own thread when a caller's thread has the
message (`_own_thread`): a notice printed to a terminal, and the answer to a node's
FetchPayload (encoding the payload may take milliseconds).

It publishes `SessionState` (connection text, token) for any thread to read without asking.
A rejoin draws its request id (a state.db commit) on a helper thread, which comes back with
`_RidDrawn`; it applies the updates handed over on `on_rejoined` (the session's worker thread,
since applying may call the cloud), and says `rejoined the cloud` through `notify`.
"""

from __future__ import annotations

import collections
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import pykka

from actors.client.scope import CancelScope as Scope
from actors.client.session_messages import (
    NO_CLOUD_S,
    CallResult,
    CancelScope,
    JoinCloud,
    LeaveCloud,
    SessionState,
    StartCall,
    Tick,
    UseToken,
)
from actors.core import presence as P
from actors.core.calls import (
    Answered,
    CallError,
    CallStats,
    CallTable,
    Duplicate,
    Effect,
    Failed,
    Retrying,
    Send,
)
from actors.direct import DirectActor, DirectEntry
from codec.messages import (
    ClientHeartbeat,
    DirectoryQuery,
    DirectoryReply,
    FetchPayload,
    Join,
    JoinReply,
    Leave,
    Message,
    Update,
)
from transport.udp import Delivery

log = logging.getLogger(__name__)

Addr = tuple[str, int]
TICK_S = 0.05
LEAVE_WAIT_S = 1.0  # a node that is down must not hold up the end of a session
CHECK_SHARE = 0.9  # a check round's calls end before the next round starts


@dataclass(frozen=True, slots=True)
class _OwnThread:
    """Work left to the actor's own thread by a message handled on a caller's (`_own_thread`)."""

    fn: Callable[[], None]


@dataclass(frozen=True, slots=True)
class _LeaveDone:
    addr: Addr


@dataclass(frozen=True, slots=True)
class _RidDrawn:
    waiter: _Waiter
    silent_s: float | None
    rid: str | None
    error: str


@dataclass
class _Waiter:
    kind: str  # "call" | "join" | "rejoin" | "check"
    future: pykka.Future[Any] | None = None
    notices: queue.SimpleQueue[str] | None = None
    scope: Scope | None = None
    check: tuple[int, Addr] | None = None
    retried: bool = False


@dataclass
class _Leaving:
    future: pykka.Future[None]
    until: float
    waiting: set[Addr] = field(default_factory=set)


class JoinSigner(Protocol):
    """What the session needs of the user's keys (actors.client.keys.ClientKeys)."""

    def join(self, rid: str, user: str, stamp: float) -> Join: ...


class _Receiving(pykka.ThreadingActor):
    """The session's handler, below `DirectActor` in the method order (its lock wraps every
    message, from the mailbox or an entry)."""

    def on_receive(self, message: Any) -> Any:
        try:
            return self._receive(message)
        except Exception:  # a bug or bad input must not stop the session: log, carry on
            log.exception("client session: %s failed", type(message).__name__)
            return None

    def _receive(self, message: Any) -> Any:
        raise NotImplementedError


class ClientSessionActor(DirectActor, _Receiving):
    """See the module docstring. Build with `ClientSessionActor.start(...)`."""

    def __init__(
        self,
        *,
        user: str,
        nodes: Sequence[Addr],
        transport: Any,
        retry_s: float,
        deadline_s: float,
        heartbeat_s: float,
        keys: JoinSigner,
        next_rid: Callable[[], str],
        on_peer: Callable[[Addr, Message], None],
        on_rejoined: Callable[[tuple[Update, ...]], None],
        notify: Callable[[str], None],
        clock: Callable[[], float],
        rng: random.Random,
        state: SessionState | None = None,
        stats: CallStats | None = None,
        tick_s: float | None = TICK_S,
        wall: Callable[[], float] = time.time,
        entry: DirectEntry | None = None,
    ) -> None:
        super().__init__()
        # replies and StartCall run on the thread that has them while we are idle (see the
        # module docstring): a reply is handled on the transport's reader thread, a call
        # starts on its caller's, each one wake-up of this actor's thread less
        self.direct_init(entry)
        self.entry = entry
        self.user = user
        self.nodes = tuple(nodes)
        self.transport = transport
        self.heartbeat_s = heartbeat_s
        self.keys = keys
        self.next_rid = next_rid
        self.on_peer = on_peer
        self.on_rejoined = on_rejoined
        self.notify = notify
        self.clock = clock
        self.wall = wall  # a Join's stamp
        self.rng = rng
        self.state = state or SessionState()
        self.table = CallTable(retry_s=retry_s, deadline_s=deadline_s)
        if stats is not None:
            self.table.stats = stats
        address = getattr(transport, "address", None)
        self.presence = P.Presence(user, list(self.nodes), heartbeat_s, address=address)
        self._waiters: dict[str, _Waiter] = {}
        self._fetch: dict[str, Callable[[int], Message]] = {}  # offered calls: rid -> payload
        self.fetches = 0  # FetchPayload answered with the payload
        self.fetch_unknown = 0  # FetchPayload for no offered call in flight (ignored)
        self._leaving: _Leaving | None = None
        self._progress: tuple[int, int] = (0, 0)
        self._tick_s = tick_s
        self._ticker_stop = threading.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = False
        # (rid, attempt, addr, ok, when) of finished sends, appended by transport callbacks
        self._outcomes: collections.deque[tuple[str, int, Addr, bool, float]] = (
            collections.deque())

    # ---- life -----------------------------------------------------------------------------------
    def on_start(self) -> None:
        if self.entry is not None:  # quick: nothing here blocks or waits for the transport
            self._unsubscribe = self.transport.subscribe(self.entry.tell, quick=True)
        else:
            self._unsubscribe = self.transport.subscribe(self.actor_ref)
        if self._tick_s is not None:
            ref, stop, period = self.actor_ref, self._ticker_stop, self._tick_s

            def ticker() -> None:
                while not stop.wait(period):
                    try:
                        ref.tell(Tick())
                    except pykka.ActorDeadError:
                        return

            threading.Thread(target=ticker, name=f"ticker-{self.user}", daemon=True).start()

    def on_stop(self) -> None:
        with self._direct_lock:  # not while a caller's thread runs a message of ours
            self._stop_session()

    def _stop_session(self) -> None:
        self._stopping = True  # calls end as "closed"; no notices, no rejoin
        self._ticker_stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        now = self.clock()
        for rid in self.table.rids():
            self._effects(self.table.cancel(rid, now), closing=True)
        for w in self._waiters.values():  # calls the table no longer holds (none expected)
            self._resolve(w, error=CallError("closed", "the session is closed"))
        self._waiters.clear()
        if self._leaving is not None:
            self._leaving.future.set(None)
            self._leaving = None

    def on_failure(self, *_: Any) -> None:
        self._ticker_stop.set()

    # ---- messages -------------------------------------------------------------------------------
    def _receive(self, message: Any) -> Any:
        self._send_outcomes()
        now = self.clock()
        if isinstance(message, Delivery):
            self._delivery(message, now)
        elif isinstance(message, Tick):
            self._tick(now)
        elif isinstance(message, StartCall):
            self._start_call(message, now)
        elif isinstance(message, CancelScope):
            for rid, w in list(self._waiters.items()):
                if w.scope is message.scope:
                    self._effects(self.table.cancel(rid, now))
        elif isinstance(message, JoinCloud):
            self.presence.joining()
            self._join(_Waiter("join", message.future, message.notices), message.silent_s, now,
                       message.rid)
        elif isinstance(message, LeaveCloud):
            self._leave(message.future, now)
        elif isinstance(message, _LeaveDone):
            self._leave_done(message.addr)
        elif isinstance(message, _RidDrawn):
            self._rid_drawn(message, now)
        elif isinstance(message, _OwnThread):
            message.fn()
        elif isinstance(message, UseToken):
            self.presence.joining()
            self._presence(self.presence.joined(message.token, now), now)
        self._publish()
        return None

    def _delivery(self, d: Delivery, now: float) -> None:
        if isinstance(d.msg, FetchPayload):  # encoding the payload: not the reader's job
            self._own_thread(functools.partial(self._fetched, d.addr, d.msg))
            return
        ours, effects = self.table.on_reply(d.addr, d.msg, now)
        if ours:
            self._effects(effects)
            return
        self.on_peer(d.addr, d.msg)

    def _tick(self, now: float) -> None:
        progress = self._read_progress()
        moving = progress != self._progress and progress[1] > progress[0]
        self._progress = progress
        self._effects(self.table.tick(now, moving))
        self._presence(self.presence.tick(now), now)
        if self._leaving is not None and now >= self._leaving.until:
            self._leaving.future.set(None)
            self._leaving = None

    def _read_progress(self) -> tuple[int, int]:
        try:
            done, total = self.transport.progress()
            return int(done), int(total)
        except Exception:  # noqa: BLE001 - a stopped transport: nothing moves
            return (0, 0)

    # ---- calls ----------------------------------------------------------------------------------
    def _start_call(self, m: StartCall, now: float) -> None:
        if m.rid in self._waiters:
            m.future.set_exception(exc_info=_exc(CallError("busy", f"{m.rid} is in flight")))
            return
        if m.scope is not None and m.scope.cancelled:
            m.future.set_exception(exc_info=_exc(CallError("cancelled", "cancelled")))
            return
        self._waiters[m.rid] = _Waiter("call", m.future, m.notices, m.scope)
        if m.fetch is not None:
            self._fetch[m.rid] = m.fetch
        self._effects(self.table.start(m.rid, m.build, m.targets, now, deadline_s=m.deadline_s,
                                       hold_s=m.hold_s, silent_s=m.silent_s, quorum=m.quorum))
        self._limit_if_cloud_silent(now)

    def _limit_if_cloud_silent(self, now: float) -> None:
        """While the cloud is known not to answer, the calls to the nodes that none has
        acknowledged fail once silent NO_CLOUD_S, not at their deadline (CallTable)."""
        if self.presence.reachable is False:
            self.table.expect_answers_within(self.nodes, NO_CLOUD_S, now)

    def _effects(self, effects: list[Effect], closing: bool = False) -> None:
        sends = [e for e in effects if isinstance(e, Send)]
        if sends:  # all in one transport call, before the notices and endings (kept in order)
            self._send(sends)
        for e in effects:
            if isinstance(e, Retrying):
                self._retrying(e)
            elif isinstance(e, Answered):
                self._ended(e.rid, e, None)
            elif isinstance(e, Failed):
                err = CallError("closed", "the session is closed") if closing else e.error
                self._ended(e.rid, None, err)
            elif isinstance(e, Duplicate):  # rare: enough to trace the rid in the nodes' logs
                log.info("duplicate reply to %s: %s from %s (node %s), %.1f ms after the call "
                         "ended (accepted: node %s), %d attempt(s) sent", e.rid, e.kind, e.addr,
                         e.node, e.after_s * 1000, e.first, e.attempts)

    def _send_outcomes(self) -> None:
        """Hand the send outcomes queued so far to the call table, in the order they came."""
        outcomes = self._outcomes
        while outcomes:
            rid, attempt, addr, ok, when = outcomes.popleft()
            self.table.send_done(rid, attempt, addr, ok, when)

    def _send(self, sends: list[Send]) -> None:
        """Hand `sends` to the transport in one call (a request to every node leaves at once,
        encoded once: Transport.send_many)."""
        outcomes, clock = self._outcomes, self.clock

        def done_of(e: Send) -> Callable[[object], None]:
            rid, attempt, addr = e.rid, e.attempt, e.addr

            def done(err: object) -> None:
                outcomes.append((rid, attempt, addr, err is None, clock()))

            return done

        try:  # `done` only queues: it may run on the transport's reader thread
            self.transport.send_many([(e.addr, e.msg, done_of(e)) for e in sends],
                                     quick_done=True)
        except Exception as exc:  # noqa: BLE001 - a bug below us: as failed sends
            log.warning("cannot send %s: %s", type(sends[0].msg).__name__, exc)
            for e in sends:
                self.table.send_done(e.rid, e.attempt, e.addr, False, self.clock())

    def _fetched(self, addr: Addr, msg: FetchPayload) -> None:
        """The node that won an offered request asks for its bytes: send them to it alone (a
        later winner, after this one's death, asks again)."""
        build = self._fetch.get(msg.rid)
        if build is None:  # the call ended (answered, failed or cancelled): nothing to send
            self.fetch_unknown += 1
            log.debug("fetch of %s from %s: no such call in flight", msg.rid, addr)
            return
        self.fetches += 1

        def done(err: object) -> None:
            if err is not None:  # the node's cache expires; the call's retry offers again
                log.info("payload of %s to %s not delivered: %s", msg.rid, addr, err)

        try:
            self.transport.send(addr, build(msg.attempt), on_done=done)
        except Exception as exc:  # noqa: BLE001 - a refused message: the retry offers again
            log.warning("cannot send the payload of %s to %s: %s", msg.rid, addr, exc)

    def _retrying(self, e: Retrying) -> None:
        w = self._waiters.get(e.rid)
        if w is None or w.notices is None or w.retried or e.silent:  # silent: it ends in seconds
            return
        w.retried = True  # one notice per call; none while the cloud is known unreachable
        if self.presence.reachable is not False:
            w.notices.put(f"request {e.rid}: {e.reason}; trying again")

    def _ended(self, rid: str, answered: Answered | None, error: CallError | None) -> None:
        self._fetch.pop(rid, None)
        w = self._waiters.pop(rid, None)
        if w is None:
            return
        now = self.clock()
        if self._stopping and w.kind != "call":
            self._resolve(w, error=error or CallError("closed", "the session is closed"))
            return
        if w.kind == "check" and w.check is not None:
            reply = answered.reply if answered is not None else None
            self._presence(self.presence.check_answer(
                w.check[0], w.check[1], reply if isinstance(reply, DirectoryReply) else None,
                now), now)
            return
        if w.kind in ("join", "rejoin"):
            self._join_ended(w, answered, error, now)
            return
        if answered is not None:
            self._resolve(w, CallResult(answered.reply, answered.started, answered.acks,
                                        answered.replies))
        else:
            self._resolve(w, error=error)

    @staticmethod
    def _resolve(w: _Waiter, value: Any = None, error: CallError | None = None) -> None:
        if w.future is None:
            return
        if error is not None:
            w.future.set_exception(exc_info=_exc(error))
        else:
            w.future.set(value)

    # ---- directory session --------------------------------------------------------------------
    def _join(self, w: _Waiter, silent_s: float | None, now: float,
              rid: str | None = None) -> None:
        """Send Join with `rid`; without one, draw it first on a helper thread (a state.db
        commit must not hold up this actor) and come back with `_RidDrawn`."""
        if rid is None:
            ref, draw = self.actor_ref, self.next_rid

            def drawing() -> None:
                try:
                    drawn: _RidDrawn = _RidDrawn(w, silent_s, draw(), "")
                except Exception as exc:  # noqa: BLE001 - the request counter is unwritable
                    drawn = _RidDrawn(w, silent_s, None, f"cannot draw a request id: {exc}")
                try:
                    ref.tell(drawn)
                except pykka.ActorDeadError:
                    pass

            threading.Thread(target=drawing, name=f"rid-{self.user}", daemon=True).start()
            return
        join = self.keys.join(rid, self.user, self.wall())  # one proof for all its sends
        self._waiters[rid] = w
        self._effects(self.table.start(
            rid, lambda _a: join, self.nodes, now, silent_s=silent_s,
            quorum=majority(len(self.nodes))))

    def _rid_drawn(self, m: _RidDrawn, now: float) -> None:
        if m.rid is None:
            self._join_ended(m.waiter, None, CallError("store", m.error), now)
        else:
            self._join(m.waiter, m.silent_s, now, m.rid)

    def _join_ended(self, w: _Waiter, answered: Answered | None, error: CallError | None,
                    now: float) -> None:
        reply = answered.reply if answered is not None else None
        if reply is not None and not isinstance(reply, JoinReply):
            error = CallError("protocol", f"unexpected answer {type(reply).__name__} to join")
        if error is not None or not isinstance(reply, JoinReply):
            err = error or CallError("protocol", "no answer to join")
            self._presence(self.presence.join_failed(err.code, str(err), now), now)
            self._resolve(w, error=err)
            return
        reply = _union(answered.replies if answered is not None else (), reply)
        self._presence(self.presence.joined(reply.token, now), now)
        if w.kind == "rejoin":
            self.on_rejoined(reply.updates)
        self._resolve(w, reply)

    def _presence(self, effects: list[P.PresenceEffect], now: float) -> None:
        for e in effects:
            if isinstance(e, P.Heartbeat):
                for addr in self.nodes:
                    self.transport.send(addr, ClientHeartbeat(user=self.user, token=e.token))
            elif isinstance(e, P.Check):
                self._check(e, now)
            elif isinstance(e, P.Rejoin):
                self._join(_Waiter("rejoin"), NO_CLOUD_S, now)
            elif isinstance(e, P.Notice):  # a terminal may make it wait
                self._own_thread(functools.partial(self.notify, e.text))
        self._limit_if_cloud_silent(now)

    def _own_thread(self, fn: Callable[[], None]) -> None:
        """fn() on this actor's own thread: now when we are on it, else (a message handled on a
        caller's thread, such as the transport's reader) from the mailbox after this message."""
        if self.in_direct:
            self.actor_ref.tell(_OwnThread(fn))
        else:
            fn()

    def _check(self, e: P.Check, now: float) -> None:
        for addr in e.nodes:
            rid = f"{self.user}#{2**52 + self.rng.randrange(2**52)}"  # read-only: not persisted
            self._waiters[rid] = _Waiter("check", check=(e.round, addr))
            self._effects(self.table.start(rid, _always(DirectoryQuery(rid=rid)), [addr], now,
                                           deadline_s=CHECK_SHARE * self.heartbeat_s))

    def _leave(self, future: pykka.Future[None], now: float) -> None:
        token = self.presence.leaving()
        if token is None:
            future.set(None)
            return
        self._leaving = _Leaving(future, now + LEAVE_WAIT_S, set(self.nodes))
        ref = self.actor_ref
        for addr in self.nodes:
            def done(_err: object, a: Addr = addr) -> None:
                try:
                    ref.tell(_LeaveDone(a))
                except pykka.ActorDeadError:
                    pass

            self.transport.send(addr, Leave(user=self.user, token=token), on_done=done)

    def _leave_done(self, addr: Addr) -> None:
        if self._leaving is None:
            return
        self._leaving.waiting.discard(addr)
        if not self._leaving.waiting:
            self._leaving.future.set(None)
            self._leaving = None

    def _publish(self) -> None:
        self.state.token = self.presence.token if self.presence.session == "joined" else None
        self.state.connection = self.presence.connection()


def _always(msg: Message) -> Callable[[int], Message]:
    """A call's `build` that sends the same message at every attempt."""
    return lambda _attempt: msg


def _exc(err: BaseException) -> tuple[type[BaseException], BaseException, None]:
    return (type(err), err, None)


__all__ = ["ClientSessionActor"]


def majority(n: int) -> int:
    """How many of `n` nodes are a majority."""
    return n // 2 + 1


def _union(replies: tuple[Message, ...], first: JoinReply) -> JoinReply:
    """A join answered by a majority hands over what any of them holds: the first reply's
    updates in its order, then the others' updates it lacks (each id once)."""
    seen = {u.id for u in first.updates}
    extra = []
    for r in replies:
        if isinstance(r, JoinReply) and r is not first:
            for u in r.updates:
                if u.id not in seen:
                    seen.add(u.id)
                    extra.append(u)
    return replace(first, updates=first.updates + tuple(extra)) if extra else first
