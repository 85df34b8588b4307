"""The client's table of calls in flight: a request multicast to its targets, one answer per id.

Pure core: no threads, no clock, no sleeps. The client session actor passes `now` (seconds, any
monotonic origin) and what the transport reported, and carries out the effects returned:
`Send` (the transport sends; it reports the outcome back with `send_done`), `Answered` and
`Failed` (the call ended: resolve its caller), `Retrying` (a notice for the user), `Duplicate`
(a second answer to an ended call: logged, and kept in `CallStats.duplicate_log`, so that a rare
one can be traced by its request id through the nodes' logs).

One call (keyed by its request id) goes through attempts 0, 1, 2...: each attempt sends
`build(attempt)` to every target, with the same request id. Per target, an attempt's send is
`moving` (the transport is still sending it), `acked` (the target's transport holds all of it),
`failed` (the transport gave up) or `answered` (the target replied with an error).

Rules (those of the first client, `Caller` in actors/client/rpc.py, kept; the retry rules are new):
- The first reply that is not an ErrorReply ends the call (`Answered`). A reply to a call that
  already ended is a duplicate: counted, never accepted (a race can make two nodes answer), and
  reported with its rid, the attempts sent, its sender and the accepted reply's sender; a
  retryable ErrorReply to an ended call is received but no duplicate: it answers nothing; nor is
  any ErrorReply to a call that failed (the last target's refusal after a majority's), nor an
  `id_in_use` (a node refusing a late copy of a request whose reply was acknowledged).
  A quorum call (`quorum` > 1: a PostUpdate is stored only once a majority of the nodes has it on
  disk; a Join hands over what a majority holds) ends once that many targets replied; their
  replies come with `Answered`, and later replies are expected, not counted as duplicates.
- A refusal (a non-retryable ErrorReply) is the cloud's answer only when a majority of the targets
  gives one in the same attempt, or every target answered with an error and one refused: the call
  fails at once with the refusal. One target's refusal alone is not: a node that was down, or
  restarted, may not know a session the others know yet, and must not fail a request the others
  accept. A lone refusal with no other answer fails the call at its deadline.
- Every target answered with a retryable error ("not in majority", "syncing"): back off (a
  quarter of `retry_s`, doubling up to BACKOFF_MAX_S) and try again.
- Otherwise the next attempt is due `retry_s` after this one was sent, except:
  - never while a send of this attempt is still moving (the transport retransmits by itself and
    fails the send after its own deadline of silence): resending would only upload it twice;
  - never while the transport reports bytes moving (`moving` in `tick`): a reply may be arriving;
  - once a target acknowledged the attempt and has not answered, that target holds the request
    (a node caches it and takes part in its election; a peer works on it): the next attempt waits
    until `hold_s` after the last acknowledgement. Only a node that lost the request (it restarted)
    or whose reply could not be delivered needs the resend.
- `deadline_s` after the start the call fails: with the most recent refusal if one came (not
  retryable), else with the most recent retryable error, else "unreachable".
- `silent_s` (optional, used at join): if no target acknowledged or answered anything within
  `silent_s` of the start, fail at once as "no_cloud": nobody is listening. The client sets it
  too for its calls to the nodes while it knows the cloud does not answer (at their start, or
  when that becomes known: `expect_answers_within`), so a command then fails in seconds, not at
  its deadline.
- `cancel(rid)` fails the call as "cancelled" and drops it: nothing more is sent for it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from codec.messages import ErrorReply, Message

Addr = tuple[str, int]
ANSWERED_KEPT = 4096  # ids of ended calls remembered, to count late duplicates
DUPLICATES_KEPT = 100  # the most recent duplicates kept in CallStats.duplicate_log
BACKOFF_MAX_S = 4.0


class CallError(Exception):
    """A call failed: `code` is a short identifier, `retryable` says whether trying later may help."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass
