"""Counting hooks for `benchmarks.msg_count` (never imported by the product): per process, how
many actor messages (pykka tell / ask, by receiving actor class and message type, and by the
function that sent them), messages sent by type (`Transport.send`/`send_many`), thread wake-ups (`Condition.notify` that found a waiter), blocking
`select` returns, and datagrams sent by kind (DATA, ACK, ...: the frame header's kind byte) and
system calls (`sendmsg`/`sendto`).

`install()` patches pykka.ActorRef.tell/ask, threading.Condition.notify, select.select and
socket.socket.sendmsg/sendto in this process; `snapshot()` returns the counts so far."""

from __future__ import annotations

import collections
import json
import os
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

COUNTS: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()
KINDS = {1: "DATA", 2: "ACK", 3: "PROBE", 4: "ECHO", 5: "REJECT"}


def _add(*keys: str) -> None:
    with _lock:
        for k in keys:
            COUNTS[k] += 1


def _caller(depth: int) -> str:
    f = sys._getframe(depth)
    while f is not None and ("pykka" in f.f_code.co_filename or "count_hooks" in f.f_code.co_filename):
        f = f.f_back  # type: ignore[assignment]
    if f is None:
        return "?"
    return f"{Path(f.f_code.co_filename).stem}.{f.f_code.co_qualname}"


def _kind(data: Any) -> str:
    try:
        b = bytes(data[:4]) if not isinstance(data, list) else bytes(data[0][:4])
        return KINDS.get(b[3], "other") if b[:2] == b"VS" else "other"
    except Exception:  # noqa: BLE001
        return "other"


def install() -> None:
    import pykka

    tell, ask = pykka.ActorRef.tell, pykka.ActorRef.ask

    def counted_tell(self: Any, message: Any) -> None:
        cls = self.actor_class.__name__
        items = getattr(message, "items", None)
        name = type(message).__name__
        if name == "Inbound" and isinstance(items, tuple):
            name = "Inbound[" + ",".join(sorted({type(getattr(i, 'msg', i)).__name__ for i in items})) + "]"
        elif name in ("ClientIn", "PeerIn"):
            name = f"{name}({type(message.msg).__name__})"
        empty = self.actor_inbox.empty()
        _add("tell", f"tell {cls} <- {name}", f"tell-from {_caller(2)} -> {cls}",
             *(("tell-to-idle-inbox",) if empty else ()))
        tell(self, message)

    def counted_ask(self: Any, message: Any, *a: Any, **k: Any) -> Any:
        _add("ask", f"ask {self.actor_class.__name__} <- {type(message).__name__}")
        return ask(self, message, *a, **k)

    pykka.ActorRef.tell = counted_tell  # type: ignore[method-assign]
    pykka.ActorRef.ask = counted_ask  # type: ignore[method-assign]

    notify = threading.Condition.notify

    def counted_notify(self: Any, n: int = 1) -> None:
        if self._waiters:
            _add("wakeup (notify with a waiter)")
        notify(self, n)

    threading.Condition.notify = counted_notify  # type: ignore[method-assign]

    sel = select.select

    def counted_select(r: Any, w: Any, x: Any, timeout: Any = None) -> Any:
        res = sel(r, w, x, timeout)
        if timeout != 0:
            _add("select (blocking) returned ready" if res[0] else "select (blocking) timed out")
        return res

    select.select = counted_select

    sendmsg, sendto = socket.socket.sendmsg, socket.socket.sendto

    def counted_sendmsg(self: Any, buffers: Any, anc: Any = (), *a: Any) -> Any:
        segs = 1
        for level, kind, value in anc or ():
            if (level, kind) == (17, 103):  # UDP_SEGMENT: GSO
                size = int.from_bytes(value, sys.byteorder)
                segs = -(-sum(len(b) for b in buffers) // size)
        _add("syscall sendmsg", *([f"datagram {_kind(buffers)}"] * segs))
        return sendmsg(self, buffers, anc, *a)

    def counted_sendto(self: Any, data: Any, *a: Any) -> Any:
        _add("syscall sendto", f"datagram {_kind(data)}")
        return sendto(self, data, *a)

    socket.socket.sendmsg = counted_sendmsg  # type: ignore[method-assign]
    socket.socket.sendto = counted_sendto  # type: ignore[method-assign]

    from transport import udp

    many = getattr(udp.Transport, "send_many", None)
    if many is not None:  # send() is send_many() of one
        def counted_many(self: Any, items: Any, **kw: Any) -> Any:
            _add(*(f"message sent {type(msg).__name__}" for _, msg, _ in items))
            return many(self, items, **kw)

        udp.Transport.send_many = counted_many  # type: ignore[attr-defined]
    else:  # code before send_many
        send = udp.Transport.send

        def counted_send(self: Any, addr: Any, msg: Any, **kw: Any) -> Any:
            _add(f"message sent {type(msg).__name__}")
            return send(self, addr, msg, **kw)

        udp.Transport.send = counted_send  # type: ignore[method-assign]

    poke = udp.Transport._poke

    def counted_poke(self: Any) -> None:
        _add("reader poked (wake-up byte)")
        poke(self)

    udp.Transport._poke = counted_poke  # type: ignore[method-assign]


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(COUNTS)


def dump_periodically(folder: str, every_s: float = 0.1) -> None:
    path = Path(folder) / f"{os.getpid()}.json"

    def run() -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(snapshot()))
            tmp.replace(path)
            time.sleep(every_s)

    threading.Thread(target=run, name="count-dump", daemon=True).start()
