"""benchmarks.transport_core runs: a whole window of a 2 MB message goes through the core and
is taken by the receiver without a refused datagram, for both socket kinds. The arithmetic of the
other benchmarks' reports: benchmarks.transport's CPU figures, benchmarks.cloud's summary and
phases, benchmarks.profile_nodes' CPU shares."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import transport_core


@pytest.mark.parametrize("kind", ["client", "peer"])
def test_core_benchmark_moves_a_window_without_refusals(kind: str) -> None:
    send_us, recv_us, n = transport_core.measure(kind, 1)  # raises if a datagram is refused
    assert n == 1024  # window_blocks x block_size of the default config
    assert send_us > 0 and recv_us > 0


def test_transport_benchmark_cpu_figures_per_datagram() -> None:
    from benchmarks.transport import _cpu_figures

    # two runs of a 1000-datagram message: 2 ms and 3 ms of CPU over 2000 datagrams, 10 ms a run
    got = _cpu_figures([0.002, 0.003, 2000], 1000, 0.01)
    assert got == pytest.approx(
        {"wall_us_per_dg": 10.0, "sender_cpu_us_per_dg": 1.0, "receiver_cpu_us_per_dg": 1.5}
    )


def test_cloud_benchmark_summary_ratio_elections_and_phases() -> None:
    """benchmarks.cloud (c) and (d): the 6-client ratio is against the smallest cloud of the
    same run; elections are read at 1 client and at the most clients; phases are medians."""
    from benchmarks.cloud import phase_p50, small_phases, summary

    def row(nodes: int, clients: int, ips: float, e50: float, e99: float) -> dict[str, object]:
        return {"nodes": nodes, "clients": clients, "images": 100, "images_per_s": ips,
                "p50_ms": 2.0 * nodes, "election_p50_ms": e50, "election_p99_ms": e99,
                "node_cpu_ms": 1.5 * nodes + clients / 6, "client_cpu_ms": 0.5 * nodes,
                "phases_p50": {"upload_ms": 1.0, "election_ms": e50, "seal_ms": 0.5,
                               "download_ms": 0.2}}

    load = [row(1, 1, 400, 0, 0), row(1, 6, 800, 0, 0),
            row(3, 1, 250, 0.6, 1.5), row(3, 3, 400, 1.0, 3.0), row(3, 6, 560, 1.8, 6.0)]
    got = summary(load, cores=2)
    assert [(s["nodes"], s["images_per_s"]) for s in got] == [(1, 800), (3, 560)]
    # the CPU budget is read at the most clients: 3 nodes, 6 clients: 5.5 + 1.5 ms an image
    assert (got[1]["node_cpu_ms"], got[1]["client_cpu_ms"]) == (5.5, 1.5)
    assert got[1]["cpu_bound_per_s"] == pytest.approx(2000 / 7)
    assert got[0]["cpu_bound_per_s"] == pytest.approx(2000 / 3)
    assert got[1]["ratio_to_smallest"] == pytest.approx(0.7)
    assert (got[1]["election_p50_1_ms"], got[1]["election_p99_1_ms"]) == (0.6, 1.5)
    assert (got[1]["election_p50_most_ms"], got[1]["election_p99_most_ms"]) == (1.8, 6.0)
    small = small_phases(load, 3)
    assert [s["request"] for s in small] == ["small, 1 client", "small, 6 clients"]
    assert small[1]["election_ms"] == 1.8 and small[0]["p50_ms"] == 6.0
    runs = [{"upload_ms": u, "election_ms": 1.0, "seal_ms": s, "download_ms": 3.0}
            for u, s in ((10, 50), (30, 70), (20, 200), (float("nan"), 60))]
    # an upload the client could not time (NaN) is left out of the upload's median only
    assert phase_p50(runs) == {"upload_ms": 20, "election_ms": 1.0, "seal_ms": 65,
                               "download_ms": 3.0}
    assert math.isnan(phase_p50([runs[3]])["upload_ms"])


def test_cloud_benchmark_paired_ratio_brackets_each_three_node_batch() -> None:
    """benchmarks.cloud (e): each 3-node batch is divided by the mean of the 1-node batches just
    before and after it, so a host that slows down steadily does not move the ratio."""
    from benchmarks.cloud import bracketed_ratios

    # the host slows linearly: 1-node batches 800, 700, 600; the 3-node ones at 0.6 of the
    # 1-node figure of their moment (750 and 650 in between): 450 and 390
    assert bracketed_ratios([800, 700, 600], [450, 390]) == pytest.approx([0.6, 0.6])
    # against only the batch before it, the same runs would say 0.5625 and 0.557
    assert bracketed_ratios([500, 500], [400]) == pytest.approx([0.8])
    with pytest.raises(ValueError):
        bracketed_ratios([500, 500], [400, 300])


def test_ab_rotates_the_order_and_counts_wins_against_the_first_checkout() -> None:
    """benchmarks.ab: each checkout opens one round in turn (a run's place in the round must not
    favour one checkout), and the wins are counted per round against checkout 0."""
    from benchmarks.ab import rotations, summarize

    orders = rotations(3, 6)
    assert orders[:3] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]] and orders[3:] == orders[:3]
    for place in range(3):  # over 3 rounds each checkout holds each place once
        assert sorted(o[place] for o in orders[:3]) == [0, 1, 2]

    def fig(ips: float, p50: float) -> dict[str, float]:
        return {"images_per_s": ips, "node_cpu_ms": 3.0, "client_cpu_ms": 1.0, "p50_ms": p50,
                "election_p50_ms": 1.0}

    # round 1: b more images/s, worse p50; round 2: b worse at both; round 3: b better at both
    runs = [[fig(400, 3.0), fig(420, 3.2)], [fig(500, 2.5), fig(450, 2.6)],
            [fig(300, 4.0), fig(350, 3.5)]]
    a, b = summarize(["a", "b"], runs)
    assert (a["images_per_s"], b["images_per_s"]) == (400, 420)  # medians
    assert (b["p50_ms"], b["rounds"]) == (3.2, 3)
    assert (b["more_images_per_s"], b["lower_p50"]) == (2, 1)
    assert "more_images_per_s" not in a


def test_node_profile_summary_drops_idle_waits_and_counts_shares(tmp_path: Path) -> None:
    """benchmarks.profile_nodes: a stack whose leaf is a blocking wait (found by its source
    line) is not CPU; the rest is shared out by self and inclusive time over all node files."""
    import inspect
    import threading

    from benchmarks.profile_nodes import is_idle, summary

    src, first = inspect.getsourcelines(threading.Condition.wait)
    wait_line = first + next(i for i, t in enumerate(src) if "waiter.acquire()" in t)
    idle = f"Condition.wait (threading.py:{wait_line})"
    busy = f"Condition.wait (threading.py:{first})"  # the def line: not a wait
    assert is_idle(idle) and not is_idle(busy)
    # an actor of ours waiting on its SimpleQueue mailbox: the wait is C, pykka's loop the leaf
    import pykka

    loop = pykka.Actor._actor_loop_running
    src, first = inspect.getsourcelines(loop)
    get_line = first + next(i for i, t in enumerate(src) if "self.actor_inbox.get()" in t)
    path = inspect.getsourcefile(loop)
    assert is_idle(f"Actor._actor_loop_running ({path}:{get_line})")
    assert not is_idle(f"Actor._actor_loop_running ({path}:{first})")
    # the reader's poll after datagrams moved: neither idle nor a function's CPU, counted apart
    from benchmarks.profile_nodes import is_poll
    from transport.udp import Reactor

    src, first = inspect.getsourcelines(Reactor._wait)
    yield_line = first + next(i for i, t in enumerate(src) if "os.sched_yield()" in t)
    poll = f"Reactor._wait (transport/udp.py:{yield_line})"
    assert is_poll(poll) and not is_idle(poll)
    assert not is_poll(f"Reactor._wait (transport/udp.py:{first})")
    run = "run (threading.py:1)"
    (tmp_path / "a.txt").write_text(
        f"{run};seal (codec/seal.py:10);compress_rows (codec/png.py:5) 30\n"
        f"{run};{idle} 500\n"
    )
    (tmp_path / "b.txt").write_text(
        f"{run};seal (codec/seal.py:10) 10\n{run};send (transport/udp.py:3) 60\n"
        f"{run};{poll} 25\n"
    )
    text = summary("t", [tmp_path / "a.txt", tmp_path / "b.txt"], top=5)
    assert "100 samples" in text
    assert "polls after datagrams moved, 25 samples more (20.0 % of all)" in text
    assert "| `send (transport/udp.py)` | 60.0 |" in text
    assert "| `compress_rows (codec/png.py)` | 30.0 |" in text
    assert "| `seal (codec/seal.py)` | 10.0 |" in text  # self time
    assert "| `seal (codec/seal.py)` | 40.0 |" in text  # inclusive
    assert "Condition.wait" not in text


def test_election_trace_splits_one_link_delay_at_the_sockets(tmp_path: Path) -> None:
    from benchmarks.election_trace import link_parts

    # node 1 (peer port 7001) sends node 2 (7002) an Election: flush at 10.000, socket send at
    # 10.001, node 2's recv at 10.004, its router at 10.006; a socket send to node 3 and an
    # older receive do not count
    (tmp_path / "t1").write_text("10.000000 tx_election r#1 2\n"
                                 "10.0005 sock_send - 7001>7003\n"
                                 "10.001000 sock_send - 7001>7003,7002\n")
    (tmp_path / "t2").write_text("9.000000 sock_recv - 7002<7001\n"
                                 "10.004000 sock_recv - 7002<7001\n"
                                 "10.006000 rx_election r#1 1\n")
    (tmp_path / "t3").write_text("")
    out = link_parts([tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"], 5.0,
                     {1: 7001, 2: 7002, 3: 7003})
    rows = {ln[:32].strip(): ln[32:].split() for ln in out.splitlines()[2:]}
    assert "over 1 Elections" in out.splitlines()[0]
    assert rows == {}  # p50/p90 need two Elections: one is not a distribution
    (tmp_path / "t1").write_text((tmp_path / "t1").read_text()
                                 + "11.000000 tx_election r#2 2\n11.002000 sock_send - 7001>7002\n")
    (tmp_path / "t2").write_text((tmp_path / "t2").read_text()
                                 + "11.003000 sock_recv - 7002<7001\n11.004000 rx_election r#2 1\n")
    out = link_parts([tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"], 5.0,
                     {1: 7001, 2: 7002, 3: 7003})
    rows = {ln[:32].strip(): [float(v) for v in ln[32:].split()] for ln in out.splitlines()[2:]}
    assert rows["election send -> socket send"][0] == pytest.approx(1.5)  # median of 1, 2
    assert rows["socket send -> peer's recv"][0] == pytest.approx(2.0)  # of 3, 1
    assert rows["peer's recv -> its router"][0] == pytest.approx(1.5)  # of 2, 1
    assert "send -> peer's wait ends, polled" not in rows  # no waits noted: no split


def test_election_trace_times_the_peer_readers_wait_polled_or_asleep(tmp_path: Path) -> None:
    """An Election that finds the peer's reader in its wait: the time until that wait returned,
    apart by whether the reader polled (wait_in's detail > 0) or slept; a send while the reader
    was busy (between a wait_out and the next wait_in) is not in either."""
    from benchmarks.election_trace import link_parts

    t1, t2 = [], []
    for k, (spin_us, back_ms) in enumerate([(2000, 0.2), (1500, 0.4), (0, 1.0), (0, 3.0)]):
        base = 10.0 + k  # node 2 enters its wait, node 1's Election leaves 1 ms later
        t2.append(f"{base:.6f} wait_in - {spin_us}")
        t1.append(f"{base + 0.0005:.6f} tx_election r#{k} 2")
        t1.append(f"{base + 0.001:.6f} sock_send - 7001>7002")
        t2.append(f"{base + 0.001 + back_ms / 1000:.6f} wait_out - ")
        t2.append(f"{base + 0.0011 + back_ms / 1000:.6f} sock_recv - 7002<7001")
        t2.append(f"{base + 0.0012 + back_ms / 1000:.6f} rx_election r#{k} 1")
    # a fifth Election sent while node 2 was busy: no wait to time
    t2.append("20.000000 wait_out - ")
    t1.append("20.000100 tx_election r#5 2")
    t1.append("20.000200 sock_send - 7001>7002")
    t2.append("20.000300 sock_recv - 7002<7001")
    t2.append("20.000400 rx_election r#5 1")
    t2.append("20.000500 wait_in - 2000")
    (tmp_path / "t1").write_text("\n".join(t1) + "\n")
    (tmp_path / "t2").write_text("\n".join(t2) + "\n")
    (tmp_path / "t3").write_text("")
    out = link_parts([tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"], 5.0,
                     {1: 7001, 2: 7002, 3: 7003})
    rows = {ln[:32].strip(): [float(v) for v in ln[32:].split()] for ln in out.splitlines()[2:]}
    assert "over 5 Elections" in out.splitlines()[0]
    assert rows["send -> peer's wait ends, polled"][0] == pytest.approx(0.3)  # median of .2, .4
    assert rows["send -> peer's wait ends, slept"][0] == pytest.approx(2.0)  # of 1, 3
    assert rows["send -> peer's wait ends, polled"][2] == 2  # n: the busy one is in neither
    assert rows["socket send -> peer's recv"][2] == 5


def test_thread_cpu_counts_this_thread_and_reports_per_request() -> None:
    """benchmarks.thread_cpu: /proc counts this thread's CPU as it spins; the per-request rows
    give each thread's ticks as ms per request under its name (or its id), busiest first, and
    leave out the threads that did nothing."""
    import os
    import threading
    import time

    from benchmarks import thread_cpu

    me = threading.get_native_id()
    before = thread_cpu.thread_counts(os.getpid())
    ticks = os.sysconf("SC_CLK_TCK")
    t0 = time.thread_time()
    while time.thread_time() - t0 < 3 / ticks:  # three clock ticks of CPU on this thread
        pass
    after = thread_cpu.thread_counts(os.getpid())
    assert after[me][0] + after[me][1] > before[me][0] + before[me][1]
    assert all(a >= b for a, b in zip(after[me], before[me], strict=True))

    rows = thread_cpu.per_request(
        {1: (10, 2, 5, 0), 2: (0, 0, 0, 0), 3: (4, 4, 4, 4)},
        {1: (30, 4, 9, 2), 2: (40, 0, 1, 0), 3: (4, 4, 4, 4), 4: (0, 10, 0, 0)},
        {1: "transport-node1-peer", 2: "EncryptFlowActor-7"},
        10,
    )
    tick_ms = 1000 / ticks
    assert rows == [
        ("EncryptFlowActor-7", pytest.approx(4 * tick_ms), 0.0, 0.1, 0.0),
        ("transport-node1-peer", pytest.approx(2 * tick_ms), pytest.approx(0.2 * tick_ms), 0.4,
         0.2),
        ("thread 4", 0.0, pytest.approx(tick_ms), 0.0, 0.0),
    ]


def test_node_profile_is_read_with_the_source_lines_it_was_recorded_with(tmp_path: Path) -> None:
    """benchmarks.profile_nodes: `save_lines` keeps each leaf frame's source text beside the raw
    profiles; a profile read after the code changed (its line numbers moved) is classified by
    those texts, not by whatever the same line numbers hold now."""
    import inspect
    import json

    from benchmarks.profile_nodes import LINES_FILE, save_lines, summary
    from transport.udp import Reactor

    src, first = inspect.getsourcelines(Reactor._wait)
    run = "run (threading.py:1)"
    wait = f"Reactor._wait (transport/udp.py:{first})"  # its def line now: not a wait
    raw = tmp_path / "small-node1.txt"
    raw.write_text(f"{run};{wait} 70\n{run};send (transport/udp.py:3) 30\n")
    path = save_lines([raw])
    recorded = json.loads(path.read_text())
    assert recorded[f"transport/udp.py:{first}"] == src[0]  # the text, read at record time
    now = summary("now", [raw])
    assert "100 samples" in now and "| `Reactor._wait (transport/udp.py)` | 70.0 |" in now
    # as if recorded with older code, where that line was the blocking select
    recorded[f"transport/udp.py:{first}"] = "        ready, _, _ = select.select(fds, [], [], timeout)\n"
    (tmp_path / LINES_FILE).write_text(json.dumps(recorded))
    text = summary("then", [raw])
    assert "30 samples" in text and "Reactor._wait" not in text


def test_codec_speed_times_every_hot_message_as_the_codec_builds_it_now() -> None:
    """The message table follows the codec: every sample builds with today's fields (a field
    added to a message, as `bind` was to ElectionItem, breaks this before anyone runs the
    benchmark), and each row holds its encoded size and three timings."""
    from benchmarks import codec_speed
    from codec import messages as m

    rows = codec_speed.measure(number=1, repeat=1)
    names = [r["message"] for r in rows]
    assert names == list(codec_speed._samples())
    assert "ElectionBatch(16)" in names and "EncryptRequest(4KB)" in names
    for r in rows:
        assert r["bytes"] > 0
        assert all(r[k] > 0 for k in ("construct_us", "encode_us", "decode_us"))
    batch = codec_speed._builder(*codec_speed._samples()["ElectionBatch(16)"])()
    assert isinstance(batch, m.ElectionBatch)
    assert any(item.bind for item in batch.items)  # the bound Elections are timed too


def test_batch_benchmark_files_are_distinct_images_of_their_kind(tmp_path: Path) -> None:
    """benchmarks.batch seals its photos as distinct files (no name or byte repeats, so each
    is a new image to the client) that are still the one photo (the extra byte is after the
    JPEG's end)."""
    import io

    from PIL import Image

    from benchmarks.batch import write_files

    sets = write_files(tmp_path, small=3, photos=2)
    assert [len(v) for v in sets.values()] == [3, 2]
    blobs = [p.read_bytes() for files in sets.values() for p in files]
    assert len(set(blobs)) == 5 and len({p.name for v in sets.values() for p in v}) == 5
    a, b = (Image.open(io.BytesIO(p.read_bytes())) for p in sets["2 photos"])
    a.load()
    b.load()
    assert a.size == b.size and a.tobytes() == b.tobytes()


def test_cloud_benchmark_client_nice_is_applied_in_the_client_process(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--client-nice (a diagnostic): each client process lowers its own priority before its
    session starts; 0 (the reference) leaves it as it is."""
    import time
    from types import SimpleNamespace
    from typing import Any

    import actors.client.client_session as cs
    import config as config_mod
    from benchmarks import cloud

    calls: list[Any] = []

    class FakeSession:
        def __init__(self, user: str, home: Path, cfg: Any) -> None:
            calls.append(("session", user))
            self.caller = SimpleNamespace(stats=SimpleNamespace(duplicates=0))

        def timed_seal(self, name: str, data: bytes) -> dict[str, Any]:
            return {"node": 1, **{k: 0.1 for k in cloud.PHASES}}

        def close(self) -> None:
            calls.append("closed")

    monkeypatch.setattr(cs, "ClientSession", FakeSession)
    monkeypatch.setattr(config_mod, "load", lambda path: None)
    monkeypatch.setattr(cloud.os, "nice", lambda n: calls.append(("nice", n)))
    job = ("cluster.toml", "bench0", str(tmp_path), [("a.png", b"x")], 0.0, time.time())
    out = cloud._client((*job, 7))
    assert calls == [("nice", 7), ("session", "bench0"), "closed"]
    assert out[0]["ok"] and out[0]["node"] == 1
    calls.clear()
    cloud._client((*job, 0))
    assert calls == [("session", "bench0"), "closed"]
