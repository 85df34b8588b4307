"""Helpers of the tests that run real Transports on 127.0.0.1: one start function (the
transport is appended to the test's `transports` list, which conftest stops) and one thread-safe
subscriber that collects what arrives and waits for a count."""

from __future__ import annotations

import threading
from typing import Any

from config import TransportConfig
from transport.policy import LossPolicy
from transport.sim import BlobCodec
from transport.udp import Delivery, Transport

CFG = TransportConfig()
LOCAL = ("127.0.0.1", 0)


def start(started: list[Transport], policy: LossPolicy | None = None, *,
          codec: Any = BlobCodec, **kw: Any) -> Transport:
    t = Transport.start(LOCAL, CFG, codec=codec, policy=policy, **kw)
    started.append(t)
    return t


class Inbox:
    """Collects deliveries (thread-safe) and waits for a count. `entry(d)` is what is kept of
    one delivery (the Delivery itself here)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def entry(self, d: Delivery) -> Any:
        return d

    def __call__(self, d: Delivery) -> None:
        with self._cond:
            self.items.append(self.entry(d))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float = 60.0) -> list[Any]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.items) >= n, timeout), self.items
            return list(self.items)
