"""Client home layout, names and paths (TI-6), atomic writes, default home."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.client.client_store import (
    ClientHome,
    ReceivedGrant,
    StateDB,
    StoreError,
    default_home,
    write_atomic,
)
from codec.names import InvalidName

BAD_NAMES = [
    "..",
    ".",
    "...",
    ".x",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "%2e%2e",
    "a\x00b",
    "x" * 65,
    "\u0430lice",
    "\uff41",
    "",
    "a b",
    "~",
    7,
    None,
    b"pic.jpg",
]


def _tree(root: Path) -> set[tuple[str, int]]:
    """Every path under root with its size (0 for folders): a snapshot to compare."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            out.add((str(p.relative_to(root)), 0 if p.is_dir() else p.stat().st_size))
    return out


@pytest.fixture
def home(tmp_path: Path) -> ClientHome:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"keep")
    return ClientHome(tmp_path / "home")


def test_home_creates_the_layout_private(home: ClientHome) -> None:
    for d in ("high", "low", "encrypted", "received", "previews"):
        assert (home.root / d).is_dir()
        assert stat.S_IMODE((home.root / d).stat().st_mode) == 0o700
    db = home.open_state()
    db.close()
    assert home.state_db_path == home.root / "state.db"
    assert home.state_db_path.is_file()
    ClientHome(home.root)  # reopening an existing home is fine


def test_paths_are_built_from_names(home: ClientHome) -> None:
    assert home.high_path("pic.jpg") == home.root / "high" / "pic.jpg"
    assert home.low_path("pic.jpg") == home.root / "low" / "pic.jpg"
    assert home.encrypted_path("pic.png") == home.root / "encrypted" / "pic.png"
    p = home.received_path("alice", "pic.png")
    assert p == home.root / "received" / "alice" / "pic.png"
    assert p.parent.is_dir() and not p.exists()
    assert home.preview_path("carol", "a.jpg").parent == home.root / "previews" / "carol"
    assert home.relative(p) == "received/alice/pic.png"


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_before_any_file_operation(home: ClientHome, bad: object) -> None:
    top = home.root.parent
    before = _tree(top)
    calls: list[Callable[[], object]] = [
        lambda: home.high_path(bad),  # type: ignore[arg-type]
        lambda: home.low_path(bad),  # type: ignore[arg-type]
        lambda: home.encrypted_path(bad),  # type: ignore[arg-type]
        lambda: home.received_path(bad, "pic.png"),  # type: ignore[arg-type]
        lambda: home.received_path("alice", bad),  # type: ignore[arg-type]
        lambda: home.received_dir(bad),  # type: ignore[arg-type]
        lambda: home.preview_path(bad, "a.jpg"),  # type: ignore[arg-type]
        lambda: home.preview_path("carol", bad),  # type: ignore[arg-type]
        lambda: home.previews_dir(bad),  # type: ignore[arg-type]
        lambda: default_home(bad, env={"XDG_DATA_HOME": str(top)}),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidName):
            call()
    assert _tree(top) == before


def test_bad_owner_names_from_state_are_refused(home: ClientHome) -> None:
    with StateDB(home.state_db_path) as db:
        for bad in ["..", "a/b", "x" * 65]:
            with pytest.raises(InvalidName):
                db.put_received(ReceivedGrant(bad, "pic.jpg", 1, 1, "received/x/pic.png"))
            with pytest.raises(InvalidName):
                db.next_request_id(bad)
        assert db.inbox() == []


def test_a_symlink_out_of_the_home_is_refused(home: ClientHome, tmp_path: Path) -> None:
    (home.root / "received" / "evil").symlink_to(tmp_path / "outside")
    before = _tree(tmp_path / "outside")
    with pytest.raises(InvalidName, match="outside"):
        home.received_path("evil", "pic.png")
    assert _tree(tmp_path / "outside") == before


def test_write_atomic_writes_private_file_and_leaves_no_temp(home: ClientHome) -> None:
    p = home.encrypted_path("a.png")
    write_atomic(p, b"first")
    write_atomic(p, b"second")
    assert p.read_bytes() == b"second"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert os.listdir(p.parent) == ["a.png"]
    write_atomic(p, b"public", mode=0o644)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file_and_no_temp(home: ClientHome) -> None:
    p = home.encrypted_path("a.png")
    write_atomic(p, b"old")
    with pytest.raises(TypeError):
        write_atomic(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"old"
    assert os.listdir(p.parent) == ["a.png"]


def test_home_write_refuses_paths_outside(home: ClientHome, tmp_path: Path) -> None:
    before = _tree(tmp_path)
    for target in [tmp_path / "outside" / "x", home.root / ".." / "x", home.root]:
        with pytest.raises(StoreError, match="outside"):
            home.write(target, b"x")
    assert _tree(tmp_path) == before
    assert home.write(home.high_path("ok.jpg"), b"y") == home.root / "high" / "ok.jpg"


def test_default_home_follows_xdg(tmp_path: Path) -> None:
    assert (
        default_home("bob", env={"XDG_DATA_HOME": str(tmp_path)}) == tmp_path / "veilshare" / "bob"
    )
    fallback = tmp_path / ".local" / "share" / "veilshare" / "bob"
    assert default_home("bob", env={"XDG_DATA_HOME": "rel/dir"}, home=tmp_path) == fallback
    assert default_home("bob", env={}, home=tmp_path) == fallback
    assert not (tmp_path / ".local").exists()
