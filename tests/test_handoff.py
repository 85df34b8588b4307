"""The hand-off of commands to the client already online from a home (issue 16 item 5), without a
cloud: the frames, the socket's permissions, a stale socket, two callers at once, Ctrl-C of a
caller, and what is printed (the same lines and status as `-c` prints by itself)."""

from __future__ import annotations

import io
import os
import socket
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from shell_fakes import FakeSession, wait_for

from actors.client import local_socket
from actors.client.errors import HandoffError
from actors.client.scope import CancelScope, cancelled
from shell import handoff, script
from shell.commands import COMMANDS, Command, Context, Outcome, run_line

pytestmark = pytest.mark.timeout(60)


# ---- frames ---------------------------------------------------------------------------------------
def _reader(data: bytes, chunk: int = 3) -> Any:
    """recv over `data`, at most `chunk` bytes a call (frames arrive in pieces)."""
    buf = io.BytesIO(data)
    calls: list[int] = []

    def recv(n: int) -> bytes:
        got = buf.read(min(n, chunk))
        calls.append(len(got))
        return got

    recv.calls = calls  # type: ignore[attr-defined]
    return recv


def test_a_frame_is_a_length_and_a_json_object() -> None:
    frame = local_socket.encode_frame({"exit": 1})
    assert frame == b"\x00\x00\x00\x0a" + b'{"exit":1}'
    assert local_socket.read_frame(_reader(frame)) == {"exit": 1}


def test_frames_in_pieces_and_back_to_back_and_eof_between_them() -> None:
    text = "é; ünïcode " * 50
    data = local_socket.encode_frame({"out": "stdout", "text": text}) + \
        local_socket.encode_frame({"exit": 0})
    recv = _reader(data, chunk=7)
    assert local_socket.read_frame(recv) == {"out": "stdout", "text": text}
    assert local_socket.read_frame(recv) == {"exit": 0}
    assert local_socket.read_frame(recv) is None  # EOF between frames: the end, not an error


@pytest.mark.parametrize("data, what", [
    (b"\x00\x00\x00\x05{\"a\"", "ended inside a frame"),  # EOF inside the body
    (b"\x00\x00", "ended inside a frame"),  # EOF inside the header
    (b"\x00\x00\x00\x02[]", "not an object"),
    (b"\x00\x00\x00\x02\xff\xfe", "not UTF-8 JSON"),
    (b"\x00\x00\x00\x03abc", "not UTF-8 JSON"),
])
def test_a_broken_frame_is_the_peers_fault(data: bytes, what: str) -> None:
    with pytest.raises(HandoffError, match=what) as err:
        local_socket.read_frame(_reader(data))
    assert err.value.code == "bad_frame"


def test_an_oversized_frame_is_refused_before_its_body_is_read() -> None:
    recv = _reader(struct.pack(">I", 1000) + b"x" * 1000)
    with pytest.raises(HandoffError, match="1000 bytes is over the limit of 999"):
        local_socket.read_frame(recv, limit=999)
    assert sum(recv.calls) == 4  # the header only was read
    with pytest.raises(HandoffError) as err:
        local_socket.encode_frame({"text": "x" * local_socket.MAX_FRAME})
    assert err.value.code == "too_large"


# ---- the socket: permissions, stale, busy, long paths ------------------------------------------
@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "alice"
    h.mkdir()
    return h


def test_listen_makes_an_owner_only_folder_and_socket(home: Path) -> None:
    listener = local_socket.listen(home)
    try:
        path = local_socket.socket_path(home)
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
        conn = local_socket.connect(home)
        assert conn is not None
        conn.close()
    finally:
        listener.close()
    assert not local_socket.socket_path(home).exists()  # removed at close


def test_no_socket_means_nobody_runs(home: Path) -> None:
    assert local_socket.connect(home) is None


