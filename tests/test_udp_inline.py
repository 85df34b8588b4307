"""Small messages delivered by the thread that completed them (no delivery-thread hop),
and the order of deliveries and send outcomes kept when the delivery thread is still busy.
`Transport._dispatch` with a stand-in transport (deterministic), then real sockets on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest
from udp_kit import CFG, Inbox, start

from transport import udp
from transport.sim import CONTROL_LIMIT, Blob, BlobCodec, Ping
from transport.udp import Delivery, SendError, Transport

pytestmark = pytest.mark.timeout(120)
ADDR = ("127.0.0.1", 1)


class _Dispatching:
    """What `Transport._dispatch` needs: subscribers, the hand-over counters, and records of
    what was delivered here and what was handed to the delivery thread."""

    _dispatch = Transport._dispatch
    _quick = Transport._quick
    _call = Transport._call
    name = "stand-in"

    def __init__(self, subs: list[tuple[Any, frozenset[int] | None, bool, bool]], busy: bool) -> None:
        self._subs = subs
        self._handed, self._ran = (1, 0) if busy else (0, 0)
        self.here: list[bytes] = []
        self.handed: list[Any] = []

    def _deliver(self, items: list[udp._Deliver]) -> None:
        self.here.extend(d.parts[0] for d in items)

    def _hand(self, message: Any) -> None:
        self.handed.append(message)


def _deliver(tag: bytes, parts: int = 1, type_code: int = 1) -> udp._Deliver:
    return udp._Deliver(ADDR, type_code, [tag] * parts)


def _call(tag: str) -> udp._Call:
    return udp._Call(lambda err: None, SendError("rejected", tag))


def test_leading_small_messages_are_delivered_here_the_rest_handed_in_order() -> None:
    t = _Dispatching([(object(), None, True, False)], busy=False)
    done = _call("x")
    big = _deliver(bytes(udp.INLINE_MAX // 2 + 1), parts=2)  # over INLINE_MAX
    work: list[udp._Deliver | udp._Call] = [_deliver(b"a"), _deliver(b"b"), done,
                                            _deliver(b"c"), big]  # fmt: skip
    t._dispatch(work)
    assert t.here == [b"a", b"b"]
    # everything from the first send outcome on stays behind it, in one hand-over
    assert len(t.handed) == 1 and t.handed[0].items == work[2:]
    t2 = _Dispatching([(object(), None, True, False)], busy=False)
    t2._dispatch([_deliver(b"a"), _deliver(b"s", parts=3), big])
    assert t2.here == [b"a", b"s"] and t2.handed == [big]  # a lone rest is not wrapped


def test_quick_done_callbacks_run_here_in_their_place_slow_ones_stop_the_run() -> None:
    t = _Dispatching([(object(), None, True, False)], busy=False)
    ran: list[str] = []
    quick = udp._Call(lambda err: ran.append(f"quick {err}"), None, True)
    slow = udp._Call(lambda err: ran.append("slow"), None)
    work: list[udp._Deliver | udp._Call] = [_deliver(b"a"), quick, _deliver(b"b"), slow,
                                            _deliver(b"c")]  # fmt: skip
    t._dispatch(work)
    assert t.here == [b"a", b"b"] and ran == ["quick None"]
    assert len(t.handed) == 1 and t.handed[0].items == [slow, work[4]]


def test_nothing_overtakes_what_the_delivery_thread_has_not_run_yet() -> None:
    t = _Dispatching([(object(), None, True, False)], busy=True)
    work: list[udp._Deliver | udp._Call] = [_deliver(b"a"), _deliver(b"b")]
    t._dispatch(work)
    assert t.here == [] and len(t.handed) == 1 and t.handed[0].items == work


def test_a_slow_callable_subscriber_keeps_its_types_on_the_delivery_thread() -> None:
    slow = (lambda d: None, frozenset({2}), False, False)
    t = _Dispatching([(object(), None, True, False), slow], busy=False)
    work: list[udp._Deliver | udp._Call] = [_deliver(b"a", type_code=1),
                                            _deliver(b"b", type_code=2),
                                            _deliver(b"c", type_code=1)]  # fmt: skip
    t._dispatch(work)
    assert t.here == [b"a"] and t.handed[0].items == work[1:]


# ----------------------------------------------------------------- real sockets
class _Threads(Inbox):
    """Keeps (thread name, message) of each delivery."""

    def entry(self, d: Delivery) -> tuple[str, Any]:
        return (threading.current_thread().name, d.msg)


class _Recorder(pykka.ThreadingActor):
    def __init__(self, sink: _Threads) -> None:
        super().__init__()
        self.sink = sink

    def on_receive(self, message: Any) -> None:
        self.sink(message)


def _idle_delivery_thread(t: Transport) -> None:
    """Wait until `t`'s delivery thread has run everything it was handed."""
    pause = threading.Event()
    for _ in range(6000):
        if t._handed == t._ran:
            return
        pause.wait(0.01)
    raise AssertionError("the delivery thread stayed busy for 60 s")


