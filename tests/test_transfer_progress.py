"""Byte-level progress of messages in flight (the shell's bar for large transfers)."""

from __future__ import annotations

import threading
import time

import pytest

from config import TransportConfig
from shell.render import transfer_line
from transport.policy import LossPolicy
from transport.sim import Blob, BlobCodec
from transport.udp import Transport

pytestmark = pytest.mark.timeout(60)


def test_progress_moves_from_zero_to_all_bytes_during_a_large_send() -> None:
    cfg = TransportConfig()
    # the receiver drops 30 %: the send takes long enough to be watched
    rx = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec, name="rx",
                         policy=LossPolicy(drop=0.3, seed=3))
    tx = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec, name="tx")
    try:
        assert tx.progress() == (0, 0)
        size = 8_000_000
        seen: list[tuple[int, int]] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.append(tx.progress())
                time.sleep(0.002)

        t = threading.Thread(target=watch)
        t.start()
        tx.send(rx.address, Blob(b"x" * size), deadline_s=30).get(timeout=60)
        stop.set()
        t.join()
        moving = [d for d, total in seen if total == size]
        assert moving, "the send was never seen in flight"
        assert moving == sorted(moving) and 0 <= moving[0] < size  # acknowledged bytes only grow
        assert len(set(moving)) > 1
        assert tx.progress() == (0, 0)  # nothing in flight any more
        assert rx.progress() == (0, 0)
    finally:
        tx.stop()
        rx.stop()


def test_transfer_line_shows_megabytes_and_a_proportional_bar() -> None:
    assert transfer_line(1_200_000, 3_400_000) == (
        "[##########--------------------] 1.2/3.4 MB transferred")
    assert transfer_line(5, 0).startswith("[" + "#" * 30)
