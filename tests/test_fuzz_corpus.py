"""TI-9: the committed atheris corpus (tests/fuzz_corpus/<target>/) replayed without atheris.

Every file goes through the same target function the fuzzer ran (`benchmarks.fuzz_targets.run`):
only the target's allowed exceptions may occur, and no input may take 1 s or more (the hang bound
of `python -m benchmarks.fuzz`, not a speed figure): wall time by perf_counter, and CPU time too,
so that a pause of this process by the host (seen here: stopped for ~20 s) is not a hang. Known-bad inputs show that each allowed
exception is reached and that anything else, or a broken invariant, fails the replay.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from benchmarks import fuzz
from benchmarks import fuzz_targets as T
from codec import messages as M
from transport import endpoint, frames

CORPUS = Path(__file__).parent / "fuzz_corpus"
HANG_S = 1.0
MIN_FILES = 10


def _replay(target: str) -> tuple[dict[str, int], list[str]]:
    """(outcome -> count, problems) over every corpus file of `target`."""
    outcomes: dict[str, int] = {}
    problems: list[str] = []
    for path in sorted((CORPUS / target).iterdir()):
        data = path.read_bytes()
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            outcome = T.run(target, data)
        except Exception as exc:  # noqa: BLE001 - every other exception is a finding to list
            problems.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        took = time.perf_counter() - start
        if took >= HANG_S and time.process_time() - start_cpu >= HANG_S:
            problems.append(f"{path.name}: took {took:.2f} s (hang bound {HANG_S} s)")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes, problems


@pytest.mark.parametrize("target", sorted(T.TARGETS))
def test_corpus_replays_with_only_allowed_outcomes(target: str) -> None:
    outcomes, problems = _replay(target)
    assert problems == []
    assert sum(outcomes.values()) >= MIN_FILES
    expected = {"ok"} | {cls.__name__ for cls in T.ALLOWED[target]}
    assert set(outcomes) == expected  # the corpus reaches success and every allowed refusal


@pytest.mark.parametrize(
    ("target", "data", "outcome"),
    [
        ("frames", b"\x00short", "FrameError"),  # CRC framer: too short
        ("frames", b"\x01" + bytes(60), "FrameError"),  # correct CRC, bad magic
        ("frames", b"\x04\x00\x00\x00\x03", "FrameError"),  # ACK start not a multiple of 8
        ("messages", bytes([T.CODES.index(13)]) + b"\xa0", "DecodeError"),  # Ack without rid
        ("messages", b"\xf0\xff\xff\xa0", "DecodeError"),  # unknown type code 65535
        ("unseal", b"\x00GIF89a" + bytes(20), "SealError"),  # not a PNG
        ("unseal", b"\x01" + bytes(16) + b"\xf0" + bytes(40), "SealError"),  # header check wrong
        ("fragments", b"\x00\x00\x00\x00\x20" + bytes(32) + b"\x02", "ok"),  # 32 raw bytes fed
    ],
)
def test_known_bad_input_gives_the_allowed_outcome(target: str, data: bytes, outcome: str) -> None:
    assert T.run(target, data) == outcome


def test_fragments_garbage_is_counted_not_raised() -> None:
    r = T.Reader(b"\x02\x00\x00\x00\x20" + bytes(32) + b"\x02")  # peer socket, one raw datagram
    script = T._Script(r)
    batch: list[tuple[tuple[str, int], bytes]] = []
    while r.left():
        script.step(batch)
    assert script.ep.stats()["bad_datagrams"] == 1


def test_other_exception_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(frames, "parse_ack", broken)
    with pytest.raises(KeyError):
        T.run("frames", b"\x04\x00\x00\x00\x08")
    monkeypatch.setattr(M, "decode", broken)
    with pytest.raises(KeyError):
        T.run("messages", b"\x00\xa0")


def test_held_bytes_over_the_cap_breaks_the_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    real = endpoint.Endpoint.stats

    def inflated(self: endpoint.Endpoint) -> dict[str, int]:
        return {**real(self), "held_bytes": T.CFG.max_reassembly_bytes + 1}

    monkeypatch.setattr(endpoint.Endpoint, "stats", inflated)
    with pytest.raises(T.InvariantBroken, match="held_bytes"):
        T.run("fragments", b"\x00")


def test_a_decoded_message_must_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytes([T.CODES.index(13)]) + M.encode(M.Ack(rid="alice#1"))
    assert T.run("messages", data) == "ok"
    monkeypatch.setattr(M, "encode", lambda msg: b"\xa1\x63rid\x67alice#2")
    with pytest.raises(T.InvariantBroken, match="type 13"):
        T.run("messages", data)


def test_cpu_clock_flags_a_hang_and_stops_at_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    signals: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append(sig))
    clock = fuzz.CpuClock("frames", budget_s=0.0)
    clock.run(T.run, b"\x04")  # within the hang bound; the 0 s budget is spent: stop once
    clock.run(T.run, b"\x04")
    assert (clock.inputs, signals) == (2, [signal.SIGUSR1])
    monkeypatch.setattr(fuzz, "HANG_S", -1.0)  # every input is now over the bound
    with pytest.raises(fuzz.Hang):
        clock.run(T.run, b"\x04")