class CallStats:
    """Counters over every call of one session (read by the shell and the benchmarks)."""

    replies_received: int = 0
    replies_accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    duplicate_log: list[Duplicate] = field(default_factory=list)  # the latest DUPLICATES_KEPT


# ---- effects --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    addr: Addr
    msg: Message
    rid: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Answered:
    rid: str
    reply: Message
    started: float
    acks: dict[Addr, float]  # first acknowledgement per target (any attempt), `now` units
    replies: tuple[Message, ...] = ()  # every accepted reply, one per target (quorum calls)


@dataclass(frozen=True, slots=True)
class Failed:
    rid: str
    error: CallError


@dataclass(frozen=True, slots=True)
class Retrying:
    rid: str
    attempt: int  # the attempt being sent now (1 for the first retry)
    reason: str
    silent: bool = False  # nothing heard yet, and the call fails at its silence limit soon


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A reply to a call that had already ended, counted in `CallStats.duplicates`."""

    rid: str
    attempts: int  # attempts the call had sent when it ended (1: no retry)
    addr: Addr  # who sent this reply
    node: int | None  # its `node` field (the sealer of an EncryptReply), if it has one
    first: int | None  # the `node` field of the reply the call accepted, if it had one
    started: float  # when the call started
    at: float  # when this reply came (`now` units, so a harness can match other records)
    after_s: float  # since the call ended
    kind: str  # the reply's type name


Effect = Send | Answered | Failed | Retrying | Duplicate

MOVING, ACKED, SEND_FAILED, ANSWERED = "moving", "acked", "failed", "answered"


@dataclass
class _Call:
    rid: str
    build: Callable[[int], Message]
    targets: tuple[Addr, ...]
    started: float
    deadline: float
    hold_s: float
    silent_until: float | None
    attempt: int = 0
    sent_at: float = 0.0
    due: float = 0.0
    backoff: float = 0.0
    states: dict[Addr, str] = field(default_factory=dict)
    errors: list[ErrorReply] = field(default_factory=list)
    last_ack: float | None = None
    alive: bool = False  # some target acknowledged or answered something
    recent_fatal: ErrorReply | None = None
    recent_error: ErrorReply | None = None
    acks: dict[Addr, float] = field(default_factory=dict)
    quorum: int = 1  # targets whose (non-error) replies end the call
    good: dict[Addr, Message] = field(default_factory=dict)  # the first reply of each target

    def fatal(self) -> list[ErrorReply]:
        return [e for e in self.errors if not e.retryable]

    def refused(self) -> bool:
        fatal = len(self.fatal())
        return fatal > 0 and (2 * fatal > len(self.targets) or self.every_erred())

    def every_erred(self) -> bool:
        return len(self.errors) >= len(self.targets)

    def holding(self) -> bool:
        return any(s == ACKED for s in self.states.values())

    def moving(self) -> bool:
        return any(s == MOVING for s in self.states.values())


@dataclass(frozen=True, slots=True)
class _Ended:
    """What is remembered of an ended call, to count and describe later replies."""

    count: bool  # later replies are duplicates (not a quorum call's expected ones)
    attempts: int
    first: int | None  # the accepted reply's `node` field
    started: float
    at: float  # when it ended
    failed: bool = False  # it ended failed (a refusal, its deadline): a later refusal is no answer


class CallTable:
    """All calls in flight of one client (see the module docstring). One thread only."""

    def __init__(self, *, retry_s: float, deadline_s: float, hold_s: float | None = None) -> None:
        self.retry_s = retry_s
        self.deadline_s = deadline_s
        self.hold_s = hold_s if hold_s is not None else 4 * retry_s
        self.stats = CallStats()
        self._calls: dict[str, _Call] = {}
        self._answered: OrderedDict[str, _Ended] = OrderedDict()

    def __contains__(self, rid: object) -> bool:
        return rid in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def rids(self) -> list[str]:
        return list(self._calls)

    # ---- inputs -------------------------------------------------------------------------------
    def start(self, rid: str, build: Callable[[int], Message], targets: Sequence[Addr],
              now: float, *, deadline_s: float | None = None, hold_s: float | None = None,
              silent_s: float | None = None, quorum: int = 1) -> list[Effect]:
        """A new call: send attempt 0 to every target. A rid already in flight is refused.
        `quorum`: how many targets must reply (not with an error) before the call is answered
        (a majority for a write that must be on a majority's disk, or a read of what a majority
        holds); the Answered effect then carries every reply."""
        if rid in self._calls:
            return [Failed(rid, CallError("busy", f"request {rid} is already in flight"))]
        if not targets:
            return [Failed(rid, CallError("unreachable", "nowhere to send the request", True))]
        call = _Call(rid, build, tuple(targets), now,
                     now + (deadline_s if deadline_s is not None else self.deadline_s),
                     hold_s if hold_s is not None else self.hold_s,
                     now + silent_s if silent_s is not None else None,
                     backoff=self.retry_s / 4, quorum=max(1, min(quorum, len(targets))))
        self._calls[rid] = call
        return self._send_attempt(call, now)

    def on_reply(self, addr: Addr, msg: Message, now: float) -> tuple[bool, list[Effect]]:
        """A received message: (whether it answered or duplicated a call of ours, effects)."""
        rid = getattr(msg, "rid", None)
        if not isinstance(rid, str):
            return False, []
        call = self._calls.get(rid)
        if call is None:
            ended = self._answered.get(rid)
            if ended is None:
                return False, []
            self.stats.replies_received += 1
            # a quorum call's later replies are expected, not twice; a retryable error is
            # no answer (a node that restarted, still without a majority, refusing a late
            # retransmission of a request the others answered), nor is a refusal of a call
            # that failed (the last target's refusal after a majority's), nor `id_in_use` (a
            # node refusing a late copy of a request whose reply was acknowledged)
            if not ended.count or (isinstance(msg, ErrorReply)
                                   and (msg.retryable or ended.failed or msg.code == "id_in_use")):
                return True, []
            self.stats.duplicates += 1
            dup = Duplicate(rid, ended.attempts, addr, _node_of(msg), ended.first, ended.started,
                            now, now - ended.at, type(msg).__name__)
            log = self.stats.duplicate_log
            log.append(dup)
            del log[:-DUPLICATES_KEPT]
            return True, [dup]
        self.stats.replies_received += 1
        call.alive = True
        if not isinstance(msg, ErrorReply):
            call.good.setdefault(addr, msg)
            if call.states.get(addr) is not None:
                call.states[addr] = ANSWERED
            if len(call.good) < call.quorum:
                return True, []
            self.stats.replies_accepted += 1
            replies = tuple(call.good.values())
            return True, [self._end(call, Answered(rid, replies[0], call.started,
                                                   dict(call.acks), replies), now, msg)]
        call.errors.append(msg)
        if call.states.get(addr) is not None:
            call.states[addr] = ANSWERED
        if msg.retryable:
            call.recent_error = msg
        else:
            call.recent_fatal = msg
        if call.refused():
            first = call.fatal()[0]
            return True, [self._end(call, Failed(rid, CallError(first.code, first.message)),
                                    now)]
        if call.every_erred():  # every target refused for now: back off, then try again
            call.due = now + min(call.backoff, max(0.0, call.deadline - now))
            call.backoff = min(call.backoff * 2, BACKOFF_MAX_S)
        return True, []

    def send_done(self, rid: str, attempt: int, addr: Addr, ok: bool, now: float) -> None:
        """The transport's outcome of one send (acknowledged or failed)."""
        call = self._calls.get(rid)
        if call is None:
            return
        if ok:
            call.alive = True
            call.acks.setdefault(addr, now)
        if attempt != call.attempt or call.states.get(addr) != MOVING:
            return
        call.states[addr] = ACKED if ok else SEND_FAILED
        if ok:
            call.last_ack = now

    def tick(self, now: float, moving: bool = False) -> list[Effect]:
        """Deadlines, silence and retries due at `now`. `moving`: the transport is moving bytes."""
        out: list[Effect] = []
        for call in list(self._calls.values()):
            out.extend(self._tick_one(call, now, moving))
        return out

    def expect_answers_within(self, targets: Sequence[Addr], silent_s: float, now: float) -> None:
        """The cloud is known not to answer: each call in flight to `targets` only (the nodes)
        that nobody has acknowledged or answered yet fails as `no_cloud` once it has been silent
        `silent_s` since its start (at the next tick, if that is already so), instead of at its
        deadline."""
        within = set(targets)
        for call in self._calls.values():
            if not call.alive and set(call.targets) <= within:
                until = max(now, call.started + silent_s)
                call.silent_until = (until if call.silent_until is None
                                     else min(call.silent_until, until))

    def cancel(self, rid: str, now: float) -> list[Effect]:
        call = self._calls.get(rid)
        if call is None:
            return []
        return [self._end(call, Failed(rid, CallError("cancelled", "cancelled")), now)]

    def next_deadline(self) -> float | None:
        """The earliest time a tick may have something to do (None: no call in flight)."""
        times = [min(c.deadline, c.due, c.silent_until if c.silent_until is not None
                     and not c.alive else math.inf) for c in self._calls.values()]
        return min(times) if times else None

    # ---- rules --------------------------------------------------------------------------------
    def _tick_one(self, call: _Call, now: float, moving: bool) -> list[Effect]:
        if now >= call.deadline:
            return [self._end(call, Failed(call.rid, self._expired(call)), now)]
        if call.silent_until is not None and not call.alive and now >= call.silent_until:
            return [self._end(call, Failed(call.rid, CallError(
                "no_cloud", "no node of the cloud answered", retryable=True)), now)]
        if now < call.due or call.moving() or moving:
            return []
        if call.holding() and not call.every_erred():
            held = (call.last_ack or call.sent_at) + call.hold_s
            if now < held:
                return []
        last = call.errors[-1] if call.errors else None
        reason = last.message if last is not None else "no answer yet"
        call.attempt += 1
        self.stats.retries += 1
        silent = call.silent_until is not None and not call.alive
        return [Retrying(call.rid, call.attempt, reason, silent), *self._send_attempt(call, now)]

    def _send_attempt(self, call: _Call, now: float) -> list[Effect]:
        msg = call.build(call.attempt)
        call.sent_at = now
        call.due = now + self.retry_s
        call.errors = []
        call.last_ack = None
        call.states = {addr: MOVING for addr in call.targets}
        return [Send(addr, msg, call.rid, call.attempt) for addr in call.targets]

    @staticmethod
    def _expired(call: _Call) -> CallError:
        if call.recent_fatal is not None:
            return CallError(call.recent_fatal.code, call.recent_fatal.message, retryable=False)
        if call.recent_error is not None:
            return CallError(call.recent_error.code, call.recent_error.message, retryable=True)
        if call.good:  # a quorum call some nodes answered: say how far it got, not "no node"
            return CallError("unreachable", (
                f"only {len(call.good)} of the {call.quorum} nodes a majority needs answered "
                "(the others are unreachable): not done"), retryable=True)
        return CallError("unreachable", "no node of the cloud answered", retryable=True)

    def _end(self, call: _Call, effect: Any, now: float, reply: Message | None = None) -> Any:
        self._calls.pop(call.rid, None)
        self._answered[call.rid] = _Ended(call.quorum == 1, call.attempt + 1, _node_of(reply),
                                          call.started, now, isinstance(effect, Failed))
        while len(self._answered) > ANSWERED_KEPT:
            self._answered.popitem(last=False)
        return effect


def _node_of(msg: Message | None) -> int | None:
    node = getattr(msg, "node", None)
    return node if isinstance(node, int) else None
