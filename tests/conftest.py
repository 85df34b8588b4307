"""Shared fixtures: a real local cloud of node processes on 127.0.0.1 (stopped even on failure)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.localcloud import Cloud
from transport.udp import Transport


_PYC_PREFIX = pytest.StashKey[tuple[str, str]]()  # (cache dir, PYTHONDONTWRITEBYTECODE)


def pytest_configure(config: pytest.Config) -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on this machine), every child process of the run
    (node, shell, driver, status: hundreds) compiled the project's sources again, ~0.2 s of CPU
    each. The children now share one bytecode cache of this run, outside the checkout
    (PYTHONPYCACHEPREFIX, a temp dir removed at the end); this process is unchanged."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        prefix = tempfile.mkdtemp(prefix="veilshare-pyc-")
        config.stash[_PYC_PREFIX] = (prefix, os.environ.pop("PYTHONDONTWRITEBYTECODE"))
        os.environ["PYTHONPYCACHEPREFIX"] = prefix


def pytest_unconfigure(config: pytest.Config) -> None:
    saved = config.stash.get(_PYC_PREFIX, None)
    if saved is not None:
        prefix, dont_write = saved
        os.environ["PYTHONDONTWRITEBYTECODE"] = dont_write
        del os.environ["PYTHONPYCACHEPREFIX"]
        shutil.rmtree(prefix, ignore_errors=True)


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
