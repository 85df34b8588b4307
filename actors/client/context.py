"""What the sharing parts (grants, the owner's side, the peer flows) are given: no session.

One `ClientContext` per session, built by actors.client.client_session: the user, the config,
the home and its state.db, the keys, the calls to the cloud (`cloud`), the directory cache, a
`send` for peer replies (the transport's, thread-safe) and `notify` (the shell's, whichever is
current). Parts never hold the session, so none of them imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.client.client_store import ClientHome
from actors.client.cloud import Cloud, DirectoryCache
from actors.client.keys import ClientKeys
from actors.client.state_db import StateDB
from config import Config

Addr = tuple[str, int]


@dataclass(frozen=True)
class ClientContext:
    user: str
    cfg: Config
    home: ClientHome
    db: StateDB
    keys: ClientKeys
    cloud: Cloud
    directory: DirectoryCache
    send: Callable[[Addr, Any], Any]
    notify: Callable[[str], None]


__all__ = ["ClientContext"]
