"""View limits on the borrower's client (issue 10; RELIABILITY 5, TD-3 and TD-4).

One 3-node loopback cloud for the module; alice is an in-process ClientSession (online all along:
she serves image requests and issues access changes); each test has its own borrower, who runs
the real shell (`python -m shell -c ...`) in its own process.

TD-3: restoring the sealed file from before a view, replaying older signed grants (through the
cloud, peer to peer, as an image reply), racing two `view` processes and opening previews never
give views back. Not covered, because not promised (README): restoring an old state.db (or a
row of it), a patched client.
TD-4: viewing (terminal rendering, no display, TMPDIR fresh) leaves no 32-byte window of the
original in any file of the borrower's home or temp folder; an ended grant leaves no key on
disk; a later grant brings a working key back.
Bit flips of a received file's grant region run on an offline borrower (no cloud needed).
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from imgdata import png_bytes
from PIL import Image
from viewkit import (
    HeaderRewriter,
    RaceViewer,
    Windows,
    client_env,
    files_holding,
    offline_borrower,
    received,
    run_shell,
)

import config
from actors import access
from actors.client_session import ClientSession, SessionError
from actors.keys import ClientKeys
from benchmarks.localcloud import Cloud, json_lines
from codec import seal, sharecrypt
from codec.messages import AccessUpdate, Ack, ImageReply, Join, JoinReply, Update
from shell import viewer

pytestmark = pytest.mark.timeout(120)

ORIGINAL = png_bytes(41, 80)  # random pixels: every 32-byte window of it is unique
OTHER = png_bytes(42, 48)
COLUMNS, LINES = 60, 30


@dataclass
class Share:
    cloud: Cloud
    alice: ClientSession
    root: Path


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Share]:
    """The cloud, and alice online with pic.png and other.png in high/ (sealed once)."""
    root = tmp_path_factory.mktemp("viewlimits")
    cloud = Cloud(root, 3)
    alice: ClientSession | None = None
    try:
        cloud.start()
        alice = ClientSession("alice", root / "alice", config.load(cloud.config))
        alice.join()
        for name, data in (("pic.png", ORIGINAL), ("other.png", OTHER)):
            (root / name).write_bytes(data)
            alice.encrypt_file(root / name)
        yield Share(cloud, alice, root)
    finally:
        if alice is not None:
            alice.close()
        cloud.stop()


def _ok(share: Share, user: str, home: Path, cmds: str) -> list[dict]:  # type: ignore[type-arg]
    r = share.cloud.shell(user, home, cmds)
    assert r.returncode == 0, (cmds, r.stdout, r.stderr, _log_lines(share, user))
    return json_lines(r.stdout)


def _log_lines(share: Share, user: str) -> dict[int, list[str]]:
    """The nodes' log lines naming `user` (to diagnose a refused join)."""
    return {
        n: [line for line in share.cloud.log_text(n).splitlines() if user in line][-8:]
        for n in share.cloud.logs
    }


@contextmanager
def _client(share: Share, user: str, home: Path) -> Iterator[ClientSession]:
    """`user`'s client in this process, joined (pending updates applied); leaves at the end."""
    client = ClientSession(user, home, config.load(share.cloud.config))
    try:
        client.join()
        yield client
    finally:
        client.close()


def _borrow(share: Share, user: str, home: Path, views: int) -> None:
    """`user` asks alice for pic.png with `views` views (an in-process client)."""
    with _client(share, user, home) as client:
        client.sharing.request("alice", "pic.png", views)


def _left(home: Path) -> int:
    return received(home, "alice", "pic.png").views_left


def _update(user: str, uid: str, kind: str, delta: int, blob: bytes) -> Update:
    """An access update of alice's pic.png for `user` (what alice's client would send)."""
    return Update(
        id=uid,
        kind=kind,
        owner="alice",
        borrower=user,
        image="pic.png",
        delta=delta,
        addressee=user,
        grant=blob,
        created=time.time(),
    )


# ---- TD-3 ----------------------------------------------------------------------------------------
def test_restoring_the_sealed_file_from_before_a_view_never_restores_views(
    share: Share, tmp_path: Path
) -> None:
    user, bob = "bob-file", tmp_path / "bob"
    _ok(share, user, bob, "request alice pic.png 2")
    path = bob / "received/alice/pic.png"
    before = path.read_bytes()
    v1 = received(bob, "alice", "pic.png").content_key
    assert seal.read_header(before).grant.blob == v1  # type: ignore[union-attr]
    seen: list[object] = []
    for _ in range(3):
        (v,) = _ok(share, user, bob, "view pic.png")
        seen += [(v["shown"], v["views_left"]), _left(bob)]
        path.write_bytes(before)  # the file as it was before any view, signed grant and all
    assert seen == [("image", 1), 1, ("image", 0), 0, ("default", 0), 0]
    assert received(bob, "alice", "pic.png").content_key == b""


