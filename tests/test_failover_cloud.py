"""A winner SIGKILLed mid-request, on the real cloud (issue 19, failover).

The request is a large image (offered: only the winner fetches its bytes from the client, then
seals for about a second), so the winner is known before it answers: the one node whose memory
grows by the payload. It is SIGKILLed then; the request must still be answered exactly once, by
another node, bit-exact. No timing bound here (the failover figure is `benchmarks.chaos`'s).
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from shell_fakes import wait_for

from benchmarks.localcloud import Cloud, json_lines, stop_shell
from benchmarks.memory import payload
from codec import seal

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(240)]
SIZE = 12_000_000  # about a second of sealing here, far longer than finding the winner takes


def test_a_sigkilled_winner_is_replaced_and_the_request_answered_once(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path, 3).start()
    shell = None
    try:
        data = payload(SIZE, seed=19)
        src = tmp_path / "big.jpg"
        src.write_bytes(data)
        procs = {int(r["id"]): psutil.Process(int(r["pid"])) for r in cloud.status()}
        # a node prepares its covers after it is up, and its memory grows by more than half
        # the payload meanwhile (a second "winner" in a CI run): measure from its working size
        wait_for(lambda: all("covers prepared" in cloud.log_text(n) for n in procs), limit_s=120)
        base = {n: p.memory_info().rss for n, p in procs.items()}
        fetched: list[int] = []

        def winner_fetching() -> bool:  # only the winner holds the payload: its RSS grows
            fetched[:] = [n for n, p in procs.items()
                          if p.memory_info().rss - base[n] > SIZE // 2]
            return bool(fetched)

        shell = cloud.spawn_shell("alice", tmp_path / "alice", ["-c", f"encrypt {src}", "--json"])
        wait_for(winner_fetching, limit_s=120)
        (winner,) = fetched
        assert shell.poll() is None  # the request is still in flight at the kill
        cloud.kill(winner)
        out, err = shell.communicate(timeout=180)
        assert shell.returncode == 0, err
        (res,) = json_lines(out)
        assert res["failed"] == [] and len(res["encrypted"]) == 1, res
        row = res["encrypted"][0]
        assert row["node"] != winner  # answered by another node, from its cached offer
        assert res["duplicate_replies"] == 0 and res["accepted_twice"] == 0  # exactly once
        sealed = (tmp_path / "alice" / row["path"]).read_bytes()
        assert seal.unseal(sealed).payload == data
    finally:
        if shell is not None and shell.returncode is None:
            stop_shell(shell)
        cloud.stop()


def test_a_batch_in_flight_survives_a_node_sigkilled_under_it(tmp_path: Path) -> None:
    """One `encrypt` of nine images keeps three in the cloud at once (ClientSession.encrypt); a
    node is SIGKILLed once the first is stored, while others are in flight, some of them
    likely its own. Every image is still stored once, its own bytes, in the order given."""
    cloud = Cloud(tmp_path, 3).start()
    shell = None
    try:
        srcs = []
        for i in range(9):  # eight left at the kill: rounds of three seals, far from done
            src = tmp_path / f"b{i}.jpg"
            src.write_bytes(payload(2_000_000, seed=40 + i))
            srcs.append(src)
        home = tmp_path / "alice"
        shell = cloud.spawn_shell("alice", home, ["-c", "encrypt " + " ".join(map(str, srcs)),
                                                  "--json"])
        wait_for(lambda: (home / "encrypted").is_dir()
                 and any((home / "encrypted").iterdir()), limit_s=120)
        assert shell.poll() is None  # the rest still in flight at the kill
        cloud.kill(2)
        out, err = shell.communicate(timeout=180)
        assert shell.returncode == 0, err
        (res,) = json_lines(out)
        assert res["failed"] == [] and res["accepted_twice"] == 0, res
        assert [r["file"] for r in res["encrypted"]] == [s.name for s in srcs]
        for row, src in zip(res["encrypted"], srcs, strict=True):
            sealed = (home / row["path"]).read_bytes()
            assert seal.unseal(sealed).payload == src.read_bytes()
    finally:
        if shell is not None and shell.returncode is None:
            stop_shell(shell)
        cloud.stop()
