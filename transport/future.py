"""The future a send returns: pykka's `Future`, settled once by the transport, with one lock as its
latch.

`pykka.ThreadingFuture` builds a `threading.Condition` for every future (an RLock, a deque of
waiters and its bound methods, all in Python) and settles it under that condition with a
`notify_all`. A node sends about ten messages per request and waits on almost none of them: the
election, the Done and the replies go on without looking, and the outcomes that matter come as
`on_done` callbacks. That construction and settling were 5 % of the CPU of small messages through
actors (`python -m benchmarks.transport`, the echo figures; issue 19). Here the latch is a
`threading.Lock` taken at creation and released when the outcome is set: `get` waits on it only
while the outcome is unknown, and the one who sets it never looks for waiters.
"""

from __future__ import annotations

import queue
import sys
import threading
from types import TracebackType
from typing import Any

import pykka

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


class SendFuture(pykka.Future[None]):
    """Resolves None when the peer acknowledged the message, or raises the send's error. Set
    once (`set` or `set_exception`; a second time raises `queue.Full`, as pykka's own does).
    `map`, `filter`, `join` and `pykka.get_all` work as on any pykka future (they go through
    `get`)."""

    __slots__ = ("_exc_info", "_latch", "_settled")

    def __init__(self) -> None:
        super().__init__()
        self._latch = threading.Lock()
        self._latch.acquire()  # released once, by set/set_exception
        self._settled = False
        self._exc_info: ExcInfo | None = None

    def __repr__(self) -> str:
        return f"<SendFuture {'settled' if self._settled else 'pending'}>"

    def get(self, *, timeout: float | None = None) -> Any:
        try:
            return super().get(timeout=timeout)  # a get hook (map, filter, ...) answers first
        except NotImplementedError:
            pass
        if not self._settled:
            wait = -1 if timeout is None else max(0.0, timeout)
            if not self._latch.acquire(timeout=wait):
                raise pykka.Timeout(f"{timeout} seconds")
            self._latch.release()  # every other waiter passes too
        exc_info = self._exc_info
        if exc_info is not None:
            exc_type, exc_value, tb = exc_info
            assert exc_type is not None
            if exc_value is None:
                exc_value = exc_type()
            raise exc_value.with_traceback(tb)
        return None

    def set(self, value: Any | None = None) -> None:
        if self._settled:
            raise queue.Full
        self._settled = True
        self._latch.release()

    def set_exception(self, exc_info: Any | None = None) -> None:
        if self._settled:
            raise queue.Full
        self._exc_info = exc_info if exc_info is not None else sys.exc_info()
        self._settled = True  # after the error: a get that sees it settled raises it
        self._latch.release()
