"""`python -m benchmarks.election_trace`: where the election time of a request goes (issue 19).

Starts a 3-node cloud whose nodes note, on the host's monotonic clock, when each step of every
election happens (benchmarks/trace_hook/sitecustomize.py: the client request read off the socket,
the encrypt flow's turn on it, the ElectionActor's turn on StartElection and on each peer
message, each election message it sends and reads, Won, the flow's Won, the seal), runs 1 client
and then 6 clients back to back (as `benchmarks.cloud` (b)), and prints for each the median time
of each step relative to the winner's flow turn on the request (the start of the `election_ms`
figure, which ends at `seal`). Peers are named by the order their copies of the request arrived
("early", "late"); the winner's own rank among the three copies is printed too. Then one
link delay in three parts: an Election's send by the election actor to its socket's send, to the
peer's socket returning it, to the peer's router (the hook notes the socket calls too); and, for
the Elections that found the peer's reader in its wait (`Reactor._wait`, which the hook notes as
well), the time until that wait returned, apart for a reader that was polling (after recent
I/O, `transport.poll_after_io_us`) and one asleep in select: a polling reader that is slow to
come back was not on a core (nineteenth session, docs/perf-history.md).
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.cloud import load_images, run_clients
from benchmarks.localcloud import REPO, Cloud, env

HOOK = Path(__file__).resolve().parent / "trace_hook"


def read_events(paths: list[Path], since: float) -> dict[str, list[tuple[float, int, str, str]]]:
    """rid -> [(t, node, event, detail)] of every node from `since` on, sorted by time."""
    by_rid: dict[str, list[tuple[float, int, str, str]]] = defaultdict(list)
    for node, path in enumerate(paths, start=1):
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            t, ev, rid, *x = line.split(" ")
            if float(t) < since:
                continue
            by_rid[rid].append((float(t), node, ev, x[0] if x else ""))
    for evs in by_rid.values():
        evs.sort()
    return by_rid


def breakdown(evs: list[tuple[float, int, str, str]]) -> dict[str, float] | None:
    """Steps of one request in ms from the winner's flow turn; None without one seal."""
    seals = [n for _, n, ev, _ in evs if ev == "seal"]
    if len(seals) != 1:
        return None
    w = seals[0]
    first: dict[tuple[int, str, str], float] = {}
    for t, n, ev, x in evs:
        first.setdefault((n, ev, x), t)
    start = first.get((w, "flow_req", ""))
    if start is None:
        return None
    copies = sorted((t, n) for (n, ev, _), t in first.items() if ev == "rx_req")
    order = [n for _, n in copies]
    peers = [n for n in order if n != w]
    if len(peers) != 2:
        return None
    name = {peers[0]: "early", peers[1]: "late"}
    out = {"winner copy rank": float(order.index(w) + 1)}

    def put(label: str, key: tuple[int, str, str]) -> None:
        if key in first:
            out[label] = (first[key] - start) * 1000

    put("W rx_req", (w, "rx_req", ""))
    put("W el_start", (w, "el_start", ""))
    for p in peers:
        put(f"W tx_election->{name[p]}", (w, "tx_election", str(p)))
    for p in peers:
        nm = name[p]
        put(f"{nm} rx_req", (p, "rx_req", ""))
        put(f"{nm} flow_req", (p, "flow_req", ""))
        put(f"{nm} rx_election<-W", (p, "rx_election", str(w)))
        put(f"{nm} el_start", (p, "el_start", ""))
        put(f"{nm} tx_election->W", (p, "tx_election", str(w)))
        put(f"{nm} tx_ok->W", (p, "tx_ok", str(w)))
        put(f"W rx_election<-{nm}", (w, "rx_election", str(p)))
        put(f"W in_election<-{nm}", (w, "in_election", str(p)))
        put(f"W rx_ok<-{nm}", (w, "rx_ok", str(p)))
        put(f"W in_ok<-{nm}", (w, "in_ok", str(p)))
    put("W won", (w, "won", ""))
    put("W flow_won", (w, "flow_won", ""))
    put("W seal", (w, "seal", ""))
    return out