def test_replayed_older_signed_grants_never_raise_views(share: Share, tmp_path: Path) -> None:
    user, bob, alice = "bob-replay", tmp_path / "bob", share.alice
    _ok(share, user, bob, "request alice pic.png 3; view pic.png")
    old_png = (bob / "received/alice/pic.png").read_bytes()  # still the version 1 file
    v1 = received(bob, "alice", "pic.png").content_key
    assert alice.sharing.grant(user, "pic.png", "+2")["delivered"] == "via cloud"
    v2 = alice.db.get_given(user, "pic.png").grant  # type: ignore[union-attr]
    alice.sharing.grant(user, "pic.png", "-3")  # version 3: 2 views in all

    # 1. the borrower's client applies +2 and -3 at join (2 + 2 - 3 = 1 left), then posts old
    # grants under new ids to the cloud, which hands them to his client at the next join
    with _client(share, user, bob) as attacker:
        assert (_left(bob), received(bob, "alice", "pic.png").version) == (1, 3)
        for n, (kind, delta, blob) in enumerate(
            [("grant", 3, v1), ("grant", 2, v2), ("approve", 5, v2), ("grant", 0, v2)]
        ):
            attacker.post_update(_update(user, f"alice#{5000 + n}", kind, delta, blob))
    (inbox,) = _ok(share, user, bob, "inbox")
    assert inbox["images"][0]["views_left"] == 1 == _left(bob)

    # 2. an on-path replayer with alice's token sends the old grant peer to peer
    serving = share.cloud.spawn_shell(user, bob, ["--serve"])
    try:
        assert serving.stdout is not None and "online" in serving.stdout.readline()
        entry = alice.lookup(user, refresh=True)
        assert entry is not None
        tok, upd = alice.require_token(), _update(user, alice.next_rid(), "grant", 2, v2)
        reply = alice.call(
            lambda rid, _a: AccessUpdate(rid=rid, user="alice", token=tok, update=upd),
            targets=[(entry.host, entry.port)],
            deadline_s=10,
            rid=upd.id,
        )
        assert isinstance(reply, Ack)
    finally:
        serving.terminate()
        serving.communicate(timeout=15)
    assert _left(bob) == 1

    # 3. the first sealed file (version 1) offered again as an image reply
    again = ClientSession(user, bob, config.load(share.cloud.config))
    try:
        with pytest.raises(SessionError) as err:
            again.sharing.store_received(
                "alice", ImageReply(rid="alice#1", image="pic.png", sealed=old_png, grant=v1)
            )
        assert err.value.code == "stale_grant"
    finally:
        again.close()
    rec = received(bob, "alice", "pic.png")
    assert (rec.views_left, rec.version) == (1, 3)


def _race_pair(share: Share, user: str, home: Path) -> list[str]:
    """Two viewer processes, started and then released together; what each was shown."""
    racers = [RaceViewer(user, home, share.cloud.config, "pic.png") for _ in range(2)]
    try:
        for r in racers:
            r.wait_ready()
        for r in racers:
            r.go()
        results = [r.result() for r in racers]
    finally:
        for r in racers:
            r.kill()
    return sorted(str(r["shown"]) for r in results)


def test_two_views_racing_use_one_view_each_never_more(share: Share, tmp_path: Path) -> None:
    user, bob = "bob-race", tmp_path / "bob"
    _ok(share, user, bob, "request alice pic.png 3")
    # two `view` shells started together (the second may be refused at join: exit 3)
    procs = [share.cloud.spawn_shell(user, bob, ["-c", "view pic.png", "--json"]) for _ in range(2)]
    outs = [(p.communicate(timeout=60)[0], p.returncode) for p in procs]
    assert {rc for _, rc in outs} <= {0, 3}, outs
    shown = [json_lines(out)[0]["shown"] for out, rc in outs if rc == 0]
    assert shown == ["image"] * len(shown) and len(shown) >= 1
    assert _left(bob) == 3 - len(shown)
    if len(shown) == 1:  # the second shell was refused at join: race two clients on 2 views
        assert _race_pair(share, user, bob) == ["image", "image"]
        share.alice.sharing.grant(user, "pic.png", "+1")
        _ok(share, user, bob, "inbox")
    # one view left, two client processes released together on state.db: exactly one shows it
    assert _left(bob) == 1
    assert _race_pair(share, user, bob) == ["default", "image"]
    assert _left(bob) == 0


