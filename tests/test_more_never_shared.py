"""`more` for an image never shared: the borrower's client refuses it before anything is sent
(whether the owner is online or not), and an owner's client that gets such a request through
the cloud anyway drops it once, with a notice, and records nothing. A real ClientSession over a
FakeTransport (session_kit): alice plays the borrower, then the owner."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from session_kit import FakeClock, joined_session

from actors.client.client_session import ClientSession
from actors.client.errors import SessionError
from codec.messages import Update
from codec.names import InvalidName
from tests.fake_transport import FakeTransport


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[tuple[ClientSession, FakeTransport, FakeClock]]:
    yield from joined_session(tmp_path / "home")


def test_more_for_an_image_not_in_the_inbox_is_refused_and_nothing_is_sent(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    session, tp, _clock = joined
    sent_before = len(tp.sent)
    with pytest.raises(SessionError) as err:
        session.sharing.more("carol", "dog.png", 2)
    assert err.value.code == "no_grant"
    assert str(err.value) == "carol never shared dog.png with you"
    assert len(tp.sent) == sent_before  # no MoreViews to carol, no post to the cloud
    with pytest.raises(InvalidName):  # a bad name is still a bad name first
        session.sharing.more("carol", "a/b.png", 2)
    assert len(tp.sent) == sent_before


def test_an_owner_drops_a_more_for_an_image_she_never_shared_once_with_a_notice(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    session, _tp, _clock = joined
    stray = Update(id="bob#7", kind="more", owner="alice", borrower="bob", image="dog.png",
                   delta=1, addressee="alice", grant=b"", created=time.time())
    assert session.sharing.apply_updates([stray]) == [
        "bob asked for more views of dog.png, which you never shared with them: ignored"]
    assert session.sharing.apply_updates([stray]) == []  # the same update again: seen
    assert session.db.requests(None) == []
