"""The real cloud on five namespace hosts (issue 9): TN-1..TN-5.

- TN-1/TN-2: loss 10 % and duplication 5 % with nftables on every host's ingress, delay
  20 +- 5 ms with 10 % reordering through the seeded transport policy of every program (no netem
  here; the fixture prints the mechanism of each). alice (c1) seals 20 images, serves; bob (c2)
  requests one, views it twice, gets +3 and -1 while offline, joins: every result bit-exact,
  views as the arithmetic says, each update applied once, no IP fragment created on any host.
- TN-3/TN-5: a node cut from its peers (both ways 20 s; inbound only 10 s) under load, with the
  failure token on (max_down_s 2) and status sampled every 100 ms from a client host.
- TN-4: the winner's link goes down with a request in flight; the reply comes by failover.
A node that never hears Coordinator and Done must not serve a request a second time (it once did,
on election answers of an earlier round; the test reproduces that case deterministically).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgdata import jpeg_bytes, png_bytes
from test_sharing import _decrypted  # what bob's client decrypts for viewing

from actors.client.client_store import ClientHome
from codec import messages as M
from codec import seal

from .hosts import Net, leftovers
from .netcloud import NetCloud, NsSampler, brief, json_lines, stop_proc

pytestmark = [pytest.mark.net, pytest.mark.timeout(240)]

SHARED = "img03.jpg"


def views_left(home: Path, owner: str, image: str) -> int:
    db = ClientHome(home).open_state()
    try:
        rec = db.get_received(owner, image)
        assert rec is not None
        return rec.views_left
    finally:
        db.close()


def images(folder: Path) -> dict[str, bytes]:
    """20 images: PNG and JPEG, 1 KB to ~200 KB (replies of many fragments each way)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, bytes] = {}
    for i in range(20):
        name, data = (
            (f"img{i:02d}.jpg", jpeg_bytes(i, 64 + 24 * i)) if i % 2 else
            (f"img{i:02d}.png", png_bytes(i, 24 + 12 * i))
        )  # fmt: skip
        (folder / name).write_bytes(data)
        out[name] = data
    return out


def impair_everything(net: Net) -> dict[str, str]:
    """nft loss 10 % + dup 5 % on every host, and the transport policy env (delay, reorder)."""
    for name in net.hosts:
        net.loss(name, 10)
        net.duplicate(name, 5)
    return net.delay_env(20, 5, 10, seed=9)


def test_tn2_impaired_network_every_result_exact_no_ip_fragments(
    net: Net, netcloud: Any, tmp_path: Path
) -> None:
    policy = impair_everything(net)
    frags = {name: net.ip_frag_creates(name) for name in net.hosts}
    cloud: NetCloud = netcloud(node_env=policy, client_env=policy).start()
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    originals = images(tmp_path / "in")
    files = " ".join(str(tmp_path / "in" / n) for n in originals)

    (enc,) = cloud.ok("c1", "alice", alice, f"encrypt {files}")
    assert enc["failed"] == [] and len(enc["encrypted"]) == 20
    assert enc["accepted_twice"] == 0, enc  # duplicate replies (lossy links: counted) never stored
    for row in enc["encrypted"]:
        assert seal.unseal((alice / row["path"]).read_bytes()).payload == originals[row["file"]]

    serving = cloud.serve("c1", "alice", alice)
    try:
        (got,) = cloud.ok("c2", "bob", bob, f"request alice {SHARED} 2")
        assert (got["image"], got["views_left"]) == (SHARED, 2)
        assert _decrypted(bob, cloud.config, "bob", "alice", SHARED) == originals[SHARED]
        v1, v2, inbox = cloud.ok("c2", "bob", bob, f"view {SHARED}; view {SHARED}; inbox")
    finally:
        stop_proc(serving)
    assert [(v["shown"], v["views_left"]) for v in (v1, v2)] == [("image", 1), ("image", 0)]
    assert inbox["images"][0]["views_left"] == 0

    plus, minus = cloud.ok("c1", "alice", alice, f"grant bob {SHARED} +3; grant bob {SHARED} -1")
    # the owner counts views granted (2 + 3 - 1), the borrower views left (0 + 3 - 1)
    assert [(o["delivered"], o["views"]) for o in (plus, minus)] == [("via cloud", 5),
                                                                     ("via cloud", 4)]
    converged_s, rows = cloud.converge()
    assert converged_s >= 0 and [r["pending"] for r in rows] == [2, 2, 2], brief(rows)

    inbox, view = cloud.ok("c2", "bob", bob, f"inbox; view {SHARED}")
    assert inbox["images"][0]["views_left"] == 2  # 0 + 3 - 1: each applied exactly once
    assert (view["shown"], view["views_left"]) == ("image", 1)
    assert views_left(bob, "alice", SHARED) == 1
    converged_s, rows = cloud.converge()
    assert converged_s >= 0 and [r["pending"] for r in rows] == [0, 0, 0], brief(rows)  # confirmed

    for node_id in (1, 2, 3):  # the delay/reorder policy really ran in every node
        assert "loss policy drop=0.0,dup=0.0,corrupt=0.0,reorder=0.1,delay_ms=20.0" in \
            cloud.log_text(node_id)
    counts = {name: net.impair_counts(name) for name in net.hosts}
    print(f"[TN-2] nft drops/dups per host: {counts}")
    # the impairment really ran: both rules on every host, each host lost datagrams, and the
    # hosts together got duplicates. Not a duplicate on every host: bob's host receives ~100
    # datagrams here, and at 5 % (of those the loss rule let through) it sees none in about 1
    # run of 100 (one CI run did: loss 11, dup 0)
    for name in ("n1", "n2", "n3", "c1", "c2"):
        assert net.impair_kinds(name) == {"loss", "dup"}, name
        assert counts[name]["loss"] > 0, counts
    assert sum(counts[name]["dup"] for name in ("n1", "n2", "n3", "c1", "c2")) > 0, counts
    after = {name: net.ip_frag_creates(name) for name in net.hosts}
    assert after == frags  # TN-1: no datagram needed IP fragmentation, on any host


