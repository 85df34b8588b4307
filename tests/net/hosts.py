"""Hosts in network namespaces for the N-level tests (issue 9; RELIABILITY 1.3, 1.4, TN-0..TN-5).

`Net` builds, per run, one "switch" namespace holding a bridge and one namespace per host, each
joined to the bridge by a veth pair (`eth0` in the host, MTU 1500, address 10.213.0.x/24, lo up).
The root namespace is never touched: no link, address or rule is added there, and the test
subnet exists only inside these namespaces.

Names: every namespace is `<prefix>-<name>` with prefix `vs<pid>-<k>` (k counts Nets in this
process), so runs never collide and `sweep_stale()` can delete what a crashed run left behind.
Interface names are short (`eth0` in hosts, `br0` and `v-<name>` in the switch; <= 15 chars).

Impairments print (and return) the mechanism they used: partitions with iptables, isolation with
`ip link set down`, loss and duplication with nftables, delay/jitter/reordering through the
transport's seeded policy (`delay_env`), since this machine kind has no netem.

Everything is removed on `__exit__`, even after an exception or KeyboardInterrupt; `atexit`
is the backstop. Callers: tests/net/conftest.py and the integrator's full-system tests.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from . import impair
from .cluster import cluster_toml
from .impair import NetError, in_ns, sh

__all__ = ["Host", "Net", "NetError", "available", "leftovers", "sweep_stale"]

SUBNET = "10.213.0"
MTU = 1500
DEFAULT_HOSTS = ("n1", "n2", "n3", "c1", "c2")
NS_RE = re.compile(r"^vs(\d+)-(\d+)-[a-z0-9]+$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,10}$")
_CLONE_NEWNET = 0x40000000
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# Linux <linux/in.h> values; the socket module names them only from Python 3.12.
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = getattr(socket, "IP_PMTUDISC_DONT", 0)
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_counter = iter(range(1 << 30))
T = TypeVar("T")


def netns_list() -> list[str]:
    """Names of all network namespaces in /run/netns."""
    return [ln.split()[0] for ln in sh(["ip", "netns", "list"]).splitlines() if ln.strip()]


def available() -> tuple[bool, str]:
    """Can this process build namespaces? (True, "") or (False, the reason to skip with)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root (run the N-level tests as root)"
    missing = [t for t in ("ip", "iptables", "nft") if shutil.which(t) is None]
    if missing:
        return (
            False,
            f"missing tools: {', '.join(missing)} (apt-get install iproute2 iptables nftables)",
        )
    probe = f"vs{os.getpid()}-{next(_counter)}-probe"
    try:
        sh(["ip", "netns", "add", probe])
        sh(in_ns(probe, "nft", "list", "ruleset"))
        sh(in_ns(probe, "iptables", "-w", "-L", "-n"))
    except NetError as exc:
        return False, f"cannot use a network namespace here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True, ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_pids(ns: str) -> None:
    """SIGKILL every process still inside namespace `ns`."""
    try:
        pids = [int(p) for p in sh(["ip", "netns", "pids", ns]).split()]
    except NetError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _delete_ns(ns: str) -> None:
    _kill_ns_pids(ns)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def sweep_stale() -> list[str]:
    """Delete the namespaces (and their processes) of earlier runs whose process is gone."""
    stale = [
        ns for ns in netns_list() if (m := NS_RE.match(ns)) and not _pid_alive(int(m.group(1)))
    ]
    for ns in stale:
        _delete_ns(ns)
    return stale


def leftovers(prefix: str) -> list[str]:
    """Namespaces and root-namespace links whose name starts with `prefix` (should be [])."""
    links = sh(["ip", "-o", "link", "show"]).splitlines()
    names = [ln.split(":")[1].strip().split("@")[0] for ln in links if ":" in ln]
    return [f"netns {n}" for n in netns_list() if n.startswith(prefix)] + [
        f"link {n}" for n in names if n.startswith(prefix)
    ]


