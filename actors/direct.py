"""Direct calls into an actor: its messages run on the calling thread while the actor is idle.

Each mailbox hop costs a thread wake-up, and on the 2-core host a wake-up costs 0.1-0.3 ms at
one client and over 1 ms under load (issue 19: `python -m benchmarks.election_trace`). The
election's messages cross several per request (the peer transport's reader -> ElectionActor on
each side of every link delay, ElectionActor -> EncryptFlowActor for the Won that starts the
seal), so those callers hold a `DirectEntry` instead of the actor's ref: `entry.tell(message)`
handles the message at once, on the caller's thread, under the actor's lock (`DirectActor`,
which also takes that lock for every mailbox message, so the actor's state is only ever touched
by one thread at a time). Rules:
- the lock is only tried, never waited for: when the actor is busy (its own thread, or another
  caller) the message goes to the mailbox instead; so two actors calling each other directly
  cannot deadlock;
- once a message went to the mailbox, later ones from entries follow it there until the mailbox
  has handled it: messages of one sender keep their order (the election assumes that);
- a caller inside the actor already (a send of ours that delivered on the same thread) never
  re-enters it: the message goes to the mailbox;
- a stopped actor's entry tells its ref, which raises `pykka.ActorDeadError` as a tell would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka

from transport.mailbox import QuickInboxActor


class _Queued:
    """A message an entry could not run at once, told to the actor's mailbox."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


class DirectEntry:
    """Where callers `tell` an actor's messages to run them directly (see the module doc)."""

    def __init__(self) -> None:
        self._run: Callable[[Any], bool] | None = None
        self._ref: pykka.ActorRef[Any] | None = None

    def bind(self, run: Callable[[Any], bool], ref: pykka.ActorRef[Any]) -> None:
        """Called once by the actor this entry leads to, when it is built."""
        self._run, self._ref = run, ref

    def is_alive(self) -> bool:
        """Whether the actor behind this entry runs (as its ref's `is_alive`)."""
        return self._ref is not None and self._ref.is_alive()

    def tell(self, message: Any) -> None:
        if self._run is None or self._ref is None:
            raise pykka.ActorDeadError("no actor behind this entry")
        if not self._run(message):
            self._ref.tell(_Queued(message))


class DirectActor(QuickInboxActor):
    """Mixin (before the actor's base class): every message, from the mailbox or an entry, is
    handled under one lock. `direct_done()` runs after each message handled from an entry,
    still under the lock (the ElectionActor sends what it produced there)."""

    def direct_init(self, entry: DirectEntry | None) -> None:
        self._direct_lock = threading.RLock()
        self._queued_lock = threading.Lock()  # guards _queued alone; nothing is called under it
        self._queued = 0  # _Queued told and not handled yet
        self._holder: int | None = None  # the thread inside, while one is
        self.in_direct = False  # handling an entry's message now
        if entry is not None:
            entry.bind(self._direct_run, self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        with self._direct_lock:
            outer, self._holder = self._holder, threading.get_ident()
            try:
                if isinstance(message, _Queued):
                    with self._queued_lock:
                        self._queued -= 1
                    message = message.message
                return super().on_receive(message)
            finally:
                self._holder = outer

    def direct_done(self) -> None:
        """After a message from an entry (under the lock)."""

    def _direct_run(self, message: Any) -> bool:
        """Handle `message` now if the actor is idle and nothing queued waits; else count it
        as queued and return False (the entry tells it to the mailbox)."""
        if self.actor_stopped.is_set():
            return False
        me = threading.get_ident()
        if self._holder != me and self._direct_lock.acquire(blocking=False):
            try:
                if self.actor_stopped.is_set():  # stopped while we took the lock: its ref
                    return False  # raises ActorDeadError for the caller, as a tell would
                # read without _queued_lock: it only drops under the lock we hold; a rise racing
                # with this read is another thread's message, queued as we run ours (either
                # order is one the lock would allow), while our own thread's are seen
                if self._queued:  # earlier messages wait in the mailbox: no overtaking
                    with self._queued_lock:
                        self._queued += 1
                    return False
                self._holder, self.in_direct = me, True
                try:
                    super().on_receive(message)
                    self.direct_done()
                finally:
                    self._holder, self.in_direct = None, False
                return True
            finally:
                self._direct_lock.release()
        with self._queued_lock:
            self._queued += 1
        return False