# ---- TN-3 / TN-5: a node cut off from its peers under load -------------------------------------
FAILURES = {"max_down_s": 2.0, "mean_up_s": 3.0, "token_hold_s": 0.5}


def share_then_offline(cloud: NetCloud, root: Path) -> tuple[Path, Path]:
    """alice (c1) seals pic.png and shares it with bob (c2, 1 view); then both are offline."""
    alice, bob = root / "alice", root / "bob"
    pic = root / "pic.png"
    pic.write_bytes(png_bytes(77, 40))
    cloud.ok("c1", "alice", alice, f"encrypt {pic}")
    serving = cloud.serve("c1", "alice", alice)
    try:
        cloud.ok("c2", "bob", bob, "request alice pic.png 1")
    finally:
        stop_proc(serving)
    return alice, bob


def wait_no_majority(cloud: NetCloud, x: int, limit_s: float = 10.0) -> None:
    """Until node `x` reports that it sees no majority."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if any(r["id"] == x and r["state"] == "up" and not r["majority"] for r in cloud.status()):
            return
        time.sleep(0.05)
    raise AssertionError(f"node {x} still claims a majority {limit_s} s after the cut")


def read_all(proc: Any, timeout: float = 60) -> tuple[str, str]:
    """stdout and stderr of a process whose stdin the caller already closed."""
    proc.wait(timeout=timeout)
    return proc.stdout.read(), proc.stderr.read()


def quiet_node(cloud: NetCloud, limit_s: float = 20.0) -> int:
    """A node that is up, sees a majority, and neither holds nor is named as holding the
    failure token (a cut token holder is test_cut_token_holder_in_simulated_failure_...)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        rows = cloud.status()
        named = {r.get("token_holder") for r in rows} | {r["id"] for r in rows if r["token"]}
        if all(r["state"] == "up" for r in rows):
            free = [r["id"] for r in rows if r["majority"] and r["id"] not in named]
            if free:
                return free[0]
        time.sleep(0.05)
    raise AssertionError(f"no quiet node within {limit_s} s: {rows}")


