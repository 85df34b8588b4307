"""A peer's client that stopped without leaving stays in the directory a while: a request to it
(browse, request, an access update) fails as `no_answer` once it has acknowledged nothing for
PEER_SILENT_S, not at the call's deadline (20 s for browse, 60 s for request); an access
update then goes through the cloud. A real ClientSession over a FakeTransport, fake clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from session_kit import LOST, joined_session, tick

from actors.client.client_session import ClientSession, SessionError
from actors.client.peer import PEER_SILENT_S
from actors.core.directory import token_digest
from codec.messages import (
    AccessUpdate,
    Ack,
    DirectoryQuery,
    DirectoryReply,
    ImageRequest,
    PostUpdate,
    PreviewRequest,
    Update,
    UserEntry,
)
from tests.fake_transport import FakeClock, FakeTransport

pytestmark = pytest.mark.timeout(60)
BOB = ("127.0.0.1", 45123)


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[tuple[ClientSession, FakeTransport, FakeClock]]:
    yield from joined_session(tmp_path / "home")


def _bob_listed(session: ClientSession, tp: FakeTransport) -> None:
    """Answer the directory queries (now and later) with bob online at BOB."""
    bob = UserEntry(user="bob", host=BOB[0], port=BOB[1], token_digest=token_digest(b"B" * 16),
                    sign_key=b"s" * 32, box_key=b"b" * 32, expires=2e9)
    answered: set[str] = set()

    def answer() -> None:
        while not stop.is_set():
            for s in tp.sends_of(DirectoryQuery):
                if s.msg.rid not in answered:
                    answered.add(s.msg.rid)
                    tp.deliver(s.addr, DirectoryReply(rid=s.msg.rid, users=(bob,)))
            stop.wait(0.01)

    stop = threading.Event()
    threading.Thread(target=answer, daemon=True).start()
    _stops.append(stop)


_stops: list[threading.Event] = []


@pytest.fixture(autouse=True)
def _stop_answering() -> Iterator[None]:
    yield
    for stop in _stops:
        stop.set()
    _stops.clear()


def _run(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["result"] = fn()
        except SessionError as exc:
            out["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, out


@pytest.mark.parametrize("kind", ["browse", "request"])
def test_a_silent_peer_fails_as_no_answer_in_seconds(
        joined: tuple[ClientSession, FakeTransport, FakeClock], kind: str) -> None:
    session, tp, clock = joined
    _bob_listed(session, tp)
    msg = PreviewRequest if kind == "browse" else ImageRequest
    call = ((lambda: session.sharing.browse("bob")) if kind == "browse"
            else (lambda: session.sharing.request("bob", "pic.png", 1)))
    notices: list[str] = []
    session.cloud._notify = notices.append
    worker, out = _run(call)
    tp.wait_msg(msg)
    [sent] = tp.sends_of(msg)
    assert sent.addr == BOB  # nobody acknowledges: bob's client is gone
    tp.complete(sent, LOST)  # its transport gave up: the call sends it again at retry_s
    tick(session, clock, 2.0)
    tp.wait_msg(msg, count=2)
    tick(session, clock, PEER_SILENT_S - 2.0 - 0.1)
    assert worker.is_alive()
    tick(session, clock, 0.1)
    worker.join(10)
    assert not worker.is_alive()
    err = out["error"]
    assert err.code == "no_answer"
    assert str(err) == ("bob does not answer (their client may have stopped without leaving); "
                        "try again later")
    assert notices == []  # no "trying again" a second before it ends


def test_a_peer_that_acknowledges_is_waited_for(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    session, tp, clock = joined
    _bob_listed(session, tp)
    worker, out = _run(lambda: session.sharing.browse("bob"))
    tp.wait_msg(PreviewRequest)
    [sent] = tp.sends_of(PreviewRequest)
    tp.complete(sent)  # bob's transport acknowledged it: bob is there, building previews
    tick(session, clock, PEER_SILENT_S + 5)
    assert worker.is_alive()  # its 20 s deadline, not the silence limit
    tick(session, clock, 20)
    worker.join(10)
    err = out["error"]
    assert (err.code, str(err)) == ("no_answer", "bob did not answer in time; try again later")


def test_an_access_update_to_a_silent_borrower_goes_through_the_cloud(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    session, tp, clock = joined
    _bob_listed(session, tp)
    u = Update(id=session.cloud.next_rid(), kind="grant", owner="alice", borrower="bob",
               image="pic.png", delta=1, addressee="bob", grant=b"", created=time.time())
    worker, out = _run(lambda: session.sharing._deliver(
        u, lambda rid, tok: AccessUpdate(rid=rid, user="alice", token=tok, update=u)))
    tp.wait_msg(AccessUpdate)
    assert [s.addr for s in tp.sends_of(AccessUpdate)] == [BOB]
    tick(session, clock, PEER_SILENT_S)
    posts = tp.wait_msg(PostUpdate, count=len(session.node_addrs))  # the cloud keeps it for bob
    assert {p.update.id for p in posts} == {u.id}  # the same id: applied once either way
    for s in tp.sends_of(PostUpdate):
        tp.complete(s)
        tp.deliver(s.addr, Ack(rid=s.msg.rid))
    worker.join(10)
    assert out["result"] == {"id": u.id, "delivered": "via cloud", "to": "bob"}
