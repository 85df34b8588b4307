"""The bottom toolbar: who you are, where, the connection, requests waiting (litecli clitoolbar).

`toolbar_text` is pure (tested directly); `make_toolbar` reads the session and the names
snapshot each time prompt_toolkit redraws, without any I/O: the connection is the session's
`connection` (`joined`, `rejoining`, `cloud unreachable`, kept by its actor), the waiting count
comes from `shell.names.NameSource`, refreshed in the background.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prompt_toolkit.formatted_text import StyleAndTextTuples

from shell.names import NameSource


def connection_text(joined: bool, directory_ok: bool | None) -> str:
    """'joined', 'not joined', or 'joined, cloud unreachable' when the latest directory query
    failed (the token is still ours; commands will say what failed)."""
    if not joined:
        return "not joined"
    return "joined, cloud unreachable" if directory_ok is False else "joined"


def toolbar_text(user: str, address: str, connection: str, waiting: int) -> StyleAndTextTuples:
    return [
        ("class:toolbar.user", f" {user} "),
        ("class:toolbar", f"at {address} | "),
        ("class:toolbar.bad" if connection != "joined" else "class:toolbar", connection),
        ("class:toolbar", " | requests waiting: "),
        ("class:toolbar.count" if waiting else "class:toolbar", str(waiting)),
        ("class:toolbar", " | Tab completes, Ctrl-D quits "),
    ]


def make_toolbar(session: Any, names: NameSource) -> Callable[[], StyleAndTextTuples]:
    def render() -> StyleAndTextTuples:
        snap = names.names
        try:
            host, port = session.transport.address
            address = f"{host}:{port}"
        except Exception:  # noqa: BLE001 - a closed transport must not break the redraw
            address = "?"
        connection = getattr(session, "connection", None)  # the session's true state
        if not isinstance(connection, str):
            joined = getattr(session, "token", None) is not None
            connection = connection_text(joined, snap.directory_ok)
        return toolbar_text(session.user, address, connection, snap.waiting)

    return render
