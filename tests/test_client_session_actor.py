"""ClientSessionActor started for real over a FakeTransport (auto=None: the test decides each
send's outcome), with a fake clock and seeded randomness. The test moves the clock and tells the
actor Tick (`ask`, so the tick has run when it returns); no sleeps, waits on conditions only.

Covers issue 14 (retries, deadline, a lone refusal, join, heartbeats, leave), issue 16 items 1
and 4 (rejoin when the nodes forgot the session; no cloud: fail fast; one unreachable notice)
and issue 17 items 6 and 7 (no resend while the transport moves the request or a node holds it;
Ctrl-C cancels)."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.client.keys import ClientKeys
from actors.client.scope import CancelScope as Scope
from actors.client.session_actor import ClientSessionActor
from actors.client.session_messages import (
    CallResult,
    CancelScope,
    JoinCloud,
    LeaveCloud,
    SessionState,
    StartCall,
    Tick,
)
from actors.core.calls import CallError, CallStats
from actors.core.directory import token_digest
from actors.core.presence import REJOINED_NOTICE, UNREACHABLE_NOTICE
from actors.direct import DirectEntry
from codec import sharecrypt
from codec.messages import (
    Ack,
    ClientHeartbeat,
    DirectoryQuery,
    DirectoryReply,
    EncryptOffer,
    EncryptReply,
    EncryptRequest,
    ErrorReply,
    FetchPayload,
    Join,
    JoinReply,
    Leave,
    PreviewRequest,
    Update,
    UserEntry,
)
from tests.fake_transport import FakeClock, FakeTransport, Sent
from transport.errors import SendError
from transport.udp import Delivery

NODES = [("127.0.0.1", 47001), ("127.0.0.1", 47002), ("127.0.0.1", 47003)]
KEYS = ClientKeys(b"s" * 32, b"b" * 32)
ME = ("127.0.0.1", 40001)
TOKEN = b"T" * 16
NEW_TOKEN = b"N" * 16
RETRY_S, DEADLINE_S, HEARTBEAT_S = 2.0, 60.0, 3.0
LOST = SendError("unacknowledged", "fake: no acknowledgement")


@dataclass
class Rig:
    ref: pykka.ActorRef[Any]
    tp: FakeTransport
    clock: FakeClock
    state: SessionState
    stats: CallStats
    notices: list[str] = field(default_factory=list)
    peer: list[tuple[Any, Any]] = field(default_factory=list)
    rejoined: list[tuple[Update, ...]] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    entry: DirectEntry | None = None

    def on_peer(self, addr: Any, msg: Any) -> None:  # (a test may replace these two)
        self.peer.append((addr, msg))

    def notify(self, text: str) -> None:
        self.notices.append(text)

    def tick(self, advance: float = 0.0) -> None:
        self.clock.now += advance
        self.ref.ask(Tick())

    def settle(self) -> None:
        """Every message told so far has been handled (the mailbox is FIFO)."""
        self.ref.ask(Tick())  # a Tick at an unchanged clock changes nothing due

    def call(self, rid: str = "alice#1", targets: list[tuple[str, int]] | None = None,
             scope: Scope | None = None, **kw: Any) -> tuple[pykka.Future[CallResult],
                                                              queue.SimpleQueue[str]]:
        fut: pykka.Future[CallResult] = pykka.ThreadingFuture()
        notes: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.ref.tell(StartCall(
            rid, lambda a: EncryptRequest(rid=rid, image="a.png", data=b"x" * 10, attempt=a),
            tuple(targets or NODES), fut, notices=notes, scope=scope, **kw))
        self.settle()
        return fut, notes

    def sends(self, kind: type[Any], rid: str | None = None) -> list[Sent]:
        return [s for s in self.tp.sends_of(kind)
                if rid is None or getattr(s.msg, "rid", None) == rid]

    def complete(self, sends: list[Sent], error: SendError | None = None) -> None:
        for s in sends:
            self.tp.complete(s, error)
        self.settle()

    def deliver(self, addr: tuple[str, int], msg: Any) -> None:
        self.tp.deliver(addr, msg)
        self.settle()

    def join(self, token: bytes = TOKEN, updates: tuple[Update, ...] = ()) -> JoinReply:
        fut: pykka.Future[JoinReply] = pykka.ThreadingFuture()
        self.ref.tell(JoinCloud(fut))
        [join] = self.tp.wait_msg(Join, count=len(self.sends(Join)) + len(NODES))[-1:]
        self.complete([s for s in self.sends(Join) if not s.done])
        for node in NODES[:2]:  # a majority answers (a join reads what a majority holds)
            self.deliver(node, JoinReply(rid=join.rid, token=token, updates=updates))
        return fut.get(timeout=5)


@pytest.fixture
def rig() -> Iterator[Rig]:
    yield from _rig(None)


@pytest.fixture
def direct_rig() -> Iterator[Rig]:
    """As `rig`, wired as ClientSession wires it: the transport subscription and the calls go
    through the actor's DirectEntry (`rig.entry`)."""
    yield from _rig(DirectEntry())


