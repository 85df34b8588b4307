"""Shared fixtures: a real local cloud of node processes on 127.0.0.1 (stopped even on failure)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.localcloud import Cloud
from transport.udp import Transport


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """Three nodes, failure simulation off, up and in majority."""
    c = Cloud(tmp_path, 3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def cloud_factory(tmp_path: Path) -> Iterator[object]:
    """Build clouds with other settings: cloud_factory(n=3, failures=False, sections={...})."""
    made: list[Cloud] = []

    def make(n: int = 3, *, failures: bool = False, sections: dict | None = None,
             start: bool = True, sub: str = "cloud") -> Cloud:
        root = tmp_path / f"{sub}{len(made)}"
        root.mkdir()
        c = Cloud(root, n, failures=failures, sections=sections)
        made.append(c)
        if start:
            c.start()
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in the main thread, as in a terminal. A suite started as a
    background job of a non-interactive shell (`pytest ... &` in a script) inherits SIGINT
    ignored, and Python then keeps it ignored: a test that presses Ctrl-C would wait forever."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@pytest.fixture
def transports() -> Iterator[list[Transport]]:
    """Real transports a test started (append them): stopped at its end."""
    started: list[Transport] = []
    yield started
    for t in started:
        t.stop()
