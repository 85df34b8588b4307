"""Client-side request/reply over the transport: multicast to the nodes, one reply per request id.

`Caller.call` sends a request to every node, returns the first non-error reply, counts the
duplicates (a race can make two nodes answer; the first one is kept), retries after
`retry_s` with the same request id and a higher attempt number, backs off on retryable errors
("not in majority", no node reachable) until `deadline_s` has passed.

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
                if not msg.retryable or len(waiter.errors) >= waiter.targets:
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
                    fatal = [e for e in waiter.errors if not e.retryable]
                    last = waiter.errors[-1] if waiter.errors else None
                    waiter.errors.clear()
                    waiter.event.clear()
                if fatal:
                    raise CallError(fatal[0].code, fatal[0].message, retryable=False)
                if self._clock() >= deadline:
                    if last is not None:
                        raise CallError(last.code, last.message, retryable=True)
                    raise CallError("unreachable", "no node of the cloud answered", retryable=True)
                reason = last.message if last is not None else "no answer yet"
                if last is not None:  # every node refused for now: back off before retrying
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