@pytest.mark.parametrize("which, mode", [("folder", 0o755), ("socket", 0o666)])
def test_a_folder_or_socket_open_to_others_is_refused(home: Path, which: str, mode: int) -> None:
    listener = local_socket.listen(home)
    try:
        path = local_socket.socket_path(home)
        os.chmod(path.parent if which == "folder" else path, mode)
        with pytest.raises(HandoffError, match=f"open to others .mode {mode:04o}") as err:
            local_socket.connect(home)
        assert err.value.code == "not_private"
        with pytest.raises(HandoffError, match="open to others"):
            local_socket.listen(home)
        assert path.exists()  # refused, never removed
    finally:
        listener.close()


def test_a_file_of_another_uid_is_refused(home: Path) -> None:
    listener = local_socket.listen(home)
    try:
        path = local_socket.socket_path(home)
        with pytest.raises(HandoffError, match=f"belongs to uid {os.getuid()}, not to you"):
            local_socket.check_private(path, kind="socket", uid=os.getuid() + 1)
        if os.getuid() != 0:
            pytest.skip("chown to another uid needs root")
        os.chown(path, 4242, -1)
        with pytest.raises(HandoffError, match="belongs to uid 4242") as err:
            local_socket.connect(home)
        assert err.value.code == "not_private"
        assert path.exists()  # another user's socket is never removed
        with pytest.raises(HandoffError, match="belongs to uid 4242"):
            local_socket.listen(home)
    finally:
        listener.close()


def test_a_plain_file_in_place_of_the_socket_is_refused(home: Path) -> None:
    path = local_socket.socket_path(home)
    path.parent.mkdir(mode=0o700)
    path.write_text("not a socket")
    os.chmod(path, 0o600)
    with pytest.raises(HandoffError, match="is not a socket"):
        local_socket.connect(home)
    assert path.read_text() == "not a socket"


def test_a_stale_socket_is_detected_and_removed(home: Path) -> None:
    listener = local_socket.listen(home)
    listener.sock.close()  # its process died: the file stays, nobody listens
    path = local_socket.socket_path(home)
    assert path.exists()
    assert local_socket.connect(home) is None
    assert not path.exists()
    listener = local_socket.listen(home)  # and a new client takes the home
    listener.sock.close()
    again = local_socket.listen(home)  # listen removes a stale one by itself
    try:
        assert local_socket.connect(home) is not None
    finally:
        again.close()


def test_a_live_listener_keeps_the_home(home: Path) -> None:
    listener = local_socket.listen(home)
    try:
        with pytest.raises(HandoffError) as err:
            local_socket.listen(home)
        assert err.value.code == "busy"
    finally:
        listener.close()


def test_a_home_past_the_unix_socket_path_limit(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "alice"
    deep.mkdir(parents=True)
    assert len(str(local_socket.socket_path(deep))) > local_socket.MAX_SUN_PATH
    listener = local_socket.listen(deep)
    try:
        conn = local_socket.connect(deep)
        assert conn is not None
        conn.close()
        assert stat.S_IMODE(os.lstat(local_socket.socket_path(deep)).st_mode) == 0o600
    finally:
        listener.close()


# ---- the server and the forwarding caller ---------------------------------------------------
class Served:
    """A HandoffServer over a FakeSession (a real home and state.db), as the shell starts it."""

    def __init__(self, home: Path) -> None:
        self.session = FakeSession(home, user="alice")
        self.base = Context(self.session)
        self.cancelled: list[CancelScope] = []
        self.server = handoff.HandoffServer(local_socket.listen(home), "alice", self.make_ctx,
                                            self.cancel).start()
        self.home = home

    def make_ctx(self, cwd: Path) -> Context:
        return Context(self.session, cwd=cwd, view_refusal=handoff.view_refusal("alice", 7),
                       turn=self.base.turn)

    def cancel(self, scope: CancelScope) -> None:
        scope.cancel()
        self.cancelled.append(scope)

    def forward(self, text: str, as_json: bool = False, user: str = "alice") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = handoff.forward(self.home, user, text, as_json, stdout=out, stderr=err)
        assert status is not None
        return status, out.getvalue(), err.getvalue()

    def close(self) -> None:
        self.server.stop()
        self.session.close()


@pytest.fixture
def served(home: Path) -> Iterator[Served]:
    s = Served(home)
    try:
        yield s
    finally:
        s.close()


def _local(session: FakeSession, text: str, as_json: bool) -> tuple[int, str, str]:
    """What `-c` prints by itself for `text` (the same session, no hand-off)."""
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}
    status = script.run_script(Context(session), text, as_json,
                               lambda stream, line: out[stream].append(line + "\n"))
    return status, "".join(out["stdout"]), "".join(out["stderr"])


