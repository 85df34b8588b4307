"""Access control on loopback with 3 real nodes (issue 6): online and offline updates, more
views, durable pending updates across SIGKILL of one and of all nodes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from imgdata import jpeg_bytes

from actors.client.client_store import ClientHome
from benchmarks.localcloud import Cloud, json_lines, stop_shell

pytestmark = pytest.mark.timeout(240)


def _serve(cloud: Cloud, user: str, home: Path, *extra: str) -> subprocess.Popen[str]:
    proc = cloud.spawn_shell(user, home, ["--serve", *extra])
    assert proc.stdout is not None
    assert "online" in proc.stdout.readline()
    return proc


def _ok(cloud: Cloud, user: str, home: Path, cmds: str) -> list[dict]:  # type: ignore[type-arg]
    r = cloud.shell(user, home, cmds)
    assert r.returncode == 0, (cmds, r.stdout, r.stderr)
    return json_lines(r.stdout)


def _views(home: Path) -> int:
    db = ClientHome(home).open_state()
    try:
        rec = db.get_received("alice", "pic.jpg")
        assert rec is not None
        return rec.views_left
    finally:
        db.close()


def _share(cloud: Cloud, tmp: Path, views: int = 2) -> tuple[Path, Path]:
    alice, bob = tmp / "alice", tmp / "bob"
    pic = tmp / "pic.jpg"
    pic.write_bytes(jpeg_bytes(3, 96))
    _ok(cloud, "alice", alice, f"encrypt {pic}")
    serving = _serve(cloud, "alice", alice)
    try:
        _ok(cloud, "bob", bob, f"request alice pic.jpg {views}")
    finally:
        stop_shell(serving)
    return alice, bob


def test_online_changes_take_effect_before_the_owner_command_returns(
        cloud: Cloud, tmp_path: Path) -> None:
    alice, bob = _share(cloud, tmp_path)
    serving = _serve(cloud, "bob", bob)
    try:
        (out,) = _ok(cloud, "alice", alice, "grant bob pic.jpg +3")
        assert out["delivered"] == "now" and _views(bob) == 5
        (out,) = _ok(cloud, "alice", alice, "grant bob pic.jpg -7")  # more than left: floor 0
        assert out["delivered"] == "now" and _views(bob) == 0
        _ok(cloud, "alice", alice, "grant bob pic.jpg +2")
        assert _views(bob) == 2
        (out,) = _ok(cloud, "alice", alice, "grant bob pic.jpg revoke")
        assert out["delivered"] == "now" and _views(bob) == 0
    finally:
        stop_shell(serving)
    view, = _ok(cloud, "bob", bob, "view pic.jpg")
    assert view["shown"] == "default"


def test_offline_borrower_gets_queued_updates_in_order_once(cloud: Cloud, tmp_path: Path) -> None:
    alice, bob = _share(cloud, tmp_path, views=2)
    outs = _ok(cloud, "alice", alice,
               "grant bob pic.jpg +3; grant bob pic.jpg -4; grant bob pic.jpg +1")
    assert [o["delivered"] for o in outs] == ["via cloud"] * 3
    assert [row["pending"] for row in cloud.status()] == [3, 3, 3]  # on every node
    (inbox,) = _ok(cloud, "bob", bob, "inbox")
    # post order: 2 +3 = 5, -4 = 1, +1 = 2 (any other order gives another number)
    assert inbox["images"][0]["views_left"] == 2
    assert [row["pending"] for row in cloud.status()] == [0, 0, 0]  # confirmed, forgotten
    (again,) = _ok(cloud, "bob", bob, "inbox")
    assert again["images"][0]["views_left"] == 2  # nothing applied twice


def test_more_views_while_the_owner_is_offline(cloud: Cloud, tmp_path: Path) -> None:
    alice, bob = _share(cloud, tmp_path, views=1)
    (asked,) = _ok(cloud, "bob", bob, "more alice pic.jpg 3")
    assert asked["delivered"] == "via cloud"
    reqs, approved = _ok(cloud, "alice", alice, "requests; approve 1")
    assert reqs["requests"] == [{"id": 1, "borrower": "bob", "image": "pic.jpg", "views": 3}]
    assert approved["delivered"] == "via cloud"
    (inbox,) = _ok(cloud, "bob", bob, "inbox")
    assert inbox["images"][0]["views_left"] == 4


def test_acked_update_survives_sigkill_of_a_node_and_of_all_nodes(
        cloud: Cloud, tmp_path: Path) -> None:
    alice, bob = _share(cloud, tmp_path, views=1)
    _ok(cloud, "alice", alice, "grant bob pic.jpg +2")
    cloud.kill(1)  # right after acknowledging
    cloud.restart(1)
    cloud.wait_up()
    assert cloud.status()[0]["pending"] == 1
    _ok(cloud, "alice", alice, "grant bob pic.jpg +4")
    for node in (1, 2, 3):
        cloud.kill(node)
    for node in (1, 2, 3):
        cloud.restart(node)
    cloud.wait_up()
    assert [row["pending"] for row in cloud.status()] == [2, 2, 2]
    (inbox,) = _ok(cloud, "bob", bob, "inbox")
    assert inbox["images"][0]["views_left"] == 7