def test_browsing_and_opening_previews_never_uses_a_view(share: Share, tmp_path: Path) -> None:
    user, bob = "bob-preview", tmp_path / "bob"
    _ok(share, user, bob, "request alice pic.png 1")
    sealed = (bob / "received/alice/pic.png").read_bytes()
    r = share.cloud.shell(user, bob, "browse alice; inbox; browse alice; view other.png")
    assert r.returncode == 1, r.stderr  # the last command fails: other.png was only previewed
    first, inbox, second, view = json_lines(r.stdout)
    assert sorted(p["image"] for p in first["previews"]) == ["other.png", "pic.png"]
    assert first == second and inbox["images"][0]["views_left"] == 1
    assert view["code"] == "no_such_image"
    for p in first["previews"]:
        with Image.open(bob / p["path"]) as im:
            im.load()
            assert im.format == "JPEG" and max(im.size) <= 80
    assert _left(bob) == 1
    assert (bob / "received/alice/pic.png").read_bytes() == sealed


# ---- TD-4 ----------------------------------------------------------------------------------------
def _arts(stdout: str) -> tuple[list[str], list[str]]:
    """Terminal pictures (one string per picture) and the other lines of a shell's stdout."""
    arts: list[str] = []
    text: list[str] = []
    lines: list[str] = []
    for line in stdout.splitlines() + [""]:
        if line.startswith("\x1b[38;2;"):
            lines.append(line)
            continue
        if lines:
            arts.append("\n".join(lines))
            lines = []
        if line:
            text.append(line)
    return arts, text


def _content_key(home: Path) -> bytes:
    """The clear content key of the live grant, unwrapped with the borrower's keys."""
    g = sharecrypt.SignedGrant.decode(received(home, "alice", "pic.png").content_key)
    return sharecrypt.open_content_key(g, ClientKeys.load_or_create(home))


def test_window_finder_finds_32_bytes_of_the_original_and_not_31() -> None:
    windows = Windows(ORIGINAL)
    noise = random.Random(3).randbytes(100)
    for start in (1, 5, 16, 1000, len(ORIGINAL) - 33):
        before = bytes([ORIGINAL[start - 1] ^ 0xFF])
        after = bytes([ORIGINAL[start + 32] ^ 0xFF])
        assert windows.find(noise + before + ORIGINAL[start : start + 32] + after + noise) == 101
        assert windows.find(noise + before + ORIGINAL[start : start + 31] + after + noise) is None
        assert windows.find(noise + before + ORIGINAL[start : start + 31] + noise) is None
    assert windows.find(ORIGINAL) == 0 and windows.find(b"") is None


def test_viewing_leaves_no_plaintext_and_an_ended_grant_no_key(
    share: Share, tmp_path: Path
) -> None:
    user, bob, tmp = "bob-td4", tmp_path / "bob", tmp_path / "tmp"
    tmp.mkdir()
    env = client_env(tmp, COLUMNS, LINES)
    r = run_shell(share.cloud, user, bob, "browse alice; request alice pic.png 2", env=env)
    assert r.returncode == 0, r.stderr
    windows = Windows(ORIGINAL)
    assert windows.files_holding(share.alice.home.root) == [
        str(share.alice.home.root / "high/pic.png")
    ]  # control: the finder finds the original
    key = _content_key(bob)
    wrapped = sharecrypt.SignedGrant.decode(received(bob, "alice", "pic.png").content_key)
    holders = files_holding(wrapped.wrapped_key, bob)  # control: the wrapped key is in state.db
    assert holders and all(Path(h).name.startswith("state.db") for h in holders)

    r = run_shell(
        share.cloud, user, bob, "view pic.png; view pic.png; view pic.png", env=env, json_out=False
    )
    assert r.returncode == 0, r.stderr
    arts, text = _arts(r.stdout)
    expected = viewer.terminal_art(
        Image.open(io.BytesIO(ORIGINAL)).convert("RGB"), COLUMNS, LINES - 4
    )
    assert len(expected.splitlines()) == 26 and len(arts) == 3
    assert arts[:2] == [expected, expected] and arts[2] != expected
    assert text == [
        "alice/pic.png: 1 views left",
        "alice/pic.png: 0 views left",
        "alice/pic.png: no views left; ask for more: more alice pic.png N",
    ]

    assert windows.files_holding(bob, tmp) == []
    assert files_holding(key, bob, tmp) == []
    assert files_holding(wrapped.wrapped_key, bob, tmp) == []
    assert received(bob, "alice", "pic.png").content_key == b""
    assert seal.read_header((bob / "received/alice/pic.png").read_bytes()).grant == seal.Grant(
        "alice", user, "pic.png", 0
    )

    # a later grant from the owner brings a working key back
    share.alice.sharing.grant(user, "pic.png", "+2")
    r = run_shell(share.cloud, user, bob, "view pic.png", env=env, json_out=False)
    assert r.returncode == 0, r.stderr
    assert _arts(r.stdout) == ([expected], ["alice/pic.png: 1 views left"])
    assert _content_key(bob) == key
    assert windows.files_holding(bob, tmp) == [] and files_holding(key, bob, tmp) == []


