"""The client's call table (actors.core.calls.CallTable) with scripted nodes and a fake clock.

Ported from the tests of the first client (tests/test_rpc.py, `Caller` with real time): each
fake node answers an attempt from a script, a test fixes who answers what and when, and the
clock only moves when the test moves it. The retry rules of issue 17 (no resend while the
transport moves the request or a node holds it) have tests of their own at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from actors.core.calls import (
    DUPLICATES_KEPT,
    Answered,
    CallError,
    CallTable,
    Duplicate,
    Effect,
    Failed,
    Retrying,
    Send,
)
from codec.messages import Ack, EncryptReply, ErrorReply, Message

NODES = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
RID = "alice#7"
Answer = Callable[[int], Message | None]  # attempt -> reply, or silence


def refuse(attempt: int) -> Message:
    return ErrorReply(rid=RID, code="bad_token", message="no valid session", retryable=False)


def busy(attempt: int) -> Message:
    return ErrorReply(rid=RID, code="not_in_majority", message="no majority", retryable=True)


def ack(attempt: int) -> Message:
    return Ack(rid=RID)


def silent(attempt: int) -> None:
    return None


class Script:
    """A CallTable whose node k answers with answers[k]; `late` nodes answer after the others.

    Sends are completed by the scripted transport: a silent node's send fails (its transport
    never acknowledged), an answering node's send is acknowledged before it answers."""

    def __init__(self, answers: list[Answer], *, retry_s: float = 0.2, deadline_s: float = 1.0,
                 late: tuple[int, ...] = ()) -> None:
        self.table = CallTable(retry_s=retry_s, deadline_s=deadline_s)
        self.answers = answers
        self.late = late
        self.now = 0.0
        self.attempts: list[int] = []
        self.ended: list[Answered | Failed] = []
        self.notices: list[Retrying] = []

    def run(self, effects: list[Effect]) -> None:
        pending: list[tuple[tuple[str, int], Message]] = []
        late: list[tuple[tuple[str, int], Message]] = []
        for e in effects:
            if isinstance(e, Send):
                self.attempts.append(e.attempt)
                k = NODES.index(e.addr)
                reply = self.answers[k](e.attempt)
                self.table.send_done(e.rid, e.attempt, e.addr, reply is not None, self.now)
                if reply is not None:
                    (late if k in self.late else pending).append((e.addr, reply))
            elif isinstance(e, Retrying):
                self.notices.append(e)
            else:
                self.ended.append(e)
        for addr, reply in pending + late:
            _ours, more = self.table.on_reply(addr, reply, self.now)
            self.run(more)

    def call(self, step: float = 0.01, limit_s: float = 120.0) -> Message:
        self.run(self.table.start(RID, lambda a: Ack(rid=RID), NODES, self.now))
        while not self.ended:
            assert self.now < limit_s, "the call never ended"
            self.now = round(self.now + step, 6)
            self.run(self.table.tick(self.now))
        end = self.ended[0]
        if isinstance(end, Failed):
            raise end.error
        return end.reply


def test_one_node_refusing_first_does_not_fail_a_call_another_node_accepts() -> None:
    s = Script([refuse, ack, ack], retry_s=5.0, late=(1, 2))  # node 1 refuses first
    assert isinstance(s.call(), Ack)


def test_one_refusal_and_one_acceptance_with_a_node_down_is_accepted() -> None:
    s = Script([refuse, silent, ack], retry_s=5.0, late=(2,))
    assert isinstance(s.call(), Ack)


def test_a_majority_refusing_is_the_answer_at_once() -> None:
    s = Script([refuse, refuse, silent], retry_s=5.0, deadline_s=10.0)
    with pytest.raises(CallError) as err:
        s.call()
    assert err.value.code == "bad_token" and not err.value.retryable
    assert s.now == 0.0  # no retry interval waited
    assert s.attempts == [0, 0, 0]


def test_every_node_erring_with_one_refusal_is_a_refusal() -> None:
    s = Script([busy, refuse, busy], retry_s=5.0, deadline_s=10.0)
    with pytest.raises(CallError) as err:
        s.call()
    assert err.value.code == "bad_token"
    assert s.attempts == [0, 0, 0]


def test_a_lone_refusal_with_the_others_silent_fails_at_the_deadline() -> None:
    s = Script([refuse, silent, silent], retry_s=0.1, deadline_s=0.45)
    with pytest.raises(CallError) as err:
        s.call()
    assert err.value.code == "bad_token" and not err.value.retryable
    assert s.now >= 0.45  # retried (with the same rid) until the deadline, not failed at once
    assert max(s.attempts) >= 2


