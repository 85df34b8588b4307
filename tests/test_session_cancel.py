"""Issue 17 items 6 and 7 from the user's side: Ctrl-C cancels a command for real, and a notice
never glues onto a progress bar. A real ClientSession (its ClientSessionActor) over a
FakeTransport, with a fake clock moved by the test; the shell's `Shell` where the screen matters."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from imgdata import png_bytes
from session_kit import LOST, FakeClock, joined_session, tick
from shell_fakes import FakeSession, wait_for

from actors.client.client_session import ClientSession
from actors.client.scope import CancelScope, within
from actors.client.session_messages import Tick
from codec.messages import EncryptReply, EncryptRequest
from shell.commands import Context
from shell.interactive import WAITING_LINE, Shell
from shell.names import NameSource
from tests.fake_transport import FakeTransport


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[tuple[ClientSession, FakeTransport, FakeClock]]:
    yield from joined_session(tmp_path / "home")


def test_cancel_stops_retries_and_nothing_is_stored_later(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path) -> None:
    session, tp, clock = joined
    pics = []
    for i in (1, 2):
        pic = tmp_path / f"pic{i}.png"
        pic.write_bytes(png_bytes(i))
        pics.append(pic)
    scope = CancelScope()
    out: dict[str, Any] = {}

    def command() -> None:
        with within(scope):
            out["outcome"] = session.encrypt(pics, in_flight=1)  # one at a time: pic2 unsent

    worker = threading.Thread(target=command)
    worker.start()
    first = tp.wait_msg(EncryptRequest, count=len(session.node_addrs))
    for s in tp.sends_of(EncryptRequest):
        tp.complete(s, LOST)
    tick(session, clock, session.cfg.client.retry_s)  # one retry before Ctrl-C
    sent = tp.wait_msg(EncryptRequest, count=2 * len(session.node_addrs))
    session.cancel(scope)  # Ctrl-C
    worker.join(10)
    assert not worker.is_alive()
    outcome = out["outcome"]
    assert outcome.encrypted == []
    assert [f["code"] for f in outcome.failed] == ["cancelled", "cancelled"]
    for _ in range(5):
        tick(session, clock, session.cfg.client.retry_s * 10)
    assert len(tp.sends_of(EncryptRequest)) == len(sent)  # no further retries
    assert {m.image for m in (s.msg for s in tp.sends_of(EncryptRequest))} == {"pic1.png"}
    # the cloud's answer arrives after the cancel: it is not stored
    tp.deliver(session.node_addrs[0], EncryptReply(rid=first[0].rid, node=1, sealed=b"x" * 10,
                                                   seal_ms=1.0, wait_ms=1.0))
    session.actor.ask(Tick())
    assert list((session.home.root / "encrypted").iterdir()) == []
    assert list((session.home.root / "high").iterdir()) == []
    assert session.caller.stats.duplicates == 1  # counted as a late answer, nothing else


def test_ctrl_c_in_the_shell_cancels_the_command(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], ctrl_c_raises: None) -> None:
    session, tp, clock = joined
    pic = tmp_path / "pic.png"
    pic.write_bytes(png_bytes(3))
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    names = NameSource(session, period_s=600, local_period_s=600)
    shell = Shell(Context(session), names=names)
    before = len(tp.sends_of(EncryptRequest))

    def press_ctrl_c() -> None:
        tp.wait_msg(EncryptRequest, count=before + len(session.node_addrs))
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    assert shell.run_command(f"encrypt {pic}") is None
    assert "cancelled: nothing more is sent or stored for it" in capsys.readouterr().out
    for s in tp.sends_of(EncryptRequest):
        tp.complete(s, LOST)
    for _ in range(3):
        tick(session, clock, session.cfg.client.retry_s * 10)
    assert len(tp.sends_of(EncryptRequest)) == before + len(session.node_addrs)
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "command"])
    assert "finished in the background" not in capsys.readouterr().out
    assert list((session.home.root / "encrypted").iterdir()) == []


def test_ctrl_c_after_some_files_were_sealed_says_which_are_stored(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], ctrl_c_raises: None) -> None:
    """A batch cancelled after its first file was stored: the abandoned command's table is never
    shown, so the notice says how many were sealed (not that it "finished in the background")."""
    session, tp, _clock = joined
    pics = [tmp_path / "one.png", tmp_path / "two.png"]
    for i, pic in enumerate(pics):
        pic.write_bytes(png_bytes(60 + i))
    main = threading.main_thread().ident
    assert main is not None
    shell = Shell(Context(session), names=NameSource(session, period_s=600, local_period_s=600))
    nodes = len(session.node_addrs)

    def seal_one_then_ctrl_c() -> None:
        sent = tp.wait_msg(EncryptRequest, count=2 * nodes)  # both in flight
        first = next(m for m in sent if m.image == "one.png")
        tp.deliver(session.node_addrs[0], EncryptReply(rid=first.rid, node=1, sealed=b"s1",
                                                       seal_ms=1.0, wait_ms=1.0))
        wait_for(lambda: (session.home.root / "encrypted/one.png").exists())
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=seal_one_then_ctrl_c, daemon=True).start()
    assert shell.run_command(f"encrypt {pics[0]} {pics[1]}") is None
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "command"])
    out = capsys.readouterr().out
    assert "1 of 2 files were sealed before the cancel" in out
    assert "finished in the background" not in out
    assert [p.name for p in (session.home.root / "encrypted").iterdir()] == ["one.png"]


@pytest.fixture
def moving_shell(tmp_path: Path) -> Iterator[tuple[Shell, dict[str, tuple[int, int]]]]:
    """A shell over a fake session whose transport reports `moving["p"]` (bytes done, total):
    4 of 20 MB at first."""
    fake = FakeSession(tmp_path / "home")
    try:
        shell = Shell(Context(cast(Any, fake)), names=NameSource(fake))
        moving = {"p": (4_000_000, 20_000_000)}
        fake.transport.progress = lambda: moving["p"]  # type: ignore[method-assign]
        yield shell, moving
    finally:
        fake.close()


def test_a_notice_never_glues_onto_the_transfer_bar(
        moving_shell: tuple[Shell, dict[str, tuple[int, int]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    shell, moving = moving_shell
    abandoned = threading.Event()
    assert shell._transfer_bar(abandoned)
    shell.notify("request me#9: no answer yet; trying again")
    out = capsys.readouterr().out
    assert "4.0/20.0 MB transferred" in out
    assert "\n* request me#9: no answer yet; trying again\n" in out  # a line of its own
    assert shell._transfer_bar(abandoned)
    moving["p"] = (0, 0)  # the upload is acknowledged; the cloud seals
    assert shell._transfer_bar(abandoned)
    out = capsys.readouterr().out
    assert out.endswith(WAITING_LINE) or WAITING_LINE in out


def _visible_line(out: str) -> str:
    """What a terminal shows on the last line of `out`: each carriage return writes over the
    line from its start."""
    shown: list[str] = []
    for part in out.split("\n")[-1].split("\r"):
        shown[: len(part)] = list(part)
    return "".join(shown).rstrip()


def test_the_file_progress_line_covers_the_transfer_bar_it_follows(
        moving_shell: tuple[Shell, dict[str, tuple[int, int]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    """encrypt of a photo and more files: the bar of the photo's upload, then its waiting line,
    then the next file's progress on the same line, which must leave no tail of the longer
    waiting line ("...works on it)")."""
    shell, moving = moving_shell
    abandoned = threading.Event()
    progress = shell._progress_for(abandoned)
    progress(0, 3, "photo.jpg")
    assert shell._transfer_bar(abandoned)
    moving["p"] = (0, 0)
    assert shell._transfer_bar(abandoned)
    before = capsys.readouterr().out
    assert _visible_line(before) == WAITING_LINE
    progress(1, 3, "b.png")
    seen = _visible_line(before + capsys.readouterr().out)  # on the screen, one after the other
    assert seen.endswith("] 1/3 b.png"), seen


def test_the_toolbar_shows_the_sessions_true_state(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    from types import SimpleNamespace

    from prompt_toolkit.formatted_text import fragment_list_to_text

    from shell.toolbar import make_toolbar

    session, tp, _clock = joined
    names = NameSource(session, period_s=600, local_period_s=600)
    assert "| joined |" in fragment_list_to_text(make_toolbar(session, names)())
    for state in ("rejoining", "cloud unreachable"):  # what the actor publishes (see
        seen = SimpleNamespace(user="alice", transport=tp, connection=state)  # its tests)
        assert f"| {state} |" in fragment_list_to_text(make_toolbar(seen, names)())


def test_ctrl_c_while_a_call_starts_on_the_callers_thread_cancels_it(
        joined: tuple[ClientSession, FakeTransport, FakeClock]) -> None:
    """The call starts on the caller's thread while the session actor is idle (actors.direct),
    so a Ctrl-C (KeyboardInterrupt) can land inside it, here as its copies leave. The call is
    cancelled like one interrupted while it waits: it is not left open in the actor's call
    table (before the start moved inside the call's try, it was, and took a later reply), and
    the actor keeps serving."""
    session, tp, clock = joined
    send_many = tp.send_many
    rids: list[str] = []

    def ctrl_c_once(*args: Any, **kw: Any) -> Any:
        if len(rids) == 1:
            rids.append("interrupted")
            raise KeyboardInterrupt
        return send_many(*args, **kw)

    def build(rid: str, attempt: int) -> EncryptRequest:
        rids.append(rid)
        return EncryptRequest(rid=rid, image="p.png", data=b"x", attempt=attempt)

    tp.send_many = ctrl_c_once  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        session.cloud.call(build)
    assert rids[1:] == ["interrupted"]
    tick(session, clock, 0.0)  # the cancel told to the actor has been handled
    assert rids[0] not in session.actor.proxy().table.get().rids()
    tp.send_many = send_many  # type: ignore[method-assign]
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(reply=session.cloud.call(build)))
    worker.start()  # the next call goes through
    [first] = tp.wait_msg(EncryptRequest, where=lambda m: m.rid == rids[-1])[:1]
    reply = EncryptReply(rid=first.rid, node=1, sealed=b"x", seal_ms=1.0, wait_ms=1.0)
    tp.deliver(session.node_addrs[0], reply)
    worker.join(10)
    assert out["reply"] == reply
