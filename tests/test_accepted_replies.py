"""Issue 18 item 1: the client counts, per request id, the replies whose result it stored
(ClientHome.accept_reply); the encrypt command reports requests stored twice as
`accepted_twice`, the figure the chaos benchmark sums. A real ClientSession over a FakeTransport:
the test plays the cloud and answers one request from two nodes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgdata import png_bytes
from session_kit import FakeClock, joined_session

from actors.client.client_session import ClientSession
from actors.client.client_store import ClientHome
from actors.client.session_messages import Tick
from codec.messages import EncryptReply, EncryptRequest
from shell.commands import COMMANDS, Context
from tests.fake_transport import FakeTransport


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[tuple[ClientSession, FakeTransport, FakeClock]]:
    yield from joined_session(tmp_path / "home")


def test_the_home_counts_stored_replies_per_request_id(tmp_path: Path) -> None:
    home = ClientHome(tmp_path / "home")
    assert home.accepted("alice#1") == 0 and home.accepted_twice() == 0
    assert home.accept_reply("alice#1") == 1
    assert home.accept_reply("alice#2") == 1
    assert home.accepted_twice() == 0
    assert home.accept_reply("alice#1") == 2  # the same request stored a second time
    assert home.accepted("alice#1") == 2 and home.accepted("alice#2") == 1
    assert home.accepted_twice() == 1


def test_two_replies_of_one_request_are_stored_once_and_the_second_is_a_duplicate(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path) -> None:
    session, tp, _clock = joined
    pic = tmp_path / "pic.png"
    pic.write_bytes(png_bytes(5))
    out: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: out.update(data=COMMANDS["encrypt"].handler(Context(session), [str(pic)]).data))
    worker.start()
    req = tp.wait_msg(EncryptRequest, count=len(session.node_addrs))[0]
    first, second = session.node_addrs[:2]  # two nodes both answer (a race the protocol allows)
    tp.deliver(first, EncryptReply(rid=req.rid, node=1, sealed=b"one", seal_ms=1.0, wait_ms=1.0))
    tp.deliver(second, EncryptReply(rid=req.rid, node=2, sealed=b"two", seal_ms=1.0, wait_ms=1.0))
    worker.join(10)
    assert not worker.is_alive()
    data = out["data"]
    assert [row["node"] for row in data["encrypted"]] == [1]
    assert (session.home.root / data["encrypted"][0]["path"]).read_bytes() == b"one"
    assert session.home.accepted(req.rid) == 1  # stored once
    assert data["accepted_twice"] == 0
    session.actor.ask(Tick())  # both deliveries were handled before this
    assert session.caller.stats.duplicates == 1  # the second reply: counted, never accepted
    assert session.home.accepted(req.rid) == 1
    assert session.home.accepted_twice() == 0


def test_encrypts_take_ids_from_one_reserved_block_and_updates_stay_above_it(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    """An encrypt's request id comes from a block of ids reserved with one commit
    (state_db.RequestIdBlock), not a commit each; an id drawn one at a time (an update's, a
    join's) is above the whole block, so updates keep their post order."""
    session, tp, _clock = joined
    before = session.db.last_request_number("alice")  # the join's id
    rids = []
    for i in range(3):
        worker = threading.Thread(target=session.seal_through_cloud, args=(f"p{i}.png", b"x"))
        worker.start()
        req = tp.wait_msg(EncryptRequest, count=len(session.node_addrs) * (i + 1))[-1]
        tp.deliver(session.node_addrs[0], EncryptReply(rid=req.rid, node=1, sealed=b"s",
                                                       seal_ms=1.0, wait_ms=1.0))
        worker.join(10)
        assert not worker.is_alive()
        rids.append(req.rid)
    assert rids == [f"alice#{before + n}" for n in (1, 2, 3)]
    reserved = session.db.last_request_number("alice")
    assert reserved == before + 64  # one block, committed once for all three
    assert session.next_rid() == f"alice#{reserved + 1}"
