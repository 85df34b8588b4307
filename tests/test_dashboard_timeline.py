"""The dashboard's derivation (actors.dashboard.timeline): status polls in, timeline out, fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from actors.dashboard.timeline import CloudTimeline
from actors.status import row


def up(node: int, *, pid: int = 0, served: int = 0, token: bool = False, holder: int = 0,
       state: str = "up", syncing: bool = False, users: int = 0) -> dict[str, Any]:
    r = row(None, node)
    r.update(state=state, pid=pid or 100 + node, served=served, token=token,
             token_holder=holder, majority=True, syncing=syncing, users=users, digest="ab")
    return r


def gone(node: int) -> dict[str, Any]:
    return row(None, node)


def poll(tl: CloudTimeline, now: float, *rows: dict[str, Any]) -> dict[str, Any]:
    tl.add(now, list(rows))
    return tl.snapshot(now)


def states(snap: dict[str, Any]) -> dict[int, str]:
    return {n["id"]: n["state"] for n in snap["nodes"]}


def test_first_poll_all_up_no_periods_and_the_holder() -> None:
    tl = CloudTimeline([1, 2, 3])
    snap = poll(tl, 1000.0, up(1, holder=2), up(2, token=True, holder=2), up(3, holder=2))
    assert states(snap) == {1: "up", 2: "up", 3: "up"}
    assert snap["holder"] == 2 and snap["answering"] == 3 and snap["polls"] == 1
    assert snap["periods"] == [] and snap["events"] == []
    assert snap["token"] == [{"node": 2, "start": 1000.0, "end": None}]
    assert [n["pid"] for n in snap["nodes"]] == [101, 102, 103]


def test_an_unreachable_stretch_is_one_period_closed_by_the_next_answer() -> None:
    tl = CloudTimeline([1, 2, 3])
    poll(tl, 10.0, up(1), up(2), up(3))
    poll(tl, 11.0, up(1), gone(2), up(3))
    snap = poll(tl, 12.0, up(1), gone(2), up(3))
    assert states(snap)[2] == "unreachable"
    assert snap["nodes"][1]["pid"] == 102  # the last pid it told
    assert snap["periods"] == [{"node": 2, "state": "unreachable", "start": 11.0, "end": None}]
    assert snap["answering"] == 2
    snap = poll(tl, 13.5, up(1), up(2), up(3))
    assert snap["periods"] == [{"node": 2, "state": "unreachable", "start": 11.0, "end": 13.5}]
    assert [e["text"] for e in snap["events"]] == ["node 2: up -> unreachable",
                                                  "node 2: unreachable -> up"]
    assert snap["nodes"][1]["restarts"] == 0  # same pid: it was paused, not restarted


def test_down_by_the_token_and_syncing_are_their_own_periods() -> None:
    tl = CloudTimeline([1, 2])
    poll(tl, 0.0, up(1, token=True), up(2, holder=1))
    poll(tl, 1.0, up(1, token=True, state="down"), up(2, holder=1))
    poll(tl, 5.0, up(1, token=True, syncing=True), up(2, holder=1))
    snap = poll(tl, 6.0, up(1, holder=2), up(2, token=True))
    assert snap["periods"] == [
        {"node": 1, "state": "down", "start": 1.0, "end": 5.0},
        {"node": 1, "state": "syncing", "start": 5.0, "end": 6.0}]
    assert snap["token"] == [{"node": 1, "start": 0.0, "end": 6.0},
                             {"node": 2, "start": 6.0, "end": None}]
    assert "token: node 1 -> node 2" in [e["text"] for e in snap["events"]]


def test_a_restart_seen_as_unreachable_counts_once_and_shows_the_new_pid() -> None:
    tl = CloudTimeline([1, 2, 3])
    poll(tl, 0.0, up(1), up(2), up(3, pid=500))
    poll(tl, 1.0, up(1), up(2), gone(3))
    snap = poll(tl, 2.0, up(1), up(2), up(3, pid=777))
    n3 = snap["nodes"][2]
    assert (n3["state"], n3["pid"], n3["restarts"]) == ("up", 777, 1)
    assert snap["periods"] == [{"node": 3, "state": "unreachable", "start": 1.0, "end": 2.0}]
    assert "node 3 restarted: pid 500 -> 777" in [e["text"] for e in snap["events"]]


def test_a_restart_between_two_polls_still_shows_a_period() -> None:
    tl = CloudTimeline([1])
    poll(tl, 0.0, up(1, pid=500))
    poll(tl, 0.5, up(1, pid=500))
    snap = poll(tl, 1.0, up(1, pid=600))
    assert snap["periods"] == [{"node": 1, "state": "restarted", "start": 0.5, "end": 1.0}]
    assert snap["nodes"][0]["restarts"] == 1


def test_rates_from_counter_deltas_over_the_rate_window() -> None:
    tl = CloudTimeline([1, 2], rate_window_s=2.0)
    for i in range(5):  # node 1 serves 10 a second, node 2 nothing
        snap = poll(tl, float(i), up(1, served=10 * i), up(2, served=7))
    assert [n["rate"] for n in snap["nodes"]] == [pytest.approx(10.0), 0.0]
    (r1, r2) = snap["rates"]
    assert r1["node"] == 1 and [p[0] for p in r1["points"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [p[1] for p in r1["points"]] == pytest.approx([0.0, 10.0, 10.0, 10.0, 10.0])
    assert [p[1] for p in r2["points"]] == [0.0] * 5


def test_a_counter_that_restarts_from_zero_gives_no_negative_rate() -> None:
    tl = CloudTimeline([1], rate_window_s=1.0)
    poll(tl, 0.0, up(1, pid=5, served=1000))
    poll(tl, 1.0, gone(1))
    snap = poll(tl, 2.0, up(1, pid=6, served=4))  # restarted: 4 served since
    assert snap["rates"][0]["points"] == [[0.0, 0.0], [1.0, None], [2.0, pytest.approx(2.0)]]
    snap = poll(tl, 3.0, up(1, pid=6, served=2))  # a counter going back, same pid
    assert snap["rates"][0]["points"][-1] == [3.0, pytest.approx(2.0)]


def test_only_the_window_is_kept() -> None:
    tl = CloudTimeline([1, 2], window_s=10.0)
    poll(tl, 0.0, up(1, token=True), up(2))
    poll(tl, 1.0, up(1, token=True), gone(2))
    poll(tl, 2.0, up(1), up(2, token=True))
    snap = {}
    for t in range(3, 14):
        snap = poll(tl, float(t), up(1), up(2, token=True))
    assert snap["periods"] == []  # [1, 2] ended before 13 - 10
    assert snap["token"] == [{"node": 2, "start": 2.0, "end": None}]
    assert min(p[0] for s in snap["rates"] for p in s["points"]) >= 3.0
    assert all(e["t"] >= 3.0 for e in snap["events"])


def test_no_answer_at_all() -> None:
    tl = CloudTimeline([1, 2, 3])
    snap = poll(tl, 5.0, gone(1), gone(2), gone(3))
    assert snap["answering"] == 0 and snap["holder"] == 0
    assert states(snap) == {1: "unreachable", 2: "unreachable", 3: "unreachable"}
    assert len(snap["periods"]) == 3


def test_the_holder_most_nodes_name_when_nobody_claims_the_token() -> None:
    rows = {1: up(1, holder=3), 2: up(2, holder=3), 3: gone(3)}
    assert CloudTimeline.holder_of(rows) == 3
    rows = {1: up(1, holder=0), 2: up(2, holder=0)}
    assert CloudTimeline.holder_of(rows) == 0


def test_rows_of_unknown_nodes_are_ignored_and_missing_rows_are_unreachable() -> None:
    tl = CloudTimeline([1, 2])
    snap = poll(tl, 1.0, up(1), up(9))
    assert states(snap) == {1: "up", 2: "unreachable"}
    snap = poll(tl, 2.0, up(1, holder=200), up(2, holder=200))
    assert snap["holder"] == 0  # a holder outside the config is unknown


@pytest.mark.parametrize("kw", [{"window_s": 0}, {"rate_window_s": -1}])
def test_nonsense_windows_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="timeline"):
        CloudTimeline([1], **kw)
