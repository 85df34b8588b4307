"""A client's long-term keys: an Ed25519 signing key and an X25519 box key, kept in its home.

Callers: the client session at start-up (`ClientKeys.load_or_create(home)`; the public halves go
in `Join.sign_key` / `Join.box_key`), the owner's sharing path (`sign`, via
codec.sharecrypt.make_grant) and the borrower's (`unwrap`, via codec.sharecrypt.open_content_key).

Files: `<home>/keys/sign.key` and `<home>/keys/box.key`, each the raw 32-byte private key; the
folder is 0700 and the files 0600, owned by this user. A missing file is created (first run, or a
first run cut short between the two files) from `rng` and written atomically: a temp file in the
same folder (mkstemp, 0600), fsync, os.replace, fsync of the folder. An existing file or folder
that is not private (any group/other permission bit), not a regular file/folder (symlink), owned
by another user, or of the wrong length is refused with KeyFileError saying which and what to do:
a key is never silently replaced. Keys are never derived from passwords.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from codec import sharecrypt
from codec.messages import Join

__all__ = ["KEY_BYTES", "ClientKeys", "KeyFileError"]

KEY_BYTES = 32
FOLDER = "keys"
SIGN_FILE = "sign.key"
BOX_FILE = "box.key"
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class KeyFileError(Exception):
    """A key file or its folder is unusable; `path` names it, the message says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ClientKeys:
    """The two private keys of one client, in memory. repr shows only the public halves."""

    __slots__ = ("_box", "_sign")

    def __init__(self, sign_private: bytes, box_private: bytes) -> None:
        """sign_private: Ed25519 seed, box_private: X25519 scalar, 32 raw bytes each."""
        for what, raw in (("sign_private", sign_private), ("box_private", box_private)):
            if type(raw) is not bytes or len(raw) != KEY_BYTES:
                raise ValueError(f"{what} must be {KEY_BYTES} bytes")
        self._sign = Ed25519PrivateKey.from_private_bytes(sign_private)
        self._box = X25519PrivateKey.from_private_bytes(box_private)

    @staticmethod
    def exist(home: Path) -> bool:
        """Whether `home` holds keys already (they were made before, here or elsewhere)."""
        return (Path(home) / FOLDER / SIGN_FILE).exists()

    @classmethod
    def load_or_create(cls, home: Path, *, rng: Callable[[int], bytes] = os.urandom) -> ClientKeys:
        """The keys under `home` (which must exist), creating what is missing. KeyFileError."""
        folder = Path(home) / FOLDER
        _private_folder(folder)
        sign = _load_or_write(folder / SIGN_FILE, rng)
        box = _load_or_write(folder / BOX_FILE, rng)
        return cls(sign, box)

    @property
    def sign_public(self) -> bytes:
        """The Ed25519 public key, 32 bytes (Join.sign_key)."""
        return self._sign.public_key().public_bytes(*_RAW)

    @property
    def box_public(self) -> bytes:
        """The X25519 public key, 32 bytes (Join.box_key)."""
        return self._box.public_key().public_bytes(*_RAW)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        return self._sign.sign(bytes(data))

    def join(self, rid: str, user: str, stamp: float) -> Join:
        """A Join of `user` with these keys, its proof signed (stamp: the wall clock, seconds)."""
        sign_key, box_key = self.sign_public, self.box_public
        proof = sharecrypt.sign_join(self, rid, user, sign_key, box_key, stamp)
        return Join(rid=rid, user=user, sign_key=sign_key, box_key=box_key, stamp=stamp,
                    proof=proof)

    def unwrap(self, wrapped: bytes, *, info: bytes) -> bytes:
        """A content key wrapped for this client (codec.sharecrypt.unwrap_key); ShareCryptError."""
        return sharecrypt.unwrap_key(wrapped, self._box, info=info)

    def __repr__(self) -> str:
        return (
            f"ClientKeys(sign_public={self.sign_public.hex()}, box_public={self.box_public.hex()})"
        )


def _private_folder(folder: Path) -> None:
    if not folder.parent.is_dir():
        raise KeyFileError(folder.parent, "the client home does not exist")
    try:
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
        return
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(folder, "is not a folder (a symlink or a file); move it away")
    _check_private(folder, st, "chmod 700 it")


def _check_private(path: Path, st: os.stat_result, fix: str) -> None:
    if st.st_uid != os.getuid():
        raise KeyFileError(path, f"is owned by uid {st.st_uid}, not by this user")
    if st.st_mode & 0o077:
        raise KeyFileError(
            path,
            f"has group/other permission bits (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); {fix} if it is yours",
        )


def _load_or_write(path: Path, rng: Callable[[int], bytes]) -> bytes:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raw = rng(KEY_BYTES)
        if type(raw) is not bytes or len(raw) != KEY_BYTES:
            raise ValueError(f"rng must return {KEY_BYTES} bytes")
        _write_atomic(path, raw)
        return raw
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(path, "is not a regular file (a symlink?); refusing to read a key")
    _check_private(path, st, "chmod 600 it")
    raw = b""
    if st.st_size == KEY_BYTES:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(KEY_BYTES + 1)
    if len(raw) != KEY_BYTES:
        size = max(st.st_size, len(raw))
        raise KeyFileError(
            path,
            f"is {size} bytes, a key file holds exactly {KEY_BYTES}: "
            f"damaged? move it away to make a new key (peers then need the "
            f"new public key)",
        )
    return raw


def _write_atomic(path: Path, raw: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".key")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
