"""Fixtures for the N-level tests: a stale-namespace sweep once per session, `net` (five hosts
n1 n2 n3 c1 c2) and `netcloud` (the real cloud on those hosts). Tests skip, with the reason,
only where namespaces are impossible (not root, tools missing, no CAP_SYS_ADMIN); as root here
they run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .hosts import Net, available, leftovers, sweep_stale
from .netcloud import NetCloud


@pytest.fixture(scope="session")
def netns_ok() -> None:
    """Skip with the reason when namespaces are impossible; sweep crashed runs' leftovers."""
    ok, reason = available()
    if not ok:
        pytest.skip(reason)
    stale = sweep_stale()
    if stale:
        print(f"[net] removed stale namespaces of crashed runs: {' '.join(stale)}")


@pytest.fixture
def net(netns_ok: None) -> Iterator[Net]:
    """Five hosts (3 nodes, 2 clients) on one bridge; removed afterwards, checked for leftovers."""
    with Net() as n:
        yield n
    left = leftovers(n.prefix)
    assert left == [], f"namespace fixture left {left}"


@pytest.fixture
def netcloud(net: Net, tmp_path: Path) -> Iterator[Callable[..., NetCloud]]:
    """Build a NetCloud on `net` (not started): netcloud(failures=..., sections=..., ...).
    Every cloud made is stopped afterwards."""
    made: list[NetCloud] = []

    def make(**kwargs: Any) -> NetCloud:
        c = NetCloud(net, tmp_path / f"cloud{len(made)}", **kwargs)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()
