"""TN-0 and the TN-1 counter: the namespace fixture builds hosts, impairs them as it says it
does (the kernel's own counters agree with what arrives), and leaves nothing behind."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
import tomllib

import pytest

import config

from .cluster import cluster_toml
from .hosts import (
    DEFAULT_HOSTS,
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DONT,
    Host,
    Net,
    leftovers,
    netns_list,
    sweep_stale,
)

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

PORT = 9000
QUIET_S = 0.4  # how long "nothing arrives" is watched for
ARRIVE_S = 10.0  # how long a path that should carry datagrams is given to carry one

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER, IP_PMTUDISC_DO
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""


def bound(host: Host, port: int = PORT) -> socket.socket:
    s = host.socket()
    s.bind((host.addr, port))
    return s


def drain(sock: socket.socket, want: int, quiet_s: float = QUIET_S) -> list[bytes]:
    """Datagrams received until `want` arrived and then `quiet_s` passed with nothing more
    (or `quiet_s` passed with nothing at all)."""
    got: list[bytes] = []
    sock.settimeout(quiet_s if want == 0 else 5.0)
    try:
        while True:
            got.append(sock.recv(65535))
            if len(got) >= want:
                sock.settimeout(quiet_s)
    except TimeoutError:
        return got


def reaches(src: socket.socket, dst: socket.socket, dst_addr: str) -> bool:
    """Does one datagram from `src` arrive at `dst` within QUIET_S? For "the path is cut": use
    `arrives` for "the path carries datagrams". (Stale datagrams are ignored.)"""
    token = os.urandom(8)
    src.sendto(token, (dst_addr, PORT))
    dst.settimeout(QUIET_S)
    try:
        while dst.recv(65535) != token:
            pass
    except TimeoutError:
        return False
    return True


def arrives(src: socket.socket, dst: socket.socket, dst_addr: str) -> bool:
    """Does a datagram from `src` arrive at `dst`, one sent every QUIET_S until one does or
    ARRIVE_S passed? A path just restored (a link up, rules removed) may lose the first one
    while the neighbours resolve again, and a loaded host may take more than QUIET_S to run
    the receiver: the condition is waited for, not judged from one datagram."""
    deadline = time.monotonic() + ARRIVE_S
    while True:
        if reaches(src, dst, dst_addr):
            return True
        if time.monotonic() > deadline:
            return False


def blast(src: socket.socket, dst_addr: str, n: int) -> set[bytes]:
    payloads = blast_payloads(n)
    for p in payloads:
        src.sendto(p, (dst_addr, PORT))
    return set(payloads)


def test_five_hosts_with_own_address_mtu_and_lo(net: Net) -> None:
    assert list(net.hosts) == list(DEFAULT_HOSTS)
    assert len({h.addr for h in net.hosts.values()}) == 5
    for host in net.hosts.values():
        links = host.check(["ip", "-o", "link", "show"])
        assert f"{host.dev}@" in links and "mtu 1500" in links
        assert "lo: <LOOPBACK,UP,LOWER_UP>" in links
        assert f"inet {host.addr}/24" in host.check(["ip", "-o", "addr", "show", host.dev])
        assert host.ns in netns_list()
    root_addrs = subprocess.run(
        ["ip", "-o", "addr"], capture_output=True, text=True, check=True
    ).stdout
    assert "10.213." not in root_addrs  # the test subnet exists only inside the namespaces


def test_udp_echo_from_a_program_run_in_another_host(net: Net) -> None:
    server = net["n2"].run(
        [sys.executable, "-c", ECHO, net["n2"].addr, str(PORT)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None and server.stdout.readline() == "ready\n"
    client = net["c1"].socket()
    client.settimeout(5.0)
    client.sendto(b"hello veilshare", (net["n2"].addr, PORT))
    data, addr = client.recvfrom(65535)
    assert (data, addr) == (b"hello veilshare", (net["n2"].addr, PORT))


def test_cut_both_ways_then_heal(net: Net, capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = bound(net["n1"]), bound(net["n2"]), bound(net["n3"])
    n1, n2, n3 = (net[x].addr for x in ("n1", "n2", "n3"))
    assert arrives(a, b, n2) and arrives(b, a, n1)
    line = net.cut("n2", peers=["n1"])
    assert not reaches(a, b, n2) and not reaches(b, a, n1)
    assert arrives(c, b, n2) and arrives(b, c, n3)  # only the named peer is cut off
    net.heal("n2")
    assert arrives(a, b, n2) and arrives(b, a, n1)
    out = capsys.readouterr().out
    assert line in out and "iptables INPUT -s <addr> -j DROP (in n2 and in n1)" in line
    assert "[net] heal n2: iptables -D of the cut rules" in out
    assert net["n2"].check(["iptables", "-w", "-S", "INPUT"]).strip() == "-P INPUT ACCEPT"


def test_cut_inbound_only_is_asymmetric(net: Net) -> None:
    a, b = bound(net["n1"]), bound(net["n2"])
    line = net.cut(net["n2"], peers=[net["n1"]], both_ways=False)
    assert "inbound only" in line and "(in n2)" in line
    assert not reaches(a, b, net["n2"].addr)
    assert arrives(b, a, net["n1"].addr)  # TN-5: X can send but cannot hear


def test_link_down_isolates_and_link_up_restores(net: Net) -> None:
    a, b = bound(net["n1"]), bound(net["n2"])
    assert arrives(a, b, net["n2"].addr)
    assert net.link_down("n2") == "[net] isolate n2: ip link set eth0 down"
    with pytest.raises(OSError) as err:
        b.sendto(b"x", (net["n1"].addr, PORT))
    assert err.value.errno == errno.ENETUNREACH
    assert not reaches(a, b, net["n2"].addr)
    net.link_up("n2")
    assert arrives(a, b, net["n2"].addr) and arrives(b, a, net["n1"].addr)


def test_loss_drops_about_the_share_asked_and_counts_it(net: Net) -> None:
    a, b = bound(net["n1"]), bound(net["n2"])
    assert arrives(a, b, net["n2"].addr)  # neighbour resolved before the burst
    line = net.loss("n2", 30)
    assert "numgen random mod 100 < 30 counter drop" in line and "(netem absent)" in line
    sent = blast(a, net["n2"].addr, 400)
    dropped = net.impair_counts("n2")["loss"]
    got = drain(b, 400 - dropped)
    assert 60 <= dropped <= 180  # 30 % of 400 = 120, sd 9
    assert len(got) == len(set(got)) == 400 - dropped and set(got) <= sent
    assert net.impair_kinds("n2") == {"loss"}
    net.clear("n2")
    assert net.impair_kinds("n2") == set()
    assert sorted(drain_after(a, b, net["n2"].addr, 50)) == sorted(blast_payloads(50))


def blast_payloads(n: int) -> list[bytes]:
    return [b"%06d" % i for i in range(n)]


def drain_after(src: socket.socket, dst: socket.socket, dst_addr: str, n: int) -> list[bytes]:
    blast(src, dst_addr, n)
    return drain(dst, n)


def test_duplicate_delivers_copies_and_counts_them(net: Net) -> None:
    a, b = bound(net["n1"]), bound(net["n2"])
    assert arrives(a, b, net["n2"].addr)
    line = net.duplicate("n2", 20)
    assert f"dup to {net['n2'].addr}" in line
    assert net.impair_kinds("n2") == {"dup"}
    sent = blast(a, net["n2"].addr, 400)
    copies = net.impair_counts("n2")["dup"]
    got = drain(b, 400 + copies)
    assert 40 <= copies <= 120  # 20 % of 400 = 80, sd 8
    assert len(got) == 400 + copies and set(got) == sent


def test_loss_and_duplication_can_be_limited_to_one_port(net: Net) -> None:
    a, b = bound(net["n1"]), bound(net["n2"])
    other = bound(net["n2"], PORT + 1)
    net.loss("n2", 100, port=PORT + 1)
    assert arrives(a, b, net["n2"].addr)
    a.sendto(b"lost", (net["n2"].addr, PORT + 1))
    assert drain(other, 0) == [] and net.impair_counts("n2") == {"loss": 1, "dup": 0}


def test_dont_fragment_1472_passes_1473_fails_and_frag_counter(net: Net) -> None:
    a, b = bound(net["n1"]), bound(net["n2"])
    before = net.ip_frag_creates("n1")
    a.sendto(b"x" * 1472, (net["n2"].addr, PORT))
    assert drain(b, 1) == [b"x" * 1472]
    with pytest.raises(OSError) as err:
        a.sendto(b"x" * 1473, (net["n2"].addr, PORT))
    assert err.value.errno == errno.EMSGSIZE == 90
    assert net.ip_frag_creates("n1") == before  # TN-1: nothing fragmented
    a.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    a.sendto(b"y" * 3000, (net["n2"].addr, PORT))
    assert drain(b, 1) == [b"y" * 3000]
    assert net.ip_frag_creates("n1") == before + 3  # 3008 bytes over 1480-byte fragments


def test_netem_probe_and_delay_env_reach_the_program(
    net: Net, capsys: pytest.CaptureFixture[str]
) -> None:
    present = net.netem_available()
    env = net.delay_env(20, 5, 10)
    value = "drop=0,dup=0,delay_ms=20,jitter_ms=5,reorder=0.1,seed=1"
    assert env == {"VEILSHARE_LOSS_POLICY": value}
    out = capsys.readouterr().out
    assert f"[net] netem probe: {'present' if present else 'absent'}" in out
    assert f"transport seeded policy VEILSHARE_LOSS_POLICY={value}" in out
    probe = "import os; print(os.environ['VEILSHARE_LOSS_POLICY'])"
    proc = net["c2"].run(
        [sys.executable, "-c", probe], env={**os.environ, **env}, stdout=subprocess.PIPE, text=True
    )
    assert proc.communicate(timeout=20)[0] == value + "\n"
    with pytest.raises(ValueError):
        net.delay_env(5, 10, 10)  # jitter larger than the delay


def test_everything_removed_after_an_error_or_interrupt(netns_ok: None) -> None:
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), Net(["a1", "a2"], out=lambda _line: None) as n:
            sleeper = n["a1"].run(["sleep", "60"])
            sock = n["a2"].socket()
            n.cut("a1")
            raise exc
        assert leftovers(n.prefix) == []
        assert sleeper.poll() is not None and sock.fileno() == -1


def test_sweep_removes_namespaces_of_dead_runs_only(netns_ok: None) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead, alive = f"vs{gone.pid}-0-n1", f"vs{os.getpid()}-99999-n1"
    for ns in (dead, alive):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    orphan = subprocess.Popen(
        ["ip", "netns", "exec", dead, "sh", "-c", "echo in; exec sleep 60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert orphan.stdout is not None and orphan.stdout.readline() == "in\n"
        assert dead in sweep_stale()
        assert orphan.wait(timeout=10) == -9
        assert dead not in netns_list() and alive in netns_list()
    finally:
        orphan.kill()
        orphan.wait()
        subprocess.run(["ip", "netns", "del", alive], check=False)
        subprocess.run(["ip", "netns", "del", dead], capture_output=True, check=False)


def test_cluster_file_names_the_node_hosts(net: Net) -> None:
    cfg = config.from_dict(tomllib.loads(net.cluster_toml()))
    assert [n.host for n in cfg.nodes] == [net[x].addr for x in ("n1", "n2", "n3")]
    base = config.load()
    assert [n.client_port for n in cfg.nodes] == [n.client_port for n in base.nodes]
    assert cfg.secret != config.SAMPLE_SECRET and cfg.transport == base.transport
    with pytest.raises(KeyError):
        cluster_toml({1: "10.213.0.11"})  # node 2 has no address


def test_atexit_removes_a_net_that_was_never_closed(netns_ok: None) -> None:
    script = (
        "from net.hosts import Net\n"
        "n = Net(['a1'], out=lambda _l: None).__enter__()\n"
        "n['a1'].run(['sleep', '60'])\n"
        "print(n.prefix, flush=True)\n"
    )
    tests_dir = os.path.dirname(os.path.dirname(__file__))
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tests_dir,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    prefix = done.stdout.strip()
    assert prefix.startswith("vs") and leftovers(prefix) == []


@pytest.mark.parametrize("names", [[], ["N1"], ["n1", "n1"], ["averyverylongname"], ["a-b"]])
def test_bad_host_names_are_refused_before_anything_is_built(names: list[str]) -> None:
    with pytest.raises(ValueError, match="host names"):
        Net(names)
