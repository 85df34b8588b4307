"""The interactive prompt: prompt_toolkit session, completion, history, toolbar, notifications.

- Completion: `shell.completer.ShellCompleter` over `shell.names.NameSource` (names refreshed
  in background threads; completing never touches the network).
- History: `<home>/history` (the home is per user, so the history is too), mode 0600.
- Notifications (an access update or a request arriving while you type): the shell replaces
  `session.notify` for as long as it runs; notices (and any print or log line) go through
  prompt_toolkit's StdoutProxy (`patch_stdout`), which erases the prompt, prints them, and
  redraws the prompt with the line being typed intact.
  Retry notices of the background name refresh are logged, not shown.
- Each command runs in a worker thread while this thread waits, inside a cancel scope
  (actors.client.scope). Ctrl-C while it runs returns to the prompt at once ("cancelled") and
  cancels the scope: its calls fail as `cancelled`, nothing more is sent for them, and what the
  command had not stored is not stored later (a request already with the cloud or a peer may
  still be handled there). A session without `cancel` (test fakes) only abandons the command,
  which may finish in the background; the shell says so when it does. Ctrl-C at the prompt
  clears the line; Ctrl-D (or `quit`) ends the loop, and the caller's `session.close()` leaves
  the directory.
- A notice that comes while a progress bar is drawn starts on a line of its own. Between the
  upload and the reply of a large transfer, the bar line says the cloud is working on it.

Callers: shell.__main__ (`run_interactive(ctx)`), tests (pipe input, dummy output).
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.application import create_app_session
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, get_common_complete_suffix
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from prompt_toolkit.patch_stdout import StdoutProxy
from prompt_toolkit.styles import Style

from actors.client.scope import CancelScope, within
from shell import render
from shell.commands import Context, Outcome, run_line
from shell.completer import ShellCompleter
from shell.names import NameSource
from shell.toolbar import make_toolbar

log = logging.getLogger(__name__)

TRANSFER_BAR_BYTES = 256 * 1024  # smaller transfers finish before a bar would help
WAITING_LINE = "sent; waiting for the answer (the cloud seals, or the peer works on it)"
POLL_S = 0.1  # how often the waiting thread wakes while a command runs (Ctrl-C latency bound)
STYLE = Style.from_dict(
    {
        "prompt.user": "ansigreen bold",
        "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
        "toolbar.user": "bold",
        "toolbar.bad": "ansired bold",
        "toolbar.count": "ansiyellow bold",
    }
)


def _complete_now(event: KeyPressEvent) -> None:
    """Tab: the completion is inserted before the next key is read. prompt_toolkit's own Tab
    computes completions in the background, and a key that comes first (a paste, a fast typist,
    tmux send-keys) drops them: `hel<Tab>gr` became `helgr`. Our completer never waits on the
    network (shell.names refreshes in the background), so asking it here is cheap. With the
    menu open Tab moves to the next entry; several candidates without a common part open it."""
    buff = event.current_buffer
    if buff.complete_state is not None:
        buff.complete_next()
        return
    if buff.completer is None:
        return
    found = list(buff.completer.get_completions(buff.document,
                                                CompleteEvent(completion_requested=True)))
    if len(found) == 1:
        buff.apply_completion(found[0])
    elif found:
        common = get_common_complete_suffix(buff.document, found)
        if common:
            buff.insert_text(common)
        else:
            buff.start_completion(select_first=False)


TAB_NOW = KeyBindings()
TAB_NOW.add("tab")(_complete_now)


class _CountingQueue(queue.Queue):  # type: ignore[type-arg]
    """The proxy's flush queue, counting the non-empty texts put and taken (see `drain`)."""

    def __init__(self) -> None:
        super().__init__()
        self.put_count = 0
        self.taken_count = 0

    def _put(self, item: Any) -> None:  # under the queue's mutex
        if isinstance(item, str) and item:
            self.put_count += 1
        super()._put(item)

    def _get(self) -> Any:
        item = super()._get()
        if isinstance(item, str) and item:
            self.taken_count += 1
        return item


class _SessionStdoutProxy(StdoutProxy):
    """prompt_toolkit's StdoutProxy whose flush thread runs in the creator's context, and which
    can wait until what was written has reached the terminal (`drain`).

    The proxy hands each write to the running application with `run_in_terminal`, which finds
    the application through a context variable (the AppSession). A thread starts with an empty
    context, so under `create_app_session` (our own input/output) the flush thread would see the
    default session, find no application running and write straight through the prompt line.
    Running the thread inside a copy of the creating context keeps the session. (Overrides
    `_start_write_thread` and `_write_and_flush`, prompt_toolkit 3.0.x; tests/test_interactive.py
    checks the notice is drawn after the prompt was erased.)"""

    DRAIN_S = 2.0  # never hold the prompt longer than this for a stuck terminal

    def _start_write_thread(self) -> threading.Thread:
        self._flush_queue = _CountingQueue()
        self._written = 0  # texts taken from the queue and written (or handed to the app)
        self._written_cond = threading.Condition()
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run,
            args=(self._write_thread,),
            name="patch-stdout-flush-thread",
            daemon=True,
        )
        thread.start()
        return thread

    def _write_and_flush(self, loop: Any, text: str) -> None:
        # every text taken so far is in `text` (the flush thread takes a batch, then writes it)
        taken = cast(_CountingQueue, self._flush_queue).taken_count
        try:
            super()._write_and_flush(loop, text)
        finally:
            with self._written_cond:
                self._written = taken
                self._written_cond.notify_all()

    def drain(self) -> None:
        """Return once everything written so far is on the terminal. Between two prompts (no
        application running) the flush thread writes straight to the output, but later than the
        caller: a prompt started before it did was drawn where the last line had not ended yet
        (seen in tmux: a batch's progress line, then `alice>` glued to it). The shell calls this
        before each prompt."""
        self.flush()
        queue_ = cast(_CountingQueue, self._flush_queue)
        with queue_.mutex:
            target = queue_.put_count
        with self._written_cond:
            self._written_cond.wait_for(lambda: self._written >= target, timeout=self.DRAIN_S)


