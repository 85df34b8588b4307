"""Completion: a pure `expected(text_before_cursor)` plus a thin prompt_toolkit Completer.

`expected` says what kind of word the cursor is in (command, file, user, preview, change, ...)
from the command table alone (after pgcli's sqlcompletion: no I/O, tested with plain strings).
`ShellCompleter` turns that into candidates: commands from the table (with their help as meta
text), file paths from prompt_toolkit's PathCompleter, every other kind from `sources`
(kind -> f(args) -> names or (name, meta)), which `shell.names.NameSource` keeps refreshed in
the background, so completing never waits on the network.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from shell.commands import COMMANDS
from shell.names import Candidate, Source


@dataclass(frozen=True)
class Expected:
    kind: str  # "command" | "file" | "none" | an arg kind of the table ("user", "preview", ...)
    word: str  # the partial word under the cursor
    args: tuple[str, ...]  # the complete words before it (command first)


def _words(text: str) -> tuple[list[str], str]:
    """(complete words, partial word). Inside an open quote the quoted tail is the partial word."""
    for close in ("", '"', "'"):
        try:
            words = shlex.split(text + close)
        except ValueError:
            continue
        if words and (close or not text[-1].isspace()):
            return words[:-1], words[-1]
        return words, ""
    return text.split(), ""  # e.g. a backslash ending an open quote: no partial word


def options(usage: str) -> dict[str, str]:
    """The `--name` options a usage line shows, each with its value placeholder ("" if none):
    "request USER IMAGE [VIEWS] [--days D]" -> {"--days": "D"}. Pure."""
    found = re.findall(r"(--[a-z][a-z-]*)(?: ([A-Z]+))?", usage)
    return {name: value for name, value in found}


def _positional(words: list[str], opts: dict[str, str]) -> tuple[list[str], bool]:
    """Words without the options and their values; True if the last word is an option still
    waiting for its value."""
    out: list[str] = []
    waiting = False
    for w in words:
        if waiting:
            waiting = False
        elif w in opts:
            waiting = bool(opts[w])
        else:
            out.append(w)
    return out, waiting


def expected(text: str) -> Expected:
    """What belongs at the end of `text` (the line up to the cursor). Pure.

    Options shown in the command's usage (`--days D`) and their values do not count as
    arguments; a partial word starting with `--` is an option ("option"), the word after an
    option taking a value is that value ("option_value", nothing offered)."""
    before, word = _words(text)
    if not before:
        return Expected("command", word, ())
    cmd = COMMANDS.get(before[0])
    if cmd is None:
        return Expected("none", word, tuple(before))
    opts = options(cmd.usage)
    args, waiting = _positional(before[1:], opts)
    positional = (before[0], *args)
    if waiting:
        return Expected("option_value", word, positional)
    if opts and word.startswith("--"):
        return Expected("option", word, positional)
    kinds = cmd.arg_kinds
    if len(args) < len(kinds):
        kind = kinds[len(args)]
    elif kinds and cmd.max_args is None:  # a command taking any number repeats its last kind
        kind = kinds[-1]
    else:
        kind = "none"
    return Expected(kind, word, positional)


def _pairs(candidates: Iterable[Candidate]) -> Iterator[tuple[str, str]]:
    for c in candidates:
        yield (c, "") if isinstance(c, str) else c


class ShellCompleter(Completer):
    """Candidates for `expected(...)`: prefix matches, in the source's order, each name once."""

    def __init__(self, sources: Mapping[str, Source] | None = None) -> None:
        self._paths = PathCompleter(expanduser=True)
        self._sources: Mapping[str, Source] = sources or {}

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        exp = expected(document.text_before_cursor)
        if exp.kind == "file":
            yield from self._paths.get_completions(Document(exp.word, len(exp.word)), event)
            return
        if exp.kind == "command":
            pairs: Iterable[tuple[str, str]] = sorted((c.name, c.help) for c in COMMANDS.values())
        elif exp.kind == "option":
            usage = COMMANDS[exp.args[0]].usage
            pairs = [(name, f"{name} {value}".strip()) for name, value in options(usage).items()]
        elif exp.kind in self._sources:
            try:
                pairs = list(_pairs(self._sources[exp.kind](exp.args)))
            except Exception:  # noqa: BLE001 - a completion source must never break the prompt
                return
        else:
            return
        seen: set[str] = set()
        for name, meta in pairs:
            if name.startswith(exp.word) and name not in seen:
                seen.add(name)
                yield Completion(name, start_position=-len(exp.word), display_meta=meta or None)
