"""The cloud end to end on loopback: encrypt through 3 real node processes (issue 4)."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.localcloud import Cloud, json_lines
from codec import seal
from imgdata import jpeg_bytes, png_bytes, windows_found

pytestmark = pytest.mark.timeout(240)


def test_shell_encrypt_stores_sealed_copies_that_unseal_to_the_originals(
        cloud: Cloud, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.jpg"
    a.write_bytes(png_bytes(1))
    b.write_bytes(jpeg_bytes(2))
    home = tmp_path / "H"
    r = cloud.shell("alice", home, f"encrypt {a} {b}", json_out=False)
    assert r.returncode == 0, r.stderr
    for name, original in (("a.png", a), ("b.png", b)):
        sealed = (home / "encrypted" / name).read_bytes()
        assert seal.unseal(sealed).payload == original.read_bytes()


def test_not_an_image_is_refused_with_a_clear_message_and_exit_status(
        cloud: Cloud, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a picture")
    good = tmp_path / "ok.png"
    good.write_bytes(png_bytes(3))
    r = cloud.shell("alice", tmp_path / "H", f"encrypt {bad} {good}")
    assert r.returncode == 1
    (out,) = json_lines(r.stdout)
    assert [e["file"] for e in out["encrypted"]] == ["ok.png"]
    assert out["failed"][0]["file"] == "notes.txt" and "image" in out["failed"][0]["error"]
    assert "Traceback" not in r.stderr


def test_six_clients_hundred_images_each_answered_once_bit_exact_and_spread(
        cloud: Cloud, tmp_path: Path) -> None:
    clients, per_client = 6, 100
    procs, files = [], {}
    for c in range(clients):
        folder = tmp_path / f"in{c}"
        folder.mkdir()
        names = []
        for i in range(per_client):
            p = folder / f"img{i:03d}.png"
            p.write_bytes(png_bytes(1000 * c + i))
            names.append(str(p))
        files[c] = names
        procs.append(cloud.spawn_shell(f"user{c}", tmp_path / f"home{c}",
                                       ["-c", "encrypt " + " ".join(names), "--json"]))
    by_node: Counter[int] = Counter()
    originals = []
    for c, proc in enumerate(procs):
        out, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, err[-2000:]
        (result,) = json_lines(out)
        assert result["failed"] == []
        assert len(result["encrypted"]) == per_client  # one reply kept per request
        for row, path in zip(result["encrypted"], files[c]):
            original = Path(path).read_bytes()
            originals.append(original)
            sealed = (tmp_path / f"home{c}" / row["path"]).read_bytes()
            assert seal.unseal(sealed).payload == original
            by_node[row["node"]] += 1
    total = clients * per_client
    shares = {n: by_node[n] / total for n in (1, 2, 3)}
    assert all(0.25 <= s <= 0.42 for s in shares.values()), shares
    status = cloud.status()
    assert [row["cached"] for row in status] == [0, 0, 0]
    assert sum(row["served"] for row in status) >= total
    data_dirs = [cloud.root / f"data-{i}" for i in (1, 2, 3)]
    for d in data_dirs:
        assert windows_found(originals, d) == []