@pytest.mark.xfail(
    strict=True,
    reason=(
        "product bug: an update that ends the grant (revoke; also -N down to 0) wipes the "
        "wrapped key from state.db (StateDB.apply_update keeps b'') but "
        "Sharing.apply_updates never rewrites the sealed file: received/<owner>/<image> keeps "
        "the signed grant with the wrapped key until the next `view` reaches Grants.end()"
    ),
)
def test_a_grant_revoked_by_the_owner_leaves_no_key_in_the_file(
    share: Share, tmp_path: Path
) -> None:
    user, bob = "bob-end", tmp_path / "bob"
    _borrow(share, user, bob, 2)
    share.alice.sharing.grant(user, "pic.png", "revoke")
    with _client(share, user, bob):  # applies the revoke at join
        assert _left(bob) == 0
    assert received(bob, "alice", "pic.png").content_key == b""
    header = seal.read_header((bob / "received/alice/pic.png").read_bytes())
    assert header.grant is not None and header.grant.blob == b""


@pytest.mark.xfail(
    strict=True,
    reason=(
        "product bug: after a revoke the borrower's grant is 'ended' and ignores later updates "
        "(access.GrantState.apply), but the owner's `grant USER IMAGE +2` re-signs a grant of 2 "
        "views (Grants.reissue from 0) and reports 'views now 2': the borrower keeps 0 views and "
        "no key. Either the owner must refuse (say: share again) or the borrower must apply it"
    ),
)
def test_a_grant_after_a_revoke_brings_a_working_key_back(share: Share, tmp_path: Path) -> None:
    user, bob = "bob-regrant", tmp_path / "bob"
    _borrow(share, user, bob, 2)
    share.alice.sharing.grant(user, "pic.png", "revoke")
    assert share.alice.sharing.grant(user, "pic.png", "+2")["views"] == 2
    with _client(share, user, bob) as client:  # both applied at join, in order
        assert _left(bob) == 2
        view, _picture = client.sharing.view("pic.png")
    assert (view["shown"], view["views_left"]) == ("image", 1)


# ---- forged updates (the borrower posts to the cloud under the owner's ids) --------------------
@pytest.mark.xfail(
    strict=True,
    reason=(
        "product bug: StateDB.apply_update computes the views left from the update's UNSIGNED "
        "delta (capped at the signed total) instead of the signed change "
        "(sharecrypt.views_left_after): a borrower who re-posts a pending signed update with "
        "delta +1000 gets the whole signed total (3) instead of the 1 view alice added"
    ),
)
def test_an_edited_delta_on_a_signed_update_gives_no_extra_views(
    share: Share, tmp_path: Path
) -> None:
    user, bob = "bob-delta", tmp_path / "bob"
    with _client(share, user, bob) as client:
        client.sharing.request("alice", "pic.png", 2)
        assert [client.sharing.view("pic.png")[0]["views_left"] for _ in range(2)] == [1, 0]
    share.alice.sharing.grant(user, "pic.png", "+1")  # signed: 3 views in all, i.e. 1 left
    attacker = ClientSession(user, bob, config.load(share.cloud.config))
    try:  # join by hand: read the pending update without applying or confirming it
        sign, box = attacker.sharing.public_keys()
        reply = attacker.call(lambda rid, _a: Join(rid=rid, user=user, sign_key=sign, box_key=box))
        assert isinstance(reply, JoinReply) and len(reply.updates) == 1
        attacker.token = reply.token
        real = reply.updates[0]
        attacker.post_update(_update(user, "alice#0", "grant", 1000, real.grant))
    finally:
        attacker.close()
    with _client(share, user, bob):  # the official client applies both at join
        assert _left(bob) == 1


