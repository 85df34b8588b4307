"""Chaos on loopback (issue 7, TC-1): failures on with a short max_down_s, 4 clients, 500
encrypts, an owner posting updates for an offline borrower, one node SIGKILLed and restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import run_round

pytestmark = pytest.mark.timeout(420)


def test_chaos_round_loses_nothing_and_answers_everything(tmp_path: Path) -> None:
    r = run_round(tmp_path, clients=4, total=500, updates=8, seed=7)
    print({k: v for k, v in r.items() if k != "log"}, r["log"])
    assert r["failed"] == 0 and r["wrong"] == 0 and r["ok"] == 500
    assert r["accepted_twice"] == 0  # duplicate replies are counted, never accepted
    assert r["updates_acked"] == 8 and r["views"] == r["views_expected"]
    assert r["down_or_unreachable_gt1"] == 0
    assert r["two_token_holders"] == 0
    assert 0 <= r["converged_s"] <= 10
    assert any("SIGKILL" in line for line in r["log"]) and any("restarted" in line for line in r["log"])
