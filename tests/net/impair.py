"""Impairments applied inside one host's network namespace (RELIABILITY 1.4, TN-0..TN-5).

Each function runs the kernel tool in the host's namespace and returns a one-line description of
the mechanism it used; `hosts.Net` prints that line. Callers: `hosts.Net` only.

- partitions: iptables `INPUT -s <peer> -j DROP` (Jepsen's rule). Only INPUT is used: an OUTPUT
  DROP makes `sendto` fail with EPERM, which a real partition never does.
- loss and duplication: one nftables table `ip vs_impair` per host, ingress (prerouting) only,
  UDP only; loss runs first (priority -10) so a dropped datagram is never duplicated; the clone
  of `dup to <own address>` comes back through `lo` and is not duplicated or dropped again.
  Each rule has a counter, so tests can compare what arrived with what the kernel did.
- delay, jitter and reordering: no netem on this machine kind; the seeded policy of each
  program's transport, switched on by `VEILSHARE_LOSS_POLICY` (see `delay_env`).
- selective loss of one message type: an nftables raw-payload match on the frame header's
  type field (`drop_types`), e.g. a node that never hears Coordinator or Done.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import Sequence

NFT_TABLE = "vs_impair"
POLICY_ENV = "VEILSHARE_LOSS_POLICY"
_CHAINS = {"loss": ("vs_loss", -10), "dup": ("vs_dup", 0)}
_TYPES = ("vs_types", -20)  # drop transport DATA/ACK frames by message type (see drop_types)


class NetError(Exception):
    """A namespace command failed: `cmd` is the argv, `reason` the tool's stderr or exit code."""

    def __init__(self, cmd: Sequence[str], reason: str) -> None:
        super().__init__(f"{' '.join(cmd)}: {reason}")
        self.cmd = list(cmd)
        self.reason = reason