def _rig(direct: DirectEntry | None) -> Iterator[Rig]:
    tp = FakeTransport(address=ME, auto=None)
    clock = FakeClock()
    state, stats = SessionState(), CallStats()
    counter = iter(range(1, 10**6))
    holder: dict[str, Rig] = {}

    def next_rid() -> str:
        rid = f"alice#{100 + next(counter)}"
        holder["rig"].rids.append(rid)
        return rid

    ref = ClientSessionActor.start(
        user="alice", nodes=NODES, transport=tp, retry_s=RETRY_S, deadline_s=DEADLINE_S,
        heartbeat_s=HEARTBEAT_S, keys=KEYS, next_rid=next_rid,
        on_peer=lambda addr, msg: holder["rig"].on_peer(addr, msg),
        on_rejoined=lambda updates: holder["rig"].rejoined.append(updates),
        notify=lambda text: holder["rig"].notify(text),
        clock=clock, rng=random.Random(5), state=state, stats=stats, tick_s=None, entry=direct)
    r = Rig(ref, tp, clock, state, stats, entry=direct)
    holder["rig"] = r
    try:
        yield r
    finally:
        ref.stop()
        pykka.ActorRegistry.stop_all()


def entry(token: bytes, addr: tuple[str, int] = ME, user: str = "alice") -> UserEntry:
    return UserEntry(user=user, host=addr[0], port=addr[1], token_digest=token_digest(token),
                     sign_key=b"s" * 32, box_key=b"b" * 32, expires=2e9)


def refusal(rid: str) -> ErrorReply:
    return ErrorReply(rid=rid, code="bad_token", message="no valid session", retryable=False)


# ---- calls --------------------------------------------------------------------------------------
def test_retries_with_the_same_rid_and_a_higher_attempt_once_retry_s_has_passed(rig: Rig) -> None:
    fut, notes = rig.call("alice#1")
    first = rig.sends(EncryptRequest)
    assert [s.addr for s in first] == NODES and all(s.msg.attempt == 0 for s in first)
    rig.complete(first, LOST)  # nobody acknowledged: the transport gave up
    rig.tick(RETRY_S - 0.1)
    assert len(rig.sends(EncryptRequest)) == 3
    rig.tick(0.1)
    again = rig.sends(EncryptRequest)[3:]
    assert [s.msg.rid for s in again] == ["alice#1"] * 3
    assert [s.msg.attempt for s in again] == [1, 1, 1]
    assert rig.stats.retries == 1
    assert notes.get(timeout=5) == "request alice#1: no answer yet; trying again"
    rig.complete(again, LOST)
    rig.tick(RETRY_S)
    assert [s.msg.attempt for s in rig.sends(EncryptRequest)[6:]] == [2, 2, 2]
    assert notes.empty()  # one retry notice per call, not one per retry
    rig.deliver(NODES[2], Ack(rid="alice#1"))
    assert isinstance(fut.get(timeout=5).reply, Ack)


def test_honours_its_deadline_and_fails_unreachable(rig: Rig) -> None:
    fut, _ = rig.call("alice#2", deadline_s=10.0)
    for _ in range(5):
        rig.complete([s for s in rig.sends(EncryptRequest) if not s.done], LOST)
        rig.tick(RETRY_S)
    with pytest.raises(CallError) as err:
        fut.get(timeout=5)
    assert err.value.code == "unreachable" and err.value.retryable
    sent = len(rig.sends(EncryptRequest))
    rig.tick(RETRY_S * 3)
    assert len(rig.sends(EncryptRequest)) == sent  # ended: nothing more is sent


def test_takes_a_lone_refusal_as_no_answer(rig: Rig) -> None:
    fut, _ = rig.call("alice#3")
    rig.complete(rig.sends(EncryptRequest))
    rig.deliver(NODES[0], refusal("alice#3"))  # a node back from a failure, not synced yet
    with pytest.raises(pykka.Timeout):  # not failed by that refusal
        fut.get(timeout=0)
    rig.deliver(NODES[1], Ack(rid="alice#3"))
    assert isinstance(fut.get(timeout=5).reply, Ack)
    rig.deliver(NODES[2], Ack(rid="alice#3"))
    assert rig.stats.duplicates == 1 and rig.stats.replies_accepted == 1


