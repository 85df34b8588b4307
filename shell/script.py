"""Running a `-c` script: its commands one by one, each outcome as text or JSON, the exit status.

Shared by `python -m shell -c` (printing here) and by a client that runs the script for another
process of its user (shell.handoff, sending each piece back): both print the same lines, through
`emitted`, and end with the same status (0 if every command succeeded, else 1).
"""

from __future__ import annotations

from collections.abc import Callable

from shell import render
from shell.commands import Context, Outcome, run_line, split_commands

Emit = Callable[[str, str], None]  # (stream "stdout" | "stderr", text without its newline)


def emitted(outcome: Outcome, as_json: bool) -> tuple[str, str] | None:
    """(stream, text) that `outcome` prints: its JSON on stdout, or its text on stdout (ok) or
    stderr (failed); None when there is nothing to print."""
    if as_json:
        return "stdout", render.as_json(outcome.data)
    if outcome.text:
        return ("stdout" if outcome.ok else "stderr"), outcome.text
    return None


def run_script(ctx: Context, text: str, as_json: bool, emit: Emit) -> int:
    """Run the `;`-separated commands of `text` until the end or `quit`; the exit status."""
    ok = True
    try:
        lines = split_commands(text)
    except ValueError as exc:
        lines = []
        ok = _show(Outcome({"error": f"cannot parse the commands: {exc}", "code": "usage"},
                           f"error: cannot parse the commands: {exc}", ok=False), as_json, emit)
    for line in lines:
        ok = _show(run_line(ctx, line), as_json, emit) and ok
        if ctx.quit_requested:
            break
    return 0 if ok else 1


def _show(outcome: Outcome, as_json: bool, emit: Emit) -> bool:
    shown = emitted(outcome, as_json)
    if shown is not None:
        emit(*shown)
    return outcome.ok
