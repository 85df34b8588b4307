"""Log lines per cause are limited; counts are not (issue 15 item 6)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pykka
import pytest
from fake_transport import FakeTransport
from node_actor_kit import FakeClock, Recorder, three_node_config

from actors.core.loglimit import LogLimiter
from actors.node.base import PeerLink, Wire
from actors.node.directory_actor import DirectoryActor
from actors.node.pending_store import PinStore
from actors.node.signals import ClientIn, ClusterView, Tick
from codec.messages import ClientHeartbeat


def test_at_most_burst_lines_per_window_then_a_count_of_what_was_left_out() -> None:
    lim = LogLimiter(burst=3, window_s=10.0)
    got = [lim.admit("bad", 100.0 + i * 0.01) for i in range(10)]
    assert [w for w, _ in got] == [True] * 3 + [False] * 7
    assert lim.admit("other", 100.5) == (True, 0)  # causes are limited apart
    assert lim.admit("bad", 110.0) == (True, 7)  # the next window says how many were left out
    assert lim.admit("bad", 110.1) == (True, 0)


def test_a_flood_that_stops_is_summed_up_by_flush() -> None:
    lim = LogLimiter(burst=1, window_s=5.0)
    for i in range(4):
        lim.admit("bad", float(i) / 10)
    assert lim.flush(4.0) == []  # window not over
    assert lim.flush(5.0) == [("bad", 3)]
    assert lim.flush(20.0) == []


def test_a_flood_of_refused_heartbeats_is_counted_in_full_and_logged_in_brief(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = three_node_config()
    clock = FakeClock()
    client = FakeTransport(address=cfg.node(1).client_addr)
    view = ClusterView(version=1, self_up=True, majority=True, up=frozenset({1, 2, 3}),
                       syncing=False, token_holder=1, holding=False, down_since=0.0)
    ref: Any = DirectoryActor.start(cfg, 1, client, PeerLink(cfg, 1, FakeTransport()),  # type: ignore[arg-type]
                                    PinStore(tmp_path / "pending.db"), view, clock=clock)
    try:
        ref.ask(Wire({"pending": Recorder.start(), "election": Recorder.start(),
                      "supervisor": Recorder.start()}))
        with caplog.at_level(logging.INFO, logger="actors.node.base"):
            for _ in range(2000):
                ref.tell(ClientIn(("127.0.0.1", 40001),
                                  ClientHeartbeat(user="ghost", token=bytes(16))))
            assert ref.proxy().counters.get()["directory_refused"] == 2000
            clock.advance(11.0)
            ref.ask(Tick())
        lines = [r.getMessage() for r in caplog.records if "directory_refused" in r.getMessage()]
        assert len(lines) == 5 + 1  # the burst, then one summary line
        assert lines[-1].endswith("1995 more lines left out")
    finally:
        pykka.ActorRegistry.stop_all()