def link_parts(paths: list[Path], since: float, peer_port: dict[int, int]) -> str:
    """Where one link delay goes: for each Election a node sent a peer (tx_election), the time to
    its own peer socket's send to that peer, from there to the peer's socket returning it from
    recv, and from there to the peer's router (rx_election); p50/p90 in ms. When the peer's
    reader was in its wait at that send (its last wait event before it is a wait_in, followed
    by a wait_out), also the time until that wait returned, by whether it polled or slept."""
    ev: dict[int, list[tuple[float, str, str, str]]] = {}
    for node, path in enumerate(paths, start=1):
        rows = [ln.split(" ") for ln in path.read_text().splitlines()] if path.exists() else []
        ev[node] = [(float(t), e, rid, x[0] if x else "") for t, e, rid, *x in rows
                    if float(t) >= since]
    # (node, other) -> sorted times of node's peer socket sending to / receiving from other's;
    # (node, rid, sender) -> times node's router took an Election of rid from sender
    sock: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    rx: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    # node -> its reader's waits: (time, "wait_in" | "wait_out", the poll it may do in us)
    waits: dict[int, list[tuple[float, str, int]]] = defaultdict(list)
    port_node = {port: n for n, port in peer_port.items()}
    for node, events in ev.items():
        for t, e, rid, x in events:
            if e in ("sock_send", "sock_recv"):
                local, _, ports = x.partition(">" if e == "sock_send" else "<")
                if int(local) == peer_port[node]:
                    for port in ports.split(","):
                        if int(port) in port_node:
                            sock[e, node, port_node[int(port)]].append(t)
            elif e == "rx_election":
                rx[node, rid, x].append(t)
            elif e in ("wait_in", "wait_out"):
                waits[node].append((t, e, int(x) if x.isdigit() else 0))
    for times in (*sock.values(), *rx.values()):
        times.sort()  # the hook's threads note out of order by microseconds
    for w in waits.values():
        w.sort()
    wait_times = {node: [t for t, _, _ in w] for node, w in waits.items()}

    def first_after(times: list[float], t: float) -> float | None:
        i = bisect.bisect_left(times, t)
        return times[i] if i < len(times) else None

    def in_wait(node: int, t: float) -> tuple[int, float] | None:
        """(poll us, when the wait returned) if `node`'s reader was in its wait at `t`."""
        w, times = waits.get(node, []), wait_times.get(node, [])
        i = bisect.bisect_right(times, t) - 1
        if i < 0 or w[i][1] != "wait_in" or i + 1 >= len(w) or w[i + 1][1] != "wait_out":
            return None
        return w[i][2], w[i + 1][0]

    parts: dict[str, list[float]] = {"election send -> socket send": [],
                                     "socket send -> peer's recv": [],
                                     "peer's recv -> its router": [],
                                     # the peer's reader was in its wait when the datagram left:
                                     # how long until it returned, polling or asleep
                                     "send -> peer's wait ends, polled": [],
                                     "send -> peer's wait ends, slept": []}
    for a, events in ev.items():
        for t, e, rid, x in events:
            if e != "tx_election" or not x.isdigit() or int(x) not in peer_port:
                continue
            b = int(x)
            sent = first_after(sock["sock_send", a, b], t)
            got = None if sent is None else first_after(sock["sock_recv", b, a], sent)
            seen = first_after(rx[b, rid, str(a)], t)
            if sent is None or got is None or seen is None or got > seen:
                continue
            parts["election send -> socket send"].append((sent - t) * 1000)
            parts["socket send -> peer's recv"].append((got - sent) * 1000)
            parts["peer's recv -> its router"].append((seen - got) * 1000)
            waiting = in_wait(b, sent)
            if waiting is not None:
                polled, back = waiting
                parts["send -> peer's wait ends, " + ("polled" if polled else "slept")].append(
                    (back - sent) * 1000)
    n = len(parts["election send -> socket send"])
    lines = [f"one link delay, an Election's way to a peer: ms over {n} Elections",
             f"{'part':32} {'p50':>7} {'p90':>7} {'n':>5}"]
    for k, vals in parts.items():
        if len(vals) >= 2:
            lines.append(f"{k:32} {statistics.median(vals):7.3f} "
                         f"{statistics.quantiles(vals, n=10)[8]:7.3f} {len(vals):5}")
    return "\n".join(lines)


def table(title: str, rows: list[dict[str, float]]) -> str:
    labels: list[str] = []
    for r in rows:
        labels += [k for k in r if k not in labels]
    lines = [f"{title}: {len(rows)} requests, ms from the winner's flow turn on the request",
             f"{'step':32} {'p50':>7} {'p90':>7} {'n':>5}"]
    for k in sorted(labels, key=lambda k: statistics.median(r[k] for r in rows if k in r)):
        vals = [r[k] for r in rows if k in r]
        p90 = statistics.quantiles(vals, n=10)[8] if len(vals) >= 2 else vals[0]
        lines.append(f"{k:32} {statistics.median(vals):7.3f} {p90:7.3f} {len(vals):5}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=300, help="images per client count")
    ap.add_argument("--clients", default="1,6")
    args = ap.parse_args()
    images = load_images(None, args.total)
    with tempfile.TemporaryDirectory(prefix="vs-trace-") as tmp:
        root = Path(tmp)
        traces = [root / f"trace-{i}.txt" for i in (1, 2, 3)]

        def node_env(i: int) -> dict[str, str]:
            return {"PYTHONPATH": f"{HOOK}:{REPO}:{env().get('PYTHONPATH', '')}",
                    "VEILSHARE_TRACE": str(traces[i - 1])}

        cloud = Cloud(root, 3, node_env=node_env).start()
        try:
            for c in (int(x) for x in args.clients.split(",")):
                since = time.monotonic()  # the host's clock, as the nodes' notes
                res: dict[str, Any] = run_clients(cloud, c, images, 0.0, root)
                time.sleep(0.5)  # the nodes write their notes every 0.2 s
                rows = [b for evs in read_events(traces, since).values()
                        if (b := breakdown(evs)) is not None]
                print(table(f"{c} client(s), election p50 {res['election_p50_ms']:.2f} ms", rows))
                print(link_parts(traces, since, {n[0]: n[3] for n in cloud.nodes}))
                print()
        finally:
            cloud.stop()


if __name__ == "__main__":
    main()