def test_a_majority_of_refusals_fails_the_call_at_once(rig: Rig) -> None:
    fut, _ = rig.call("alice#4")
    rig.deliver(NODES[0], refusal("alice#4"))
    rig.deliver(NODES[1], refusal("alice#4"))
    with pytest.raises(CallError) as err:
        fut.get(timeout=5)
    assert err.value.code == "bad_token" and not err.value.retryable


def test_no_resend_while_the_transport_still_moves_the_request(rig: Rig) -> None:
    rig.call("alice#5")
    rig.tick(RETRY_S * 4)  # a large upload: every send still in flight
    assert len(rig.sends(EncryptRequest)) == 3
    rig.complete(rig.sends(EncryptRequest), LOST)
    rig.tick(0.05)
    assert len(rig.sends(EncryptRequest)) == 6  # once the transport gave up: the retry


def test_no_resend_while_bytes_move_on_the_transport(rig: Rig) -> None:
    moved = iter(range(1000, 10**9, 1000))
    rig.tp.progress = lambda: (next(moved), 10**9)  # type: ignore[method-assign]
    rig.call("alice#6")
    rig.complete(rig.sends(EncryptRequest), LOST)
    for _ in range(4):
        rig.tick(RETRY_S)  # a reply is arriving: bytes move at every tick
    assert len(rig.sends(EncryptRequest)) == 3
    rig.tp.progress = lambda: (0, 0)  # type: ignore[method-assign]
    rig.tick(0.05)
    assert len(rig.sends(EncryptRequest)) == 6


def test_no_resend_once_a_node_acknowledged_until_its_hold_has_passed(rig: Rig) -> None:
    rig.call("alice#7", hold_s=20.0)
    sends = rig.sends(EncryptRequest)
    rig.complete(sends[:1])  # node 1 holds the whole request (it seals)
    rig.complete(sends[1:], LOST)
    rig.tick(19.9)
    assert len(rig.sends(EncryptRequest)) == 3
    rig.tick(0.2)  # a node that acknowledged and then said nothing for long: resend once
    assert [s.msg.attempt for s in rig.sends(EncryptRequest)[3:]] == [1, 1, 1]


def test_an_offered_call_uploads_its_bytes_only_to_the_node_that_fetches_them(rig: Rig) -> None:
    fut: pykka.Future[CallResult] = pykka.ThreadingFuture()
    data = b"p" * 5000
    rig.ref.tell(StartCall(
        "alice#9", lambda a: EncryptOffer(rid="alice#9", image="p.png", size=len(data), attempt=a),
        tuple(NODES), fut,
        fetch=lambda a: EncryptRequest(rid="alice#9", image="p.png", data=data, attempt=a)))
    rig.settle()
    rig.complete(rig.sends(EncryptOffer))
    assert [s.addr for s in rig.sends(EncryptOffer)] == NODES and rig.sends(EncryptRequest) == []
    rig.deliver(NODES[1], FetchPayload(rid="alice#9", node=2, attempt=0))  # node 2 won
    [up] = rig.sends(EncryptRequest)
    assert up.addr == NODES[1] and up.msg.data == data and up.msg.attempt == 0
    rig.complete([up])
    rig.deliver(NODES[2], FetchPayload(rid="alice#9", node=3, attempt=0))  # 2 died: 3 re-elected
    assert [s.addr for s in rig.sends(EncryptRequest)] == [NODES[1], NODES[2]]
    reply = EncryptReply(rid="alice#9", node=3, sealed=b"s", seal_ms=1.0, wait_ms=1.0)
    rig.deliver(NODES[2], reply)
    assert fut.get(timeout=5).reply == reply
    rig.deliver(NODES[0], FetchPayload(rid="alice#9", node=1, attempt=0))  # too late: ignored
    assert len(rig.sends(EncryptRequest)) == 2
    assert rig.ref.proxy().fetch_unknown.get(timeout=5) == 1
    assert rig.stats.duplicates == 0  # a fetch is no reply