def partition_run(net: Net, cloud: NetCloud, root: Path, *, both_ways: bool, cut_s: float,
                  grants: int) -> dict[str, Any]:  # fmt: skip
    """Load (2 encrypt drivers, every 100 ms) + `grants` offline grants by alice while node X
    (a quiet node: up, not the token holder) is cut from the other node hosts for `cut_s`
    seconds; status sampled every 100 ms from c2. alice's shell starts once X says it has no
    majority (a session X saw join but not leave would expire from X's directory after ttl_s,
    a change by time, not by a request). A third client fires a burst of 6 requests at
    once 1 s before the cut (control) and right after it (requests in the failure detector's
    window). Returns what the checks need."""
    alice, bob = share_then_offline(cloud, root)
    sampler = NsSampler(cloud, net["c2"])
    sampler.start()
    loads = [cloud.driver(c, f"load{c}", root / f"load-{c}", "encrypt", "--interval", "0.1",
                          "--seed", str(i + 1)) for i, c in enumerate(("c1", "c2"))]  # fmt: skip
    burst = cloud.driver("c1", "burst", root / "burst", "burst", "--count", "6", stdin=True)
    procs = [*loads, burst]
    try:
        assert burst.stdout is not None and burst.stdin is not None
        while "ready" not in burst.stdout.readline():
            assert burst.poll() is None, burst.stderr.read() if burst.stderr else ""
        time.sleep(1.0)
        burst.stdin.write("go\n")  # control: no cut yet
        burst.stdin.flush()
        time.sleep(1.0)
        x = quiet_node(cloud)
        peers = [f"n{i}" for i in (1, 2, 3) if i != x]
        t_cut = time.monotonic()
        net.cut(f"n{x}", peers=peers, both_ways=both_ways)
        t_cut_done = time.monotonic()  # the rules are in place
        burst.stdin.write("go\n")
        burst.stdin.flush()
        wait_no_majority(cloud, x)  # alice's session then never reaches X's directory
        granting = cloud.spawn_in("c1", "alice", alice,
                                     "; ".join(["grant bob pic.png +1"] * grants))
        time.sleep(max(0.0, t_cut + cut_s - time.monotonic()))
        t_heal = time.monotonic()
        net.heal(f"n{x}")
        converged_s, rows = cloud.converge(10.0)
        g_out, g_err = granting.communicate(timeout=60)
        burst.stdin.close()  # the burst driver prints its summary and ends
        outs = [stop_proc(p) for p in loads] + [read_all(burst)]
    finally:
        sampler.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
    return {"x": x, "t_cut": t_cut, "t_cut_done": t_cut_done, "t_heal": t_heal, "converged_s": converged_s, "rows": rows,
            "grants": (granting.returncode, json_lines(g_out), g_err), "loads": outs,
            "sampler": sampler, "bob": bob}


def frozen_while_cut(run: dict[str, Any]) -> tuple[float, set[tuple[Any, ...]], set[Any]]:
    """(seconds from the cut until X said "no majority", X's distinct (pending, digest, served)
    from then until the heal, X's (pending, digest, served) values between cut and that)."""
    x, t_cut, t_heal = run["x"], run["t_cut"], run["t_heal"]
    # a sample X did not answer in time (a busy machine) holds placeholders, not X's figures
    mine = [(t, r) for t, rows in run["sampler"].samples if t_cut <= t <= t_heal
            for r in rows if r["id"] == x and r["state"] != "unreachable"]  # fmt: skip
    t_detect = next(t for t, r in mine if r["state"] == "up" and not r["majority"])
    before = {(r["pending"], r["digest"], r["served"]) for t, r in mine if t < t_detect}
    during = {(r["pending"], r["digest"], r["served"]) for t, r in mine if t >= t_detect}
    return round(t_detect - t_cut, 2), during, before


def latency(rows: list[dict[str, Any]], t_cut: float, t_heal: float) -> dict[str, Any]:
    """(p50, max) of request latency in ms, for requests started outside and during the cut."""
    out: dict[str, Any] = {}
    for name, keep in (("outside", lambda t: not t_cut <= t <= t_heal),
                       ("during", lambda t: t_cut <= t <= t_heal)):  # fmt: skip
        ms = sorted((r["t1"] - r["t0"]) * 1000 for r in rows if keep(r["t0"]))
        out[name] = (round(statistics.median(ms)), round(ms[-1])) if ms else None
    return out