def sh(cmd: Sequence[str], *, stdin: str | None = None, timeout_s: float = 20.0) -> str:
    """Run `cmd` (argv, no shell) and return its stdout; raise NetError when it fails."""
    try:
        done = subprocess.run(
            list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetError(cmd, str(exc)) from None
    if done.returncode != 0:
        raise NetError(cmd, done.stderr.strip() or f"exit code {done.returncode}")
    return done.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    """The argv that runs `cmd` inside network namespace `ns`."""
    return ["ip", "netns", "exec", ns, *cmd]


def drop_input_from(ns: str, source: str) -> list[str]:
    """Add `INPUT -s source -j DROP` in `ns`; return the rule spec (for `undo_rule`)."""
    spec = ["INPUT", "-s", f"{source}/32", "-j", "DROP"]
    sh(in_ns(ns, "iptables", "-w", "-A", *spec))
    return spec


def undo_rule(ns: str, spec: Sequence[str]) -> None:
    """Delete one iptables rule previously added in `ns` (one occurrence)."""
    sh(in_ns(ns, "iptables", "-w", "-D", *spec))


def flush_iptables(ns: str) -> None:
    """Remove every iptables filter rule in `ns`."""
    sh(in_ns(ns, "iptables", "-w", "-F"))


def set_link(ns: str, dev: str, up: bool) -> str:
    """`ip link set dev up|down` in `ns`; returns the mechanism line."""
    state = "up" if up else "down"
    sh(["ip", "-n", ns, "link", "set", dev, state])
    return f"ip link set {dev} {state}"


def _rule(kind: str, pct: int, own_addr: str, port: int | None) -> str:
    match = 'iifname != "lo" meta l4proto udp'
    if port is not None:
        match += f" udp dport {port}"
    action = "drop" if kind == "loss" else f"dup to {own_addr}"
    chance = "" if pct == 100 else f" numgen random mod 100 < {pct}"
    return f"{match}{chance} counter {action}"


def nft_impair(ns: str, kind: str, pct: int, own_addr: str, port: int | None) -> str:
    """Drop (`kind` "loss") or duplicate (`kind` "dup") `pct` % of the UDP datagrams arriving
    in `ns`, optionally only those to `port`. pct 0 removes the rule. Returns the mechanism."""
    if kind not in _CHAINS:
        raise ValueError(f"kind must be one of {sorted(_CHAINS)}, not {kind!r}")
    if not 0 <= pct <= 100:
        raise ValueError(f"pct must be within 0..100, not {pct}")
    chain, prio = _CHAINS[kind]
    script = [
        f"add table ip {NFT_TABLE}",
        (
            f"add chain ip {NFT_TABLE} {chain} "
            f"{{ type filter hook prerouting priority {prio}; policy accept; }}"
        ),
        f"flush chain ip {NFT_TABLE} {chain}",
    ]
    rule = _rule(kind, pct, own_addr, port)
    if pct > 0:
        script.append(f"add rule ip {NFT_TABLE} {chain} {rule}")
    sh(in_ns(ns, "nft", "-f", "-"), stdin="\n".join(script) + "\n")
    return f"nftables prerouting: {rule}" if pct > 0 else f"nftables: chain {chain} emptied"


def nft_counts(ns: str) -> dict[str, int]:
    """Packets matched so far by the loss and dup rules in `ns`: {"loss": n, "dup": n}."""
    counts = {"loss": 0, "dup": 0}
    for kind, n in _nft_rule_counters(ns):
        counts[kind] += n
    return counts


def nft_rule_kinds(ns: str) -> set[str]:
    """The kinds ("loss", "dup") that have a rule in `ns` now, whatever it matched so far."""
    return {kind for kind, _ in _nft_rule_counters(ns)}


def _nft_rule_counters(ns: str) -> list[tuple[str, int]]:
    """(kind, packets matched) of each loss or dup rule in `ns`."""
    try:
        text = sh(in_ns(ns, "nft", "list", "table", "ip", NFT_TABLE))
    except NetError:
        return []  # no table yet: no rule
    rules, current = [], ""
    for line in text.splitlines():
        head = re.match(r"\s*chain (\S+)", line)
        if head:
            current = head.group(1)
        hit = re.search(r"counter packets (\d+)", line)
        if hit:
            for kind, (chain, _prio) in _CHAINS.items():
                if chain == current:
                    rules.append((kind, int(hit.group(1))))
    return rules


def drop_types(ns: str, port: int, type_codes: list[int], *, data_only: bool = False) -> str:
    """Drop every Veilshare datagram arriving at UDP `port` in `ns` whose header names one of
    `type_codes` (bytes 6-7 of the frame header: DATA fragments and the ACKs echoing them),
    whatever else it carries; `data_only`: DATA fragments only (byte 3, kind 1), so that the
    host's own sends of those types are still acknowledged. Returns the mechanism line."""
    chain, prio = _TYPES
    codes = ", ".join(str(c) for c in type_codes)
    kind = "@th,88,8 1 " if data_only else ""
    rule = f"udp dport {port} {kind}@th,112,16 {{ {codes} }} counter drop"
    script = [
        f"add table ip {NFT_TABLE}",
        f"add chain ip {NFT_TABLE} {chain} {{ type filter hook prerouting priority {prio}; }}",
        f"flush chain ip {NFT_TABLE} {chain}",
        f"add rule ip {NFT_TABLE} {chain} {rule}",
    ]
    sh(in_ns(ns, "nft", "-f", "-"), stdin="\n".join(script) + "\n")
    return f"nftables prerouting: {rule} (frame header type field, after the 8-byte UDP header)"


def nft_type_drops(ns: str) -> int:
    """Packets dropped so far by the `drop_types` rule in `ns` (0 if there is none)."""
    try:
        text = sh(in_ns(ns, "nft", "list", "chain", "ip", NFT_TABLE, _TYPES[0]))
    except NetError:
        return 0
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", text))


def nft_clear(ns: str) -> None:
    """Delete the impairment table in `ns` if present."""
    try:
        sh(in_ns(ns, "nft", "delete", "table", "ip", NFT_TABLE))
    except NetError as exc:
        if "No such file" not in exc.reason:
            raise


def netem_probe(ns: str) -> tuple[bool, str]:
    """Try `tc qdisc add dev lo root netem` in scratch namespace `ns`: (present, detail)."""
    try:
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
    except NetError as exc:
        return False, exc.reason
    sh(["tc", "-n", ns, "qdisc", "del", "dev", "lo", "root"])
    return True, "tc qdisc netem works"


def policy_env(
    delay_ms: float, jitter_ms: float, reorder_pct: float, seed: int, drop: float, dup: float
) -> dict[str, str]:
    """The environment that switches on the transport's seeded impairment policy.

    Format agreed with the transport: "drop=P,dup=P,delay_ms=MS,jitter_ms=MS,reorder=P,seed=N"
    with P fractions in [0, 1] and MS milliseconds."""
    for name, frac in (("drop", drop), ("dup", dup), ("reorder_pct/100", reorder_pct / 100)):
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], not {frac}")
    if delay_ms < 0 or jitter_ms < 0 or jitter_ms > delay_ms:
        raise ValueError(f"need 0 <= jitter_ms <= delay_ms, got {jitter_ms}, {delay_ms}")
    value = (
        f"drop={drop:g},dup={dup:g},delay_ms={delay_ms:g},jitter_ms={jitter_ms:g},"
        f"reorder={reorder_pct / 100:g},seed={seed}"
    )
    return {POLICY_ENV: value}


def snmp_counter(ns: str, group: str, name: str) -> int:
    """One counter of /proc/net/snmp as seen inside `ns` (e.g. "Ip", "FragCreates")."""
    rows = [ln.split() for ln in sh(in_ns(ns, "cat", "/proc/net/snmp")).splitlines()]
    for head, vals in itertools.pairwise(rows):
        if head[:1] == vals[:1] == [f"{group}:"] and name in head:
            return int(vals[head.index(name)])
    raise NetError(["cat", "/proc/net/snmp"], f"no counter {group}.{name} in namespace {ns}")
