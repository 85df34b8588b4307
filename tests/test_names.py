"""Names, request ids and safe_join (RELIABILITY TI-6 name list, 3.3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codec.errors import CodecError
from codec.names import (
    image_name_for,
    NAME_RE,
    InvalidName,
    check_name,
    is_request_id,
    is_valid_name,
    make_request_id,
    parse_request_id,
    safe_join,
)

GOOD = ["alice", "Bob_2", "pic.jpg", "a", "x" * 64, "a..b", "my-photo.v2.png", "0", "a."]
BAD = [
    ("..", "starts with a dot"),
    (".", "starts with a dot"),
    ("...", "starts with a dot"),
    (".x", "starts with a dot"),
    ("/etc/passwd", "'/' not allowed"),
    ("a/b", "'/' not allowed"),
    ("a\\b", "'\\\\' not allowed"),
    ("%2e%2e", "'%' not allowed"),
    ("a\x00b", "'\\x00' not allowed"),
    ("x" * 65, "longer than 64"),
    ("\u0430lice", "'\u0430' not allowed"),  # Cyrillic a
    ("bob\u200b", "not allowed"),  # zero-width space
    ("ｐic.jpg", "not allowed"),  # fullwidth p
    ("caf\u00e9", "not allowed"),
    ("a b", "' ' not allowed"),
    ("a\n", "'\\n' not allowed"),
    ("", "empty"),
    ("~", "'~' not allowed"),
    ("C:x", "':' not allowed"),
]


def test_name_re_is_the_documented_pattern() -> None:
    assert NAME_RE == r"[A-Za-z0-9._-]{1,64}"


@pytest.mark.parametrize("name", GOOD)
def test_good_names_accepted(name: str) -> None:
    assert is_valid_name(name)
    assert check_name(name, "image") == name


@pytest.mark.parametrize(("name", "reason"), BAD)
def test_bad_names_refused_with_reason(name: str, reason: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidName) as info:
        check_name(name, "image")
    assert reason in info.value.reason
    assert info.value.what == "image" and info.value.value == name
    assert isinstance(info.value, ValueError) and isinstance(info.value, CodecError)
    assert str(info.value).startswith("invalid image ")


@pytest.mark.parametrize("value", [None, 1, b"alice", ["a"], True])
def test_non_strings_refused(value: object) -> None:
    assert not is_valid_name(value)
    with pytest.raises(InvalidName, match="not a string"):
        check_name(value)


def test_request_ids() -> None:
    assert make_request_id("alice", 0) == "alice#0"
    assert make_request_id("alice", 2**53) == f"alice#{2**53}"
    assert parse_request_id("bob.x#42") == ("bob.x", 42)
    for good in ["alice#0", "a#1", f"{'x' * 64}#{2**53}"]:
        assert is_request_id(good)
    bad = ["alice", "alice#", "#1", "alice#01", "alice#-1", "alice#+1", "alice#1.0", "alice#1#2",
           f"alice#{2**53 + 1}", "..#1", "a/b#1", "alice#\u0661", "alice#1 ", " alice#1",
           f"{'x' * 65}#1", "alice#1\n", 5, None, b"alice#1"]  # fmt: skip
    for s in bad:
        assert not is_request_id(s), s
    for user, n in [("..", 1), ("alice", -1), ("alice", 2**53 + 1), ("alice", True), ("a", 1.0)]:
        with pytest.raises(InvalidName):
            make_request_id(user, n)  # type: ignore[arg-type]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("name", "_reason"), BAD)
def test_safe_join_refuses_bad_parts_and_touches_nothing(
    tmp_path: Path, name: str, _reason: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    before = _tree(tmp_path)
    for parts in [(name,), ("received", name), (name, "pic.jpg")]:
        with pytest.raises(InvalidName):
            safe_join(home, *parts)
    assert _tree(tmp_path) == before


def test_safe_join_inside_home(tmp_path: Path) -> None:
    assert (
        safe_join(tmp_path, "received", "alice", "pic.jpg") == tmp_path / "received/alice/pic.jpg"
    )
    assert safe_join(tmp_path) == tmp_path


def test_safe_join_refuses_symlink_out_of_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    home.mkdir()
    outside.mkdir()
    os.symlink(outside, home / "link")
    os.symlink("/etc/passwd", home / "pw")
    with pytest.raises(InvalidName, match="outside"):
        safe_join(home, "link", "x.jpg")
    with pytest.raises(InvalidName, match="outside"):
        safe_join(home, "pw")
    os.symlink(home / "received", home / "inner")  # a link that stays inside is fine
    assert safe_join(home, "inner", "a.png") == home / "inner" / "a.png"


def test_safe_join_refuses_symlink_loop(tmp_path: Path) -> None:
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InvalidName, match="cannot be resolved"):
        safe_join(tmp_path, "a", "x")


# ---- the image name `encrypt` gives a file (issue 17) ---------------------------------------------
@pytest.mark.parametrize(
    ("file_name", "image"),
    [
        ("pic.jpg", "pic.jpg"),  # a valid name stays as it is
        ("my cat photo.png", "my_cat_photo.png"),
        ("café.png", "caf_.png"),  # non-ASCII: one "_" per character
        ("Ünïcode 写真.jpg", "_n_code___.jpg"),
        (".hidden.png", "_hidden.png"),  # never a leading dot
        ("..png", "_.png"),
        ("...", "_.."),
        ("a:b*c?.gif", "a_b_c_.gif"),
        ("dir/sub/shot 1.webp", "shot_1.webp"),  # the file name only
        ("x" * 100 + ".jpeg", "x" * 59 + ".jpeg"),  # cut to 64, the extension kept
        ("y" * 70, "y" * 64),
        ("z" * 60 + "." + "e" * 20, "z" * 60 + ".eee"),  # 20 characters are no extension: cut
    ],
)
def test_image_name_for_a_file(file_name: str, image: str) -> None:
    got = image_name_for(file_name)
    assert got == image[:64] and is_valid_name(got)


def test_image_name_for_a_clash_is_made_unique_before_the_extension() -> None:
    taken = {"pic.jpg", "pic-2.jpg"}
    assert image_name_for("pic.jpg", taken.__contains__) == "pic-3.jpg"
    assert image_name_for("notes", {"notes"}.__contains__) == "notes-2"
    long = "p" * 70 + ".png"
    first = image_name_for(long)
    again = image_name_for(long, {first}.__contains__)
    assert again == "p" * 58 + "-2.png" and len(again) == 64
    asked: list[str] = []
    image_name_for("a b.png", lambda n: asked.append(n) or n == "a_b.png")
    assert asked == ["a_b.png", "a_b-2.png"]  # only candidates are asked about