def analyse(cloud: NetCloud, run: dict[str, Any], grants: int, tag: str) -> dict[str, Any]:
    """Everything the partition tests assert, from the drivers' and the sampler's records."""
    x = run["x"]
    rows, summaries = [], []
    for out, _err in run["loads"]:
        lines = json_lines(out)
        rows += [ln for ln in lines if ln.get("op") == "encrypt"]
        summaries += [ln["summary"] for ln in lines if "summary" in ln]
    assert len(summaries) == 3, run["loads"]
    detect_s, during, before = frozen_while_cut(run)
    t_detect = run["t_cut"] + detect_s
    started = {r["rid"]: r["t0"] for r in rows}
    straddling = {r["rid"] for r in rows if r["t0"] <= run["t_cut_done"] and r["t1"] >= run["t_cut"]}
    twice = {rid: n for s in summaries for rid, n in s["encrypt_replies"].items() if len(n) > 1}
    x_node = cloud.cfg.node(x)
    refusals = [e for s in summaries for e in s["errors"]
                if e[1] == f"{x_node.host}:{x_node.client_port}" and e[2] == "not_in_majority"]
    code, posted, g_err = run["grants"]
    (inbox,) = cloud.ok("c2", "bob", run["bob"], "inbox")
    holders = [sum(r["token"] for r in rows_) for _t, rows_ in run["sampler"].samples]
    f = {
        "tag": tag, "x": x, "requests": len(rows), "failed": [r for r in rows if not r["ok"]],
        "inexact": [r for r in rows if r["ok"] and not r["exact"]], "twice": twice,
        "refusals": len(refusals), "detect_s": detect_s, "t_detect": t_detect,
        "during": during, "before": before, "grants": (code, [p["delivered"] for p in posted]),
        "grants_err": g_err[-2000:], "views": inbox["images"][0]["views_left"],
        "views_expected": 1 + grants, "violations": run["sampler"].violations(),
        "bad_samples": [(round(t - run["t_cut"], 2), states)
                        for t, states in getattr(run["sampler"], "bad_samples", [])],
        "samples_two_holders": sum(h > 1 for h in holders), "converged_s": run["converged_s"],
        "rows_after_heal": run["rows"],
        "twice_at": {rid: round(started[rid] - run["t_cut"], 2) for rid in twice},
        "twice_not_straddling": {rid: n for rid, n in twice.items() if rid not in straddling},
        "straddling": len(straddling),
        "heal_s": round(run["t_heal"] - run["t_cut"], 2),
        "latency_ms": latency(rows, run["t_cut"], run["t_heal"]),
    }
    print(f"[{tag}] node {x} cut; requests {f['requests']} failed {len(f['failed'])}; received "
          f"twice {twice}, started at (s after the cut) {f['twice_at']}, heal at {f['heal_s']}; "
          f"{f['straddling']} requests in flight at the cut; X answered not_in_majority {f['refusals']} times, saw no majority "
          f"{detect_s} s after the cut; X (pending, digest, served) while cut {during}, before "
          f"{before}; grants {f['grants']}; views {f['views']} of {f['views_expected']}; "
          f"converged {f['converged_s']} s after heal; {f['violations']}, samples with two "
          f"holders {f['samples_two_holders']}; latency ms (p50, max) {f['latency_ms']}; samples "
          f"with more than one node out (s after the cut) {f['bad_samples']}")
    return f


CUTS = {"TN-3": (True, 20.0), "TN-5": (False, 10.0)}  # both ways 20 s; X's INPUT only, 10 s


