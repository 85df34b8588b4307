"""One user, two processes (issue 16 item 5) with real node processes and clients on loopback.

While `alice --serve` (or alice's interactive client) is online, `python -m shell --user alice -c
"..."` of the same home hands its commands to it and prints their output with the same status,
instead of `alice is already online` (exit 3, the code before). A client of another home is still
refused by the directory, a second `--serve` of the home is refused at once, and the socket of a
killed client does not stand in the way of the next one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from imgdata import jpeg_bytes

from actors.client import local_socket
from actors.client.client_store import ClientHome, ReceivedGrant
from benchmarks.localcloud import REPO, Cloud, env, json_lines, serve_shell, stop_shell
from benchmarks.terminal import open_pty

pytestmark = pytest.mark.timeout(240)

PROMPT_READY = b"\x1b[?2004h"  # prompt_toolkit turns bracketed paste on when a prompt starts


def test_c_next_to_serve_grants_approves_and_refuses_view(cloud: Cloud, tmp_path: Path) -> None:
    pic = tmp_path / "pic.jpg"
    pic.write_bytes(jpeg_bytes(5, 160))
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    assert cloud.shell("alice", alice_home, f"encrypt {pic}").returncode == 0
    alice = serve_shell(cloud, "alice", alice_home)
    try:
        sock = local_socket.socket_path(alice_home)
        assert os.lstat(sock).st_mode & 0o777 == 0o600
        assert os.lstat(sock.parent).st_mode & 0o777 == 0o700
        r = cloud.shell("bob", bob_home, "request alice pic.jpg 2")
        assert r.returncode == 0, r.stderr
        # bob is offline now: the grant goes through the cloud, said by alice's running client
        r = cloud.shell("alice", alice_home, "grant bob pic.jpg +3; shared", json_out=False)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("bob/pic.jpg: +3 views (via cloud); granted 5 in total; bob had "
                                   "2 views left at ")
        assert lines[1].split() == ["borrower", "image", "granted", "in", "total", "views",
                                    "left", "as", "reported", "at"]
        assert lines[3].split()[:3] == ["bob", "pic.jpg", "5"]
        r = cloud.shell("bob", bob_home, "more alice pic.jpg 2")  # alice is online: peer to peer
        assert r.returncode == 0, r.stderr
        assert json_lines(r.stdout)[0]["delivered"] == "now"
        r = cloud.shell("alice", alice_home, "requests; approve 1")
        assert r.returncode == 0, r.stderr
        requests, approved = json_lines(r.stdout)
        assert requests == {"requests": [{"id": 1, "borrower": "bob", "image": "pic.jpg",
                                          "views": 2}]}
        assert approved["views"] == 7
        # a grant in alice's inbox (written beside her running client: the refusal below comes
        # before any file of it is read), so that `view` gets as far as the terminal question
        db = ClientHome(alice_home).open_state()
        db.put_received(ReceivedGrant("carol", "gift.png", 1, 1, "received/carol/gift.png"))
        db.close()
        r = cloud.shell("alice", alice_home,
                        "view gift.png; view pic.jpg; grant bob nosuch.jpg +1")
        assert r.returncode == 1  # the status of a script whose commands failed
        view, own, grant = json_lines(r.stdout)
        assert view["code"] == "no_terminal" and f"(pid {alice.pid})" in view["error"]
        # her own image is not in her inbox: said as such, not "use the running client"
        assert own == {"error": "nothing called 'pic.jpg' was shared with you; see: inbox "
                                "(pic.jpg is your own image: its original is high/pic.jpg)",
                       "code": "no_such_image"}
        assert grant["code"] == "no_grant"
        assert alice.poll() is None  # still serving
        r = cloud.shell("bob", bob_home, "users")
        assert {"alice", "bob"} == {u["user"] for u in json_lines(r.stdout)[0]["users"]}
    finally:
        err = stop_shell(alice)
    assert "Traceback" not in err
    assert not local_socket.socket_path(alice_home).exists()  # removed when it stopped


def test_a_second_serve_of_the_same_home_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    """(Another home is refused by the directory: tests/test_sharing.py.)"""
    alice = serve_shell(cloud, "alice", tmp_path / "alice")
    try:
        again = cloud.spawn_shell("alice", tmp_path / "alice", ["--serve"])
        _out, err = again.communicate(timeout=60)
        assert again.returncode == 3
        assert "alice's client is already running from" in err and "Traceback" not in err
    finally:
        stop_shell(alice)


def test_a_killed_clients_socket_is_stale_and_the_next_client_joins(cloud: Cloud,
                                                                    tmp_path: Path) -> None:
    home = tmp_path / "alice"
    alice = serve_shell(cloud, "alice", home)
    alice.send_signal(signal.SIGKILL)
    alice.wait(timeout=5)
    assert local_socket.socket_path(home).exists()  # left behind by the dead process
    r = cloud.shell("alice", home, "users")
    assert r.returncode == 0, r.stderr
    assert [u["user"] for u in json_lines(r.stdout)[0]["users"]] == ["alice"]
    assert not local_socket.socket_path(home).exists()


def _read_until(master: int, needle: bytes, limit_s: float = 60.0,
                proc: subprocess.Popen[bytes] | None = None) -> bytes:
    """The terminal's output until `needle` shows (or, with `proc`, until it exited): read all
    along, so that the client never blocks on a full terminal."""
    import select

    seen = b""
    end = time.monotonic() + limit_s
    while needle not in seen if proc is None else proc.poll() is None:
        assert time.monotonic() < end, f"{needle!r} not seen: {seen[-500:]!r}"
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
    return seen


def test_c_next_to_an_open_interactive_client(cloud: Cloud, tmp_path: Path) -> None:
    home = tmp_path / "alice"
    master, slave = open_pty(120, 30)
    shell = subprocess.Popen(
        [sys.executable, "-m", "shell", "--user", "alice", "--home", str(home), "--config",
         str(cloud.config)], stdin=slave, stdout=slave, stderr=slave, env=env(), cwd=str(REPO))
    os.close(slave)
    try:
        _read_until(master, b"Type help for the commands")
        r = cloud.shell("alice", home, "users; help quit; quit; users", json_out=False)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["user", "address"] and lines[2].split()[0] == "alice"
        assert lines[3:5] == ["quit", "  leave the directory and exit"]
        assert lines[-1].endswith("Ctrl-D does the same.")  # quit ended the script
        os.write(master, b"users\r")  # the prompt still works, and the client is still online
        seen = _read_until(master, b"user   address")
        # the prompt again (bracketed paste on: it reads the raw terminal), so that Ctrl-D goes
        # to it and not to the cooked terminal between two prompts
        if PROMPT_READY not in seen[seen.index(b"user   address"):]:
            _read_until(master, PROMPT_READY)
        os.write(master, b"\x04")  # Ctrl-D
        _read_until(master, b"", 30, proc=shell)
        shell.wait(timeout=30)
        assert shell.returncode == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        os.close(master)
    assert not local_socket.socket_path(home).exists()
