"""`python -m benchmarks.transport_core`: CPU cost per datagram of the sans-IO transport core.

No sockets, no threads: one Endpoint builds the datagrams of a 2 MB message (one window) as the
socket layer takes them (`gathered_to_send`: header, payload view and trailer per datagram, not
joined), another takes them in one batch, as the reader thread hands them over. Prints
microseconds per datagram for the sending and the receiving side (median of `--repeat` runs), for a client socket (CRC framing)
and a peer socket (HMAC framing). This is what bounds the loopback throughput of
`benchmarks.transport` and it moves far less with the host's load than MB/s figures do.

`--small`: the per-message cost instead, what a node's control traffic pays (issue 19): one-fragment
messages (40 B) sent one at a time, each round trip driven as the socket layer drives it (send
and pump; the peer takes the datagram, pumps out its ACK, held back or not; the sender takes the
ACK and pumps), in microseconds per round trip by phase. `--instructions` (with `--small`) runs
that under valgrind's callgrind twice, 200 and 1,200 round trips, and prints the instructions per
round trip from the difference: the same figure whatever else the machine runs (needs valgrind).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
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


def small(kind: str, n: int) -> tuple[float, float, float]:
    """n one-fragment round trips: (send, receive and ACK out, ACK in) in us per round trip."""
    a, b = _pair(kind, TransportConfig())
    body = b"x" * 40
    now = 0.0
    t_send = t_recv = t_ack = 0.0
    for _ in range(n):
        now += 0.001
        t0 = time.perf_counter()
        a.send(B, BULK_TYPE, body, now)
        out = a.gathered_to_send(now)
        a.pop_events()
        a.next_deadline()
        t1 = time.perf_counter()
        b.datagrams_received([(A, d) for _, run in out for d in _joined(run)], now + 2e-4)
        back = b.gathered_to_send(now + 2e-4)
        b.pop_events()
        due = b.next_deadline()
        if not back and due is not None:  # the ACK was held back (peer sockets): its delay
            back = b.gathered_to_send(due)
            b.pop_events()
        t2 = time.perf_counter()
        a.datagrams_received([(B, d) for _, run in back for d in _joined(run)], now + 4e-4)
        a.gathered_to_send(now + 4e-4)
        done = a.pop_events()
        a.next_deadline()
        t3 = time.perf_counter()
        if len(done) != 1:
            raise RuntimeError(f"{kind}: round trip not completed: {done}")
        t_send, t_recv, t_ack = t_send + t1 - t0, t_recv + t2 - t1, t_ack + t3 - t2
    return t_send / n * 1e6, t_recv / n * 1e6, t_ack / n * 1e6


def instructions(kind: str) -> int:
    """Instructions per one-fragment round trip, from two callgrind runs of `--small`."""
    counts = []
    for n in (200, 1200):
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
               "-m", "benchmarks.transport_core", "--small", "--kind", kind, "--count", str(n),
               "--repeat", "1"]
        err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
        m = re.search(r"Collected : (\d+)", err)
        if m is None:
            raise RuntimeError(f"no instruction count from valgrind: {err[-500:]}")
        counts.append(int(m.group(1)))
    return (counts[1] - counts[0]) // 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--small", action="store_true", help="one-fragment round trips (see above)")
    ap.add_argument("--instructions", action="store_true",
                    help="with --small: instructions per round trip (valgrind callgrind)")
    ap.add_argument("--kind", choices=("client", "peer"), help="with --small: one socket kind")
    ap.add_argument("--count", type=int, default=3000, help="with --small: round trips per run")
    args = ap.parse_args(argv)
    kinds = (args.kind,) if args.kind else ("client", "peer")
    if args.small and args.instructions:
        print("sans-IO core, one-fragment round trips: instructions each (callgrind)")
        for kind in kinds:
            print(f"{kind:>7} {instructions(kind):>12,}")
        return 0
    if args.small:
        print(f"sans-IO core, one-fragment round trips, us each: median of {args.repeat} runs of "
              f"{args.count}")
        print(f"{'socket':>7} {'send':>7} {'receive+ACK':>12} {'ACK in':>7} {'total':>7}")
        for kind in kinds:
            runs = [small(kind, args.count) for _ in range(args.repeat)]
            s_, r_, a_ = (statistics.median(x[k] for x in runs) for k in range(3))
            print(f"{kind:>7} {s_:>7.1f} {r_:>12.1f} {a_:>7.1f} {s_ + r_ + a_:>7.1f}")
        return 0
    print(f"sans-IO core, one window of a {SIZE:,} B message, median of {args.repeat} runs")
    print(f"{'socket':>7} {'datagrams':>10} {'send us/dg':>11} {'receive us/dg':>14}")
    for kind in ("client", "peer"):
        s, r, n = measure(kind, args.repeat)
        print(f"{kind:>7} {n:>10} {s:>11.2f} {r:>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
