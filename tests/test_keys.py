"""actors.client.keys: client keys created once in the home, private modes, refusals."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from actors.client.keys import ClientKeys, KeyFileError


def _rng(seed: int) -> random.Random:
    return random.Random(seed)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_created_once_with_private_modes_and_reloaded_identical(tmp_path: Path) -> None:
    keys = ClientKeys.load_or_create(tmp_path, rng=_rng(1).randbytes)
    folder = tmp_path / "keys"
    assert _mode(folder) == 0o700
    assert _mode(folder / "sign.key") == 0o600
    assert _mode(folder / "box.key") == 0o600
    assert sorted(p.name for p in folder.iterdir()) == ["box.key", "sign.key"]  # no temp left
    sign_raw = (folder / "sign.key").read_bytes()
    box_raw = (folder / "box.key").read_bytes()
    assert len(sign_raw) == len(box_raw) == 32 and sign_raw != box_raw

    again = ClientKeys.load_or_create(tmp_path, rng=_rng(2).randbytes)  # other rng: not used
    assert again.sign_public == keys.sign_public and again.box_public == keys.box_public
    assert (folder / "sign.key").read_bytes() == sign_raw
    assert (folder / "box.key").read_bytes() == box_raw
    assert len(keys.sign_public) == len(keys.box_public) == 32


def test_injected_rng_makes_the_same_keys(tmp_path: Path) -> None:
    for sub in "abc":
        (tmp_path / sub).mkdir()
    a = ClientKeys.load_or_create(tmp_path / "a", rng=_rng(5).randbytes)
    b = ClientKeys.load_or_create(tmp_path / "b", rng=_rng(5).randbytes)
    assert a.sign_public == b.sign_public and a.box_public == b.box_public
    c = ClientKeys.load_or_create(tmp_path / "c", rng=_rng(6).randbytes)
    assert c.sign_public != a.sign_public


def test_signature_verifies_with_the_public_key(tmp_path: Path) -> None:
    keys = ClientKeys.load_or_create(tmp_path)
    sig = keys.sign(b"hello")
    assert len(sig) == 64
    Ed25519PublicKey.from_public_bytes(keys.sign_public).verify(sig, b"hello")


def test_repr_shows_no_private_key(tmp_path: Path) -> None:
    keys = ClientKeys.load_or_create(tmp_path)
    text = repr(keys)
    for name in ("sign.key", "box.key"):
        assert (tmp_path / "keys" / name).read_bytes().hex() not in text
    assert keys.sign_public.hex() in text


@pytest.mark.parametrize("name", ["sign.key", "box.key"])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o601])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, name: str, mode: int) -> None:
    ClientKeys.load_or_create(tmp_path)
    path = tmp_path / "keys" / name
    before = path.read_bytes()
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match="group/other permission bits") as info:
        ClientKeys.load_or_create(tmp_path)
    assert info.value.path == path
    assert path.read_bytes() == before  # never replaced


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_key_file_of_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    ClientKeys.load_or_create(tmp_path)
    path = tmp_path / "keys" / "box.key"
    path.write_bytes(b"\x01" * size)
    with pytest.raises(KeyFileError, match=f"is {size} bytes"):
        ClientKeys.load_or_create(tmp_path)
    assert path.read_bytes() == b"\x01" * size


def test_folder_open_to_others_is_refused(tmp_path: Path) -> None:
    ClientKeys.load_or_create(tmp_path)
    os.chmod(tmp_path / "keys", 0o755)
    with pytest.raises(KeyFileError, match="mode 0755"):
        ClientKeys.load_or_create(tmp_path)


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    ClientKeys.load_or_create(tmp_path)
    target = tmp_path / "elsewhere.key"
    target.write_bytes(bytes(32))
    os.chmod(target, 0o600)
    link = tmp_path / "keys" / "sign.key"
    link.unlink()
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="not a regular file"):
        ClientKeys.load_or_create(tmp_path)


def test_missing_home_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="home does not exist"):
        ClientKeys.load_or_create(tmp_path / "nope")


def test_a_missing_second_file_is_created_and_the_first_kept(tmp_path: Path) -> None:
    keys = ClientKeys.load_or_create(tmp_path)
    (tmp_path / "keys" / "box.key").unlink()
    again = ClientKeys.load_or_create(tmp_path)
    assert again.sign_public == keys.sign_public
    assert again.box_public != keys.box_public
    assert _mode(tmp_path / "keys" / "box.key") == 0o600


def test_constructor_checks_lengths() -> None:
    with pytest.raises(ValueError, match="sign_private"):
        ClientKeys(b"x" * 31, b"y" * 32)
    with pytest.raises(ValueError, match="box_private"):
        ClientKeys(b"x" * 32, bytearray(32))  # type: ignore[arg-type]