@contextmanager
def output_above_the_prompt() -> Iterator[_SessionStdoutProxy]:
    """patch_stdout(raw=True) with the proxy above: sys.stdout and sys.stderr print above the
    prompt while it runs, and straight to the output between prompts. Yields the proxy."""
    proxy = _SessionStdoutProxy(raw=True)
    with proxy:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = cast(TextIO, proxy)
        try:
            yield proxy
        finally:
            sys.stdout, sys.stderr = saved


@contextmanager
def logs_above_the_prompt() -> Iterator[None]:
    """Point the root logger's terminal handlers at the (patched) sys.stderr for the duration,
    so a log line is drawn above the prompt like any other output instead of through it."""
    terminal = (sys.__stderr__, sys.__stdout__)
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and handler.stream in terminal:
            moved.append((handler, handler.stream))
            handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)


def home_shown(home: Path) -> str:
    """`home` as a user would type it: `~/...` when it is under their home directory."""
    try:
        return "~/" + home.resolve().relative_to(Path.home().resolve()).as_posix()
    except (ValueError, RuntimeError, OSError):  # elsewhere, or no home to speak of
        return str(home)


def history_file(home: Path) -> FileHistory:
    """`<home>/history`, created private (0600) before prompt_toolkit appends to it."""
    path = Path(home) / "history"
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    return FileHistory(str(path))


