"""A fake client session for the shell tests: a real client home and state.db, no sockets.

It has what the shell reads (user, home, db, token, transport.address, sharing.owner,
directory(), notify) and nothing else; `directory` returns `users` or raises `directory_error`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from actors.client.client_store import ClientHome, GivenGrant, ReceivedGrant
from actors.client.peer import Sharing
from actors.client.share_owner import OwnerSide


@dataclass(frozen=True)
class Entry:
    user: str
    host: str
    port: int


@dataclass
class FakeTransport:
    address: tuple[str, int] = ("127.0.0.1", 40001)


@dataclass
class FakeSharing:
    owner: Any

    def find_received(self, name: str) -> ReceivedGrant:
        """The real lookup (Sharing.find_received) in this fake session's inbox."""
        return Sharing(cast(Any, self.owner.s), cast(Any, None)).find_received(name)


class FakeSession:
    def __init__(self, root: Path, user: str = "me") -> None:
        self.user = user
        self.home = ClientHome(root)
        self.db = self.home.open_state()
        self.token: bytes | None = b"t" * 16
        self.transport = FakeTransport()
        self.sharing = FakeSharing(OwnerSide(self, None))
        self.users: list[Entry] = []
        self.directory_error: Exception | None = None
        self.directory_calls = 0
        self.directory_hook: Callable[[], None] | None = None
        self.notify: Callable[[str], None] = lambda text: None
        self.lock = threading.Lock()

    def directory(self, refresh: bool = True) -> list[Entry]:
        with self.lock:
            self.directory_calls += 1
        if self.directory_hook is not None:
            self.directory_hook()
        if self.directory_error is not None:
            raise self.directory_error
        return sorted(self.users, key=lambda e: e.user)

    # ---- filling the home ---------------------------------------------------------------------
    def add_own(self, *names: str) -> None:
        for name in names:
            (self.home.root / "high" / name).write_bytes(b"x")

    def add_received(self, owner: str, image: str, views: int) -> None:
        self.db.put_received(ReceivedGrant(owner, image, views, 1, f"received/{owner}/{image}"))

    def add_given(self, borrower: str, image: str, views: int) -> None:
        self.db.put_given(GivenGrant(borrower, image, views, views, 1))

    def add_preview_file(self, owner: str, fname: str) -> None:
        self.home.preview_path(owner, fname).write_bytes(b"jpeg")

    def close(self) -> None:
        self.db.close()


def wait_for(cond: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Poll `cond` until true; AssertionError after `limit_s` (a hang guard, not a timing check:
    generous, so that a busy shared machine never reaches it)."""
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met")
        time.sleep(0.002)