@pytest.fixture(scope="module", params=sorted(CUTS))
def partition(request: Any, netns_ok: None,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # fmt: skip
    """One partition run (TN-3 or TN-5) shared by the tests below: failures on (max_down_s 2),
    2 clients encrypting every 100 ms, 5 offline grants during the cut, status every 100 ms."""
    tag = request.param
    both_ways, cut_s = CUTS[tag]
    root = tmp_path_factory.mktemp(tag)
    with Net() as net:
        cloud = NetCloud(net, root, failures=True, sections={
            "failures": FAILURES, "client": {"request_deadline_s": 30.0}})  # fmt: skip
        try:
            cloud.start()
            run = partition_run(net, cloud, root, both_ways=both_ways, cut_s=cut_s, grants=5)
            yield analyse(cloud, run, 5, tag)
        finally:
            cloud.stop()
    assert leftovers(net.prefix) == []


def test_partition_every_request_answered_bit_exact(partition: dict[str, Any]) -> None:
    assert partition["failed"] == [] and partition["inexact"] == []
    assert partition["requests"] > 20


def test_partition_minority_node_refuses_and_changes_nothing(partition: dict[str, Any]) -> None:
    assert partition["refusals"] > 0  # it answered "not in majority"
    assert len(partition["during"]) == 1  # pending, digest, served: frozen until the heal


def test_partition_no_acked_update_lost_or_doubled(partition: dict[str, Any]) -> None:
    assert partition["grants"] == (0, ["via cloud"] * 5), partition["grants_err"]
    assert partition["views"] == partition["views_expected"]


def test_partition_at_most_one_token_and_one_node_down(partition: dict[str, Any]) -> None:
    v = partition["violations"]
    assert v["two_token_holders"] == 0 and v["down_or_unreachable_gt1"] == 0, \
        (v, partition["bad_samples"])


def test_partition_converges_within_10_s_of_healing(partition: dict[str, Any]) -> None:
    assert 0 <= partition["converged_s"] <= 10.0, brief(partition["rows_after_heal"])


def test_partition_every_request_issued_after_the_cut_gets_one_reply(
    partition: dict[str, Any],
) -> None:
    """Every request issued while the cut was in place (the burst right after it included:
    the node that cannot hear its peers gets no election answers, so it never wins) or
    before it (the control burst), and every request after the heal, got exactly one reply.
    A request in flight at the very moment of the cut is left out: see
    test_node_missing_coordinator_and_done_does_not_serve_too."""
    assert partition["twice_not_straddling"] == {}


# ---- TN-4: the winner's link goes down during a request ----------------------------------------
# RELIABILITY asks 20; 5 keep the N-level budget (each trial waits for X to rejoin).
# `VS_TN4_TRIALS=20 python -m pytest -s tests/net -k tn4` runs the catalog's 20 (its p50 and max
# are printed: the thirteenth session's note has a run).
TRIALS = int(os.environ.get("VS_TN4_TRIALS", "5"))


def read_json(proc: Any) -> dict[str, Any]:
    """The next JSON line a driver prints (AssertionError with its stderr if it ended)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"driver ended: {proc.stderr.read()[-3000:]}")
        if line.startswith("{"):
            return dict(json.loads(line))


def request(drv: Any, path: Path, cut: Any = None) -> tuple[dict[str, Any], float]:
    """One encrypt through the interactive driver; `cut(sent)` (if given) runs once the request
    left. Returns the driver's reply line (with "sent" added) and the time of the cut (0.0
    without one)."""
    drv.stdin.write(f"encrypt {path}\n")
    drv.stdin.flush()
    sent = read_json(drv)
    t_cut = 0.0
    if cut is not None:
        t_cut = cut(sent["sent"])
    return {**read_json(drv), **sent}, t_cut


def winner_again(cloud: NetCloud, drv: Any, pic: Path, node: int, tries: int = 10) -> None:
    """Until all nodes are up and `node` wins (and serves) a request again."""
    cloud.wait_up()
    for _ in range(tries):
        if request(drv, pic)[0]["node"] == node:
            return
        time.sleep(0.2)
    raise AssertionError(f"node {node} does not win again after coming back")


def test_tn4_link_down_at_the_winner_during_a_request(
    net: Net, netcloud: Any, tmp_path: Path
) -> None:
    # node 1 has twice the encoder slots, so it wins every election of an idle cloud
    cloud: NetCloud = netcloud(node_sections={1: {"encoder": {"pool_size": 4}}}).start()
    pic = tmp_path / "photo.jpg"
    pic.write_bytes(jpeg_bytes(5, 240))
    drv = cloud.driver("c1", "carol", tmp_path / "carol", "interactive", "--linger", "3",
                       stdin=True)
    try:
        assert read_json(drv).get("joined") == "carol" and read_json(drv)["ready"]
        base = [request(drv, pic)[0] for _ in range(3)]
        assert all(b.get("exact") for b in base), base
        # node 1 wins the elections of an idle cloud, but on a busy host its copy can come late
        # (it then abstains): the trials start once it wins again, as after each trial
        winner_again(cloud, drv, pic, 1)
        trials: list[dict[str, Any]] = []
        missed: list[dict[str, Any]] = []  # node 1 did not win: answered before any cut
        while len(trials) < TRIALS and len(missed) < TRIALS:
            # node 1 gets the request, wins and seals, but its reply cannot reach c1 (c1 drops
            # what n1 sends), so the request is still in flight at node 1 when its link goes down
            net.cut("c1", peers=["n1"], both_ways=False)

            def cut(sent: float) -> float:
                time.sleep(max(0.0, sent + 0.3 - time.monotonic()))
                t = time.monotonic()
                net.link_down("n1")
                return t

            reply, t_cut = request(drv, pic, cut)
            # on a loaded host node 1 may lose that election (its copy late: it abstains); the
            # reply then comes before the cut, and the end checks that node 1 never sealed it
            assert "reply" in reply, reply
            (missed if reply["reply"] < t_cut else trials).append({**reply, "cut": t_cut})
            net.heal("c1")
            net.link_up("n1")
            winner_again(cloud, drv, pic, 1)
        after, _ = request(drv, pic)
    finally:
        drv.stdin.close()
        out, _err = read_all(drv)
    (summary,) = [ln["summary"] for ln in json_lines(out) if "summary" in ln]
    replies = summary["encrypt_replies"]
    ms = sorted(round((t["reply"] - t["cut"]) * 1000) for t in trials)
    detail = [(t["node"], round((t["cut"] - t["sent"]) * 1000), round((t["reply"] - t["cut"]) * 1000))
              for t in trials]  # fmt: skip
    print(f"[TN-4] baseline ms {[(round((b['reply'] - b['sent']) * 1000), b['seal_ms']) for b in base]}; trials "
          f"(node, sent->cut ms, cut->reply ms) {detail}; cut->reply p50 {statistics.median(ms)} "
          f"max {ms[-1]} ms (target max 1500)")
    assert all(t.get("exact") for t in trials), trials  # every reply arrived, bit-exact
    assert all(t["node"] != 1 and t["retries"] == 0 for t in trials), trials  # failover, no resend
    # node 1 had sealed each one: its reply reached the client late, after the heal
    assert all(1 in replies[t["rid"]] for t in trials), (replies, trials)
    assert len(trials) == TRIALS, (missed, trials)  # node 1 won TRIALS times before its cut
    # a missed setup is no failover: one reply, from the node that won, and not node 1's
    assert all(replies[t["rid"]] == [t["node"]] and t["node"] != 1 for t in missed), missed
    # a request not in flight at a cut got one reply (the baseline, and the one after the trials)
    assert {b["rid"]: replies[b["rid"]] for b in [*base, after]} == {
        b["rid"]: [b["node"]] for b in [*base, after]}
    # node 1 survived ENETUNREACH and serves again (winner_again after the last trial), and a
    # request after the trials is answered bit-exact, once
    assert after["exact"], after


def down_node(cloud: NetCloud, limit_s: float = 30.0) -> int:
    """A node in a simulated failure (it keeps the failure token while down)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        down = [r["id"] for r in cloud.status() if r["state"] == "down"]
        if down:
            return down[0]
        time.sleep(0.05)
    raise AssertionError(f"no node went down within {limit_s} s")


