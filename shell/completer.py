"""Completion: a pure `expected(text_before_cursor)` plus a thin prompt_toolkit Completer.

`expected` says what kind of word the cursor is in (command, file, user, preview, change, ...)
from the command table alone (after pgcli's sqlcompletion: no I/O, tested with plain strings).
`ShellCompleter` turns that into candidates: commands from the table (with their help as meta
text), file paths from prompt_toolkit's PathCompleter, every other kind from `sources`
(kind -> f(args) -> names or (name, meta)), which `shell.names.NameSource` keeps refreshed in
the background, so completing never waits on the network.

What a completion inserts (issue 17): a whole word ends with a space, so the next one does not
glue on (a folder ends with "/" instead: its files come next); a path is quoted the way
shell.words reads it back when it holds a space, a quote or a glob character
(`"my cat.png"` -> `'my cat.png' `); names a command would refuse (outside
[A-Za-z0-9._-]{1,64}) are never offered; `encrypt` is offered folders and the image files it
takes (.png, .jpg, .jpeg, .gif, .webp), hidden ones only after a typed dot.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from codec.names import is_valid_name
from shell.commands import COMMANDS
from shell.names import Candidate, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")  # what encrypt takes (codec.images)
NAME_KINDS = frozenset(
    {"user", "preview", "received_image", "borrower", "own_image"}  # one name each
)


@dataclass(frozen=True)
class Expected:
    kind: str  # "command" | "file" | "none" | an arg kind of the table ("user", "preview", ...)
    word: str  # the partial word under the cursor, quotes removed
    args: tuple[str, ...]  # the complete words before it (command first)
    raw: str = ""  # the partial word as typed (quotes and backslashes included)


def raw_tail(text: str) -> str:
    """The last word of `text` as typed: what follows the last whitespace outside quotes
    ("" after a space). Lenient: an open quote simply continues the word. Pure."""
    start, quote, escaped = 0, "", False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c.isspace():
            start = i + 1
    return text[start:]


def quote_path(path: str) -> str:
    """`path` as shell.words reads it back as one literal word: quoted only when it holds a
    character that would split it, quote it or make it a glob ("my cat.png" -> 'my cat.png').
    A leading ~/ stays outside the quotes so that it still means the home folder."""
    home, rest = ("~/", path[2:]) if path.startswith("~/") else ("", path)
    return home + shlex.quote(rest) if rest else path


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
    raw = raw_tail(text)
    if not before:
        return Expected("command", word, (), raw)
    cmd = COMMANDS.get(before[0])
    if cmd is None:
        return Expected("none", word, tuple(before), raw)
    opts = options(cmd.usage)
    args, waiting = _positional(before[1:], opts)
    positional = (before[0], *args)
    if waiting:
        return Expected("option_value", word, positional, raw)
    if opts and word.startswith("--"):
        return Expected("option", word, positional, raw)
    kinds = cmd.arg_kinds
    if len(args) < len(kinds):
        kind = kinds[len(args)]
    elif kinds and cmd.max_args is None:  # a command taking any number repeats its last kind
        kind = kinds[-1]
    else:
        kind = "none"
    return Expected(kind, word, positional, raw)


def _pairs(candidates: Iterable[Candidate]) -> Iterator[tuple[str, str]]:
    for c in candidates:
        yield (c, "") if isinstance(c, str) else c


def acceptable(kind: str, name: str) -> bool:
    """Would the command take `name` as a word of `kind`? Names must be valid names; `view`
    takes IMAGE or OWNER/IMAGE; counts, changes and ids are the sources' own words. Pure."""
    if kind in NAME_KINDS:
        return is_valid_name(name)
    if kind == "received":
        owner, _, image = name.rpartition("/")
        return is_valid_name(image) and (not owner or is_valid_name(owner))
    return True


class ShellCompleter(Completer):
    """Candidates for `expected(...)`: prefix matches, in the source's order, each name once."""

    def __init__(self, sources: Mapping[str, Source] | None = None) -> None:
        self._paths = PathCompleter(expanduser=True)
        self._sources: Mapping[str, Source] = sources or {}

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        exp = expected(document.text_before_cursor)
        if exp.kind == "file":
            yield from self._files(exp, event)
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
            if name.startswith(exp.word) and name not in seen and acceptable(exp.kind, name):
                seen.add(name)
                yield Completion(name + " ", start_position=-len(exp.raw), display=name,
                                 display_meta=meta or None)

    def _files(self, exp: Expected, event: CompleteEvent) -> Iterator[Completion]:
        """Folders and image files under the typed path, each as a whole quoted word."""
        hidden = os.path.basename(exp.word).startswith(".")
        for c in self._paths.get_completions(Document(exp.word, len(exp.word)), event):
            path = exp.word + c.text
            name = os.path.basename(path)
            if name.startswith(".") and not hidden:
                continue
            if os.path.isdir(os.path.expanduser(path)):
                yield Completion(quote_path(path + "/"), start_position=-len(exp.raw),
                                 display=name + "/")
            elif name.lower().endswith(IMAGE_SUFFIXES):
                yield Completion(quote_path(path) + " ", start_position=-len(exp.raw),
                                 display=name)