@pytest.mark.parametrize("as_json", [False, True])
def test_handed_over_commands_print_what_they_print_by_themselves(served: Served,
                                                                 as_json: bool) -> None:
    served.session.add_given("bob", "cat.png", 3)
    text = "shared; requests; help nosuch; bogus"
    got = served.forward(text, as_json)
    assert got == _local(served.session, text, as_json)
    status, out, err = got
    assert status == 1  # help nosuch and bogus fail
    assert ("bob" in out and "cat.png" in out) and "no command 'nosuch'" in (out if as_json
                                                                             else err)
    assert served.server.served == 1


def test_a_script_that_cannot_be_parsed_and_quit(served: Served) -> None:
    assert served.forward("shared; 'open") == _local(served.session, "shared; 'open", False)
    quit_help = run_line(Context(cast(Any, None)), "help quit")
    assert served.forward("help quit; quit; help") == (0, quit_help.text + "\n",
                                                       "")  # the help after quit never ran
    assert served.forward("help help")[0] == 0  # quit ended the script, not the running client


def test_view_is_refused_before_a_view_is_taken(served: Served) -> None:
    served.session.add_received("bob", "pic.jpg", 2)
    status, out, err = served.forward("view pic.jpg; help view")
    assert status == 1
    assert err == f"error: {handoff.view_refusal('alice', 7)}\n"
    assert out.startswith("view IMAGE")  # the script went on
    assert served.session.db.get_received("bob", "pic.jpg").views_left == 2
    status, out, _err = served.forward("view pic.jpg", as_json=True)
    assert '"code": "no_terminal"' in out and status == 1
    # a name not in the inbox is said as such, not "run view in alice's client"
    status, _out, err = served.forward("view nope.jpg")
    assert status == 1
    assert err == "error: nothing called 'nope.jpg' was shared with you; see: inbox\n"


def test_another_user_name_is_refused(served: Served) -> None:
    status, out, err = served.forward("shared", user="bob")
    assert status == 2 and out == ""
    assert "this home's running client is alice's, not 'bob''s" in err
    assert served.server.refused == 1 and served.server.served == 0


def test_a_malformed_request_is_refused_and_the_server_keeps_serving(served: Served) -> None:
    for bad in [b"\x00\x00\x00\x02[]", struct.pack(">I", 2 * handoff.REQUEST_LIMIT),
                local_socket.encode_frame({"v": 1, "user": "alice", "script": "x", "json": 1,
                                           "cwd": "/"}),
                local_socket.encode_frame({"v": 1, "user": "alice", "script": "x",
                                           "json": False, "cwd": "rel"})]:
        conn = local_socket.connect(served.home)
        assert conn is not None
        with conn:
            conn.sendall(bad)
            conn.shutdown(socket.SHUT_WR)
            rest = b"".join(iter(lambda: conn.recv(4096), b""))
        assert b'"exit"' not in rest
    wait_for(lambda: served.server.refused == 4)
    assert served.forward("help help")[0] == 0