def test_retryable_refusals_from_every_node_back_off_then_succeed() -> None:
    def later(attempt: int) -> Message:
        return ack(attempt) if attempt >= 1 else busy(attempt)

    s = Script([busy, later, busy], retry_s=0.1, deadline_s=5.0)
    assert isinstance(s.call(), Ack)
    assert s.attempts == [0, 0, 0, 1, 1, 1]
    assert s.table.stats.retries == 1
    assert s.now == pytest.approx(0.1 / 4, abs=0.011)  # backed off a quarter of retry_s


def test_retryable_refusals_until_the_deadline_fail_as_retryable() -> None:
    s = Script([busy, busy, busy], retry_s=0.05, deadline_s=0.3)
    with pytest.raises(CallError) as err:
        s.call()
    assert err.value.code == "not_in_majority" and err.value.retryable


def test_a_second_reply_to_an_answered_call_is_counted_not_accepted() -> None:
    s = Script([ack, ack, ack])
    assert isinstance(s.call(), Ack)
    assert s.table.stats.replies_accepted == 1
    assert s.table.stats.duplicates == 2


# ---- the retry rules of issue 17 ------------------------------------------------------------
def started(table: CallTable, now: float = 0.0, **kw: float) -> list[Send]:
    effects = table.start(RID, lambda a: Ack(rid=RID), NODES, now, **kw)
    return [e for e in effects if isinstance(e, Send)]


def test_no_retry_while_the_transport_still_moves_the_request() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0)
    sends = started(t)
    assert t.tick(10.0) == []  # every send is still moving: the transport retransmits
    t.send_done(RID, 0, sends[0].addr, False, 10.5)
    t.send_done(RID, 0, sends[1].addr, False, 10.5)
    assert t.tick(10.6) == []  # one is still moving
    t.send_done(RID, 0, sends[2].addr, False, 10.7)
    effects = t.tick(10.8)
    assert [type(e) for e in effects] == [Retrying, Send, Send, Send]
    assert all(e.attempt == 1 for e in effects if isinstance(e, Send))


def test_no_retry_while_bytes_move_on_the_transport() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0)
    for s in started(t):
        t.send_done(RID, 0, s.addr, False, 0.1)
    assert t.tick(3.0, moving=True) == []
    assert len([e for e in t.tick(3.1) if isinstance(e, Send)]) == 3


def test_an_acknowledged_request_is_not_resent_until_the_hold_has_passed() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0, hold_s=8.0)
    sends = started(t)
    t.send_done(RID, 0, sends[0].addr, True, 1.0)  # a node holds it (sealing, say)
    t.send_done(RID, 0, sends[1].addr, False, 5.0)
    t.send_done(RID, 0, sends[2].addr, False, 5.0)
    assert t.tick(2.5) == [] and t.tick(8.9) == []
    effects = t.tick(9.0)  # the node may have lost it (a restart): the same rid again
    assert [e.attempt for e in effects if isinstance(e, Send)] == [1, 1, 1]


def test_a_call_holds_per_call_patience() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0)
    sends = started(t, hold_s=20.0)
    for s in sends:
        t.send_done(RID, 0, s.addr, True, 1.0)
    assert t.tick(20.9) == []
    assert any(isinstance(e, Send) for e in t.tick(21.0))


def test_silence_at_join_fails_fast_as_no_cloud() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0)
    started(t, silent_s=3.0)
    assert t.tick(2.9) == []
    [failed] = t.tick(3.0)
    assert isinstance(failed, Failed) and failed.error.code == "no_cloud"


def test_an_acknowledgement_is_a_sign_of_life() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0)
    sends = started(t, silent_s=3.0)
    t.send_done(RID, 0, sends[1].addr, True, 0.01)
    assert t.tick(3.0) == []  # a node is there, busy syncing say: no "no cloud"


