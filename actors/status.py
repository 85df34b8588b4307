"""`status`: ask every node for its state over its client socket (works from any host).

One StatusQuery per node, all at once; a node that does not answer within `timeout_s` is
reported as "unreachable". Rows follow the JSON shape of DESIGN.md.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from codec.messages import StatusQuery, StatusReply
from config import Config
from transport.udp import Delivery, Transport


def row(reply: StatusReply | None, node_id: int) -> dict[str, Any]:
    if reply is None:
        return {"id": node_id, "state": "unreachable", "served": 0, "cached": 0, "token": False,
                "users": 0, "pending": 0, "down_since": 0.0, "token_holder": 0,
                "majority": False, "digest": "", "pid": 0, "syncing": False}
    return {
        "id": reply.node, "state": reply.state, "served": reply.served, "cached": reply.cached,
        "token": reply.token, "users": reply.users, "pending": reply.pending,
        "down_since": reply.down_since, "token_holder": reply.token_holder,
        "majority": reply.majority, "digest": reply.digest.hex(), "pid": reply.pid,
        "syncing": reply.syncing,
    }


def query_status(cfg: Config, *, timeout_s: float = 1.0,
                 transport: Transport | None = None) -> list[dict[str, Any]]:
    """Rows for every configured node, in id order."""
    own = transport is None
    tp = transport or Transport.start(("0.0.0.0", 0), cfg.transport, name="status")
    tag = secrets.token_hex(4)
    rids = {node.id: f"status-{tag}#{node.id}" for node in cfg.nodes}
    replies: dict[str, StatusReply] = {}
    done = threading.Event()
    lock = threading.Lock()

    def on_delivery(d: Delivery) -> None:
        if isinstance(d.msg, StatusReply) and d.msg.rid in rids.values():
            with lock:
                replies[d.msg.rid] = d.msg
                if len(replies) == len(rids):
                    done.set()

    unsubscribe = tp.subscribe(on_delivery, (StatusReply,))
    try:
        for node in cfg.nodes:
            tp.send(node.client_addr, StatusQuery(rid=rids[node.id]))
        deadline = time.monotonic() + timeout_s
        while not done.is_set() and time.monotonic() < deadline:
            done.wait(0.05)
        with lock:
            return [row(replies.get(rids[n.id]), n.id) for n in cfg.nodes]
    finally:
        if callable(unsubscribe):
            unsubscribe()
        if own:
            tp.stop()
