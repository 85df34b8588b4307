"""The router: subscribed to the node's two transports, it hands each message to the actor that
owns its type (one mailbox hop: the transport's reader thread, or its delivery thread for a
message over 64 KiB, tells the owner directly). It gets the messages of one reader turn
together (`client_batch`, `peer_batch`) and tells each owner once for them (`Inbound` when there
are several): one wake-up of an actor per turn, not one per message.

It does no work of its own. Peer messages are accepted only from the configured peer addresses
(the transport's HMAC check already did that; this maps the address to a node id) and only when
a message's own `node` field names its sender; anything else is counted and logged, never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pykka

from actors.core.loglimit import LogLimiter
from actors.node.base import Inbound
from actors.node.signals import ClientIn, PeerIn
from codec.messages import (
    Claim,
    ClientHeartbeat,
    ComingUp,
    ConfirmUpdates,
    Coordinator,
    DirectoryChange,
    DirectoryQuery,
    Done,
    DoneBatch,
    Election,
    ElectionBatch,
    ElectionOk,
    EncryptOffer,
    EncryptRequest,
    ForgetUpdates,
    GoingDown,
    Join,
    Leave,
    PeerHeartbeat,
    PostUpdate,
    ReplicateUpdate,
    StateRequest,
    StateSync,
    StatusQuery,
    Token,
    TokenVote,
)
from transport.udp import Delivery

log = logging.getLogger(__name__)

Addr = tuple[str, int]
Refs = dict[str, pykka.ActorRef[Any]]

CLIENT_ROUTES: dict[type, str] = {
    StatusQuery: "supervisor",
    EncryptRequest: "flow",
    EncryptOffer: "flow",
    Join: "directory",
    ClientHeartbeat: "directory",
    Leave: "directory",
    DirectoryQuery: "directory",
    PostUpdate: "directory",
    ConfirmUpdates: "directory",
}
PEER_ROUTES: dict[type, tuple[str, ...]] = {
    # both membership replicas hear the failure detector's messages
    PeerHeartbeat: ("election", "token"),
    GoingDown: ("election", "token"),
    ComingUp: ("election", "token"),
    Election: ("election",),
    ElectionOk: ("election",),
    Claim: ("election",),
    Coordinator: ("election",),
    ElectionBatch: ("election",),
    Token: ("token",),
    TokenVote: ("token",),
    Done: ("flow",),
    DoneBatch: ("flow",),
    DirectoryChange: ("directory",),
    StateRequest: ("directory",),
    StateSync: ("directory",),
    ReplicateUpdate: ("pending",),
    ForgetUpdates: ("directory",),  # the directory checks the session, then the pending actor
}


class Router:
    def __init__(self, node_id: int, peer_ids: dict[Addr, int], refs: Refs,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node_id = node_id
        self.peer_ids = dict(peer_ids)
        self.client_routes = {t: refs[name] for t, name in CLIENT_ROUTES.items()}
        self.peer_routes = {t: tuple(refs[n] for n in names) for t, names in PEER_ROUTES.items()}
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.clock = clock
        self.log_limit = LogLimiter()

    def client(self, d: Delivery) -> None:
        self.client_batch([d])

    def peer(self, d: Delivery) -> None:
        self.peer_batch([d])

    def client_batch(self, ds: list[Delivery]) -> None:
        """Client messages of one reader turn, in order: one tell per owner."""
        out: dict[Any, list[Any]] = {}
        routes = self.client_routes
        for d in ds:
            msg = d.msg
            ref = routes.get(type(msg))
            if ref is None:
                self._count("client_unexpected", type(msg).__name__)
                continue
            _add(out, ref, ClientIn(d.addr, msg))
        _tell(out)

    def peer_batch(self, ds: list[Delivery]) -> None:
        """Peer messages of one reader turn, in order: one tell per owner."""
        out: dict[Any, list[Any]] = {}
        routes, ids = self.peer_routes, self.peer_ids
        for d in ds:
            msg = d.msg
            sender = ids.get(d.addr)
            if sender is None:
                self._count("peer_unknown_sender", f"from {d.addr}")
                continue
            claimed = getattr(msg, "node", sender)
            if claimed != sender:
                self._count(
                    "peer_id_mismatch", f"{type(msg).__name__} claims {claimed} from {sender}"
                )
                continue
            refs = routes.get(type(msg))
            if refs is None:
                self._count("peer_unexpected", type(msg).__name__)
                continue
            item = PeerIn(sender, msg)
            for ref in refs:
                _add(out, ref, item)
            if type(msg) is ElectionBatch and (msg.acked or msg.unacked):  # Dones ride along
                done = DoneBatch(node=sender, acked=msg.acked, unacked=msg.unacked)
                for ref in self.peer_routes[DoneBatch]:
                    _add(out, ref, PeerIn(sender, done))
        _tell(out)

    def _count(self, what: str, detail: str) -> None:
        with self._lock:
            self.counters[what] += 1
            write, left_out = self.log_limit.admit(what, self.clock())
        if write:
            more = f" ({left_out} more lines of {what} left out)" if left_out else ""
            log.info("node %d: %s %s%s", self.node_id, what, detail, more)


def _add(out: dict[Any, list[Any]], ref: Any, msg: Any) -> None:
    """Messages per owner (an actor's ref or DirectEntry), in order."""
    got = out.get(ref)
    if got is None:
        out[ref] = [msg]
    else:
        got.append(msg)


def _tell(out: dict[Any, list[Any]]) -> None:
    """Each owner one actor message: its message alone, or an Inbound of several."""
    for ref, msgs in out.items():
        ref.tell(msgs[0] if len(msgs) == 1 else Inbound(tuple(msgs)))