def test_cancel_fails_the_call_and_nothing_more_is_sent(rig: Rig) -> None:
    scope = Scope()
    fut, _ = rig.call("alice#8", scope=scope)
    rig.call("alice#9")  # another scope: not cancelled
    rig.complete(rig.sends(EncryptRequest), LOST)
    scope.cancel()
    rig.ref.tell(CancelScope(scope))
    with pytest.raises(CallError) as err:
        fut.get(timeout=5)
    assert err.value.code == "cancelled"
    rig.tick(RETRY_S)
    assert len(rig.sends(EncryptRequest, "alice#8")) == 3  # no retry after the cancel
    assert len(rig.sends(EncryptRequest, "alice#9")) == 6
    late, _ = rig.call("alice#10", scope=scope)  # the cancelled command cannot start more
    with pytest.raises(CallError):
        late.get(timeout=5)
    assert rig.sends(EncryptRequest, "alice#10") == []


def test_send_outcomes_wake_no_actor_and_keep_the_time_they_came(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send's outcome is queued by the transport's callback, not told: the actor handles only
    the call, the reply and the test's settling Ticks, and the acknowledgements keep the clock
    of the moment they came (issue 19: three wake-ups per request, one per node, were saved)."""
    handled: list[str] = []
    on_receive = ClientSessionActor.on_receive

    def counted(self: ClientSessionActor, message: Any) -> Any:
        handled.append(type(message).__name__)
        return on_receive(self, message)

    monkeypatch.setattr(ClientSessionActor, "on_receive", counted)
    fut, _ = rig.call("alice#20")
    acked_at = rig.clock.now + 0.25
    rig.clock.now = acked_at
    for s in rig.sends(EncryptRequest):
        rig.tp.complete(s)  # the transport's reader thread: every node acknowledged
    rig.clock.now += 2.0  # the reply comes later
    rig.deliver(NODES[1], Ack(rid="alice#20"))
    result = fut.get(timeout=5)
    assert handled == ["StartCall", "Tick", "Delivery", "Tick"]
    assert result.acks == {addr: acked_at for addr in NODES}


def test_a_calls_copies_leave_in_one_transport_call(rig: Rig) -> None:
    """The request to every node is handed to the transport at once (send_many: encoded once,
    sent in one pass), its retry too (issue 19)."""
    rig.call("alice#22")
    assert rig.tp.many == [3]
    rig.complete(rig.sends(EncryptRequest), LOST)
    rig.tick(RETRY_S)
    assert rig.tp.many == [3, 3]
    assert [s.msg.attempt for s in rig.sends(EncryptRequest)] == [0, 0, 0, 1, 1, 1]


def test_a_failed_send_counts_at_the_next_tick_as_before(rig: Rig) -> None:
    """Queued outcomes are read before any message: a failed send still lets the next tick
    after retry_s resend (nothing waits for a wake-up of its own)."""
    rig.call("alice#21")
    for s in rig.sends(EncryptRequest):
        rig.tp.complete(s, LOST)
    rig.tick(RETRY_S)
    assert [s.msg.attempt for s in rig.sends(EncryptRequest)] == [0, 0, 0, 1, 1, 1]


def test_peer_requests_go_to_the_sharing_code(rig: Rig) -> None:
    msg = PreviewRequest(rid="bob#3", user="bob", token=TOKEN)
    rig.deliver(("127.0.0.1", 40002), msg)
    assert rig.peer == [(("127.0.0.1", 40002), msg)]


def test_the_ticker_thread_drives_the_timers() -> None:
    tp = FakeTransport(address=ME, auto="fail")
    clock = FakeClock()
    ref = ClientSessionActor.start(
        user="alice", nodes=NODES, transport=tp, retry_s=RETRY_S, deadline_s=DEADLINE_S,
        heartbeat_s=HEARTBEAT_S, keys=KEYS, next_rid=lambda: "alice#1",
        on_peer=lambda a, m: None, on_rejoined=lambda u: None, notify=lambda t: None,
        clock=clock, rng=random.Random(1), tick_s=0.01)
    try:
        fut: pykka.Future[CallResult] = pykka.ThreadingFuture()
        ref.tell(StartCall("alice#1", lambda a: Ack(rid="alice#1"), tuple(NODES), fut))
        tp.wait_msg(Ack, count=3)
        clock.now += RETRY_S  # no Tick told by the test: the ticker's ticks retry
        tp.wait_msg(Ack, count=6)
    finally:
        ref.stop()


# ---- directory session --------------------------------------------------------------------------
def test_join_then_heartbeats(rig: Rig) -> None:
    assert rig.state.connection == "not joined"
    reply = rig.join()
    assert reply.token == TOKEN
    assert rig.state.token == TOKEN and rig.state.connection == "joined"
    [join] = rig.sends(Join)[:1]
    assert (join.msg.sign_key, join.msg.box_key) == (KEYS.sign_public, KEYS.box_public)
    sharecrypt.verify_join(join.msg.rid, "alice", join.msg.sign_key, join.msg.box_key,
                           join.msg.stamp, join.msg.proof, time.time())  # signed by alice's key
    assert rig.sends(ClientHeartbeat) == []
    rig.tick(HEARTBEAT_S)
    beats = rig.sends(ClientHeartbeat)
    assert sorted(s.addr for s in beats) == NODES
    assert all(s.msg.token == TOKEN and s.msg.user == "alice" for s in beats)
    rig.tick(HEARTBEAT_S)
    assert len(rig.sends(ClientHeartbeat)) == 6


def test_leave_on_close(rig: Rig) -> None:
    rig.join()
    fut: pykka.Future[None] = pykka.ThreadingFuture()
    rig.ref.tell(LeaveCloud(fut))
    leaves = rig.tp.wait_msg(Leave, count=3)
    assert all(m.token == TOKEN and m.user == "alice" for m in leaves)
    assert rig.state.token is None and rig.state.connection == "not joined"
    rig.complete(rig.sends(Leave)[:2])
    rig.complete(rig.sends(Leave)[2:], LOST)  # a node that is down: not waited for
    fut.get(timeout=5)
    rig.tick(HEARTBEAT_S * 3)
    assert rig.sends(ClientHeartbeat) == []  # no heartbeats after the leave


def test_leave_does_not_wait_long_for_silent_nodes(rig: Rig) -> None:
    rig.join()
    fut: pykka.Future[None] = pykka.ThreadingFuture()
    rig.ref.tell(LeaveCloud(fut))
    rig.tp.wait_msg(Leave, count=3)
    rig.tick(1.0)
    fut.get(timeout=5)


def answer_check(rig: Rig, reply_users: dict[tuple[str, int], tuple[UserEntry, ...] | None]) -> None:
    """Answer the latest check round: per node, the users it lists (None: the node is silent)."""
    queries = rig.sends(DirectoryQuery)[-3:]
    assert sorted(s.addr for s in queries) == NODES
    for s in queries:
        users = reply_users.get(s.addr)
        if users is None:
            rig.tp.complete(s, LOST)
        else:
            rig.tp.complete(s)
            rig.tp.deliver(s.addr, DirectoryReply(rid=s.msg.rid, users=users))
    rig.settle()


def test_rejoins_when_a_majority_of_the_nodes_no_longer_lists_it(rig: Rig) -> None:
    rig.join()
    rig.tick(HEARTBEAT_S)
    answer_check(rig, {n: (entry(TOKEN),) for n in NODES})
    assert rig.state.connection == "joined" and len(rig.sends(Join)) == 3
    rig.tick(HEARTBEAT_S)
    # one stale node (back from a failure, not synced) does not make the session lost
    answer_check(rig, {NODES[0]: (), NODES[1]: (entry(TOKEN),), NODES[2]: (entry(TOKEN),)})
    assert rig.state.connection == "joined" and len(rig.sends(Join)) == 3
    rig.tick(HEARTBEAT_S)
    # the cloud restarted: the directory is empty (another session of the same name elsewhere
    # does not count as ours either)
    answer_check(rig, {NODES[0]: (), NODES[1]: (entry(b"x" * 16, ("127.0.0.1", 5)),),
                       NODES[2]: None})
    rig.tick(0.05)
    assert rig.state.connection == "rejoining" and rig.state.token is None
    rig.tp.wait_msg(Join, count=6)  # its request id is drawn off the actor's thread first
    rig.settle()
    joins = rig.sends(Join)
    assert len(joins) == 6 and joins[-1].msg.rid != joins[0].msg.rid  # a fresh persisted id
    assert joins[-1].msg.sign_key == KEYS.sign_public  # its own keys
    update = Update(id="bob#4", kind="grant", owner="bob", borrower="alice", image="p.png",
                    delta=2, addressee="alice", grant=b"", created=1.0)
    rig.complete(joins[3:])
    rig.deliver(NODES[1], JoinReply(rid=joins[-1].msg.rid, token=NEW_TOKEN, updates=(update,)))
    # a majority answers; the other node has not heard of the update: the union hands it over
    rig.deliver(NODES[2], JoinReply(rid=joins[-1].msg.rid, token=NEW_TOKEN, updates=()))
    assert rig.state.connection == "joined" and rig.state.token == NEW_TOKEN
    assert rig.rejoined == [(update,)]
    assert rig.notices == [REJOINED_NOTICE]
    rig.tick(HEARTBEAT_S)
    assert rig.sends(ClientHeartbeat)[-1].msg.token == NEW_TOKEN


def test_an_unreachable_cloud_gives_one_notice_and_the_toolbar_state(rig: Rig) -> None:
    rig.join()
    for _ in range(3):  # three silent rounds: one notice
        rig.tick(HEARTBEAT_S)
        answer_check(rig, {})
        rig.tick(HEARTBEAT_S - 0.01)  # the round's calls reach their deadline
    assert rig.state.connection == "cloud unreachable"
    assert rig.notices == [UNREACHABLE_NOTICE]
    _fut, notes = rig.call("alice#20")  # a command now: no retry notice on top
    rig.complete(rig.sends(EncryptRequest, "alice#20"), LOST)
    rig.tick(RETRY_S)
    assert len(rig.sends(EncryptRequest, "alice#20")) == 6 and notes.empty()
    rig.tick(0.01)
    answer_check(rig, {n: (entry(TOKEN),) for n in NODES})
    assert rig.state.connection == "joined"
    assert rig.notices == [UNREACHABLE_NOTICE, "the cloud answers again"]


def test_while_the_cloud_does_not_answer_a_call_to_it_fails_in_seconds(rig: Rig) -> None:
    """Before, a command waited for its whole deadline (60 s) while the toolbar already said
    `cloud unreachable`. A call to the nodes that none has acknowledged now fails once it has
    been silent NO_CLOUD_S (3 s) since its start: when the silence becomes known if that is so
    already, else then; a call to a peer, or one a node acknowledged, keeps its deadline."""
    rig.join()
    start = rig.clock.now
    early, _ = rig.call("alice#30")  # in flight when the cloud goes silent: nobody acknowledges
    peer, _ = rig.call("alice#31", targets=[("127.0.0.1", 45000)])
    while rig.state.connection != "cloud unreachable":
        rig.tick(HEARTBEAT_S)
        answer_check(rig, {})
        rig.tick(HEARTBEAT_S - 0.01)  # the round's calls reach their deadline
        assert rig.clock.now - start < 30, "never unreachable"
    assert rig.clock.now - start >= 3.0  # silent for longer than NO_CLOUD_S already
    rig.tick()  # the next tick ends it
    with pytest.raises(CallError) as err:
        early.get(timeout=5)
    assert err.value.code == "no_cloud" and rig.clock.now - start < DEADLINE_S

    late, notes = rig.call("alice#32")  # started while it is known silent
    rig.complete(rig.sends(EncryptRequest, "alice#32"), LOST)
    rig.tick(2.9)
    assert _pending(late)
    rig.tick(0.1)
    with pytest.raises(CallError) as err:
        late.get(timeout=5)
    assert err.value.code == "no_cloud" and notes.empty()  # no retry notice on top either
    assert _pending(peer)  # a peer's call: its own deadline


def _pending(fut: pykka.Future[Any]) -> bool:
    try:
        fut.get(timeout=0)
    except pykka.Timeout:
        return True
    except Exception:  # noqa: BLE001 - ended with an error: not pending
        return False
    return False


def test_a_cloud_that_comes_back_empty_is_rejoined_after_being_unreachable(rig: Rig) -> None:
    rig.join()
    rig.tick(HEARTBEAT_S)
    answer_check(rig, {})
    rig.tick(HEARTBEAT_S)
    assert rig.state.connection == "cloud unreachable"
    answer_check(rig, {n: () for n in NODES})
    rig.tick(0.05)
    rig.tp.wait_msg(Join, count=6)
    rig.settle()
    join = rig.sends(Join)[-1]
    assert rig.state.connection == "rejoining"
    rig.complete([join for join in rig.sends(Join) if not join.done])
    for node in NODES[:2]:  # a majority answers the join
        rig.deliver(node, JoinReply(rid=join.msg.rid, token=NEW_TOKEN, updates=()))
    assert rig.notices == [UNREACHABLE_NOTICE, REJOINED_NOTICE]


def test_a_rejoin_that_finds_no_cloud_tries_again_next_period(rig: Rig) -> None:
    rig.join()
    rig.tick(HEARTBEAT_S)
    answer_check(rig, {n: () for n in NODES})
    rig.tick(0.05)
    rig.tp.wait_msg(Join, count=6)
    rig.settle()
    rig.tick(3.0)  # nobody acknowledged the Join: no cloud
    assert rig.state.connection == "cloud unreachable"
    rig.complete([s for s in rig.sends(Join) if not s.done], LOST)
    rig.tick(HEARTBEAT_S)
    rig.tp.wait_msg(Join, count=9)
    rig.settle()
    assert len(rig.sends(Join)) == 9 and rig.state.connection == "cloud unreachable"
    assert rig.notices == [UNREACHABLE_NOTICE]


def test_join_with_no_cloud_fails_fast(rig: Rig) -> None:
    fut: pykka.Future[JoinReply] = pykka.ThreadingFuture()
    rig.ref.tell(JoinCloud(fut))
    rig.tp.wait_msg(Join, count=3)
    rig.tick(2.9)
    assert len(rig.sends(Join)) == 3
    rig.tick(0.1)  # 3 s and no node acknowledged or answered anything
    with pytest.raises(CallError) as err:
        fut.get(timeout=5)
    assert err.value.code == "no_cloud"
    assert rig.state.connection == "not joined" and rig.notices == []


def test_join_while_nodes_sync_is_not_no_cloud(rig: Rig) -> None:
    fut: pykka.Future[JoinReply] = pykka.ThreadingFuture()
    rig.ref.tell(JoinCloud(fut))
    [join, *_] = rig.tp.wait_msg(Join, count=3)
    for s in rig.sends(Join):
        rig.tp.deliver(s.addr, ErrorReply(rid=join.rid, code="syncing", message="syncing",
                                          retryable=True))
    rig.settle()
    rig.tick(5.0)
    assert len(rig.sends(Join)) >= 6  # backed off and tried again, did not give up
    rig.complete([s for s in rig.sends(Join) if not s.done])
    for node in NODES[:2]:  # a majority answers the join
        rig.deliver(node, JoinReply(rid=join.rid, token=TOKEN, updates=()))
    assert fut.get(timeout=5).token == TOKEN


# ---- the facade over the actor --------------------------------------------------------------
def test_session_close_leaves_and_stops_the_actor(tmp_path: Path) -> None:
    import config
    from actors.client.client_session import ClientSession

    cfg = config.load(None)
    tp = FakeTransport(address=ME, auto="ack")
    session = ClientSession("alice", tmp_path / "home", cfg, transport=tp,
                            rng=random.Random(3))
    answered = threading.Event()

    def answer() -> None:
        join = tp.wait_msg(Join)[0]
        for node in cfg.nodes[:2]:  # a majority answers the join
            tp.deliver(node.client_addr, JoinReply(rid=join.rid, token=TOKEN, updates=()))
        answered.set()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    assert session.join() == []
    assert session.token == TOKEN and session.connection == "joined"
    session.close()
    leaves = tp.wait_msg(Leave, count=len(cfg.nodes))
    assert all(m.token == TOKEN for m in leaves)
    assert not session.actor.is_alive() and tp.stopped


def test_stopping_fails_open_calls_as_closed_without_notices(rig: Rig) -> None:
    rig.join()
    rig.tick(HEARTBEAT_S)  # a check round is open
    fut, _ = rig.call("alice#30")
    rig.ref.stop()
    with pytest.raises(CallError) as err:
        fut.get(timeout=5)
    assert err.value.code == "closed"
    assert rig.notices == []  # not "the cloud does not answer"


# ---- the direct entry (issue 19: two thread wake-ups less per call) ---------------------------
class _ThreadFuture(pykka.ThreadingFuture[Any]):
    """A future that remembers the thread that resolved it."""

    def __init__(self) -> None:
        super().__init__()
        self.thread: int | None = None

    def set(self, value: Any = None) -> None:
        self.thread = threading.get_ident()
        super().set(value)


def _threads_of(tp: FakeTransport, method: str) -> list[int]:
    """Record the thread of each call of `tp.<method>` from now on (the list returned)."""
    threads: list[int] = []
    inner = getattr(tp, method)

    def recording(*args: Any, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return inner(*args, **kw)

    setattr(tp, method, recording)
    return threads


def _start(rig: Rig, rid: str) -> _ThreadFuture:
    assert rig.entry is not None
    fut = _ThreadFuture()
    rig.entry.tell(StartCall(
        rid, lambda a: EncryptRequest(rid=rid, image="a.png", data=b"x" * 10, attempt=a),
        tuple(NODES), fut, notices=queue.SimpleQueue()))
    return fut


def _reply(rid: str) -> EncryptReply:
    return EncryptReply(rid=rid, node=1, sealed=b"p", seal_ms=1.0, wait_ms=1.0)


def test_a_call_starts_and_its_reply_is_handled_on_the_callers_threads_while_idle(
    direct_rig: Rig,
) -> None:
    """The copies leave from the thread that started the call (before `tell` returns), and the
    reply resolves the call on the thread that delivered it: the actor's thread wakes for
    neither (it would with the entry replaced by the actor's ref: both tests fail)."""
    rig, me = direct_rig, threading.get_ident()
    senders = _threads_of(rig.tp, "send_many")
    fut = _start(rig, "alice#40")
    assert senders == [me] and len(rig.sends(EncryptRequest, "alice#40")) == 3
    rig.tp.deliver(NODES[1], _reply("alice#40"))
    assert fut.thread == me and fut.get(timeout=0).reply == _reply("alice#40")


def test_a_reply_that_comes_while_the_actor_is_busy_waits_in_its_mailbox(direct_rig: Rig) -> None:
    """A peer request holds the actor (its handler waits, run on the delivering thread); a reply
    delivered meanwhile is not run beside it: it waits in the mailbox and the actor's own thread
    handles it after."""
    rig = direct_rig
    fut = _start(rig, "alice#41")
    inside, release = threading.Event(), threading.Event()

    def blocking_peer(addr: Any, msg: Any) -> None:
        inside.set()
        release.wait(10)

    rig.on_peer = blocking_peer  # type: ignore[method-assign]
    busy = threading.Thread(target=rig.tp.deliver, daemon=True, args=(
        ("127.0.0.1", 40009), PreviewRequest(rid="bob#3", user="bob", token=TOKEN)))
    busy.start()
    assert inside.wait(10)
    rig.tp.deliver(NODES[0], _reply("alice#41"))  # returns at once: queued, not run
    assert fut.thread is None
    release.set()
    busy.join(10)
    assert fut.get(timeout=5).reply == _reply("alice#41")
    assert fut.thread not in (threading.get_ident(), busy.ident)


def test_a_notice_raised_on_a_callers_thread_is_printed_on_the_actors(direct_rig: Rig) -> None:
    """`notify` may write to a terminal: a notice that a reply handled on the transport's
    reader thread raises is printed by the actor's thread, not the reader's."""
    rig = direct_rig
    where: list[int] = []

    def notify(text: str) -> None:
        where.append(threading.get_ident())
        rig.notices.append(text)

    rig.notify = notify  # type: ignore[method-assign]
    rig.join()
    for _ in range(3):  # three silent rounds: the unreachable notice (raised at a Tick)
        rig.tick(HEARTBEAT_S)
        answer_check(rig, {})
        rig.tick(HEARTBEAT_S - 0.01)
    rig.tick(0.01)
    answer_check(rig, {n: (entry(TOKEN),) for n in NODES})  # delivered on this thread
    assert rig.notices == [UNREACHABLE_NOTICE, "the cloud answers again"]
    # the first came at a Tick (the actor's thread); the second was raised on this thread
    assert len(where) == 2 and where[1] == where[0] != threading.get_ident()


def test_nothing_runs_through_the_entry_once_the_actor_stopped(direct_rig: Rig) -> None:
    rig = direct_rig
    assert rig.entry is not None
    fut = _start(rig, "alice#42")
    rig.ref.stop()
    with pytest.raises(CallError):
        fut.get(timeout=5)  # failed as closed by the stop
    with pytest.raises(pykka.ActorDeadError):
        rig.entry.tell(Delivery(NODES[0], _reply("alice#42")))


def test_a_fetch_delivered_on_a_callers_thread_is_answered_on_the_actors(direct_rig: Rig) -> None:
    """The payload of an offered call is encoded and sent by the actor's thread, not by the
    transport's reader that delivered the FetchPayload (it would stall the reader)."""
    rig, me = direct_rig, threading.get_ident()
    assert rig.entry is not None
    data = b"p" * 5000
    senders = _threads_of(rig.tp, "send")
    fut = _ThreadFuture()
    rig.entry.tell(StartCall(
        "alice#43", lambda a: EncryptOffer(rid="alice#43", image="p.png", size=len(data), attempt=a),
        tuple(NODES), fut,
        fetch=lambda a: EncryptRequest(rid="alice#43", image="p.png", data=data, attempt=a)))
    rig.complete(rig.sends(EncryptOffer))
    senders.clear()  # (the offers left through send_many, on this thread)
    rig.tp.deliver(NODES[1], FetchPayload(rid="alice#43", node=2, attempt=0))
    rig.settle()
    [up] = rig.sends(EncryptRequest)
    assert up.addr == NODES[1] and up.msg.data == data
    assert len(senders) == 1 and senders[0] != me