def test_a_cloud_known_silent_fails_the_calls_nobody_acknowledged_in_seconds() -> None:
    t = CallTable(retry_s=100.0, deadline_s=60.0)  # no retry falls due in this test
    started(t)  # to the nodes at 0, nothing heard since
    t.start("alice#8", lambda a: Ack(rid="alice#8"), NODES, 0.0)
    t.send_done("alice#8", 0, NODES[0], True, 0.5)  # a node has this one
    peer = ("127.0.0.1", 9)  # a call to a peer, not to the nodes
    t.start("alice#9", lambda a: Ack(rid="alice#9"), [peer], 0.0)
    t.start("alice#10", lambda a: Ack(rid="alice#10"), NODES, 9.0)  # a second before it is known
    before = t.next_deadline()
    assert before is not None and before > 12.0
    t.expect_answers_within(NODES, 3.0, now=10.0)
    assert t.next_deadline() == 10.0  # silent for 10 s already: the next tick ends it
    [failed] = [e for e in t.tick(10.0) if isinstance(e, Failed)]
    assert failed.rid == RID and failed.error.code == "no_cloud"
    assert t.next_deadline() == 12.0  # alice#10: 3 s after its start
    t.expect_answers_within(NODES, 3.0, now=11.0)  # said again: the limit stands
    assert [e for e in t.tick(11.9) if isinstance(e, Failed)] == []
    [failed] = [e for e in t.tick(12.0) if isinstance(e, Failed)]
    assert failed.rid == "alice#10" and failed.error.code == "no_cloud"
    assert "alice#8" in t and "alice#9" in t  # acknowledged, or not the nodes': their deadlines
    assert t.next_deadline() == before


def test_cancel_fails_the_call_and_nothing_more_is_sent() -> None:
    t = CallTable(retry_s=0.1, deadline_s=60.0)
    started(t)
    [failed] = t.cancel(RID, 0.5)
    assert isinstance(failed, Failed) and failed.error.code == "cancelled"
    assert RID not in t and t.tick(30.0) == []
    ours, effects = t.on_reply(NODES[0], Ack(rid=RID), 30.0)  # a late answer: a duplicate
    assert ours and t.stats.duplicates == 1
    assert effects == [Duplicate(RID, 1, NODES[0], None, None, 0.0, 30.0, 29.5, "Ack")]


def test_a_request_id_in_flight_is_not_started_twice() -> None:
    t = CallTable(retry_s=2.0, deadline_s=60.0)
    started(t)
    [failed] = t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0)
    assert isinstance(failed, Failed) and failed.error.code == "busy"
    assert RID in t


# ---- quorum calls (issue 15: stored means on a majority's disk; a join reads a majority) -------
def test_a_quorum_call_waits_for_a_majority_of_replies_and_returns_them_all() -> None:
    t = CallTable(retry_s=1.0, deadline_s=60.0)
    sends = t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0, quorum=2)
    assert len([e for e in sends if isinstance(e, Send)]) == 3
    done, eff = t.on_reply(NODES[0], Ack(rid=RID), 0.1)
    assert done and eff == []  # one node's commit is not enough
    done, eff = t.on_reply(NODES[0], Ack(rid=RID), 0.15)  # the same node again: still one
    assert eff == []
    done, eff = t.on_reply(NODES[2], Ack(rid=RID), 0.2)
    (answered,) = eff
    assert isinstance(answered, Answered) and len(answered.replies) == 2
    t.on_reply(NODES[1], Ack(rid=RID), 0.3)  # the third commit comes later: expected
    assert t.stats.duplicates == 0 and t.stats.replies_accepted == 1


def test_a_quorum_call_with_one_node_acking_fails_at_its_deadline_not_acknowledged() -> None:
    """The issue 15 case: only one node can be reached and store the update; the client is never
    told "stored" (it was told so before, and a crash lost the update)."""
    t = CallTable(retry_s=1.0, deadline_s=5.0)
    t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0, quorum=2)
    t.on_reply(NODES[2], Ack(rid=RID), 0.1)
    ended: list[Effect] = []
    now = 0.0
    while not ended and now < 10.0:
        now += 0.5
        for e in t.tick(now):
            if isinstance(e, Send) and e.addr == NODES[2]:
                t.on_reply(NODES[2], Ack(rid=RID), now)  # it keeps acknowledging its copy
            if isinstance(e, (Answered, Failed)):
                ended.append(e)
    (failed,) = ended
    assert isinstance(failed, Failed) and failed.error.code == "unreachable"
    assert str(failed.error) == (
        "only 1 of the 2 nodes a majority needs answered (the others are unreachable): not done"
    )  # not "no node of the cloud answered": node 3 did


def test_a_retryable_refusal_after_the_answer_is_no_duplicate_a_refusal_is() -> None:
    # a node restarted while the client's transport still retransmitted requests to it: it
    # refuses them ("not in majority") after the others answered; that is no second answer
    t = CallTable(retry_s=1.0, deadline_s=60.0)
    t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0)
    t.on_reply(NODES[0], Ack(rid=RID), 0.1)
    ours, effects = t.on_reply(NODES[1], busy(0), 3.0)
    assert ours and effects == [] and t.stats.duplicates == 0 and t.stats.replies_received == 2
    t.on_reply(NODES[2], refuse(0), 3.1)
    assert t.stats.duplicates == 1  # a final answer from a second node is one


