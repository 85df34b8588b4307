"""A real ClientSession (its ClientSessionActor) over a FakeTransport, joined to a cloud that the
test plays, with a fake clock the test moves. Used by test_session_cancel.py and
test_accepted_replies.py."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import config
from actors.client.client_session import ClientSession
from actors.client.session_messages import Tick
from codec.messages import Join, JoinReply
from tests.fake_transport import FakeClock, FakeTransport
from transport.errors import SendError

ME = ("127.0.0.1", 40001)
TOKEN = b"T" * 16
LOST = SendError("unacknowledged", "fake: no acknowledgement")


def joined_session(home: Path) -> Iterator[tuple[ClientSession, FakeTransport, FakeClock]]:
    """Yields a session joined through a majority of the default config's nodes; closes it."""
    cfg = config.load(None)
    tp = FakeTransport(address=ME, auto=None)
    clock = FakeClock(500.0)
    session = ClientSession("alice", home, cfg, transport=tp, clock=clock, rng=random.Random(2))

    def answer() -> None:
        join = tp.wait_msg(Join)[0]
        for node in cfg.nodes[:2]:  # a majority answers the join
            tp.deliver(node.client_addr, JoinReply(rid=join.rid, token=TOKEN, updates=()))

    threading.Thread(target=answer, daemon=True).start()
    session.join()
    try:
        yield session, tp, clock
    finally:
        for s in tp.sent:
            tp.complete(s, LOST)
        tp.auto = "fail"  # the Leave at close: nodes that do not acknowledge
        session.close()


def tick(session: ClientSession, clock: FakeClock, advance: float) -> None:
    clock.now += advance
    session.actor.ask(Tick())