def test_cut_token_holder_in_simulated_failure_leaves_one_token(
    net: Net, netcloud: Any
) -> None:
    often = {**FAILURES, "mean_up_s": 1.0}  # a node goes down within a few seconds
    cloud: NetCloud = netcloud(failures=True, sections={"failures": often}).start()
    sampler = NsSampler(cloud, net["c2"])
    sampler.start()
    try:
        x = down_node(cloud)
        net.cut(f"n{x}", peers=[f"n{i}" for i in (1, 2, 3) if i != x])
        time.sleep(6.0)
        stuck = [r for r in cloud.status() if r["token"]]
        net.heal(f"n{x}")
        converged_s, _rows = cloud.converge(10.0)
    finally:
        sampler.stop()
    v = sampler.violations()
    print(f"[TN-3 token] node {x} cut while down; holders 6 s into the cut "
          f"{[(r['id'], r['majority']) for r in stuck]}; {v}; converged {converged_s} s after heal")
    assert 0 <= converged_s <= 10.0
    assert v["two_token_holders"] == 0 and v["down_or_unreachable_gt1"] == 0, \
        (v, getattr(sampler, "bad_samples", []))


def test_node_missing_coordinator_and_done_does_not_serve_too(
    net: Net, netcloud: Any, tmp_path: Path
) -> None:
    cloud: NetCloud = netcloud().start()
    net.drop_types("n1", cloud.cfg.node(1).peer_port, [M.Coordinator.TYPE, M.Done.TYPE])
    burst = cloud.driver("c1", "burst", tmp_path / "burst", "burst", "--count", "6",
                         "--linger", "3", stdin=True)  # fmt: skip
    assert burst.stdout is not None and burst.stdin is not None
    while "ready" not in burst.stdout.readline():
        assert burst.poll() is None
    burst.stdin.write("go\n")
    burst.stdin.close()
    out, _err = read_all(burst)
    lines = json_lines(out)
    rows = [ln for ln in lines if ln.get("op") == "encrypt"]
    (summary,) = [ln["summary"] for ln in lines if "summary" in ln]
    twice = {rid: n for rid, n in summary["encrypt_replies"].items() if len(n) > 1}
    print(f"[TN-5 stale keys] node 1 never hears Coordinator/Done ({net.type_drops('n1')} "
          f"dropped); replies per request {summary['encrypt_replies']}")
    assert len(rows) == 6 and all(r["ok"] and r["exact"] for r in rows), rows
    assert twice == {}
