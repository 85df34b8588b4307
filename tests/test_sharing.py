"""Directory and peer-to-peer sharing on loopback with 3 real nodes (issues 5 and 10).

alice encrypts and serves; bob finds her, browses, requests, views. The shared payload is
encrypted for bob (issue 10): what bob's client decrypts for viewing equals alice's original.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from imgdata import jpeg_bytes
from shell_fakes import wait_for

import config
from actors.client.client_session import ClientSession, SessionError
from benchmarks.localcloud import Cloud, json_lines, serve_shell, stop_shell
from codec import images, seal
from codec.messages import ImageRequest, PreviewRequest

pytestmark = pytest.mark.timeout(180)


def _decrypted(home: Path, cfg_path: Path, user: str, owner: str, image: str) -> bytes:
    """What the borrower's client decrypts for viewing (through its own state.db and keys)."""
    from actors.client.client_store import ClientHome
    from actors.client.keys import ClientKeys
    from codec import sharecrypt

    h = ClientHome(home)
    db = h.open_state()
    try:
        rec = db.get_received(owner, image)
        assert rec is not None and rec.content_key
        g = sharecrypt.SignedGrant.decode(rec.content_key)
        keys = ClientKeys.load_or_create(h.root)
        payload = seal.unseal((h.root / rec.path).read_bytes()).payload
        return sharecrypt.open_payload(g, payload, sharecrypt.open_content_key(g, keys))
    finally:
        db.close()


def test_browse_request_view_until_the_default_image(cloud: Cloud, tmp_path: Path) -> None:
    pic = tmp_path / "pic.jpg"
    original = jpeg_bytes(7, 160)
    pic.write_bytes(original)
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    assert cloud.shell("alice", alice_home, f"encrypt {pic}").returncode == 0
    alice = serve_shell(cloud, "alice", alice_home)
    try:
        r = cloud.shell("bob", bob_home, "users; browse alice; request alice pic.jpg 2; inbox")
        assert r.returncode == 0, r.stderr
        users, browse, got, inbox = json_lines(r.stdout)
        assert {"alice", "bob"} <= {u["user"] for u in users["users"]}
        assert browse["previews"][0]["image"] == "pic.jpg"
        preview = (bob_home / browse["previews"][0]["path"]).read_bytes()
        assert preview[:2] == b"\xff\xd8"
        assert images.probe(preview, 10**6)[1:] == (40, 40)  # a quarter of the 160x160 original
        assert got["path"] == "received/alice/pic.png" and got["views_left"] == 2
        assert inbox["images"][0]["views_left"] == 2
        sealed = (bob_home / "received/alice/pic.png").read_bytes()
        assert seal.unseal(sealed).payload != original  # the file alone does not give it away
        assert _decrypted(bob_home, cloud.config, "bob", "alice", "pic.jpg") == original
        r = cloud.shell("bob", bob_home, "view pic.jpg; inbox; view pic.jpg; inbox; view pic.jpg")
        assert r.returncode == 0, r.stderr
        v1, i1, v2, i2, v3 = json_lines(r.stdout)
        assert (v1["shown"], v1["views_left"], i1["images"][0]["views_left"]) == ("image", 1, 1)
        assert (v2["shown"], v2["views_left"], i2["images"][0]["views_left"]) == ("image", 0, 0)
        assert v3["shown"] == "default" and "more alice pic.jpg" in v3["hint"]
    finally:
        stop_shell(alice)


def test_peer_request_with_wrong_or_missing_token_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    pic = tmp_path / "pic.jpg"
    pic.write_bytes(jpeg_bytes(8))
    alice_home = tmp_path / "alice"
    assert cloud.shell("alice", alice_home, f"encrypt {pic}").returncode == 0
    alice = serve_shell(cloud, "alice", alice_home)
    cfg = config.load(cloud.config)
    mallory = ClientSession("bob", tmp_path / "mallory", cfg)
    try:
        mallory.join()
        entry = mallory.lookup("alice", refresh=True)
        assert entry is not None
        addr = (entry.host, entry.port)
        for token in (b"\0" * 16, os.urandom(16)):
            for build in (lambda rid: PreviewRequest(rid=rid, user="bob", token=token),
                          lambda rid: ImageRequest(rid=rid, user="bob", token=token,
                                                   image="pic.jpg", views=1, days=0.0)):
                with pytest.raises(SessionError) as err:
                    mallory.call(lambda rid, _a: build(rid), targets=[addr], deadline_s=5)
                assert err.value.code == "bad_token"
        assert not (tmp_path / "mallory" / "received" / "alice").exists()
        assert list((alice_home / "low").iterdir()) == []  # nothing made for a refused peer
    finally:
        mallory.close()
        stop_shell(alice)