def test_id_in_use_after_the_answer_is_no_duplicate() -> None:
    """A node that knew the request only from its peers' Done refuses a late copy of it with
    `id_in_use` (actors.core.encrypt_flow): that repeats nothing, so it is no duplicate; any
    other refusal after the answer still is one."""
    t = CallTable(retry_s=1.0, deadline_s=60.0)
    t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0)
    t.on_reply(NODES[0], Ack(rid=RID), 0.1)
    in_use = ErrorReply(rid=RID, code="id_in_use", retryable=False, message="answered already")
    ours, effects = t.on_reply(NODES[1], in_use, 0.2)
    assert ours and effects == [] and t.stats.duplicates == 0 and t.stats.replies_received == 2
    t.on_reply(NODES[2], refuse(0), 0.3)
    assert t.stats.duplicates == 1


def test_the_last_refusal_of_a_call_a_majority_refused_is_no_duplicate_a_seal_is() -> None:
    """Two nodes' refusals fail the call; the third node's, arriving after, repeats the answer
    (no node served the request twice), so it is no duplicate. A good reply after the refusal
    is still one: a node served what the cloud had refused."""
    t = CallTable(retry_s=1.0, deadline_s=60.0)
    t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0)
    t.on_reply(NODES[0], refuse(0), 0.1)
    _, effects = t.on_reply(NODES[1], refuse(0), 0.2)
    assert [type(e) for e in effects] == [Failed]
    ours, effects = t.on_reply(NODES[2], refuse(0), 0.3)
    assert ours and effects == [] and t.stats.duplicates == 0 and t.stats.replies_received == 3
    _, effects = t.on_reply(NODES[2], Ack(rid=RID), 0.4)
    assert [type(e) for e in effects] == [Duplicate] and t.stats.duplicates == 1


def test_a_duplicate_says_which_call_attempt_and_nodes_so_it_can_be_traced() -> None:
    """Issue 19: a rare second seal was counted but not traceable. The duplicate names the
    request id, the attempts the call had sent, the replying and the accepted node, and when."""
    t = CallTable(retry_s=0.1, deadline_s=60.0, hold_s=0.1)

    def reply(node: int) -> EncryptReply:
        return EncryptReply(rid=RID, node=node, sealed=b"png", seal_ms=1.0, wait_ms=2.0)

    for e in started(t, now=1.0):
        t.send_done(RID, 0, e.addr, False, 1.05)  # not delivered: attempt 1 follows
    retry = [e for e in t.tick(1.2) if isinstance(e, Send)]
    assert {e.attempt for e in retry} == {1}
    ours, effects = t.on_reply(NODES[0], reply(1), 1.25)
    assert ours and isinstance(effects[0], Answered)
    ours, effects = t.on_reply(NODES[1], reply(2), 1.3)
    assert ours and effects == [Duplicate(RID, 2, NODES[1], 2, 1, 1.0, 1.3, pytest.approx(0.05),
                                          "EncryptReply")]
    assert t.stats.duplicate_log == effects and t.stats.duplicates == 1
    t.on_reply(NODES[1], busy(0), 1.4)  # a retryable error answers nothing: no duplicate
    assert t.stats.duplicate_log == effects


def test_the_duplicate_log_keeps_the_latest() -> None:
    t = CallTable(retry_s=1.0, deadline_s=60.0)
    for i in range(DUPLICATES_KEPT + 5):
        rid = f"alice#{i}"
        t.start(rid, lambda a, rid=rid: Ack(rid=rid), NODES, 0.0)
        t.on_reply(NODES[0], Ack(rid=rid), 0.1)
        t.on_reply(NODES[1], Ack(rid=rid), 0.2)
    assert t.stats.duplicates == DUPLICATES_KEPT + 5
    assert [d.rid for d in t.stats.duplicate_log] == [
        f"alice#{i}" for i in range(5, DUPLICATES_KEPT + 5)]


def test_a_plain_call_still_counts_a_second_reply_as_a_duplicate() -> None:
    t = CallTable(retry_s=1.0, deadline_s=60.0)
    t.start(RID, lambda a: Ack(rid=RID), NODES, 0.0)
    t.on_reply(NODES[0], Ack(rid=RID), 0.1)
    t.on_reply(NODES[1], Ack(rid=RID), 0.2)
    assert t.stats.duplicates == 1
