"""The interactive shell driven through a pipe input and a recording dummy output, over a fake
session (real client home and state.db, no sockets): help, Ctrl-D, Ctrl-C, notifications
while typing, errors as messages, history, progress and the toolbar."""

from __future__ import annotations

import io
import logging
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from prompt_toolkit.formatted_text import StyleAndTextTuples, fragment_list_to_text
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput
from shell_fakes import Entry, FakeSession, wait_for

from actors.client.client_session import ClientSession, SessionError
from shell.commands import Context
from shell.interactive import Shell, home_shown, logs_above_the_prompt, run_interactive
from shell.names import NameSource
from shell.toolbar import connection_text, make_toolbar

HELP_LINE = "grant USER IMAGE +N|-N|revoke"
ERASED = "<erased>"


class RecordingOutput(DummyOutput):
    """A dummy output that keeps the text written to it (prompt, toolbar, printed lines)."""

    def __init__(self) -> None:
        self._chunks: list[str] = []
        self._lock = threading.Lock()

    def write(self, data: str) -> None:
        with self._lock:
            self._chunks.append(data)

    write_raw = write

    def erase_down(self) -> None:  # the renderer erasing the prompt (before run_in_terminal)
        self.write(ERASED)

    def text(self) -> str:
        with self._lock:
            return "".join(self._chunks)


def ctx_of(fake: FakeSession) -> Context:
    return Context(cast(ClientSession, fake))


def toolbar_of(render: Callable[[], StyleAndTextTuples]) -> str:
    return fragment_list_to_text(render())


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSession]:
    s = FakeSession(tmp_path / "home")
    yield s
    s.close()


@dataclass
class Run:
    shell: Shell
    inp: PipeInput
    out: RecordingOutput
    history: InMemoryHistory
    rc: int = -1

    def type(self, text: str) -> None:
        self.inp.send_text(text)

    def shows(self, text: str) -> Callable[[], bool]:
        return lambda: text in self.out.text()


def drive(fake: FakeSession, script: Callable[[Run], None]) -> Run:
    """Run a shell over `fake` in this thread while `script` types in another."""
    errors: list[BaseException] = []
    with create_pipe_input() as inp:
        out = RecordingOutput()
        history = InMemoryHistory()
        shell = Shell(ctx_of(fake), input=inp, output=out, names=NameSource(fake), history=history)
        run = Run(shell, inp, out, history)

        def feed() -> None:
            try:
                script(run)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
                errors.append(exc)
                inp.send_text("\x04")  # let the shell end

        feeder = threading.Thread(target=feed)
        feeder.start()
        run.rc = shell.run()
        feeder.join()
    if errors:
        raise errors[0]
    return run


def typed(shell: Shell, text: str) -> Callable[[], bool]:
    def check() -> bool:
        prompt = shell.prompt
        return (
            prompt is not None and prompt.app.is_running and prompt.app.current_buffer.text == text
        )

    return check


def test_home_shown_is_short_under_the_users_home(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    inside = tmp_path / "me" / ".local" / "share" / "veilshare" / "alice"
    inside.mkdir(parents=True)
    assert home_shown(inside) == "~/.local/share/veilshare/alice"
    assert home_shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")


def test_run_interactive_help_then_ctrl_d(fake: FakeSession, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "not-the-home"))
    out = RecordingOutput()
    with create_pipe_input() as inp:
        inp.send_text("help\r")

        def finish() -> None:
            wait_for(lambda: HELP_LINE in out.text())
            inp.send_text("\x04")

        feeder = threading.Thread(target=finish)
        feeder.start()
        rc = run_interactive(ctx_of(fake), input=inp, output=out)
        feeder.join()
    text = out.text()
    assert rc == 0
    assert "Veilshare: you are me." in text
    # the home, where a user finds the files (tmp_path is not under HOME here: shown whole)
    assert (f"Tab to complete.\nYour images, sealed copies and inbox are kept in "
            f"{fake.home.root}.\n") in text.replace("\r\n", "\n")
    assert "command" in text and "what it does" in text
    assert "approve ID [N]" in text and HELP_LINE in text
    assert text.rstrip().endswith("bye")
    history = fake.home.root / "history"  # kept per user, in the user's home
    assert "\n+help\n" in history.read_text()
    assert stat.S_IMODE(history.stat().st_mode) == 0o600


def test_help_cmd_and_errors_are_messages_not_tracebacks(fake: FakeSession) -> None:
    steps = [
        ("help grant", None, "change a borrower's access"),
        ("browse", None, "error: usage: browse USER"),
        ("frobnicate", None, "error: unknown command 'frobnicate'"),
        ("users", SessionError("unreachable", "no node answered"), "error: no node answered"),
        ("users", RuntimeError("disk on fire"), "RuntimeError: disk on fire"),
    ]

    def script(run: Run) -> None:
        for line, error, want in steps:
            fake.directory_error = error
            wait_for(typed(run.shell, ""))
            run.type(line + "\r")
            wait_for(run.shows(want))
        run.type("\x04")

    run = drive(fake, script)
    assert run.rc == 0
    assert "Traceback" not in run.out.text()
    # prompt_toolkit does not store a line equal to the one before it
    assert list(run.history.load_history_strings())[::-1] == [s[0] for s in steps[:-1]]


