"""Client-side request/reply over the transport: multicast to the nodes, one reply per request id.

`Caller.call` sends a request to every node, returns the first non-error reply, counts the
duplicates (a race can make two nodes answer; the first one is kept), retries after
`retry_s` with the same request id and a higher attempt number, backs off on retryable errors
("not in majority", no node reachable) until `deadline_s` has passed.

A refusal (a non-retryable error) is the cloud's answer only when a majority of the nodes
gives one in the same attempt, or every node answered and none accepted. One node's refusal
alone is not: a node that was down, or restarted, may not know a session that the others
know yet (it refuses the token until its state is synced), and its refusal must not fail a
request the others accept. A lone refusal with no other answer fails the call at the deadline.

Replies are matched by their `rid` field. The transport's delivery thread calls `deliver`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from codec.messages import ErrorReply, Message

log = logging.getLogger(__name__)

Addr = tuple[str, int]
ANSWERED_KEPT = 4096


class CallError(Exception):
    """A request failed: `code` is a short identifier, `retryable` says whether trying later may help."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass
class _Waiter:
    targets: int
    event: threading.Event = field(default_factory=threading.Event)
    reply: Message | None = None
    errors: list[ErrorReply] = field(default_factory=list)
    received: int = 0

    def fatal(self) -> list[ErrorReply]:
        """The non-retryable errors of this attempt."""
        return [e for e in self.errors if not e.retryable]

    def refused(self) -> bool:
        """A majority of the nodes refused, or every node answered with an error and one
        refused: the cloud's answer is a refusal."""
        fatal = len(self.fatal())
        return fatal > 0 and (2 * fatal > self.targets or len(self.errors) >= self.targets)


@dataclass
class CallStats:
    replies_received: int = 0
    replies_accepted: int = 0
    duplicates: int = 0
    retries: int = 0


class Caller:
    """Thread-safe; one per client session."""

    def __init__(
        self,
        send: Callable[[Addr, Message], None],
        *,
        retry_s: float,
        deadline_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[str, str], None] | None = None,
    ) -> None:
        self._send = send
        self._retry_s = retry_s
        self._deadline_s = deadline_s
        self._clock = clock
        self._on_retry = on_retry
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()  # recent ids, to count duplicates
        self.stats = CallStats()

    def deliver(self, msg: Message) -> bool:
        """Offer a received message; True if it answered (or duplicated) a call of ours."""
        rid = getattr(msg, "rid", None)
        if not isinstance(rid, str):
            return False
        with self._lock:
            waiter = self._waiting.get(rid)
            if waiter is None:
                if rid in self._answered:
                    self.stats.duplicates += 1
                    self.stats.replies_received += 1
                    return True
                return False
            self.stats.replies_received += 1
            if isinstance(msg, ErrorReply):
                waiter.errors.append(msg)
                if waiter.refused() or len(waiter.errors) >= waiter.targets:
                    waiter.event.set()
                return True
            if waiter.reply is None:
                waiter.reply = msg
                waiter.event.set()
            else:
                self.stats.duplicates += 1
            return True

    def call(
        self,
        rid: str,
        build: Callable[[int], Message],
        targets: Sequence[Addr],
        *,
        deadline_s: float | None = None,
    ) -> Message:
        """Send build(attempt) to every target until one answers. Raises CallError."""
        deadline = self._clock() + (deadline_s if deadline_s is not None else self._deadline_s)
        waiter = _Waiter(targets=len(targets))
        with self._lock:
            self._waiting[rid] = waiter
        attempt = 0
        backoff = self._retry_s / 4
        try:
            while True:
                msg = build(attempt)
                for addr in targets:
                    self._send(addr, msg)
                wait = min(self._retry_s, max(0.0, deadline - self._clock()))
                waiter.event.wait(wait)
                with self._lock:
                    if waiter.reply is not None:
                        self.stats.replies_accepted += 1
                        return waiter.reply
                    refused = waiter.refused()
                    fatal = waiter.fatal()
                    every = len(waiter.errors) >= waiter.targets
                    last = waiter.errors[-1] if waiter.errors else None
                    waiter.errors.clear()
                    waiter.event.clear()
                expired = self._clock() >= deadline
                if fatal and (refused or expired):
                    raise CallError(fatal[0].code, fatal[0].message, retryable=False)
                if expired:
                    if last is not None:
                        raise CallError(last.code, last.message, retryable=True)
                    raise CallError("unreachable", "no node of the cloud answered", retryable=True)
                reason = last.message if last is not None else "no answer yet"
                if every:  # every node refused for now: back off before retrying
                    time.sleep(min(backoff, max(0.0, deadline - self._clock())))
                    backoff = min(backoff * 2, 4.0)
                attempt += 1
                self.stats.retries += 1
                if self._on_retry is not None:
                    self._on_retry(rid, reason)
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
                self._answered[rid] = None
                while len(self._answered) > ANSWERED_KEPT:
                    self._answered.popitem(last=False)
