"""Splitting a command line into words as a POSIX shell does, and expanding file globs.

Quoting follows shlex in POSIX mode (what the shell used before): 'single quotes' keep every
character, "double quotes" keep every character but `\\"` and `\\\\`, a backslash outside quotes
keeps the next character, whitespace outside quotes separates words, `""` is an empty word. An
open quote raises ValueError("No closing quotation"), a backslash at the very end
ValueError("No escaped character"), the messages of shlex.

Globs (issue 17): a word whose *unquoted* part holds `*`, `?` or `[` is a pattern (`*.jpg`,
`shots/*.png`; quoted or escaped characters match themselves: `"my *.jpg"` is one file name).
`expand` replaces a pattern by the files it matches, sorted, hidden files only when the pattern
says so (a leading dot), and keeps the word as it is when nothing matches, as bash does by
default. `~` at the start of a path is the home folder. Only file arguments are expanded (the
command table's "file" kind): callers decide. Pure but for the `glob` function passed in.
"""

from __future__ import annotations

import glob as glob_mod
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Word:
    text: str  # the word, quotes removed
    pattern: str | None = None  # a glob pattern when an unquoted glob character is in it


def _chars(text: str) -> Iterator[tuple[str, str]]:
    """(char, how) for each character of `text`: how is "plain" (unquoted), "quoted" (inside
    quotes or escaped) or "syntax" (a quote or an escaping backslash: part of no word)."""
    quote = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if quote == "'":
            how = "syntax" if c == "'" else "quoted"
            quote = "" if c == "'" else quote
        elif quote == '"':
            if c == "\\" and i + 1 < n and text[i + 1] in '\\"':
                yield c, "syntax"
                i += 1
                c, how = text[i], "quoted"
            else:
                how = "syntax" if c == '"' else "quoted"
                quote = "" if c == '"' else quote
        elif c in "'\"":
            how, quote = "syntax", c
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("No escaped character")
            yield c, "syntax"
            i += 1
            c, how = text[i], "quoted"
        else:
            how = "plain"
        yield c, how
        i += 1
    if quote:
        raise ValueError("No closing quotation")


def split_words(line: str) -> list[Word]:
    """The words of one command line (see the module docstring). Raises ValueError."""
    words: list[Word] = []
    text: list[str] = []
    pattern: list[str] = []
    started = globbing = False
    for c, how in _chars(line):
        if how == "plain" and c.isspace():
            if started:
                words.append(Word("".join(text), "".join(pattern) if globbing else None))
            text, pattern, started, globbing = [], [], False, False
            continue
        started = True
        if how == "syntax":
            continue
        text.append(c)
        pattern.append(c if how == "plain" else glob_mod.escape(c))
        globbing = globbing or (how == "plain" and c in GLOB_CHARS)
    if started:
        words.append(Word("".join(text), "".join(pattern) if globbing else None))
    return words


def split_commands(text: str) -> list[str]:
    """`-c "CMD; CMD"`: the commands between semicolons outside quotes, as written (quotes kept,
    so each one is split into words and globs later), empty ones left out. Raises ValueError."""
    parts: list[list[str]] = [[]]
    for c, how in _chars(text):
        if how == "plain" and c == ";":
            parts.append([])
        else:
            parts[-1].append(c)
    return [cmd for cmd in ("".join(p).strip() for p in parts) if cmd]


def expand(words: list[Word],
           glob: Callable[[str], list[str]] = glob_mod.glob) -> list[str]:
    """File arguments: each pattern replaced by its matches (sorted), or kept when none match;
    `~` expanded at the start of each."""
    out: list[str] = []
    for w in words:
        if w.pattern is None:
            out.append(w.text)
            continue
        matches = sorted(glob(os.path.expanduser(w.pattern)))
        out += matches or [w.text]
    return out
