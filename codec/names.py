"""User names, image names, request ids and joining them onto a home folder.

A name is `[A-Za-z0-9._-]{1,64}` and does not start with a dot (so '.', '..', '...' and hidden
files are out). Only ASCII is allowed: look-alikes such as a Cyrillic 'а' are refused. Image names
keep their extension ("pic.jpg"). The same rule holds for user names, image names and owner names
that become folder names (`received/<owner>/`).

A request id is `<user>#<n>` with n a decimal integer 0..2**53 written without sign or leading
zeros. Callers: codec.messages (field checks), the client (paths, request ids), the node.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from codec.errors import CodecError

NAME_RE = r"[A-Za-z0-9._-]{1,64}"
NAME_MAX = 64
REQUEST_N_MAX = 2**53

_NAME = re.compile(NAME_RE)
_NAME_CHAR = re.compile(r"[A-Za-z0-9._-]")
_REQUEST_ID = re.compile(r"(?P<user>[^#]{1,64})#(?P<n>0|[1-9][0-9]{0,15})")
# The valid cases in one match each (a name: 1..64 characters of the class, no leading dot; a
# request id: such a name, "#", the counter without sign or leading zeros). A miss goes through
# the step-by-step checks (`_name_problem_steps`, `_parse_request_id_steps`), which say why;
# tests/test_codec_fastpath.py pins that both ways accept the same strings.
_VALID_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_VALID_REQUEST_ID = re.compile(r"([A-Za-z0-9_-][A-Za-z0-9._-]{0,63})#(0|[1-9][0-9]{0,15})")


class InvalidName(CodecError, ValueError):
    """`value` is not acceptable as `what` (e.g. "user", "image", "request id"): `reason` says why."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {what} {shown}: {reason}")
        self.what = what
        self.value = value
        self.reason = reason


def name_problem(s: object) -> str | None:
    """Why `s` is not a valid name, or None when it is one."""
    if type(s) is str and _VALID_NAME.fullmatch(s) is not None:
        return None
    return _name_problem_steps(s)


def _name_problem_steps(s: object) -> str | None:
    """name_problem, one rule at a time (the first rule broken is the reason)."""
    if type(s) is not str:
        return f"not a string ({type(s).__name__})"
    if not s:
        return "empty"
    if len(s) > NAME_MAX:
        return f"longer than {NAME_MAX} characters ({len(s)})"
    if _NAME.fullmatch(s) is None:
        bad = next(c for c in s if _NAME_CHAR.fullmatch(c) is None)
        return f"character {bad!r} not allowed (only A-Z a-z 0-9 . _ -)"
    if s.startswith("."):
        return "starts with a dot"
    return None


def is_valid_name(s: object) -> bool:
    """True when `s` is a str that is a valid user or image name."""
    return name_problem(s) is None


def check_name(s: object, what: str = "name") -> str:
    """Return `s` if it is a valid name, else raise InvalidName(what, s, reason)."""
    problem = name_problem(s)
    if problem is not None or not isinstance(s, str):
        raise InvalidName(what, s, problem or "not a string")
    return s


def safe_join(home: Path, *parts: str) -> Path:
    """`home / part / ...` where every part is a valid name and the result resolves inside home.

    Symlinks are followed: a link inside home that points outside it is refused. Raises
    InvalidName for a bad part, for a path that escapes home, or one that cannot be resolved.
    Nothing is created on disk.
    """
    for part in parts:
        check_name(part, "path part")
    joined = Path(home).joinpath(*parts)
    try:
        root = Path(home).resolve()
        target = joined.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # symlink loop, NUL, permission
        raise InvalidName("path", str(joined), f"cannot be resolved ({e})") from None
    if not target.is_relative_to(root):
        raise InvalidName("path", str(joined), f"resolves to {target}, outside {root}")
    return joined


