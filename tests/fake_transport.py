"""A test double of `transport.udp.Transport` for actor-level unit tests (no sockets).

`FakeTransport` has the same public surface the actors use (`send`, `subscribe`, `progress`,
`stats`, `set_policy`, `stop`, `address`, `epoch`) and:
- records every send as a `Sent` (address, message, deadline), in order, thread-safe;
- injects deliveries with `deliver(addr, msg)`: an actor ref subscriber gets `tell(Delivery)`,
  a callable is called, exactly as the real transport does (types filter included);
- completes or fails each send: `auto` (the default "ack") resolves every send at once as
  acknowledged; `auto=None` leaves them open until the test calls `complete(sent, error)`;
  `auto="fail"` fails every send as unacknowledged (a silent peer).
- `wait_sent(pred, timeout)` waits for a send matching `pred` (no sleeps in tests).

- `on_refused(fn)` as the real transport; `refuse(addr)` calls those callbacks (an ICMP port
  unreachable from `addr`).

`FakeNetwork` links several fake transports by address: a send to an address of another
transport on the network is delivered to it (and acknowledged), unless the link is cut. A send
to a transport stopped with `closed=True` (its process killed, its host up) is refused: the
sender's `on_refused` callbacks get that address, as a real socket's error queue would tell.
Deliveries happen on the sender's thread, like a loopback with no delay.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from transport.errors import SendError
from transport.udp import Delivery

Addr = tuple[str, int]
OnDone = Callable[[SendError | None], None]


class FakeClock:
    """A monotonic clock a test moves by hand (`now`, `advance`)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, dt: float) -> None:
        with self._lock:
            self.now += dt


@dataclass
class Sent:
    addr: Addr
    msg: Any
    deadline_s: float | None
    future: pykka.Future[None]
    on_done: OnDone | None
    done: bool = False
    thread: int = field(default_factory=threading.get_ident)  # the thread that sent it


