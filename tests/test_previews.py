"""The owner's previews in low/ (issue 17): always reduced, and a preview an older version cached
at full size is made again instead of being served."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from imgdata import png_bytes
from PIL import Image

import config
from actors.client.client_store import ClientHome
from actors.client.share_owner import OwnerSide
from codec import images


def _owner(root: Path) -> OwnerSide:
    session = SimpleNamespace(home=ClientHome(root), cfg=config.load(None))
    return OwnerSide(session, None)  # previews need no grants


def _size(jpeg: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(jpeg)) as im:
        assert im.format == "JPEG"
        return im.size


def test_previews_are_made_reduced_and_kept_in_low(tmp_path: Path) -> None:
    owner = _owner(tmp_path)
    (tmp_path / "high" / "abra.png").write_bytes(png_bytes(1, 120))
    (prev,) = owner.previews()
    assert prev.image == "abra.png" and _size(prev.jpeg) == (30, 30)
    assert (tmp_path / "low" / "abra.png.jpg").read_bytes() == prev.jpeg
    (again,) = owner.previews()
    assert again.jpeg == prev.jpeg


def test_a_full_size_preview_cached_by_an_older_version_is_not_served(tmp_path: Path) -> None:
    owner = _owner(tmp_path)
    original = png_bytes(2, 120)
    (tmp_path / "high" / "abra.png").write_bytes(original)
    whole = io.BytesIO()  # what the older version stored: the whole 120x120 picture as a JPEG
    Image.open(io.BytesIO(original)).save(whole, format="JPEG", quality=80)
    low = tmp_path / "low" / images.preview_name("abra.png")
    low.write_bytes(whole.getvalue())
    (prev,) = owner.previews()
    assert _size(prev.jpeg) == (30, 30)
    assert _size(low.read_bytes()) == (30, 30)  # replaced on disk too
