"""`help CMD` explains every command beyond its line in `help`: no command without details, and
the commands and config keys the details name exist (a renamed command or key breaks this)."""

from __future__ import annotations

import re
from typing import Any, cast

import config
from shell.commands import COMMANDS, DETAILS, LOCAL_ONLY, Context, Outcome, needs_no_cloud, run_line


def _help(name: str) -> Outcome:
    return run_line(Context(cast(Any, None)), f"help {name}")


def test_every_command_has_details_and_help_shows_them() -> None:
    assert set(DETAILS) == set(COMMANDS)
    for name, cmd in COMMANDS.items():
        out = _help(name)
        assert out.ok and out.data == {"command": name, "usage": cmd.usage, "help": cmd.help,
                                       "details": DETAILS[name]}
        lines = out.text.splitlines()
        assert lines[:3] == [cmd.usage, f"  {cmd.help}", ""]
        assert " ".join(line.strip() for line in lines[3:]) == DETAILS[name]
        assert all(len(line) <= 78 for line in lines[3:])


def test_the_commands_and_keys_the_details_name_exist() -> None:
    cfg = config.load(None)
    for text in DETAILS.values():
        for sect, key in re.findall(r"\b([a-z]+)\.([a-z_]+)\b", text):
            if sect in ("client", "transport", "election", "seal", "encoder", "directory"):
                assert hasattr(getattr(cfg, sect), key), f"{sect}.{key}"
        for word in re.findall(r"\b([a-z]+) (?:OWNER|USER|ID|CMD)\b", text):
            assert word in COMMANDS, word


def test_only_scripts_of_help_and_quit_run_without_the_cloud() -> None:
    assert needs_no_cloud("help") and needs_no_cloud("help grant; quit")
    assert needs_no_cloud(" help ;; help view ")
    assert not needs_no_cloud("help; users")
    assert not needs_no_cloud("")  # nothing to run: the usual path says so
    assert not needs_no_cloud("help 'unclosed")  # a parse error is reported by the usual path
    assert not needs_no_cloud("helpx")
    # what runs without a session must not touch it: each handler runs with none
    for name in LOCAL_ONLY:
        outcome = run_line(Context(cast(Any, None)), name)
        assert outcome.ok, outcome.text


def test_inbox_says_revoked_and_expired_instead_of_views_that_cannot_be_used() -> None:
    from types import SimpleNamespace

    base = {"owner": "alice", "path": "received/alice/x.png", "views_total": 3, "expires": 0.0}
    rows = [
        {**base, "image": "live.png", "views_left": 2, "revoked": False, "expired": False},
        {**base, "image": "gone.png", "views_left": 0, "revoked": True, "expired": False},
        {**base, "image": "late.png", "views_left": 2, "revoked": False, "expired": True},
    ]
    session = SimpleNamespace(sharing=SimpleNamespace(inbox_rows=lambda: rows))
    out = run_line(Context(cast(Any, session)), "inbox")
    assert out.ok and out.data == {"images": rows}  # the JSON keeps the numbers
    views = {line.split()[1]: line.split()[2] for line in out.text.splitlines()[2:]}
    assert views == {"live.png": "2", "gone.png": "revoked", "late.png": "expired"}
