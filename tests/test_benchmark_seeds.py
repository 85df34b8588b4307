"""benchmarks.transport_seeds (the TP-2 long run) on a handful of seeds and small cells: the JSON
rows carry every column, a bound the cells cannot meet and a send that must fail both turn into
FAIL and exit code 1, and worker processes give the same rows as one process."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from benchmarks import transport_seeds as ts

CELLS = ["1frag/bern10", "bs+1/bern30"]
KEYS = {
    "cell", "size", "schedule", "loss", "seeds", "failures", "failed_seeds", "mean", "p99", "max",
    "bound_mean", "bound_p99", "data_loss", "ack_loss", "seconds", "pass",
}  # fmt: skip


def _rows(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    code = ts.main(["--seeds", "5", "--json", "--cells", *CELLS, *args])
    return code, json.loads(capsys.readouterr().out)


def test_json_rows_have_every_column_and_pass_with_the_real_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, rows = _rows(capsys)
    assert code == 0
    assert [r["cell"] for r in rows] == CELLS
    for r in rows:
        assert set(r) == KEYS
        assert (r["seeds"], r["failures"], r["failed_seeds"], r["pass"]) == (5, 0, [], True)
        assert 1.0 <= r["mean"] <= r["max"] and r["p99"] <= r["max"]
    assert rows[0]["bound_p99"] is None  # one fragment: p99 not bounded
    assert (rows[1]["bound_mean"], rows[1]["bound_p99"]) == (2.5, 3.75)
    assert rows[1]["size"] == (ts.BS + 1) * ts.FS and rows[1]["loss"] == 0.3


def test_a_bound_no_cell_can_meet_is_reported_as_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ts, "BOUNDS", {0.1: 1.35, 0.3: 1.0})  # 30 % loss: mean surely above 1
    assert ts.main(["--seeds", "5", "--cells", *CELLS]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("1frag/bern10") and lines[2].endswith("pass")
    assert lines[3].startswith("bs+1/bern30") and lines[3].endswith("FAIL")
    assert lines[-1].startswith("2 cells, 1 failed")


def test_failed_sends_are_counted_with_their_seeds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ts, "DEADLINE_S", 0.001)  # far below one round trip (10 ms): all fail
    code, rows = _rows(capsys)
    assert code == 1
    for r in rows:
        assert (r["failures"], r["pass"]) == (5, False)
        assert [f["seed"] for f in r["failed_seeds"]] == [0, 1, 2, 3, 4]
        assert all(f["problems"][0].startswith("send failed") for f in r["failed_seeds"])


def test_worker_processes_give_the_same_rows(capsys: pytest.CaptureFixture[str]) -> None:
    _, one = _rows(capsys)
    _, two = _rows(capsys, "--jobs", "2")
    for a, b in zip(one, two, strict=True):
        assert {**a, "seconds": 0} == {**b, "seconds": 0}


def test_an_unknown_cell_is_refused() -> None:
    with pytest.raises(SystemExit):
        ts.main(["--cells", "2MiB/*"])


def test_burst_and_gilbert_elliott_hit_the_mean_loss_they_are_built_for() -> None:
    for kind in ("burst", "ge"):
        for p in (0.1, 0.3):
            model = ts._impairment(kind, p).loss
            assert model is not None
            rng = random.Random(7)
            n = 200_000
            rate = sum(model.lost(rng) for _ in range(n)) / n
            assert abs(rate - p) < 0.01, (kind, p, rate)