BAD_NAMES = ["../x.jpg", "/etc/passwd", "a/b.jpg", "..", ".hidden"]


@pytest.fixture(scope="module")
def names_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """One cloud for the refusal cases: each is only refused, by a user of its own."""
    c = Cloud(tmp_path_factory.mktemp("names"), 3)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_image_names_refused_before_any_file_is_touched(names_cloud: Cloud, tmp_path: Path,
                                                            name: str) -> None:
    home = tmp_path / "bob"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # a user per case: one name from another home is refused at join (its keys are pinned)
    user = f"bob{BAD_NAMES.index(name)}"
    r = names_cloud.shell(user, home, f"request alice '{name}' 1; view '{name}'")
    assert r.returncode != 0
    outs = json_lines(r.stdout)
    assert len(outs) == 2, r.stderr  # both commands ran (and were refused)
    for out in outs:
        assert "error" in out
    after = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert not any(".." in str(p) or "passwd" in str(p) for p in after)
    assert set(before) <= after


def test_killed_client_expires_and_leaving_is_immediate(
        cloud_factory: object, tmp_path: Path) -> None:
    cloud: Cloud = cloud_factory(sections={"directory": {"ttl_s": 2.0, "heartbeat_s": 0.5}})  # type: ignore[operator]
    carol = serve_shell(cloud, "carol", tmp_path / "carol")
    dave = serve_shell(cloud, "dave", tmp_path / "dave")

    def online() -> set[str]:
        r = cloud.shell("eve", tmp_path / "eve", "users")
        return {u["user"] for u in json_lines(r.stdout)[0]["users"]}

    assert {"carol", "dave"} <= online()
    carol.send_signal(signal.SIGKILL)
    carol.wait(timeout=5)
    stop_shell(dave)  # leaves at once
    assert "dave" not in online()
    # her heartbeats stopped: the nodes drop her once her TTL runs out (the TTL arithmetic is
    # test_directory's, on a fake clock; here each poll starts a process, so no clock bound)
    wait_for(lambda: "carol" not in online())


def test_second_session_of_an_online_user_is_refused(cloud: Cloud, tmp_path: Path) -> None:
    """From another home (the same home hands its commands over: tests/test_handoff_cloud.py)."""
    alice = serve_shell(cloud, "alice", tmp_path / "alice")
    try:
        r = cloud.shell("alice", tmp_path / "alice-elsewhere", "users")
        assert r.returncode == 3
        assert "already online" in r.stderr and "Traceback" not in r.stderr
    finally:
        stop_shell(alice)


def test_a_crashed_session_does_not_lock_its_user_out(cloud: Cloud, tmp_path: Path) -> None:
    """The nodes probe the old address of a user who joins again: a dead session (SIGKILL) is
    replaced at once; a live one still refuses the newcomer (previous test)."""
    alice = serve_shell(cloud, "alice", tmp_path / "alice")
    alice.send_signal(signal.SIGKILL)
    alice.wait(timeout=5)
    r = cloud.shell("alice", tmp_path / "alice", "users")
    assert r.returncode == 0, r.stderr
    users = json_lines(r.stdout)[0]["users"]
    assert [u["user"] for u in users] == ["alice"]  # the new session, not the dead one


def test_your_own_name_browses_locally_and_is_never_asked_over_the_network(
        names_cloud: Cloud, tmp_path: Path) -> None:
    """browse/request/view of your own user name: your own previews (what peers see), a clear
    refusal to borrow your own image, a hint where its original is. Sent to your own address, a
    request was read back by your own socket as its answer ("unexpected answer to browse")."""
    pic = tmp_path / "pic.jpg"
    pic.write_bytes(jpeg_bytes(9, 120))
    home = tmp_path / "selfie"
    assert names_cloud.shell("selfie", home, f"encrypt {pic}").returncode == 0
    r = names_cloud.shell("selfie", home, "browse selfie; request selfie pic.jpg 2; "
                          "request selfie nope.jpg; view pic.jpg")
    browse, request, nope, view = json_lines(r.stdout)
    assert [p["image"] for p in browse["previews"]] == ["pic.jpg"], r.stderr
    assert (home / browse["previews"][0]["path"]).read_bytes()[:2] == b"\xff\xd8"
    assert request["code"] == "yourself" and "high/pic.jpg" in request["error"]
    assert nope["code"] == "yourself" and "nope.jpg" in nope["error"]
    assert view["code"] == "no_such_image" and "your own image" in view["error"]
    assert not (home / "received").exists() or not any((home / "received").iterdir())