def test_a_notification_while_typing_keeps_the_line(fake: FakeSession) -> None:
    original = fake.notify
    notice = "* alice/pic.jpg: +2 views"

    def script(run: Run) -> None:
        run.type("hel")
        wait_for(typed(run.shell, "hel"))
        fake.notify("alice/pic.jpg: +2 views")  # as the session's peer thread would
        wait_for(run.shows(notice))
        assert run.shell.prompt is not None
        assert run.shell.prompt.app.current_buffer.text == "hel"
        run.type("p\r")
        wait_for(run.shows(HELP_LINE))
        run.type("\x04")

    run = drive(fake, script)
    text = run.out.text()
    assert run.rc == 0
    assert list(run.history.load_history_strings()) == ["help"]  # the accepted line, whole
    # drawn above the prompt: the prompt was erased first (a toolbar redraw may come in
    # between, on its own line), the notice starts a line of its own, and the typed line is
    # redrawn after it
    at = text.index(notice)
    erased = text.rfind(ERASED, 0, at)
    assert erased != -1
    between = text[erased + len(ERASED) : at]
    assert between == "" or between.endswith("\n")
    assert "hel" not in between.rpartition("\n")[2]
    assert "hel" in text[at : text.index(HELP_LINE)]
    assert fake.notify is original  # restored when the shell ends


def test_ctrl_c_at_the_prompt_clears_the_line_and_quit_ends(fake: FakeSession) -> None:
    def script(run: Run) -> None:
        run.type("browse ali")
        wait_for(typed(run.shell, "browse ali"))
        run.type("\x03")
        wait_for(typed(run.shell, ""))
        run.type("quit\r")

    run = drive(fake, script)
    assert run.rc == 0
    assert list(run.history.load_history_strings()) == ["quit"]
    assert "bye" in run.out.text()


def test_ctrl_c_cancels_a_running_command(
    fake: FakeSession, capsys: pytest.CaptureFixture[str], ctrl_c_raises: None) -> None:
    release = threading.Event()
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def hook() -> None:  # inside `users`, on the worker thread: the user presses Ctrl-C
        signal.pthread_kill(main, signal.SIGINT)
        # the command runs on until the main thread has taken the Ctrl-C (the test releases it
        # then). A 5 s ceiling here was the flake: on a busy machine the main thread took
        # longer, the command finished first and run_command returned its outcome.
        release.wait()  # pytest-timeout ends a hang

    fake.users = [Entry("bob", "127.0.0.1", 2)]
    fake.directory_hook = hook
    shell = Shell(ctx_of(fake), names=NameSource(fake))
    assert shell.run_command("users") is None
    assert shell.cancelled == 1
    assert "cancelled (the command may still finish in the background)" in capsys.readouterr().out
    release.set()
    seen: list[str] = []

    def finished() -> bool:
        seen.append(capsys.readouterr().out)
        return "finished in the background (done): users" in "".join(seen)

    wait_for(finished)
    fake.directory_hook = None
    outcome = shell.run_command("users")  # the shell is usable again
    assert outcome is not None and outcome.data == {
        "users": [{"user": "bob", "address": "127.0.0.1:2"}]
    }