class Shell:
    """One interactive session over `ctx`. `input`/`output` default to the terminal."""

    def __init__(
        self,
        ctx: Context,
        *,
        input: Input | None = None,
        output: Output | None = None,
        names: NameSource | None = None,
        history: History | None = None,
    ) -> None:
        self.ctx = ctx
        self._input = input
        self._output = output
        self._owns_names = names is None
        self.names = names if names is not None else NameSource(ctx.session)
        self._history = history
        self.prompt: PromptSession[str] | None = None
        self.cancelled = 0  # commands abandoned with Ctrl-C
        self._bar_open = False  # a bar is drawn on the current line (no newline yet)
        self._bar_seen = False  # this command drew a transfer bar (its upload was large)
        self._proxy: _SessionStdoutProxy | None = None  # sys.stdout while run() runs

    # ---- notifications and progress (any thread) ------------------------------------------------
    def notify(self, text: str) -> None:
        """Print a notice above the prompt (the session calls this from its threads)."""
        if self.names.in_refresh_thread():
            log.debug("background: %s", text)
            return
        if self._bar_open:  # never glued to a progress bar: a line of its own
            self._bar_open = False
            sys.stdout.write("\n")
        print(f"* {text}", file=sys.stdout, flush=True)
        self.names.poke()

    def _progress_for(self, abandoned: threading.Event) -> Any:
        def progress(i: int, n: int, name: str) -> None:
            if n <= 1 or abandoned.is_set():
                return
            end = "\n" if i >= n else ""
            # padded as the transfer bar is: the two take turns on one line (a photo's upload
            # bar, then the next file's progress), and a shorter line would leave the tail
            sys.stdout.write("\r" + render.progress_line(i, n, name).ljust(len(WAITING_LINE)) + end)
            sys.stdout.flush()
            self._bar_open = not end

        return progress

    def _transfer_bar(self, abandoned: threading.Event) -> bool:
        """While a command waits on a large transfer (>= TRANSFER_BAR_BYTES in flight), redraw a
        byte-level progress bar in place. True if one was drawn."""
        progress = getattr(self.ctx.session.transport, "progress", None)
        if progress is None or abandoned.is_set():
            return False
        done, total = progress()
        if total < TRANSFER_BAR_BYTES:
            if not self._bar_seen:
                return False
            line = WAITING_LINE  # the upload is acknowledged: the cloud (or peer) works on it
        else:
            self._bar_seen = True
            line = render.transfer_line(done, total)
        sys.stdout.write("\r" + line.ljust(len(WAITING_LINE)))
        sys.stdout.flush()
        self._bar_open = True
        return True

    # ---- one command ----------------------------------------------------------------------------
    def run_command(self, line: str) -> Outcome | None:
        """Run `line` in a worker thread; None if Ctrl-C abandoned it."""
        done: Future[Outcome] = Future()
        abandoned = threading.Event()
        scope = CancelScope()
        self.ctx.progress = self._progress_for(abandoned)
        self._bar_seen = self._bar_open = False

        def work() -> None:
            try:
                with within(scope):
                    outcome = run_line(self.ctx, line)
            except Exception as exc:  # never a traceback at the user
                log.debug("command %r failed", line, exc_info=True)
                outcome = Outcome(
                    {"error": str(exc), "code": "internal"},
                    f"error: {type(exc).__name__}: {exc}",
                    ok=False,
                )
            done.set_result(outcome)
            if abandoned.is_set() and not _cancelled(outcome):
                state = "done" if outcome.ok else "failed"
                self.notify(f"the cancelled command finished in the background ({state}): {line}")
            elif abandoned.is_set() and outcome.data.get("encrypted"):  # stored before the cancel
                done_n = len(outcome.data["encrypted"])
                total = done_n + len(outcome.data.get("failed") or [])
                self.notify(f"{done_n} of {total} files were sealed before the cancel "
                            f"(in encrypted/; the others were not sent or not stored): {line}")

        try:  # Ctrl-C may come while the thread starts: inside the try
            threading.Thread(target=work, name="command", daemon=True).start()
            shown = False
            while True:
                try:
                    result = done.result(timeout=POLL_S)
                    if shown and self._bar_open:  # the answer is here: clear the bar's line
                        sys.stdout.write("\r" + " " * len(WAITING_LINE) + "\r")
                        sys.stdout.flush()
                    self._bar_open = False
                    return result
                except TimeoutError:
                    shown = self._transfer_bar(abandoned) or shown
        except KeyboardInterrupt:
            abandoned.set()
            self.cancelled += 1
            self._bar_open = False
            cancel = getattr(self.ctx.session, "cancel", None)
            if cancel is None:
                print("\ncancelled (the command may still finish in the background)", flush=True)
                return None
            cancel(scope)
            print("\ncancelled: nothing more is sent or stored for it", flush=True)
            return None

    def _show(self, outcome: Outcome) -> None:
        self.names.learn(outcome.data)
        self.names.poke()
        if outcome.text:
            print(outcome.text, flush=True)

    # ---- the loop -------------------------------------------------------------------------------
    def _message(self) -> StyleAndTextTuples:
        return [("class:prompt.user", self.ctx.session.user), ("", "> ")]

    def _make_prompt(self) -> PromptSession[str]:
        history = self._history or history_file(Path(self.ctx.session.home.root))
        return PromptSession(
            input=self._input,
            output=self._output,
            history=history,
            completer=ShellCompleter(self.names.sources()),
            complete_while_typing=True,
            key_bindings=TAB_NOW,
            auto_suggest=AutoSuggestFromHistory(),
            bottom_toolbar=make_toolbar(self.ctx.session, self.names),
            style=STYLE,
            refresh_interval=1.0,  # the toolbar's count and connection follow without a key
        )

    def _loop(self, prompt: PromptSession[str]) -> None:
        while not self.ctx.quit_requested:
            if self._proxy is not None:  # the last command's lines first, then the prompt
                self._proxy.drain()
            try:
                line = prompt.prompt(self._message)
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            outcome = self.run_command(line)
            if outcome is not None:
                self._show(outcome)

    def run(self) -> int:
        """Prompt until Ctrl-D or `quit`. Returns the exit status (0)."""
        session = self.ctx.session
        with (
            create_app_session(input=self._input, output=self._output),
            output_above_the_prompt() as proxy,
            logs_above_the_prompt(),
        ):
            self._proxy = proxy
            self.prompt = self._make_prompt()
            old_notify, session.notify = session.notify, self.notify
            if self._owns_names:
                self.names.start()
            try:
                print(
                    f"Veilshare: you are {session.user}. Type help for the commands, "
                    "Tab to complete.\nYour images, sealed copies and inbox are kept in "
                    f"{home_shown(Path(session.home.root))}.",
                    flush=True,
                )
                self._loop(self.prompt)
                print("bye", flush=True)
            finally:
                session.notify = old_notify
                if self._owns_names:
                    self.names.stop()
        return 0


def _cancelled(outcome: Outcome) -> bool:
    """The command ended because Ctrl-C cancelled it: its error is `cancelled`, or it is an
    encrypt whose failures are all `cancelled` (files sealed before the cancel may be among its
    rows)."""
    data = outcome.data
    if outcome.ok:
        return False
    if data.get("code") == "cancelled":
        return True
    failed = data.get("failed") or []
    return bool(failed) and all(isinstance(f, dict) and f.get("code") == "cancelled"
                                for f in failed)


def run_interactive(
    ctx: Context, *, input: Input | None = None, output: Output | None = None
) -> int:
    """The `python -m shell --user NAME` prompt. The caller closes the session (Leave).
    Pictures go straight to the terminal, not through the prompt's stdout proxy."""
    if ctx.art_out is None:
        ctx.art_out = sys.__stdout__
    return Shell(ctx, input=input, output=output).run()