@pytest.mark.xfail(
    strict=True,
    reason=(
        "product bug: a node accepts a PostUpdate from the borrower carrying the owner's id "
        "('alice#N': node_parts only checks that the poster is owner or borrower), and "
        "alice's real revoke under that id is then dropped as a duplicate (PendingStore.add keeps "
        "the first update of an id; Sharing.apply_updates also records the id of an unsigned or "
        "refused update as applied) and bob keeps his views"
    ),
)
def test_updates_posted_under_the_owners_next_ids_do_not_block_a_revoke(
    share: Share, tmp_path: Path
) -> None:
    user, bob, alice = "bob-squat", tmp_path / "bob", share.alice
    with _client(share, user, bob) as client:
        client.sharing.request("alice", "pic.png", 2)
        n = alice.db.last_request_number("alice")  # ids are sequential: easy to guess ahead
        for k in range(n + 1, n + 6):
            client.post_update(_update(user, f"alice#{k}", "deny", 0, b""))
    alice.sharing.grant(user, "pic.png", "revoke")
    with _client(share, user, bob):
        assert _left(bob) == 0


# ---- bit flips in a received file's grant region (offline borrower) -----------------------------
@pytest.fixture
def offline_bob(tmp_path: Path) -> Iterator[tuple[ClientSession, bytes]]:
    """bob's client holding alice's pic.png with access.MAX_VIEWS views (no cloud)."""
    with offline_borrower(tmp_path / "bob", ORIGINAL, access.MAX_VIEWS) as held:
        yield held


def _view_flipped(bob: ClientSession, path: Path, png: bytes) -> tuple[str, int]:
    """Write the flipped file, view it: ("refused" | shown, views used)."""
    path.write_bytes(png)
    before = bob.db.get_received("alice", "pic.png").views_left  # type: ignore[union-attr]
    try:
        data, picture = bob.sharing.view("pic.png")
        outcome = str(data["shown"])
        if outcome == "image":
            assert picture.tobytes() == PIXELS
    except seal.SealError:
        outcome = "refused"
    after = bob.db.get_received("alice", "pic.png").views_left  # type: ignore[union-attr]
    return outcome, before - after


PIXELS = Image.open(io.BytesIO(ORIGINAL)).convert("RGB").tobytes()


def test_every_bit_flip_of_the_grant_region_in_the_file_is_refused(
    offline_bob: tuple[ClientSession, bytes],
) -> None:
    """All 1752 bits of the grant region (outer fields and signed grant), flipped one at a time
    in the PNG samples: the header checksum refuses each; never the picture."""
    bob, png = offline_bob
    path = bob.home.root / "received/alice/pic.png"
    rw = HeaderRewriter(png)
    assert rw.grant_len == 1 + 6 + 4 + 8 + 6 + 194
    assert _view_flipped(bob, path, rw.with_bits_flipped([])) == ("image", 1)  # control
    outcomes: Counter[tuple[str, int]] = Counter()
    for bit in range(8 * rw.grant_at, 8 * (rw.grant_at + rw.grant_len)):
        outcomes[_view_flipped(bob, path, rw.with_bits_flipped([bit]))] += 1
    assert sum(outcomes.values()) == 1752
    assert {o for o, _ in outcomes} == {"refused"}, outcomes
    assert {used for _, used in outcomes} <= {0, 1}  # a view may be spent, never given back


def test_grant_region_flips_with_a_fixed_checksum_never_add_views(
    offline_bob: tuple[ClientSession, bytes],
) -> None:
    """Every 7th bit of the grant region flipped by someone who recomputes the header checksum
    (251 flips): refused, or the picture for exactly one view of state.db's count (the file's
    grant is not what counts)."""
    bob, png = offline_bob
    path = bob.home.root / "received/alice/pic.png"
    rw = HeaderRewriter(png)
    outcomes: Counter[tuple[str, int]] = Counter()
    for bit in range(8 * rw.grant_at, 8 * (rw.grant_at + rw.grant_len), 7):
        body = bytearray(rw.header[:-16])
        body[bit // 8] ^= 0x80 >> (bit % 8)
        header = bytes(body) + hashlib.sha256(body).digest()[:16]
        outcomes[_view_flipped(bob, path, rw.with_header(header))] += 1
    assert sum(outcomes.values()) == 251
    assert set(outcomes) <= {("refused", 0), ("refused", 1), ("image", 1)}, outcomes
    assert outcomes[("image", 1)] > 0 and outcomes[("refused", 0)] + outcomes[("refused", 1)] > 0
