"""Election timestamps of one node process, for `python -m benchmarks.election_trace` only.

Loaded by Python at start-up (this directory is first on the node's PYTHONPATH, set by that
benchmark alone) when VEILSHARE_TRACE names a file: it wraps a few methods of the node's actors
to note (time.monotonic(), event, rid, detail) and appends them to that file every 0.2 s. The
monotonic clock is the host's, so the events of the three node processes line up. Not used by
the node otherwise (nothing in the package imports it).
"""

from __future__ import annotations

import os
import threading
import time

PATH = os.environ.get("VEILSHARE_TRACE")


def _install(path: str) -> None:
    from actors.core import election as el
    from actors.core.encrypt_flow import EncryptService
    from actors.node import election_actor as ea
    from actors.node.router import Router
    from actors.node.signals import PeerIn, StartElection
    from codec.messages import ElectionBatch, EncryptRequest

    events: list[tuple[float, str, str, str]] = []
    note = events.append
    clock = time.monotonic
    kinds = {el.Election: "election", ea.ElectionOk: "ok", ea.Claim: "claim",
             ea.Coordinator: "coordinator"}

    def wrap(cls: type, name: str, before: object) -> None:
        inner = getattr(cls, name)

        def outer(self: object, *args: object) -> object:
            before(self, *args)  # type: ignore[operator]
            return inner(self, *args)

        setattr(cls, name, outer)

    def peer_items(msg: object) -> list[tuple[str, str]]:
        if isinstance(msg, ElectionBatch):
            return [(i.kind, i.rid) for i in msg.items]
        kind = kinds.get(type(msg))
        return [(kind, msg.rid)] if kind else []  # type: ignore[attr-defined]

    def rx_client(self: object, ds: list) -> None:
        t = clock()
        for d in ds:
            if isinstance(d.msg, EncryptRequest):
                note((t, "rx_req", d.msg.rid, ""))

    def rx_peer(self: object, ds: list) -> None:
        t = clock()
        for d in ds:
            sender = self.peer_ids.get(d.addr)  # type: ignore[attr-defined]
            for kind, rid in peer_items(d.msg):
                note((t, "rx_" + kind, rid, str(sender)))

    def el_handle(self: object, m: object) -> None:
        t = clock()
        if isinstance(m, StartElection):
            note((t, "el_start", m.rid, ""))
        elif isinstance(m, PeerIn):
            for kind, rid in peer_items(m.msg):
                note((t, "in_" + kind, rid, str(m.sender)))

    def el_flush(self: object) -> None:
        t = clock()
        for dest, msgs in self.outbox.items():  # type: ignore[attr-defined]
            for m in msgs:
                note((t, "tx_" + kinds[type(m)], m.rid, str(dest)))

    def el_run(self: object, out: object) -> None:
        t = clock()
        for ev in out.events:  # type: ignore[attr-defined]
            if isinstance(ev, el.Won):
                note((t, "won", ev.rid, ""))

    # socket calls, for the link delay's parts (no rid: the benchmark pairs them with the
    # election's sends by port and time): "sock_send" before a send, "sock_recv" after a recv
    from transport.sockets import DatagramSocket

    send, recv = DatagramSocket.send, DatagramSocket.recv

    def sock_send(self: DatagramSocket, out: list) -> int:
        note((clock(), "sock_send", "-", f"{self.io.getsockname()[1]}>"
              + ",".join(str(addr[1]) for addr, _ in out)))
        return send(self, out)

    def sock_recv(self: DatagramSocket, limit: int) -> tuple[list, int]:
        got = recv(self, limit)
        if got[0]:
            note((clock(), "sock_recv", "-", f"{self.io.getsockname()[1]}<"
                  + ",".join(str(addr[1]) for addr, _ in got[0])))
        return got

    # the reader's wait (Reactor._wait): "wait_in" on entry with the poll it may do (us; 0:
    # it sleeps in select at once), "wait_out" on return: whether a peer's datagram found the
    # reader waiting, and how long it took to come back
    from transport.udp import Reactor

    wait = Reactor._wait

    def reader_wait(fds: list[int], timeout: float | None, spin: float) -> list[int]:
        note((clock(), "wait_in", "-", str(round(spin * 1e6))))
        ready = wait(fds, timeout, spin)
        note((clock(), "wait_out", "-", ""))
        return ready

    Reactor._wait = staticmethod(reader_wait)  # type: ignore[method-assign]
    DatagramSocket.send = sock_send  # type: ignore[method-assign]
    DatagramSocket.recv = sock_recv  # type: ignore[method-assign]
    wrap(Router, "client_batch", rx_client)
    wrap(Router, "peer_batch", rx_peer)
    wrap(ea.ElectionActor, "handle", el_handle)
    wrap(ea.ElectionActor, "_flush", el_flush)
    wrap(ea.ElectionActor, "_run", el_run)
    wrap(EncryptService, "on_request", lambda s, c, m, now: note((clock(), "flow_req", m.rid, "")))
    wrap(EncryptService, "on_won", lambda s, rid: note((clock(), "flow_won", rid, "")))
    wrap(EncryptService, "_seal", lambda s, c: note((clock(), "seal", c.rid, "")))

    def dump() -> None:
        while True:
            time.sleep(0.2)
            n = len(events)
            if not n:
                continue
            chunk = events[:n]
            del events[:n]
            with open(path, "a") as fh:
                fh.writelines(f"{t:.6f} {ev} {rid} {x}\n" for t, ev, rid, x in chunk)

    threading.Thread(target=dump, name="trace-dump", daemon=True).start()


if PATH:
    _install(PATH)
