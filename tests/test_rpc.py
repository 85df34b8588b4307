"""The client's multicast call (actors.client.rpc.Caller) with scripted nodes: each fake node answers
synchronously from the send callable, so a test fixes who answers what, in which order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from actors.client.rpc import Caller, CallError
from codec.messages import Ack, ErrorReply, Message

NODES = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
Answer = Callable[[int, str], Message | None]  # (attempt, rid) -> reply or silence
LATE_S = 0.05


def refuse(attempt: int, rid: str) -> Message:
    return ErrorReply(rid=rid, code="bad_token", message="no valid session", retryable=False)


def busy(attempt: int, rid: str) -> Message:
    return ErrorReply(rid=rid, code="not_in_majority", message="no majority", retryable=True)


def ack(attempt: int, rid: str) -> Message:
    return Ack(rid=rid)


def late_ack(attempt: int, rid: str) -> Message:
    return Ack(rid=rid)


def silent(attempt: int, rid: str) -> None:
    return None


def caller_for(answers: list[Answer], *, retry_s: float = 0.2,
               deadline_s: float = 1.0) -> tuple[Caller, list[int]]:  # fmt: skip
    """A Caller whose node k answers with answers[k]; returns it and the list of attempts sent."""
    attempts: list[int] = []
    timers: list[threading.Timer] = []

    def send(addr: tuple[str, int], msg: Message) -> None:
        attempt = current[-1]
        attempts.append(attempt)
        answer = answers[NODES.index(addr)]
        reply = answer(attempt, msg.rid)  # type: ignore[attr-defined]
        if reply is None:
            return
        if answer is late_ack:  # delivered from another thread, after the refusals
            timer = threading.Timer(LATE_S, caller.deliver, (reply,))
            timers.append(timer)
            timer.start()
        else:
            caller.deliver(reply)

    caller = Caller(send, retry_s=retry_s, deadline_s=deadline_s)
    return caller, attempts


current: list[int] = [0]  # the attempt being sent (set by `call`'s build)


def call(caller: Caller) -> Message:
    def build(attempt: int) -> Message:
        current.append(attempt)
        return Ack(rid="alice#7")

    return caller.call("alice#7", build, NODES)


def test_one_node_refusing_first_does_not_fail_a_call_another_node_accepts() -> None:
    caller, _ = caller_for([refuse, late_ack, late_ack], retry_s=5.0)  # node 1 refuses first
    assert isinstance(call(caller), Ack)


def test_one_refusal_and_one_acceptance_with_a_node_down_is_accepted() -> None:
    caller, _ = caller_for([refuse, silent, late_ack], retry_s=5.0)
    assert isinstance(call(caller), Ack)


def test_a_majority_refusing_is_the_answer_at_once() -> None:
    caller, attempts = caller_for([refuse, refuse, silent], retry_s=5.0, deadline_s=10.0)
    start = time.monotonic()
    with pytest.raises(CallError) as err:
        call(caller)
    assert err.value.code == "bad_token" and not err.value.retryable
    assert time.monotonic() - start < 1.0  # no retry interval waited
    assert attempts == [0, 0, 0]


def test_every_node_erring_with_one_refusal_is_a_refusal() -> None:
    caller, attempts = caller_for([busy, refuse, busy], retry_s=5.0, deadline_s=10.0)
    with pytest.raises(CallError) as err:
        call(caller)
    assert err.value.code == "bad_token"
    assert attempts == [0, 0, 0]


def test_a_lone_refusal_with_the_others_silent_fails_at_the_deadline() -> None:
    caller, attempts = caller_for([refuse, silent, silent], retry_s=0.1, deadline_s=0.45)
    start = time.monotonic()
    with pytest.raises(CallError) as err:
        call(caller)
    took = time.monotonic() - start
    assert err.value.code == "bad_token" and not err.value.retryable
    assert took >= 0.4  # retried (with the same rid) until the deadline, not failed at once
    assert max(attempts) >= 2


def test_retryable_refusals_from_every_node_back_off_then_succeed() -> None:
    def later(attempt: int, rid: str) -> Message:
        return ack(attempt, rid) if attempt >= 1 else busy(attempt, rid)

    caller, attempts = caller_for([busy, later, busy], retry_s=0.1, deadline_s=5.0)
    assert isinstance(call(caller), Ack)
    assert attempts == [0, 0, 0, 1, 1, 1]
    assert caller.stats.retries == 1


def test_retryable_refusals_until_the_deadline_fail_as_retryable() -> None:
    caller, _ = caller_for([busy, busy, busy], retry_s=0.05, deadline_s=0.3)
    with pytest.raises(CallError) as err:
        call(caller)
    assert err.value.code == "not_in_majority" and err.value.retryable


def test_a_second_reply_to_an_answered_call_is_counted_not_accepted() -> None:
    caller, _ = caller_for([ack, ack, ack])
    assert isinstance(call(caller), Ack)
    assert caller.stats.replies_accepted == 1
    assert caller.stats.duplicates == 2
