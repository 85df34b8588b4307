"""Cancellation of one shell command: a `CancelScope` set in the command's thread (a context
variable), so every call the command makes through the session belongs to it.

Callers: shell.interactive (makes a scope per command, cancels it on Ctrl-C), the client
session (tags each call with the current scope; refuses new calls of a cancelled scope and
does not store what a cancelled command received).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class CancelScope:
    """Set once: the command was cancelled (Ctrl-C). A flag (one attribute write, atomic under
    the GIL) rather than an Event: nothing waits for it, and a scope is made per call."""

    __slots__ = ("_cancelled",)

    def __init__(self) -> None:
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True


current_scope: ContextVar[CancelScope | None] = ContextVar("veilshare_cancel_scope", default=None)
# Where the notices of the current thread's command go instead of the session's printer: a
# command handed over by another process (shell.handoff) sends its retry notices to that caller.
current_notices: ContextVar[Callable[[str], None] | None] = ContextVar("veilshare_notices",
                                                                      default=None)


@contextmanager
def within(scope: CancelScope) -> Iterator[CancelScope]:
    """Run the block's calls inside `scope`."""
    token = current_scope.set(scope)
    try:
        yield scope
    finally:
        current_scope.reset(token)


def cancelled() -> bool:
    """True if the current thread's command was cancelled."""
    scope = current_scope.get()
    return scope is not None and scope.cancelled


__all__ = ["CancelScope", "cancelled", "current_notices", "current_scope", "within"]