def _in_thread_ns(ns: str, fn: Callable[[], T]) -> T:
    """Call `fn` in a short-lived thread that entered namespace `ns` (setns); sockets made by
    `fn` stay in `ns`. The calling thread keeps its own namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            with open(f"/run/netns/{ns}", "rb") as f:
                if libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            box["value"] = fn()
        except Exception as exc:  # noqa: BLE001 -- re-raised in the calling thread below
            box["error"] = exc

    t = threading.Thread(target=body, name=f"setns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@dataclass
class Host:
    """One host: namespace `ns`, interface `dev` with address `addr` (IPv4 literal)."""

    name: str
    ns: str
    addr: str
    dev: str = "eth0"
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def run(self, cmd: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start `cmd` (argv) inside this host; stopped by `Net.close` if still running."""
        proc = subprocess.Popen(in_ns(self.ns, *cmd), **popen_kwargs)
        self.procs.append(proc)
        return proc

    def check(self, cmd: Sequence[str], timeout_s: float = 20.0) -> str:
        """Run `cmd` inside this host to completion; its stdout, or NetError."""
        return sh(in_ns(self.ns, *cmd), timeout_s=timeout_s)

    def socket(self, kind: int = socket.SOCK_DGRAM, rcvbuf: int = 4 << 20) -> socket.socket:
        """A new IPv4 socket living in this host's namespace, with "don't fragment" set
        (IP_PMTUDISC_DO) and a receive buffer of `rcvbuf` bytes; closed by `Net.close`."""

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, kind)
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            s.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, rcvbuf)
            return s

        s = _in_thread_ns(self.ns, make)
        self.sockets.append(s)
        return s

    def raw_socket(self, family: int, kind: int, proto: int) -> socket.socket:
        """A raw socket in this host's namespace (e.g. AF_PACKET to record what arrives on
        `dev`, or AF_INET/SOCK_RAW/IPPROTO_RAW to send hand-built IP datagrams); closed by
        `Net.close`. Root only."""
        s = _in_thread_ns(self.ns, lambda: socket.socket(family, kind, proto))
        self.sockets.append(s)
        return s

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that entered this host's namespace and return its result:
        sockets it makes (e.g. a `transport.udp.Transport`) live in this host. The caller
        stops what `fn` started."""
        return _in_thread_ns(self.ns, fn)


HostRef = Host | str


class Net:
    """Context manager: the switch and hosts of one run. `net["n1"]` is a Host.

    `names`: host names (lower-case letters and digits, <= 11 chars), addresses assigned in
    order from 10.213.0.11. `out`: where mechanism lines go (default print)."""

    def __init__(
        self, names: Iterable[str] = DEFAULT_HOSTS, out: Callable[[str], None] = print
    ) -> None:
        self.names = list(names)
        bad = [n for n in self.names if not _NAME_RE.match(n)]
        if bad or len(set(self.names)) != len(self.names) or not 1 <= len(self.names) <= 200:
            raise ValueError(
                f"host names must be 1..200 distinct [a-z][a-z0-9]{{0,10}}: {self.names}"
            )
        self.prefix = f"vs{os.getpid()}-{next(_counter)}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self.out = out
        self.log: list[str] = []
        self._cuts: dict[str, list[tuple[str, list[str]]]] = {}
        self._created: list[str] = []
        self._netem: tuple[bool, str] | None = None
        self._closed = False

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __enter__(self) -> Self:
        atexit.register(self.close)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, ns: str) -> None:
        sh(["ip", "netns", "add", ns])
        self._created.append(ns)
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _build(self) -> None:
        self._add_ns(self.switch)
        sw = ["ip", "-n", self.switch, "link"]
        sh([*sw, "add", "br0", "mtu", str(MTU), "type", "bridge"])
        sh([*sw, "set", "br0", "up"])
        for i, name in enumerate(self.names):
            host = Host(name, f"{self.prefix}-{name}", f"{SUBNET}.{11 + i}")
            self._add_ns(host.ns)
            port = f"v-{name}"
            sh([*sw, "add", port, "mtu", str(MTU), "type", "veth", "peer", "name", host.dev,
                "netns", host.ns])  # fmt: skip
            sh([*sw, "set", port, "master", "br0", "up"])
            sh(["ip", "-n", host.ns, "link", "set", host.dev, "mtu", str(MTU), "up"])
            sh(["ip", "-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", host.dev])
            self.hosts[name] = host

    def close(self) -> None:
        """Stop every process and socket of this run and delete its namespaces. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for host in self.hosts.values():
            for s in host.sockets:
                s.close()
            for proc in host.procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        for ns in reversed(self._created):
            _delete_ns(ns)

    def _host(self, ref: HostRef) -> Host:
        return ref if isinstance(ref, Host) else self.hosts[ref]

    def _say(self, what: str, mechanism: str) -> str:
        line = f"[net] {what}: {mechanism}"
        self.log.append(line)
        self.out(line)
        return line

    def note(self, what: str, mechanism: str) -> str:
        """Print and log a mechanism line for an impairment a test makes itself."""
        return self._say(what, mechanism)

    def cut(
        self, ref: HostRef, peers: Iterable[HostRef] | None = None, both_ways: bool = True
    ) -> str:
        """Partition `ref` from `peers` (default: every other host). One way: `ref` drops what
        the peers send (it can still send: TN-5). Both ways: each peer also drops what `ref`
        sends. Returns the mechanism line."""
        host = self._host(ref)
        others = (
            [self._host(p) for p in peers]
            if peers is not None
            else [h for h in self.hosts.values() if h is not host]
        )
        rules = self._cuts.setdefault(host.name, [])
        for peer in others:
            rules.append((host.ns, impair.drop_input_from(host.ns, peer.addr)))
            if both_ways:
                rules.append((peer.ns, impair.drop_input_from(peer.ns, host.addr)))
        names = ",".join(p.name for p in others)
        where = f"in {host.name}" + (f" and in {names}" if both_ways else "")
        return self._say(
            f"cut {host.name} from {names} {'both ways' if both_ways else 'inbound only'}",
            f"iptables INPUT -s <addr> -j DROP ({where})",
        )

    def heal(self, ref: HostRef | None = None) -> str:
        """Undo the cuts of `ref` (default: of every host). Returns the mechanism line."""
        names = [self._host(ref).name] if ref is not None else list(self._cuts)
        for name in names:
            for ns, spec in self._cuts.pop(name, []):
                impair.undo_rule(ns, spec)
        return self._say(f"heal {','.join(names) or 'nothing'}", "iptables -D of the cut rules")

    def link_down(self, ref: HostRef) -> str:
        """Isolate a host completely: its sends fail with ENETUNREACH (errno 101)."""
        host = self._host(ref)
        return self._say(f"isolate {host.name}", impair.set_link(host.ns, host.dev, up=False))

    def link_up(self, ref: HostRef) -> str:
        host = self._host(ref)
        return self._say(f"reconnect {host.name}", impair.set_link(host.ns, host.dev, up=True))

    def loss(self, ref: HostRef, pct: int, port: int | None = None) -> str:
        """Drop `pct` % of the UDP datagrams arriving at `ref` (to `port` only, if given)."""
        host = self._host(ref)
        line = impair.nft_impair(host.ns, "loss", pct, host.addr, port)
        return self._say(f"loss {pct}% into {host.name}", f"{line}{self._netem_note()}")

    def duplicate(self, ref: HostRef, pct: int, port: int | None = None) -> str:
        """Deliver twice `pct` % of the UDP datagrams arriving at `ref` (to `port`, if given)."""
        host = self._host(ref)
        line = impair.nft_impair(host.ns, "dup", pct, host.addr, port)
        return self._say(f"duplicate {pct}% into {host.name}", f"{line}{self._netem_note()}")

    def drop_types(self, ref: HostRef, port: int, type_codes: list[int], *,
                   data_only: bool = False) -> str:
        """Drop the Veilshare frames of these message types arriving at `ref`'s `port` (DATA
        fragments only, if `data_only`; else their ACKs too)."""
        host = self._host(ref)
        line = impair.drop_types(host.ns, port, type_codes, data_only=data_only)
        return self._say(f"drop message types {type_codes} into {host.name}:{port}", line)

    def type_drops(self, ref: HostRef) -> int:
        """Datagrams the `drop_types` rule of `ref` dropped so far."""
        return impair.nft_type_drops(self._host(ref).ns)

    def impair_counts(self, ref: HostRef) -> dict[str, int]:
        """Datagrams the nft rules of `ref` dropped and duplicated so far: {"loss", "dup"}."""
        return impair.nft_counts(self._host(ref).ns)

    def impair_kinds(self, ref: HostRef) -> set[str]:
        """The impairments ("loss", "dup") that have an nft rule on `ref` now."""
        return impair.nft_rule_kinds(self._host(ref).ns)

    def clear(self, ref: HostRef) -> str:
        """Remove the loss and duplication rules of `ref`."""
        host = self._host(ref)
        impair.nft_clear(host.ns)
        return self._say(
            f"clear impairments of {host.name}", f"nft delete table {impair.NFT_TABLE}"
        )

    def netem_available(self) -> bool:
        """Probe `tc qdisc add ... netem` once (in the switch namespace); print the result."""
        if self._netem is None:
            self._netem = impair.netem_probe(self.switch)
            state = "present" if self._netem[0] else "absent"
            self._say("netem probe", f"{state} ({self._netem[1]})")
        return self._netem[0]

    def _netem_note(self) -> str:
        return "" if self.netem_available() else " (netem absent)"

    def delay_env(
        self, ms: float, jitter_ms: float, reorder_pct: float, seed: int = 1,
        drop: float = 0.0, dup: float = 0.0,
    ) -> dict[str, str]:  # fmt: skip
        """Environment for `Host.run` that makes the programs' transports delay each datagram
        `ms` +- `jitter_ms` milliseconds and reorder `reorder_pct` % of them, seeded."""
        env = impair.policy_env(ms, jitter_ms, reorder_pct, seed, drop, dup)
        netem = "netem present, not used" if self.netem_available() else "netem absent"
        mech = f"transport seeded policy {impair.POLICY_ENV}={env[impair.POLICY_ENV]} ({netem})"
        self._say(f"delay {ms:g}+-{jitter_ms:g} ms, reorder {reorder_pct:g}%", mech)
        return env

    def ip_frag_creates(self, ref: HostRef) -> int:
        """IP fragments this host has created so far (/proc/net/snmp Ip FragCreates; TN-1)."""
        return impair.snmp_counter(self._host(ref).ns, "Ip", "FragCreates")

    def cluster_toml(
        self, base_text: str | None = None, sections: dict[str, dict[str, Any]] | None = None,
        secret: str | None = None,
    ) -> str:  # fmt: skip
        """Cluster TOML whose node `i` is host `n<i>` (its address), fresh secret unless
        `secret`, knobs overridden by `sections`; see cluster.py."""
        addrs = {int(n[1:]): h.addr for n, h in self.hosts.items() if re.fullmatch(r"n\d+", n)}
        return cluster_toml(addrs, base_text, sections, secret)
