"""The ports a test or benchmark cloud takes (benchmarks.localcloud.free_udp_ports): below the
kernel's ephemeral range, so a socket bound to port 0 (a shell, a client) never takes a node's
port while the node restarts; one slice per pytest-xdist worker, so two workers' clouds never
pick the same port; each port tried by binding it."""

from __future__ import annotations

import random
import socket

import pytest

from benchmarks import localcloud
from benchmarks.localcloud import free_udp_ports, port_slice


def _ephemeral_low() -> int:
    return int(localcloud.EPHEMERAL.read_text().split()[0])


def test_the_workers_slices_are_disjoint_and_below_the_ephemeral_ports() -> None:
    slices = [set(port_slice(f"gw{k}")) for k in range(localcloud.SLICES)]
    for i, a in enumerate(slices):
        assert len(a) >= 1000
        assert max(a) < _ephemeral_low() and min(a) >= localcloud.PORTS_LOW
        for b in slices[i + 1:]:
            assert not a & b
    assert set(port_slice("")) == slices[0]  # no worker (a benchmark, pytest -n 0)
    assert set(port_slice(f"gw{localcloud.SLICES}")) == slices[0]  # more workers than slices


def test_free_ports_are_distinct_bindable_and_in_this_workers_slice() -> None:
    got = free_udp_ports(6)
    assert len(set(got)) == 6 and set(got) <= set(port_slice())
    socks = []
    try:
        for port in got:  # free: a node can bind each of them now
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
    finally:
        for s in socks:
            s.close()


def test_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = random.choice(port_slice())
    try:
        taken.bind(("127.0.0.1", port))
    except OSError:
        taken.close()
        pytest.skip(f"port {port} is in use by another process")
    try:
        tries = iter([port, port])  # the taken port first, twice: then any other
        real = random.choice
        monkeypatch.setattr(localcloud.random, "choice", lambda seq: next(tries, None) or real(seq))
        got = free_udp_ports(2)
        assert port not in got and len(set(got)) == 2
    finally:
        taken.close()
