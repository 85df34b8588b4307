"""The client's local state: the home folder layout, atomic writes, and state.db.

Layout under the home (DESIGN "The client"): `high/` images the user shares, `low/` their previews,
`encrypted/` sealed images from the cloud, `received/<owner>/` sealed images shared with this user,
`previews/<user>/` previews fetched from other users, `state.db`. Every path is built from names with
codec.names.safe_join, so a bad name (`..`, `a/b`, NUL, 65 chars, non-ASCII) raises InvalidName before
any file operation (RELIABILITY 3.3, TI-6).

state.db (StateDB): request counter, grants given (owner side), grants received (borrower side; the
authoritative view count), applied update ids, requests for more views (the owner's inbox).
Callers: the shell commands and the client session actor.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from actors.client.state_db import (
    GivenGrant,
    ReceivedGrant,
    RequestIdBlock,
    StateDB,
    StateTxn,
    ViewRequest,
)
from actors.sqlite_util import StoreError
from codec.names import check_name, safe_join

__all__ = [
    "ClientHome",
    "GivenGrant",
    "ReceivedGrant",
    "RequestIdBlock",
    "StateDB",
    "StateTxn",
    "StoreError",
    "ViewRequest",
    "default_home",
    "write_atomic",
]

LAYOUT = ("high", "low", "encrypted", "received", "previews")
STATE_DB = "state.db"


def default_home(
    user: str, *, env: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """$XDG_DATA_HOME/veilshare/<user>, or ~/.local/share/veilshare/<user> when XDG_DATA_HOME is
    unset or relative (the XDG spec says to ignore relative values). Nothing is created here."""
    check_name(user, "user")
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        base = Path(xdg)
    else:
        base = (Path.home() if home is None else home) / ".local" / "share"
    return safe_join(base, "veilshare", user)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write `data` to `path` all or nothing: a temp file in the same folder (mkstemp), fsync,
    os.replace, then fsync of the folder. The file gets `mode` (0600 by default: the home holds
    private images and keys). The temp name starts with '.', which no valid name does."""
    path = Path(path)
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


class ClientHome:
    """One user's client home. `ClientHome(root)` creates the layout (folders mode 0700).

    Path helpers take names (checked, InvalidName on a bad one) and return paths inside the home;
    the per-owner and per-user folders are created only after every name was checked.
    """

    def __init__(self, root: Path) -> None:
        root = Path(root).expanduser()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root = root.resolve()
        for folder in LAYOUT:
            safe_join(self.root, folder).mkdir(exist_ok=True, mode=0o700)
        self.state_db_path = safe_join(self.root, STATE_DB)
        self._accepted: Counter[str] = Counter()  # request id -> replies whose result was stored
        self._accepted_lock = threading.Lock()

    def accept_reply(self, rid: str) -> int:
        """Record that the result of a reply to request `rid` was stored here; returns how many
        replies of that id were stored so far (1 unless a request was answered and stored twice).
        Called by the client session after it stored a sealed image (encrypt)."""
        with self._accepted_lock:
            self._accepted[rid] += 1
            return self._accepted[rid]

    def accepted(self, rid: str) -> int:
        """Replies of request `rid` whose result was stored (0: none yet)."""
        with self._accepted_lock:
            return self._accepted[rid]

    def accepted_twice(self) -> int:
        """Request ids with more than one stored reply since this home was opened (the chaos
        benchmark's `accepted_twice`; the protocol promises 0)."""
        with self._accepted_lock:
            return sum(1 for n in self._accepted.values() if n > 1)

    def open_state(self) -> StateDB:
        """Open (creating if needed) this home's state.db. The caller closes it."""
        return StateDB(self.state_db_path)

    def high_path(self, image: str) -> Path:
        return safe_join(self.root, "high", image)

    def low_path(self, image: str) -> Path:
        return safe_join(self.root, "low", image)

    def encrypted_path(self, image: str) -> Path:
        return safe_join(self.root, "encrypted", image)

    def received_path(self, owner: str, image: str) -> Path:
        """received/<owner>/<image>; creates received/<owner>/ once both names passed."""
        path = safe_join(self.root, "received", owner, image)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        return path

    def preview_path(self, user: str, image: str) -> Path:
        """previews/<user>/<image>; creates previews/<user>/ once both names passed."""
        path = safe_join(self.root, "previews", user, image)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        return path

    def previews_dir(self, user: str) -> Path:
        path = safe_join(self.root, "previews", user)
        path.mkdir(exist_ok=True, mode=0o700)
        return path

    def received_dir(self, owner: str) -> Path:
        path = safe_join(self.root, "received", owner)
        path.mkdir(exist_ok=True, mode=0o700)
        return path

    def relative(self, path: Path) -> str:
        """The path relative to the home, '/'-separated (how JSON output shows paths)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def write(self, path: Path, data: bytes, *, mode: int = 0o600) -> Path:
        """write_atomic, refusing a path that does not resolve inside the home."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise StoreError(f"refusing to write outside the client home: {path}")
        write_atomic(resolved, data, mode=mode)
        return resolved
