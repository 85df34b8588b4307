"""Command lines split as a POSIX shell splits them, and file globs expanded (issue 17, item 4):
shell/words.py, pure, and `run_line` handing `encrypt` the expanded paths."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, cast

import pytest

from actors.client.client_session import ClientSession, EncryptOutcome
from actors.client.client_store import ClientHome
from shell.commands import Context, run_line
from shell.words import Word, expand, split_commands, split_words


@pytest.mark.parametrize(
    "line",
    ['encrypt "my cat photo.png" b.jpg', "a\\ b 'c d' \"e\\\"f\" g\\\\h", "x '' \"\" y",
     "  spaced   out  ", 'mixed"qu"o\'te\'s', "tab\there"],
)
def test_words_are_what_shlex_gives(line: str) -> None:
    assert [w.text for w in split_words(line)] == shlex.split(line)


@pytest.mark.parametrize("line", ["view 'pic.jpg", 'a "b', "trailing\\"])
def test_open_quotes_are_errors_with_shlex_messages(line: str) -> None:
    with pytest.raises(ValueError) as got:
        split_words(line)
    with pytest.raises(ValueError) as want:
        shlex.split(line)
    assert str(got.value) == str(want.value)


def test_only_unquoted_glob_characters_make_a_pattern() -> None:
    assert split_words('*.jpg "*.jpg" \\*.jpg shots/[ab]?.png "my "*.png plain') == [
        Word("*.jpg", "*.jpg"),
        Word("*.jpg"),
        Word("*.jpg"),
        Word("shots/[ab]?.png", "shots/[ab]?.png"),
        Word("my *.png", "my *.png"),
        Word("plain"),
    ]
    (w,) = split_words('"a*b"?')
    assert w == Word("a*b?", "a[*]b?")  # the quoted star matches itself only


def test_expand_sorts_matches_keeps_unmatched_words_and_skips_hidden_files(
    tmp_path: Path,
) -> None:
    for name in ("b.jpg", "a.jpg", "c d.jpg", ".hidden.jpg", "x.png", "star*.jpg"):
        (tmp_path / name).write_bytes(b"x")
    words = split_words(f"{tmp_path}/*.jpg {tmp_path}/*.gif '{tmp_path}/star*.jpg' {tmp_path}/x.png")
    assert expand(words) == [
        *(str(tmp_path / n) for n in ("a.jpg", "b.jpg", "c d.jpg", "star*.jpg")),
        f"{tmp_path}/*.gif",  # nothing matches: kept as typed, as bash does
        str(tmp_path / "star*.jpg"),
        str(tmp_path / "x.png"),
    ]
    assert expand(split_words(f"{tmp_path}/.*.jpg")) == [str(tmp_path / ".hidden.jpg")]


def test_expand_starts_at_the_home_folder_for_a_tilde(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "p.jpg").write_bytes(b"x")
    assert expand(split_words("~/*.jpg")) == [str(tmp_path / "p.jpg")]


def test_commands_split_on_unquoted_semicolons_keeping_quotes() -> None:
    assert split_commands('encrypt "a;b.png" *.jpg; inbox ;; view \'x y\';') == [
        'encrypt "a;b.png" *.jpg', "inbox", "view 'x y'"]
    with pytest.raises(ValueError, match="No closing quotation"):
        split_commands("users; view 'x")


class _Encrypting:
    """A session that records the paths `encrypt` is asked to seal."""

    def __init__(self, home: Path) -> None:
        self.paths: list[Path] = []
        self.caller = type("C", (), {"stats": type("S", (), {"duplicates": 0})()})()
        self.home = ClientHome(home)  # `encrypt` reports its accepted_twice count

    def encrypt(self, paths: list[Path], progress: Any = None) -> EncryptOutcome:
        self.paths += paths
        return EncryptOutcome()


def test_encrypt_gets_the_expanded_paths_spaces_and_all(tmp_path: Path) -> None:
    for name in ("one.jpg", "two.jpg", "my cat photo.png"):
        (tmp_path / name).write_bytes(b"x")
    session = _Encrypting(tmp_path / "home")
    ctx = Context(cast(ClientSession, session))
    out = run_line(ctx, f'encrypt {tmp_path}/*.jpg "{tmp_path}/my cat photo.png"')
    assert out.ok, out.text
    assert session.paths == [tmp_path / "one.jpg", tmp_path / "two.jpg",
                             tmp_path / "my cat photo.png"]
    run_line(ctx, f"view {tmp_path}/*.jpg")  # not a file argument: never expanded
    assert len(session.paths) == 3