class SlowOutput(RecordingOutput):
    """Writes the chunk holding `marker` late, as a busy terminal (or host) would, and notes
    whether a prompt was running by the time it was written."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.shell: Shell | None = None
        self.prompt_running_after: list[bool] = []

    def write(self, data: str) -> None:
        if self.marker in data:
            time.sleep(0.3)
            prompt = self.shell.prompt if self.shell is not None else None
            self.prompt_running_after.append(prompt is not None and prompt.app.is_running)
        super().write(data)

    write_raw = write


def test_the_next_prompt_waits_for_the_last_commands_lines(fake: FakeSession) -> None:
    # the lines of a command are written by the stdout proxy's own thread; a prompt drawn before
    # they were glued itself to the unfinished line (a batch's progress bar, in tmux)
    out = SlowOutput(HELP_LINE)
    with create_pipe_input() as inp:
        shell = Shell(ctx_of(fake), input=inp, output=out, names=NameSource(fake),
                      history=InMemoryHistory())
        out.shell = shell
        inp.send_text("help\r")

        def finish() -> None:
            wait_for(lambda: HELP_LINE in out.text())
            wait_for(typed(shell, ""))  # the next prompt runs
            inp.send_text("\x04")

        feeder = threading.Thread(target=finish)
        feeder.start()
        rc = shell.run()
        feeder.join()
    assert rc == 0
    assert out.prompt_running_after == [False]  # written whole before the next prompt began
    text = out.text()
    assert text.index(HELP_LINE) < text.rindex("bye")


def test_progress_bar_for_several_files(
    fake: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    shell = Shell(ctx_of(fake), names=NameSource(fake))
    abandoned = threading.Event()
    progress = shell._progress_for(abandoned)
    progress(0, 1, "only.png")  # one file: no bar
    assert capsys.readouterr().out == ""
    for i, name in enumerate(["a.png", "b.png", ""]):
        progress(i if name else 2, 2, name)
    out = capsys.readouterr().out
    assert out.count("\r") == 3 and out.endswith("\n")
    assert "] 0/2 a.png" in out and "] 2/2 " in out
    abandoned.set()  # after Ctrl-C the abandoned command draws nothing more
    progress(1, 2, "b.png")
    assert capsys.readouterr().out == ""


def test_notices_of_the_background_refresh_stay_off_the_screen(
    fake: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    names = NameSource(fake, period_s=60, local_period_s=60)
    shell = Shell(ctx_of(fake), names=names)
    fake.directory_hook = lambda: shell.notify("request me#9: no answer yet; trying again")
    names.start()
    try:
        wait_for(lambda: fake.directory_calls == 1 and names.names.directory_ok is True)
    finally:
        names.stop()
    shell.notify("bob asks for 2 more views of pic.jpg")
    assert capsys.readouterr().out == "* bob asks for 2 more views of pic.jpg\n"


def test_toolbar_shows_user_address_connection_and_waiting(fake: FakeSession) -> None:
    names = NameSource(fake)
    render = make_toolbar(fake, names)
    text = toolbar_of(render)
    assert " me " in text and "127.0.0.1:40001" in text
    assert "| joined |" in text and "requests waiting: 0" in text
    fake.db.add_request("bob#3", "bob", "a.jpg", 4)
    fake.db.add_request("dan#1", "dan", "b.jpg", 1)
    names.refresh_local()
    fake.directory_error = SessionError("unreachable", "no node answered")
    names.refresh_directory()
    text = toolbar_of(render)
    assert "joined, cloud unreachable" in text and "requests waiting: 2" in text
    fake.token = None
    assert "not joined" in toolbar_of(render)


def test_connection_text() -> None:
    assert connection_text(True, None) == "joined"
    assert connection_text(True, True) == "joined"
    assert connection_text(True, False) == "joined, cloud unreachable"
    assert connection_text(False, False) == "not joined"


def test_terminal_log_handlers_write_above_the_prompt_while_the_shell_runs() -> None:
    handler: logging.StreamHandler[Any] = logging.StreamHandler(sys.__stderr__)
    other: logging.StreamHandler[Any] = logging.StreamHandler(io.StringIO())  # left alone
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(other)
    terminal: Any = handler.stream
    patched = io.StringIO()
    saved = sys.stderr
    try:
        sys.stderr = patched  # what patch_stdout does
        with logs_above_the_prompt():
            assert handler.stream is patched
            assert other.stream is not patched
        assert handler.stream is terminal
    finally:
        sys.stderr = saved
        root.removeHandler(handler)
        root.removeHandler(other)


def test_tab_completes_at_once_when_keys_follow_it_in_one_burst(fake: FakeSession) -> None:
    """Keys typed right after Tab (a paste, a fast typist, a terminal multiplexer) land after
    the completion: `hel<Tab>gr<Tab><Enter>` in one burst runs `help grant`."""

    def script(run: Run) -> None:
        wait_for(typed(run.shell, ""))
        run.type("hel\tgr\t\r")
        wait_for(run.shows("change a borrower's access"))
        run.type("\x04")

    run = drive(fake, script)
    assert run.rc == 0
    assert list(run.history.load_history_strings()) == ["help grant "]


def test_a_stuck_terminal_holds_the_prompt_back_only_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # drain waits for the proxy's thread, never forever: a terminal that does not take the
    # text (a paused tmux pane, Ctrl-S) must not freeze the shell
    from prompt_toolkit.application import create_app_session

    from shell.interactive import _SessionStdoutProxy

    release = threading.Event()

    class StuckOutput(RecordingOutput):
        def write(self, data: str) -> None:
            release.wait(30)
            super().write(data)

        write_raw = write

    out = StuckOutput()
    monkeypatch.setattr(_SessionStdoutProxy, "DRAIN_S", 0.2)
    with create_app_session(output=out):
        proxy = _SessionStdoutProxy(raw=True)
        try:
            proxy.write("a line\n")
            proxy.drain()  # returns although the text is not out yet
            assert "a line" not in out.text()
        finally:
            release.set()
            proxy.close()
    assert "a line" in out.text()