def parse_request_id(s: object) -> tuple[str, int]:
    """Split a request id "<user>#<n>" into (user, n); raise InvalidName if it is not one."""
    if type(s) is str:
        valid = _VALID_REQUEST_ID.fullmatch(s)
        if valid is not None:
            n = int(valid[2])
            if n <= REQUEST_N_MAX:
                return valid[1], n
    return _parse_request_id_steps(s)


def _parse_request_id_steps(s: object) -> tuple[str, int]:
    """parse_request_id, one rule at a time (the first rule broken is the reason)."""
    if type(s) is not str:
        raise InvalidName("request id", s, f"not a string ({type(s).__name__})")
    m = _REQUEST_ID.fullmatch(s)
    if m is None:
        raise InvalidName("request id", s, "not of the form <user>#<n>")
    user = m.group("user")
    problem = _name_problem_steps(user)
    if problem is not None:
        raise InvalidName("request id", s, f"user part: {problem}")
    n = int(m.group("n"))
    if n > REQUEST_N_MAX:
        raise InvalidName("request id", s, f"counter above 2**53 ({n})")
    return user, n


RECENT_REQUEST_IDS: set[str] = set()
"""Request ids is_request_id found valid lately (a cache, at most RECENT_MAX: cleared when full).
Only valid ids enter it, so `s in RECENT_REQUEST_IDS` implies is_request_id(s)."""
RECENT_MAX = 4096


def is_request_id(s: object) -> bool:
    """True when `s` is a str of the form "<user>#<n>" with a valid user and 0 <= n <= 2**53."""
    if type(s) is str:
        if s in RECENT_REQUEST_IDS:
            return True
        valid = _VALID_REQUEST_ID.fullmatch(s)
        if valid is not None and int(valid[2]) <= REQUEST_N_MAX:
            if len(RECENT_REQUEST_IDS) >= RECENT_MAX:
                RECENT_REQUEST_IDS.clear()
            RECENT_REQUEST_IDS.add(s)
            return True
    try:
        parse_request_id(s)
    except InvalidName:
        return False
    return True


def make_request_id(user: str, n: int) -> str:
    """Build "<user>#<n>"; raise InvalidName for a bad user or an n outside 0..2**53 (bool refused)."""
    check_name(user, "user")
    if type(n) is not int or not 0 <= n <= REQUEST_N_MAX:
        raise InvalidName("request counter", n, "not an int in 0..2**53")
    return f"{user}#{n}"


_EXT_MAX = 16  # a longer "extension" is part of the name, not kept whole when cutting


def image_name_for(file_name: str, taken: Callable[[str], bool] = lambda _n: False) -> str:
    """The image name `encrypt` gives a file (issue 17): its file name made a valid name.

    Rules, in order: every character outside [A-Za-z0-9._-] becomes "_" ("my cat photo.png" ->
    "my_cat_photo.png", "café.png" -> "caf_.png"); a leading "." becomes "_" (".x.png" ->
    "_x.png"); a name over 64 characters is cut before its extension, which is kept (up to 16
    characters; "a.b" * 40 keeps ".b"); while `taken(name)` says the name belongs to another
    image of this user, "-2", "-3", ... goes before the extension ("pic.jpg" -> "pic-2.jpg").
    The result always passes `check_name`. Pure (`taken` is asked about candidates only).
    """
    base = file_name.replace("\\", "/").rsplit("/", 1)[-1] or "_"
    clean = "".join(c if _NAME_CHAR.fullmatch(c) else "_" for c in base)
    if clean.startswith("."):
        clean = "_" + clean[1:]
    stem, dot, ext = clean.rpartition(".")
    if not dot or not stem or len(ext) >= _EXT_MAX:
        stem, ext = clean, ""
    else:
        ext = "." + ext
    n = 1
    while True:
        suffix = f"-{n}" if n > 1 else ""
        name = stem[: NAME_MAX - len(suffix) - len(ext)] + suffix + ext
        if not taken(name):
            return check_name(name, "image name")
        n += 1
