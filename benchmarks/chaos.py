"""`python -m benchmarks.chaos`: the cloud under failures, Jepsen-style summary.

3 nodes with the failure token on (short `max_down_s`), `--clients` encrypt clients sending
`--total` requests in all, an owner posting access updates for an offline borrower meanwhile,
and one node SIGKILLed at a seeded moment (20-80 % of the expected run, when no node is down)
and restarted 3 s later. `status` is sampled every 100 ms from an in-process client.

Checked and reported: requests failed (must be 0), requests whose reply was accepted twice (as
each client's home counted them per request id, its `accepted_twice`) and duplicate replies
received (reported; each one's request id, nodes and the faults during its request in the log,
and `dups_no_fault`, those whose request saw no node down or suspected in the nodes' logs:
`fault_windows`, `classify_duplicates`), bit-exact
results, updates delivered exactly once (the borrower's final views equal the arithmetic),
at most one node down-or-unreachable per sample, token holders per sample, convergence of the
nodes' state digests after the run, and failover: the latency of the requests in flight at the
SIGKILL (sent before it, answered after it, by the client's `started` and `ms`), p50 and max.
`--minutes` repeats rounds for a long run. `--peer-faults drop|delay` adds etcd-style
peer-network faults (TC-3, TC-4): the nodes' peer sockets drop or delay datagrams in timed
phases (each node re-reads its VEILSHARE_PEER_POLICY_FILE), and each client's requests are
spread over the schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.localcloud import Cloud, json_lines
from transport.policy import PEER_FILE_ENV

FAILURES = {"max_down_s": 2.0, "mean_up_s": 3.0, "token_hold_s": 0.5}
CHUNK_S = 2.5  # run_round: seconds of a peer-fault schedule per load chunk (see there)
RECHECK_S = 3.0  # patience for a node that did not answer a status sample in 0.3 s


class Sampler(threading.Thread):
    """Polls every node's status every `period_s` through one in-process transport."""

    def __init__(self, cloud: Cloud, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        import config as config_mod

        self.cfg = config_mod.load(cloud.config)
        self.period = period_s
        self.samples: list[tuple[float, list[dict[str, Any]]]] = []
        self.took: list[float] = []  # seconds each sample waited for its replies
        self._stop_ev = threading.Event()
        self.slow_samples = 0  # samples that a late status reply alone had made "two out"

    def open_transport(self) -> Any:
        """The transport the status queries go through (a namespace sampler overrides it)."""
        from transport.udp import Transport

        return Transport.start(("127.0.0.1", 0), self.cfg.transport, name="sampler")

    def run(self) -> None:
        from actors.status import query_status

        tp = self.open_transport()
        try:
            while not self._stop_ev.is_set():
                t = time.monotonic()
                rows = query_status(self.cfg, timeout_s=0.3, transport=tp)
                if sum(r["state"] != "up" for r in rows) > 1:
                    rows = self.recheck(rows, tp)
                self.samples.append((t, rows))
                self.took.append(time.monotonic() - t)
                self._stop_ev.wait(max(0.0, self.period - (time.monotonic() - t)))
        finally:
            tp.stop()

    def recheck(self, rows: list[dict[str, Any]], tp: Any) -> list[dict[str, Any]]:
        """A sample with more than one node out: the nodes that did not answer within 0.3 s are
        asked again with RECHECK_S. On a busy machine a live node answers late; one that
        answers is not unreachable, and its own state counts (a node that is down says so).
        Without this, one slow status reply beside a killed node counted as two nodes out."""
        from actors.status import query_status

        again = {r["id"]: r for r in query_status(self.cfg, timeout_s=RECHECK_S, transport=tp)}
        out = [again[r["id"]] if r["state"] == "unreachable" else r for r in rows]
        if sum(r["state"] != "up" for r in out) <= 1:
            self.slow_samples += 1  # reported: a busy machine, not a second node out
        return out

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(timeout=5)

    def violations(self) -> dict[str, int]:
        """Samples breaking I6 (down + unreachable <= 1) and I5 (token holders <= 1, see
        `double_holders`)."""
        bad = [(t, [(r["id"], r["state"], r["token"]) for r in rows])
               for t, rows in self.samples if sum(r["state"] != "up" for r in rows) > 1]
        not_serving = len(bad)
        self.bad_samples = bad
        n = min(len(self.samples), len(self.took))  # the thread may be between its appends
        doubles = double_holders([rows for _, rows in self.samples[:n]], self.took[:n],
                                 self.period)
        return {"down_or_unreachable_gt1": not_serving, "two_token_holders": doubles,
                "samples": len(self.samples), "slow_status_samples": self.slow_samples}


def double_holders(samples: list[list[dict[str, Any]]], took: list[float],
                   period_s: float) -> int:
    """Samples in which two nodes hold the token. One sample alone can catch a pass in flight
    (the nodes answer at slightly different moments), so a double counts when the same pair
    holds in the next sample too. A sample that waited longer than `period_s` for its replies
    (a node frozen or slow) combines rows of different moments and is left out: its
    late row can be a frozen holder's answer to a query it read on resuming, from before it
    heard the newer token (seen in test_frozen_token_holder: the resumed core released the
    token 1 ms after SIGCONT, its status said holding for 10 ms more, and that late reply plus
    the next sample, 8 ms later, counted as a double)."""
    doubles = 0
    prev: frozenset[int] = frozenset()
    for rows, seconds in zip(samples, took, strict=True):
        holders = frozenset(r["id"] for r in rows if r["token"])
        if seconds > period_s:
            continue  # compared neither with the previous sample nor with the next
        if len(holders) > 1 and holders == prev:
            doubles += 1
        prev = holders
    return doubles


def _images(folder: Path, n: int, seed: int) -> list[Path]:
    from benchmarks.cloud import small_png

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"c{i:04d}.png"
        p.write_bytes(small_png(seed * 100_000 + i))
        out.append(p)
    return out


def _share(cloud: Cloud, root: Path) -> tuple[Path, Path]:
    from benchmarks.cloud import small_png

    alice, bob = root / "alice", root / "bob"
    pic = root / "pic.png"
    pic.write_bytes(small_png(999))
    r = cloud.shell("alice", alice, f"encrypt {pic}")
    assert r.returncode == 0, r.stderr
    serve = cloud.spawn_shell("alice", alice, ["--serve"])
    assert serve.stdout is not None and "online" in serve.stdout.readline()
    r = cloud.shell("bob", bob, "request alice pic.png 1")
    serve.terminate()
    serve.communicate(timeout=15)
    assert r.returncode == 0, r.stderr
    return alice, bob


def _kill_when_all_up(cloud: Cloud, sampler: Sampler, at: float, node: int,
                      log: list[str], kills: list[float]) -> None:
    """SIGKILL one node at `at` s, once every node is up. The victim is the failure token's
    holder when there is one (else `node`): frozen first (SIGSTOP), it cannot pass the token on,
    and the others are asked again; only if none of them holds the token is it killed. So no
    other node can go down (rule 2: only the holder) while the failure detector has not yet seen
    the kill: a kill of another node could meet a holder that, within the 1 s detection window,
    still sees every node up and goes down (two nodes out, through the harness's timing, not
    the cloud's rule). The others are asked alone, so the victim stays frozen for milliseconds,
    not for a status timeout. The SIGKILL's wall-clock time goes to `kills`."""
    import dataclasses
    import signal as sig

    from actors.status import query_status

    time.sleep(at)
    deadline = time.monotonic() + 20
    victim = node
    while time.monotonic() < deadline:  # a fresh status, not the sampler's last one
        rows = query_status(sampler.cfg, timeout_s=0.3)
        if not all(r["state"] == "up" for r in rows):
            time.sleep(0.05)
            continue
        holders = [r["id"] for r in rows if r["token"]]
        if len(holders) != 1:
            break  # no token (failures off): the seeded node
        rest = dataclasses.replace(sampler.cfg, nodes=tuple(
            n for n in sampler.cfg.nodes if n.id != holders[0]))
        cloud.kill(holders[0], sig.SIGSTOP)
        stopped = time.time()
        if not any(r["token"] for r in query_status(rest, timeout_s=0.3)):
            victim = holders[0]
            log.append(f"SIGSTOP node {victim} {1000 * (time.time() - stopped):.0f} ms "
                       "before its SIGKILL")
            break
        cloud.kill(holders[0], sig.SIGCONT)  # the token moved meanwhile: try again
        log.append(f"SIGSTOP node {holders[0]} for {1000 * (time.time() - stopped):.0f} ms, "
                   "resumed: the token moved meanwhile")
    log.append(f"SIGKILL node {victim} at {time.monotonic():.2f} (wall clock {time.time():.3f})")
    kills.append(time.time())
    cloud.kill(victim)
    time.sleep(3.0)
    cloud.restart(victim)
    log.append(f"restarted node {victim}")


# Peer-network faults (etcd's DropPeerNetwork / DelayPeerNetwork), as phases of (policy, seconds)
# written to each node's peer policy file (transport.policy.PolicyFile); "" = no impairment.
PEER_FAULTS: dict[str, list[tuple[str, float]]] = {
    "drop": [("drop=0.5", 1.0), ("", 1.0)] * 10 + [("drop=0.3", 10.0)],  # TC-3
    "delay": [("delay_ms=75,jitter_ms=50", 10.0)],  # TC-4
}


def _policy_file(root: Path, node: int) -> Path:
    return root / f"peer-policy-{node}"


def _set_peer_policy(root: Path, spec: str) -> None:
    for node in (1, 2, 3):  # each node its own seed; written whole (os.replace)
        path = _policy_file(root, node)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{spec},seed={node}" if spec else "")
        os.replace(tmp, path)


def _run_peer_faults(root: Path, phases: list[tuple[str, float]], stop: threading.Event,
                     log: list[str]) -> None:
    try:
        for spec, seconds in phases:
            _set_peer_policy(root, spec)
            log.append(f"peer network: {spec or 'clean'} for {seconds:g} s at {time.monotonic():.2f}")
            if stop.wait(seconds):
                break
    finally:
        _set_peer_policy(root, "")
        log.append(f"peer network: clean at {time.monotonic():.2f}")


def _client(cloud: Cloud, home: Path, user: str, chunks: list[list[Path]], every_s: float,
            out: list[tuple[list[Path], Any, tuple[str, str]]]) -> None:
    """One load client: a shell per chunk of files (each joins the cloud anew), chunk k started
    `k * every_s` after the first (or when chunk k-1 ends, if later)."""
    start = time.monotonic()
    for k, chunk in enumerate(chunks):
        time.sleep(max(0.0, start + k * every_s - time.monotonic()))
        proc = cloud.spawn_shell(user, home, ["-c", "encrypt " + " ".join(map(str, chunk)), "--json"])
        out.append((chunk, proc, proc.communicate(timeout=600)))


def run_round(root: Path, *, clients: int = 4, total: int = 500, updates: int = 10,
              seed: int = 1, kill: bool = True, expected_s: float = 12.0,
              peer_faults: str | None = None, log_level: str = "INFO") -> dict[str, Any]:
    """One chaos round (see the module docstring). `peer_faults` ("drop" or "delay") runs that
    schedule on the peer sockets from the start of the load, and spreads each client's requests
    over the schedule (a shell per chunk) so that the load overlaps every phase. `log_level` is
    the nodes' (their logs stay in `root`: node-N.log; DEBUG traces each election message)."""
    rng = random.Random(seed)
    phases = PEER_FAULTS[peer_faults] if peer_faults else []
    node_env = (lambda i: {PEER_FILE_ENV: str(_policy_file(root, i))}) if phases else None
    cloud = Cloud(root, 3, failures=True, sections={"failures": dict(FAILURES)}, node_env=node_env,
                  log_level=log_level)
    cloud.start()
    sampler = Sampler(cloud)
    log: list[str] = []
    stop_faults = threading.Event()
    try:
        alice, bob = _share(cloud, root)
        files = [_images(root / f"in{c}", total // clients, seed * 10 + c) for c in range(clients)]
        span_s = sum(t for _, t in phases)
        # a shell per chunk (each joins anew), one every CHUNK_S of the schedule, at most 8:
        # a shell's start-up and its share of requests take about that long here, so the
        # load stays continuous over the schedule without queueing far past its end
        n_chunks = min(8, max(1, round(span_s / CHUNK_S))) if phases else 1
        sampler.start()
        start = time.monotonic()
        faults = None
        if phases:
            faults = threading.Thread(target=_run_peer_faults,
                                      args=(root, phases, stop_faults, log))  # fmt: skip
            faults.start()
        jobs: list[list[tuple[list[Path], Any, tuple[str, str]]]] = [[] for _ in range(clients)]
        threads = [threading.Thread(target=_client, args=(
            cloud, root / f"load{c}", f"load{c}",
            [files[c][k::n_chunks] for k in range(n_chunks)], span_s / n_chunks, jobs[c]))
            for c in range(clients)]  # fmt: skip
        for t in threads:
            t.start()
        killer = None
        kills: list[float] = []  # wall-clock times of the SIGKILLs
        if kill:
            at = rng.uniform(0.2, 0.8) * expected_s
            killer = threading.Thread(target=_kill_when_all_up,
                                      args=(cloud, sampler, at, rng.choice([1, 2, 3]), log,
                                            kills))
            killer.start()
        grants = "; ".join(["grant bob pic.png +1"] * updates)
        r_grants = cloud.shell("alice", alice, grants, timeout=300)
        for t in threads:
            t.join()
        wall = time.monotonic() - start
        stop_faults.set()
        if faults is not None:
            faults.join()
        if killer is not None:
            killer.join()
        cloud.wait_up(timeout=30)
        done = [(c, job) for c in range(clients) for job in jobs[c]]
        return {"peer_faults": peer_faults or "-",
                **_summarize(cloud, root, bob, done, r_grants, sampler, wall, log, kills)}
    finally:
        stop_faults.set()
        sampler.stop()
        cloud.stop()


def _summarize(cloud: Cloud, root: Path, bob: Path,
               done: list[tuple[int, tuple[list[Path], Any, tuple[str, str]]]], r_grants: Any,
               sampler: Sampler, wall: float, log: list[str],
               kills: list[float]) -> dict[str, Any]:
    from codec import seal

    ok = failed = wrong = dups = twice = 0
    lat: list[float] = []
    answered: list[dict[str, Any]] = []
    dup_rows: list[dict[str, Any]] = []
    for c, (chunk, proc, (out, err)) in done:
        lines = json_lines(out)
        if not lines:
            failed += len(chunk)
            log.append(f"client {c} exit {proc.returncode}: {err[-500:]}")
            continue
        res = lines[0]
        failed += len(res["failed"])
        dups += res["duplicate_replies"]
        dup_rows.extend({**d, "client": f"load{c}"} for d in res.get("duplicates", []))
        twice += res["accepted_twice"]
        for row in res["encrypted"]:
            path = next(p for p in chunk if p.name == row["file"])
            sealed = (root / f"load{c}" / row["path"]).read_bytes()
            if seal.unseal(sealed).payload == path.read_bytes():
                ok += 1
            else:
                wrong += 1
            lat.append(row["ms"])
            answered.append({**row, "client": f"load{c}"})
    answers = json_lines(r_grants.stdout)
    posted = [o for o in answers if "id" in o]
    log.extend(f"grant not acknowledged: {o}" for o in answers if "id" not in o)
    if r_grants.returncode:
        log.append(f"grants exit {r_grants.returncode}: {r_grants.stderr[-500:]}")
    r = cloud.shell("bob", bob, "inbox")
    inbox = json_lines(r.stdout)
    views = inbox[0]["images"][0]["views_left"] if inbox else -1
    converged_s = _converge(cloud)
    lat.sort()
    failover = in_flight(answered, kills)
    log.extend(f"in flight at the SIGKILL: {r['client']} {r['file']} started {r['started']:.3f} "
               f"{r['ms']} ms, answered by node {r['node']}"
               for r in answered if in_flight([r], kills))
    faults = fault_windows([cloud.log_text(i) for i in sorted(cloud.logs)])
    dup_faults = classify_duplicates(dup_rows, faults)
    log.extend(f"duplicate reply: {d['client']} {d['rid']} sealed by node {d['node']} after node "
               f"{d['accepted']}'s reply, {d['attempts']} attempt(s); "
               + ("; ".join(seen) if seen else "no node down or suspected meanwhile")
               for d, seen in zip(dup_rows, dup_faults, strict=True))
    return {
        "requests": sum(len(chunk) for _, (chunk, _p, _o) in done), "ok": ok, "failed": failed,
        "wrong": wrong, "accepted_twice": twice, "duplicate_replies": dups,
        "dups_no_fault": sum(not seen for seen in dup_faults) + dups - len(dup_rows),
        "wall_s": round(wall, 1),
        "p50_ms": round(statistics.median(lat), 1) if lat else 0.0,
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1) if lat else 0.0,
        "max_ms": round(lat[-1], 1) if lat else 0.0,
        "failover_n": len(failover),
        "failover_p50_ms": round(statistics.median(failover), 1) if failover else 0.0,
        "failover_max_ms": round(max(failover), 1) if failover else 0.0,
        "updates_acked": len(posted), "views_expected": 1 + len(posted), "views": views,
        "converged_s": converged_s, **sampler.violations(),
        "log": log + [f"not serving: {t:.2f} {rows}" for t, rows in sampler.bad_samples],
    }


def in_flight(rows: list[dict[str, Any]], kills: list[float]) -> list[float]:
    """Latencies (ms) of the encrypt rows in flight at one of the `kills` (wall-clock seconds):
    sent before it and answered after it, by the row's `started` and `ms`."""
    return sorted(r["ms"] for r in rows
                  if any(r["started"] <= k <= r["started"] + r["ms"] / 1000 for k in kills))


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) node(\d+) ")
_WENT_DOWN = re.compile(r"simulated failure: going down for ([\d.]+) s$")
_PEER_STATE = re.compile(r"election_actor: node (\d+): (up|down|unreachable)$")
_PEER_EVENT = re.compile(r"election_actor: node (\d+)(?: restarted|: its peer port is closed)")


def fault_windows(logs: list[str]) -> list[tuple[float, float, str]]:
    """(start, end, what) in wall-clock seconds from the nodes' logs (at INFO or DEBUG): a
    node's simulated failure (its own "going down for X s"), a peer down or unreachable in one
    node's view (its failure detector: "node M: down" until "node M: up"), a peer that
    restarted or whose port was closed (an instant). Log times are local wall clock (ms)."""
    out: list[tuple[float, float, str]] = []
    for text in logs:
        since: dict[int, tuple[float, str]] = {}
        me = 0
        for line in text.splitlines():
            m = _STAMP.match(line)
            if m is None:
                continue
            t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            me = int(m[2])
            if (d := _WENT_DOWN.search(line)) is not None:
                out.append((t, t + float(d[1]), f"node {me} down (simulated failure)"))
            elif (p := _PEER_STATE.search(line)) is not None:
                peer, state = int(p[1]), p[2]
                if state != "up":
                    since.setdefault(peer, (t, state))
                elif peer in since:
                    start, was = since.pop(peer)
                    out.append((start, t, f"node {me} saw node {peer} {was}"))
            elif _PEER_EVENT.search(line) is not None:
                out.append((t, t, f"node {me}: {line[m.end():].split(': ', 1)[-1]}"))
        out.extend((start, math.inf, f"node {me} saw node {peer} {was}")
                   for peer, (start, was) in since.items())
    return sorted(out)


def classify_duplicates(dups: list[dict[str, Any]], faults: list[tuple[float, float, str]],
                        slack_s: float = 0.05) -> list[list[str]]:
    """For each duplicate of the encrypt JSON (its request's `started` and its arrival `at`,
    wall clock), the faults of `fault_windows` that overlap its request's life (+- `slack_s`:
    log times are to the ms): empty means no node was down or suspected meanwhile, the case
    issue 19 allows no duplicate in."""
    out = []
    for d in dups:
        lo, hi = d["started"] - slack_s, d["at"] + slack_s
        out.append([f"{what} from {datetime.fromtimestamp(a).strftime('%H:%M:%S.%f')[:-3]}"
                    for a, b, what in faults if a <= hi and b >= lo])
    return out


def _converge(cloud: Cloud, limit_s: float = 10.0) -> float:
    """Seconds until every up node reports the same state digest (-1: not within limit)."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        rows = [r for r in cloud.status(timeout=0.5) if r["state"] == "up"]
        if len(rows) == 3 and len({r["digest"] for r in rows}) == 1:
            return round(time.monotonic() - start, 2)
        time.sleep(0.2)
    return -1.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=0.0, help="repeat rounds for this long")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--total", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--peer-faults", choices=sorted(PEER_FAULTS),
                   help="drop: 50 %% of peer datagrams for 1 s x10, then 30 %% for 10 s (TC-3); "
                        "delay: 75 +- 50 ms for 10 s (TC-4); the load is spread over the schedule")
    p.add_argument("--no-kill", action="store_true", help="no SIGKILL in the round")
    p.add_argument("--log-level", default="INFO", help="the nodes' (DEBUG: each election message)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="run each round in DIR/round-SEED and keep it (node logs, client homes)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rounds = []
    deadline = time.monotonic() + args.minutes * 60
    seed = args.seed
    while True:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) if args.keep is None else args.keep / f"round-{seed}"
            root.mkdir(parents=True, exist_ok=True)
            rounds.append(run_round(root, clients=args.clients, total=args.total, seed=seed,
                                    kill=not args.no_kill, peer_faults=args.peer_faults,
                                    log_level=args.log_level))
        seed += 1
        if time.monotonic() >= deadline:
            break
    if args.json:
        print(json.dumps(rounds))
        return 0
    from shell.render import table

    cols = ["peer_faults", "requests", "ok", "failed", "wrong", "accepted_twice",
            "duplicate_replies", "dups_no_fault", "p50_ms",
            "p99_ms", "failover_n", "failover_p50_ms", "failover_max_ms", "views_expected", "views",
            "converged_s", "down_or_unreachable_gt1", "two_token_holders"]
    print(table(rounds, cols))
    for r in rounds:
        for line in r["log"]:
            print(" ", line)
    bad = any(r["failed"] or r["wrong"] or r["views"] != r["views_expected"] for r in rounds)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