@dataclass
class FakeTransport:
    address: Addr = ("127.0.0.1", 40000)
    auto: str | None = "ack"  # "ack" | "fail" | None (the test completes each send)
    network: FakeNetwork | None = None
    epoch: int = 1
    sent: list[Sent] = field(default_factory=list)
    many: list[int] = field(default_factory=list)  # items of each send_many call
    policies: list[Any] = field(default_factory=list)
    stopped: bool = False
    closed: bool = False  # stopped and its port closed: sends to it draw port unreachable
    _refused_fns: list[Callable[[Addr], None]] = field(default_factory=list)
    _subs: list[tuple[Any, tuple[type[Any], ...] | None]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    # ---- the Transport surface ------------------------------------------------------------
    def send(
        self,
        addr: Addr,
        msg: Any,
        *,
        deadline_s: float | None = None,
        on_done: OnDone | None = None,
        quick_done: bool = False,
        prompt: bool = False,  # the real one's ACK-delay opt-out: nothing to delay here
    ) -> pykka.Future[None]:
        fut: pykka.Future[None] = pykka.ThreadingFuture()
        rec = Sent(tuple(addr), msg, deadline_s, fut, on_done)  # type: ignore[arg-type]
        with self._cond:
            self.sent.append(rec)
            self._cond.notify_all()
        if self.stopped:
            self.complete(rec, SendError("rejected", "transport stopped"))
            return fut
        reached = True
        if self.network is not None:
            reached = self.network.carry(self, rec)
        if self.auto == "ack" and reached:
            self.complete(rec, None)
        elif self.auto == "fail" or (self.auto == "ack" and not reached):
            self.complete(rec, SendError("unacknowledged", "fake: no acknowledgement"))
        return fut

    def send_many(
        self,
        items: list[tuple[Addr, Any, OnDone | None]],
        *,
        deadline_s: float | None = None,
        quick_done: bool = False,
        prompt: bool = False,
    ) -> list[pykka.Future[None]]:
        """`send` of each item, in order (recorded in `many`: the count of each call)."""
        self.many.append(len(items))
        return [self.send(addr, msg, deadline_s=deadline_s, on_done=on_done,
                          quick_done=quick_done, prompt=prompt) for addr, msg, on_done in items]

    def subscribe(
        self,
        handler: Any,
        types: tuple[type[Any], ...] | None = None,
        *,
        quick: bool = False,
        batches: bool = False,
    ) -> Callable[[], None]:
        """As Transport.subscribe (`quick` changes nothing here: `deliver` calls on the test's
        thread; a `batches` handler gets each message as a list of one)."""
        entry = (handler, types, batches)
        with self._cond:
            self._subs.append(entry)

        def unsubscribe() -> None:
            with self._cond:
                if entry in self._subs:
                    self._subs.remove(entry)

        return unsubscribe

    def on_refused(self, fn: Callable[[Addr], None]) -> None:
        with self._cond:
            self._refused_fns.append(fn)

    def progress(self) -> tuple[int, int]:
        return (0, 0)

    def stats(self) -> dict[str, int]:
        return {"sent_messages": len(self.sent)}

    def set_policy(self, policy: Any) -> None:
        self.policies.append(policy)

    def stop(self) -> None:
        self.stopped = True

    # ---- test controls --------------------------------------------------------------------
    def deliver(self, addr: Addr, msg: Any) -> None:
        """A whole message from `addr` arrives."""
        d = Delivery(tuple(addr), msg)  # type: ignore[arg-type]
        with self._cond:
            subs = list(self._subs)
        for handler, types, batches in subs:
            if types is not None and not isinstance(msg, types):
                continue
            if isinstance(handler, pykka.ActorRef):
                handler.tell(d)
            else:
                handler([d] if batches else d)

    def refuse(self, addr: Addr) -> None:
        """`addr` answered a datagram of ours with ICMP port unreachable."""
        with self._cond:
            fns = list(self._refused_fns)
        for fn in fns:
            fn(tuple(addr))  # type: ignore[arg-type]

    def complete(self, rec: Sent, error: SendError | None = None) -> None:
        """Resolve one send: acknowledged (None) or failed with `error`."""
        with self._cond:
            if rec.done:
                return
            rec.done = True
        if error is None:
            rec.future.set(None)
        else:
            rec.future.set_exception(exc_info=(type(error), error, None))
        if rec.on_done is not None:
            rec.on_done(error)

    def sends_of(self, kind: type[Any], addr: Addr | None = None) -> list[Sent]:
        with self._cond:
            return [
                s
                for s in self.sent
                if isinstance(s.msg, kind) and (addr is None or s.addr == tuple(addr))
            ]

    def wait_sent(
        self, pred: Callable[[Sent], bool], timeout: float = 10.0, count: int = 1
    ) -> list[Sent]:
        """Wait until `count` sends match `pred`; returns them (raises AssertionError on
        timeout, with what was sent)."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len([s for s in self.sent if pred(s)]) >= count, timeout=timeout
            )
            found = [s for s in self.sent if pred(s)]
        if not ok:
            kinds = [type(s.msg).__name__ for s in self.sent]
            raise AssertionError(f"expected {count} matching sends, got {len(found)}: {kinds}")
        return found

    def wait_msg(
        self,
        kind: type[Any],
        timeout: float = 10.0,
        count: int = 1,
        where: Callable[[Any], bool] = lambda m: True,
    ) -> list[Any]:
        return [
            s.msg
            for s in self.wait_sent(
                lambda s: isinstance(s.msg, kind) and where(s.msg), timeout, count
            )
        ]


class FakeNetwork:
    """Fake transports by address; `cut(a, b)` drops everything from a to b."""

    def __init__(self) -> None:
        self.by_addr: dict[Addr, FakeTransport] = {}
        self.cuts: set[tuple[Addr, Addr]] = set()
        self.lock = threading.Lock()

    def add(self, address: Addr, auto: str | None = "ack") -> FakeTransport:
        tp = FakeTransport(address=tuple(address), auto=auto, network=self)  # type: ignore[arg-type]
        self.by_addr[tp.address] = tp
        return tp

    def cut(self, a: Addr, b: Addr, both: bool = True) -> None:
        with self.lock:
            self.cuts.add((tuple(a), tuple(b)))  # type: ignore[arg-type]
            if both:
                self.cuts.add((tuple(b), tuple(a)))  # type: ignore[arg-type]

    def heal(self) -> None:
        with self.lock:
            self.cuts.clear()

    def carry(self, src: FakeTransport, rec: Sent) -> bool:
        """Deliver `rec` to its destination; False if it cannot get there."""
        dest = self.by_addr.get(rec.addr)
        with self.lock:
            cut = (src.address, rec.addr) in self.cuts
        if dest is not None and dest.closed and not cut:
            src.refuse(rec.addr)
            return False
        if dest is None or cut or dest.stopped:
            return False
        dest.deliver(src.address, rec.msg)
        return True
