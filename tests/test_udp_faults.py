"""TL-3: ENOBUFS / ENETUNREACH / EMSGSIZE raised on a share of socket calls (sendto, sendmsg,
recvfrom, recvmsg): no thread dies, the counters rise, in-flight messages complete afterwards."""

from __future__ import annotations

import errno
import os
import random
import threading
from typing import Any

import pytest

from config import TransportConfig
from transport.policy import LossPolicy
from transport.sim import Blob, BlobCodec, Ping
from transport.udp import Delivery, Transport

pytestmark = pytest.mark.timeout(120)
ERRNOS = (errno.ENOBUFS, errno.ENETUNREACH, errno.EMSGSIZE)


class FaultySocket:
    """Wraps a socket; while `active` is set, `rate` of the I/O calls raise an OSError."""

    def __init__(self, sock: Any, seed: int, rate: float, active: threading.Event) -> None:
        self._sock = sock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rate = rate
        self._active = active
        self.injected = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def _maybe_fail(self) -> None:
        if not self._active.is_set():
            return
        with self._lock:
            if self._rng.random() >= self._rate:
                return
            self.injected += 1
            code = self._rng.choice(ERRNOS)
        raise OSError(code, os.strerror(code))

    def sendto(self, *args: Any) -> Any:
        self._maybe_fail()
        return self._sock.sendto(*args)

    def sendmsg(self, *args: Any) -> Any:
        self._maybe_fail()
        return self._sock.sendmsg(*args)

    def recvfrom(self, *args: Any) -> Any:
        self._maybe_fail()
        return self._sock.recvfrom(*args)

    def recvmsg(self, *args: Any) -> Any:
        self._maybe_fail()
        return self._sock.recvmsg(*args)


@pytest.mark.parametrize("batching", [True, False])
def test_tl3_socket_errors_are_survived_and_counted(batching: bool) -> None:
    active = threading.Event()
    wrappers: list[FaultySocket] = []

    def wrap(seed: int) -> Any:
        def make(sock: Any) -> FaultySocket:
            w = FaultySocket(sock, seed, 0.05, active)
            wrappers.append(w)
            return w

        return make

    cfg = TransportConfig()
    a = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec, sock_wrapper=wrap(1),
                        batching=batching, policy=LossPolicy(drop=0.05, seed=5))  # fmt: skip
    b = Transport.start(("127.0.0.1", 0), cfg, codec=BlobCodec, sock_wrapper=wrap(2),
                        batching=batching)  # fmt: skip
    got: list[Delivery] = []
    b.subscribe(got.append)
    try:
        rng = random.Random(3)
        bodies = [rng.randbytes(rng.randrange(0, 200_000)) for _ in range(60)]
        active.set()  # errors on 5 % of the calls from now on
        futures = [a.send(b.address, Blob(x), deadline_s=30) for x in bodies[:30]]
        futures[0].get(timeout=30)  # traffic flowed while errors were raised
        futures += [a.send(b.address, Blob(x), deadline_s=30) for x in bodies[30:]]
        injected_while_active = sum(w.injected for w in wrappers)
        active.clear()
        for f in futures:
            f.get(timeout=60)
        assert a.send(b.address, Ping(b"ping"), deadline_s=1.0).get(timeout=10) is None
        assert injected_while_active > 0
        s_a, s_b = a.stats(), b.stats()
        assert s_a["oserrors"] + s_b["oserrors"] == sum(w.injected for w in wrappers)
        assert s_a["internal_errors"] == s_b["internal_errors"] == 0
        assert a._reader.is_alive() and b._reader.is_alive()
        b.stop()  # drains the delivery actor: every delivery has been handed over
        assert sorted(d.msg.data for d in got if isinstance(d.msg, Blob)) == sorted(bodies)
    finally:
        a.stop()
        b.stop()