def test_one_fragment_messages_skip_the_delivery_thread(transports: list[Transport]) -> None:
    a, b = start(transports), start(transports)
    quick, slow = _Threads(), _Threads()
    b.subscribe(quick, quick=True)
    b.subscribe(slow, (Blob,))  # not quick: Blob messages go through the delivery thread
    a.send(b.address, Ping(b"small")).get(timeout=30)
    a.send(b.address, Blob(b"x" * 10)).get(timeout=30)
    slow.wait(1)  # the Blob was handed to the delivery thread (after its ACK left) ...
    _idle_delivery_thread(b)  # ... and run: else the next one rightly waits behind it
    a.send(b.address, Ping(b"y" * 300)).get(timeout=30)
    got = quick.wait(3)
    reader = f"transport-{b.name}"
    assert got[0] == (reader, Ping(b"small"))
    assert got[1][1] == Blob(b"x" * 10) and got[1][0] != reader  # a slow subscriber's type
    assert got[2] == (reader, Ping(b"y" * 300))
    assert slow.items[0][0] == got[1][0]


def test_small_messages_of_several_fragments_skip_it_large_ones_do_not(
    transports: list[Transport],
) -> None:
    a, b = start(transports), start(transports)
    sink = _Threads()
    b.subscribe(sink, quick=True)
    small = bytes(range(256)) * 20  # 4 fragments, within INLINE_MAX
    # the node's sealed reply to a small image (~22 KB, 17 fragments: issue 19) is within it too
    reply = bytes(range(256)) * (24 * 1024 // 256)
    large = bytes(range(256)) * (udp.INLINE_MAX // 256 + 1)  # over it
    assert len(small) > CFG.fragment_size
    for blob in (small, reply, large):
        a.send(b.address, Blob(blob)).get(timeout=30)
    got = sink.wait(3)
    reader = f"transport-{b.name}"
    assert got[0] == (reader, Blob(small))
    assert got[1] == (reader, Blob(reply))
    assert got[2][1] == Blob(large) and got[2][0] != reader


def test_an_actor_subscriber_gets_one_fragment_messages_in_send_order(
    transports: list[Transport],
) -> None:
    a, b = start(transports), start(transports)
    sink = _Threads()
    ref = _Recorder.start(sink)
    try:
        b.subscribe(ref)
        for i in range(50):  # one at a time: each completes before the next is sent
            a.send(b.address, Ping(b"%d" % i)).get(timeout=30)
        got = sink.wait(50)
        assert [m.data for _, m in got] == [b"%d" % i for i in range(50)]
        assert b.stats()["subscriber_errors"] == 0
    finally:
        ref.stop()


def test_a_send_outcome_still_running_holds_back_later_messages(
    transports: list[Transport],
) -> None:
    """While the delivery thread runs an `on_done` callback, a one-fragment message that
    arrives is not delivered past it: it waits its turn on the delivery thread."""
    a, b = start(transports), start(transports)
    order: list[str] = []
    cond = threading.Condition()
    entered, release = threading.Event(), threading.Event()

    def note(what: str) -> None:
        with cond:
            order.append(what)
            cond.notify_all()

    def on_done(err: SendError | None) -> None:
        entered.set()
        assert release.wait(60)
        note("done")

    a.subscribe(lambda d: note(f"msg {d.msg.data.decode()}"), quick=True)
    a.send(b.address, Ping(b"first"), on_done=on_done)
    assert entered.wait(60)  # a's delivery thread is inside on_done now
    b.send(a.address, Ping(b"later")).get(timeout=30)  # a received it (and acknowledged it)
    release.set()
    with cond:
        assert cond.wait_for(lambda: len(order) >= 2, 60), order
    assert order == ["done", "msg later"]


class _Decoding:
    """What `Transport._deliver` needs: a codec that refuses b"bad", subscribers, counters."""

    _deliver = Transport._deliver
    _call = Transport._call
    name = "stand-in"

    def __init__(self, subs: list[tuple[Any, frozenset[int] | None, bool, bool]]) -> None:
        self._subs = subs
        self._codec = BlobCodec
        self.counts: dict[str, int] = {}

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def test_a_batches_subscriber_gets_the_messages_of_a_turn_in_one_call() -> None:
    calls: list[Any] = []
    pings: list[Delivery] = []

    def boom(d: Delivery) -> None:
        raise RuntimeError("subscriber bug")

    t = _Decoding([(calls.append, None, True, True),
                   (pings.append, frozenset({Ping.TYPE}), True, False),
                   (boom, frozenset({Blob.TYPE}), True, False)])  # fmt: skip
    t._deliver([udp._Deliver(ADDR, Ping.TYPE, [b"p1"]),
                udp._Deliver(ADDR, Blob.TYPE, [b"b", b"1"]),
                udp._Deliver(ADDR, Ping.TYPE, [b"x" * (CONTROL_LIMIT + 1)]),
                udp._Deliver(ADDR, Ping.TYPE, [b"p2"])])  # fmt: skip
    assert calls == [[Delivery(ADDR, Ping(b"p1")), Delivery(ADDR, Blob(b"b1")),
                      Delivery(ADDR, Ping(b"p2"))]]  # fmt: skip
    assert pings == [Delivery(ADDR, Ping(b"p1")), Delivery(ADDR, Ping(b"p2"))]
    assert t.counts == {"bad_messages": 1, "subscriber_errors": 1}


def test_a_batches_subscriber_on_real_sockets_gets_every_message_once(
    transports: list[Transport],
) -> None:
    a, b = start(transports), start(transports)
    calls: list[list[Delivery]] = []
    cond = threading.Condition()

    def on_batch(ds: list[Delivery]) -> None:
        with cond:
            calls.append(ds)
            cond.notify_all()

    b.subscribe(on_batch, batches=True)
    futs = [a.send(b.address, Ping(b"%d" % i)) for i in range(200)]
    futs.append(a.send(b.address, Blob(bytes(udp.INLINE_MAX + 1))))  # the delivery thread
    for f in futs:
        f.get(timeout=60)
    with cond:
        assert cond.wait_for(lambda: sum(map(len, calls)) >= 201, 60)
    got = [d.msg for ds in calls for d in ds]
    want = [Ping(b"%d" % i) for i in range(200)] + [Blob(bytes(udp.INLINE_MAX + 1))]
    assert sorted(map(repr, got)) == sorted(map(repr, want))
    assert all(isinstance(ds, list) and ds for ds in calls)


def test_a_quick_done_callback_runs_on_the_reader_thread(transports: list[Transport]) -> None:
    a, b = start(transports), start(transports)
    threads: dict[str, str] = {}
    cond = threading.Condition()

    def done(tag: str) -> Any:
        def on_done(err: SendError | None) -> None:
            with cond:
                threads[tag] = threading.current_thread().name
                cond.notify_all()
        return on_done

    a.send(b.address, Ping(b"1"), on_done=done("quick"), quick_done=True).get(timeout=30)
    a.send(b.address, Ping(b"2"), on_done=done("plain")).get(timeout=30)
    with cond:
        assert cond.wait_for(lambda: len(threads) == 2, 60)
    assert threads["quick"] == f"transport-{a.name}"
    assert threads["plain"].startswith("TransportActor")
