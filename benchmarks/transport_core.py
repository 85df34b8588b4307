"""`python -m benchmarks.transport_core`: CPU cost per datagram of the sans-IO transport core.

No sockets, no threads: one Endpoint builds the datagrams of a 2 MB message (one window) as the
socket layer takes them (`gathered_to_send`: header, payload view and trailer per datagram, not
joined), another takes them in one batch, as the reader thread hands them over. Prints
microseconds per datagram for the sending and the receiving side (median of `--repeat` runs), for a client socket (CRC framing)
and a peer socket (HMAC framing). This is what bounds the loopback throughput of
`benchmarks.transport` and it moves far less with the host's load than MB/s figures do.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from config import TransportConfig
from transport.auth import MemoryEpochStore, PeerAuth, PeerGuard
from transport.endpoint import Endpoint
from transport.frames import DatagramRun
from transport.sim import BULK_TYPE, fake_max_body

SIZE = 2_000_000
A, B = ("127.0.0.1", 47201), ("127.0.0.1", 47202)


def _pair(kind: str, cfg: TransportConfig) -> tuple[Endpoint, Endpoint]:
    if kind == "client":
        make = lambda seed: Endpoint(cfg, epoch=seed, rng=random.Random(seed),
                                     max_body=fake_max_body)  # fmt: skip
        return make(1), make(2)
    store = MemoryEpochStore()
    peers = {1: A, 2: B}

    def peer(node: int) -> Endpoint:
        auth = PeerAuth(secret=b"k" * 32, self_id=node, peers=peers, epoch_store=store)
        guard = PeerGuard(auth, lambda: 1_000)
        return Endpoint(cfg, epoch=node, rng=random.Random(node), max_body=fake_max_body,
                        guard=guard)  # fmt: skip

    return peer(1), peer(2)


def _joined(d: bytes | DatagramRun) -> list[bytes]:
    return [d] if isinstance(d, bytes) else d.datagrams()


def measure(kind: str, repeat: int) -> tuple[float, float, int]:
    """(send us/datagram, receive us/datagram, datagrams per run)."""
    cfg = TransportConfig()
    body = random.Random(3).randbytes(SIZE)
    send_us, recv_us = [], []
    n = 0
    for _ in range(repeat):
        a, b = _pair(kind, cfg)
        t0 = time.perf_counter()
        a.send(B, BULK_TYPE, body, 0.0)
        out = a.gathered_to_send(0.0)  # what the socket layer sends (parts, not joined)
        t1 = time.perf_counter()
        batch = [(A, d) for _, run in out for d in _joined(run)]
        t2 = time.perf_counter()
        b.datagrams_received(batch, 0.0)
        t3 = time.perf_counter()
        n = len(batch)
        if b.stats()["bad_datagrams"]:
            raise RuntimeError(f"{kind}: the receiver refused datagrams: {b.stats()}")
        send_us.append((t1 - t0) / n * 1e6)
        recv_us.append((t3 - t2) / n * 1e6)
    return statistics.median(send_us), statistics.median(recv_us), n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    print(f"sans-IO core, one window of a {SIZE:,} B message, median of {args.repeat} runs")
    print(f"{'socket':>7} {'datagrams':>10} {'send us/dg':>11} {'receive us/dg':>14}")
    for kind in ("client", "peer"):
        s, r, n = measure(kind, args.repeat)
        print(f"{kind:>7} {n:>10} {s:>11.2f} {r:>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