def test_relative_files_are_read_from_the_callers_folder(served: Served, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], Path | None]] = []

    def fake(ctx: Context, args: list[str]) -> Outcome:
        seen.append((args, ctx.cwd))
        return Outcome({"args": args}, " ".join(args))

    monkeypatch.setitem(COMMANDS, "encrypt", Command("encrypt", "encrypt FILE...", "",
                                                     fake, 1, None, ("file",)))
    there = tmp_path / "pictures"
    there.mkdir()
    for name in ("b.png", "a.png", "c.txt"):
        (there / name).write_bytes(b"x")
    monkeypatch.chdir(there)
    status, out, _err = served.forward("encrypt *.png 'x y.png'")
    assert status == 0 and out == "a.png b.png x y.png\n"  # as the caller's shell would expand
    assert seen == [(["a.png", "b.png", "x y.png"], there)]


def _blocking_command(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    release = threading.Event()
    log: list[str] = []

    def block(ctx: Context, args: list[str]) -> Outcome:
        log.append(f"start {args[0]}")
        if args[0] == "first":
            assert release.wait(20)
        log.append(f"end {args[0]}")
        return Outcome({"done": args[0]}, f"done {args[0]}", ok=args[0] == "first")

    monkeypatch.setitem(COMMANDS, "block", Command("block", "block X", "", block, 1, 1))
    return release, log


def test_two_callers_at_once_take_turns(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    release, log = _blocking_command(monkeypatch)
    results: dict[str, tuple[int, str, str]] = {}
    callers = [threading.Thread(target=lambda w=w: results.__setitem__(w, served.forward(
        f"block {w}"))) for w in ("first", "second")]
    callers[0].start()
    wait_for(lambda: log == ["start first"])
    callers[1].start()
    wait_for(lambda: served.server.served == 2)
    assert log == ["start first"]  # the second waits for the first command to end
    release.set()
    for t in callers:
        t.join(20)
    assert log == ["start first", "end first", "start second", "end second"]
    assert results == {"first": (0, "done first\n", ""), "second": (1, "", "done second\n")}


def test_a_caller_that_goes_away_cancels_its_script(served: Served,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def wait_cancel(ctx: Context, args: list[str]) -> Outcome:
        wait_for(cancelled, 20)
        seen.append(cancelled())
        return Outcome({}, "cancelled", ok=False)

    monkeypatch.setitem(COMMANDS, "slow", Command("slow", "slow", "", wait_cancel))
    conn = local_socket.connect(served.home)
    assert conn is not None
    local_socket.write_frame(conn, {"v": 1, "user": "alice", "script": "slow; help",
                                    "json": False, "cwd": "/"})
    wait_for(lambda: served.server.served == 1)
    conn.close()  # Ctrl-C of the caller
    wait_for(lambda: seen == [True], 20)
    assert len(served.cancelled) == 1


def test_retry_notices_of_a_handed_over_command_go_to_its_caller(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from actors.client.client_session import _Notifier

    printed: list[str] = []
    notifier = _Notifier(printed.append)  # the session's printer: the running client's

    def chatty(ctx: Context, args: list[str]) -> Outcome:
        notifier("request alice#4: no answer yet; trying again")
        return Outcome({}, "ok")

    monkeypatch.setitem(COMMANDS, "chatty", Command("chatty", "chatty", "", chatty))
    assert served.forward("chatty") == (0, "ok\n",
                                        "request alice#4: no answer yet; trying again\n")
    assert printed == []
    notifier("a grant arrived")  # outside a handed-over command: the running client prints it
    assert printed == ["a grant arrived"]


def test_a_server_that_stops_mid_script_is_reported(home: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    listener = local_socket.listen(home)

    def answer_then_vanish() -> None:
        conn = listener.accept()
        with conn:
            local_socket.read_frame(conn.recv)
            local_socket.write_frame(conn, {"out": "stdout", "text": "half"})

    t = threading.Thread(target=answer_then_vanish)
    t.start()
    out, err = io.StringIO(), io.StringIO()
    try:
        status = handoff.forward(home, "alice", "users", False, stdout=out, stderr=err)
    finally:
        t.join(10)
        listener.close()
    assert status == handoff.EXIT_LOST
    assert out.getvalue() == "half\n"
    assert err.getvalue() == "veilshare: alice's running client stopped before the commands ended\n"
