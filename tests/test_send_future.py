"""transport.future.SendFuture: the future a send returns behaves as pykka's ThreadingFuture."""

from __future__ import annotations

import queue
import threading

import pykka
import pytest

from transport.errors import SendError
from transport.future import SendFuture

pytestmark = pytest.mark.timeout(30)


def test_a_set_future_gives_none_to_every_get():
    fut = SendFuture()
    fut.set(None)
    assert fut.get() is None
    assert fut.get(timeout=0) is None


def test_get_waits_for_the_outcome_set_on_another_thread():
    fut = SendFuture()
    started = threading.Event()
    got: list[object] = []

    def waiter() -> None:
        started.set()
        got.append(fut.get(timeout=20))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    assert started.wait(10)
    assert got == []  # nothing set yet: nobody returned
    fut.set(None)
    for t in threads:
        t.join(20)
    assert got == [None, None, None]  # every waiter passed the latch, not only the first


def test_get_times_out_while_nothing_is_set():
    fut = SendFuture()
    with pytest.raises(pykka.Timeout):
        fut.get(timeout=0.01)
    with pytest.raises(pykka.Timeout):
        fut.get(timeout=0)
    fut.set(None)  # a timed-out get leaves the future usable
    assert fut.get(timeout=0) is None


def test_an_error_is_raised_by_every_get():
    fut = SendFuture()
    err = SendError("unacknowledged", "no acknowledgement for 5 s")
    fut.set_exception((SendError, err, None))
    for _ in range(2):
        with pytest.raises(SendError) as info:
            fut.get(timeout=1)
        assert info.value is err


def test_set_exception_without_arguments_takes_the_exception_being_handled():
    fut = SendFuture()
    try:
        raise ValueError("boom")
    except ValueError:
        fut.set_exception()
    with pytest.raises(ValueError, match="boom"):
        fut.get()


def test_a_future_is_settled_once():
    fut = SendFuture()
    fut.set(None)
    with pytest.raises(queue.Full):
        fut.set(None)
    with pytest.raises(queue.Full):
        fut.set_exception((SendError, SendError("rejected", "x"), None))
    assert fut.get() is None  # the first outcome stays


def test_pykka_helpers_work_on_it():
    a, b = SendFuture(), SendFuture()
    mapped = a.map(lambda v: "acknowledged" if v is None else v)
    a.set(None)
    b.set(None)
    assert mapped.get(timeout=1) == "acknowledged"
    assert pykka.get_all([a, b], timeout=1) == [None, None]
