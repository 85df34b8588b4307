"""CallFuture (actors.client.cloud): a call's future behaves as the pykka future it replaces."""

from __future__ import annotations

import queue
import sys
import threading

import pykka
import pytest

from actors.client.cloud import CallFuture
from actors.core.calls import CallError


def test_a_value_set_from_another_thread_is_got_and_got_again() -> None:
    fut = CallFuture()
    with pytest.raises(pykka.Timeout):
        fut.get(timeout=0.01)
    threading.Thread(target=fut.set, args=("reply",)).start()
    assert fut.get(timeout=None) == "reply"
    assert fut.get(timeout=0) == "reply"


def test_an_exception_is_raised_by_every_get_and_a_second_result_is_refused() -> None:
    fut = CallFuture()
    try:
        raise CallError("busy", "alice#1 is in flight")
    except CallError:
        fut.set_exception(exc_info=sys.exc_info())
    for _ in range(2):
        with pytest.raises(CallError, match="in flight"):
            fut.get(timeout=1)
    with pytest.raises(queue.Full):
        fut.set("late")
    with pytest.raises(queue.Full):
        fut.set_exception(exc_info=(CallError, CallError("closed", "closed"), None))
    assert isinstance(fut, pykka.Future)
