"""What the shell says about views (issue 17, items 8 and 9): counts with the right noun,
`revoked` instead of `0 of 0`, the owner's `grant` and `shared` saying "granted N in total" and
the borrower's views left as last reported, `+0` refused before anything is sent, `--version`.

The commands run on a real client home and state.db (tests/shell_fakes.FakeSession) with the
sharing flows replaced by a recorder: these tests are about words, the cloud tests about flows.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import pytest
from shell_fakes import FakeSession

from actors.client.client_session import ClientSession
from actors.client.client_store import GivenGrant, ReceivedGrant
from actors.client.peer import Sharing, parse_change
from actors.core.access import AccessError
from benchmarks.localcloud import REPO, env
from shell import render
from shell.commands import Context, run_line

AT = 1_767_225_600.0  # a report's time (2026-01-01 00:00 UTC)


class Recorder:
    """Stands in for Sharing: answers `grant`, `view`, `request` and `more` as told."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.answers: dict[str, Any] = {}
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, *args))
            answer = self.answers[name]
            return answer(*args) if callable(answer) else answer

        return call


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSession]:
    s = FakeSession(tmp_path / "home", user="alice")
    s.sharing = Recorder(s.sharing.owner)  # type: ignore[assignment]
    yield s
    s.close()


def run(fake: FakeSession, line: str) -> Any:
    return run_line(Context(cast(ClientSession, fake)), line)


def test_counts_take_the_right_noun() -> None:
    assert [render.plural(n, "view") for n in (0, 1, 2, -1)] == [
        "0 views", "1 view", "2 views", "-1 view"]
    assert render.noun(1, "image") == "image" and render.noun(3, "image") == "images"


def test_request_and_more_say_1_view(fake: FakeSession) -> None:
    fake.sharing.answers["request"] = {"owner": "bob", "image": "p.jpg", "views_left": 1,
                                       "views": 1, "views_total": 1, "expires": 0.0,
                                       "path": "received/bob/p.png"}
    assert run(fake, "request bob p.jpg").text == "bob/p.jpg: 1 view -> received/bob/p.png"
    fake.sharing.answers["more"] = {"id": "alice#3", "delivered": "now", "to": "bob"}
    assert run(fake, "more bob p.jpg 1").text == "asked bob for 1 more view of p.jpg (now)"
    assert run(fake, "more bob p.jpg 2").text == "asked bob for 2 more views of p.jpg (now)"


def test_inbox_says_revoked_not_0_of_0(fake: FakeSession) -> None:
    fake.sharing.answers["inbox_rows"] = [
        {"owner": "bob", "image": "a.jpg", "views_left": 0, "views_total": 0, "expires": 0.0,
         "path": "received/bob/a.png", "revoked": True, "expired": False},
        {"owner": "bob", "image": "b.jpg", "views_left": 0, "views_total": 2, "expires": 0.0,
         "path": "received/bob/b.png", "revoked": False, "expired": False},
    ]
    lines = run(fake, "inbox").text.splitlines()
    assert lines[2].split() == ["bob", "a.jpg", "revoked", "never", "received/bob/a.png"]
    assert lines[3].split() == ["bob", "b.jpg", "0", "of", "2", "never", "received/bob/b.png"]


def test_the_borrowers_inbox_rows_carry_revoked(tmp_path: Path) -> None:
    s = FakeSession(tmp_path / "home", user="bob")
    try:
        s.db.put_received(ReceivedGrant("alice", "a.jpg", 0, 2, "received/alice/a.png",
                                        ended=True, views_total=0))
        s.db.put_received(ReceivedGrant("alice", "b.jpg", 0, 2, "received/alice/b.png",
                                        views_total=3))
        rows = Sharing.inbox_rows(cast(Sharing, type("S", (), {"s": s})()))
        assert [(r["image"], r["revoked"], r["expired"]) for r in rows] == [
            ("a.jpg", True, False), ("b.jpg", False, False)]
    finally:
        s.close()


def _given(fake: FakeSession, borrower: str, image: str, total: int, ever: int) -> None:
    fake.db.put_given(GivenGrant(borrower, image, ever, total, 1))


def test_grant_says_granted_in_total_and_the_borrowers_views_left(fake: FakeSession) -> None:
    _given(fake, "bob", "pic1.jpg", 5, 5)

    def granted(borrower: str, image: str, change: str) -> dict[str, Any]:
        fake.db.report_views(borrower, image, 4, AT)  # what Sharing does on UpdateApplied
        return {"id": "alice#7", "delivered": "now", "to": borrower, "views": 5,
                "borrower_views_left": 4}

    fake.sharing.answers["grant"] = granted
    out = run(fake, "grant bob pic1.jpg +3")
    assert out.ok and out.text == "bob/pic1.jpg: +3 views (now); granted 5 in total; bob has 4 views left"
    assert out.data == {"id": "alice#7", "delivered": "now", "to": "bob", "views": 5,
                        "views_total": 5, "revoked": False, "borrower_views_left": 4,
                        "reported": AT}


def test_grant_through_the_cloud_gives_the_last_report_and_its_time(fake: FakeSession) -> None:
    fake.db.report_views("bob", "pic1.jpg", 1, AT)
    fake.sharing.answers["grant"] = {"id": "alice#8", "delivered": "via cloud", "to": "bob",
                                     "views": 4}
    out = run(fake, "grant bob pic1.jpg -1")
    when = render_when(AT)
    assert out.text == (f"bob/pic1.jpg: -1 view (via cloud); granted 4 in total; bob had 1 view "
                        f"left at {when} (last report)")
    assert (out.data["borrower_views_left"], out.data["reported"]) == (1, AT)
    fake.sharing.answers["grant"] = {"id": "alice#9", "delivered": "via cloud", "to": "carol",
                                     "views": 2}
    out = run(fake, "grant carol pic1.jpg +1")  # carol never reported
    assert out.text == "carol/pic1.jpg: +1 view (via cloud); granted 2 in total"
    assert (out.data["borrower_views_left"], out.data["reported"]) == (None, None)


def test_grant_revoke_says_revoked(fake: FakeSession) -> None:
    fake.sharing.answers["grant"] = {"id": "alice#10", "delivered": "now", "to": "bob",
                                     "views": 0, "borrower_views_left": 0}
    fake.db.report_views("bob", "pic1.jpg", 0, AT)
    out = run(fake, "grant bob pic1.jpg revoke")
    assert out.text == "bob/pic1.jpg: revoked (now)"
    assert out.data["revoked"] is True and out.data["views_total"] == 0


def test_shared_table_and_json(fake: FakeSession) -> None:
    _given(fake, "bob", "pic1.jpg", 5, 5)
    _given(fake, "bob", "cat.png", 0, 2)  # revoked
    _given(fake, "carol", "pic1.jpg", 1, 1)
    fake.db.report_views("bob", "pic1.jpg", 4, AT)
    fake.db.report_views("bob", "cat.png", 1, AT)  # before the revoke: not shown in the table
    out = run(fake, "shared")
    lines = out.text.splitlines()
    assert lines[0].split() == ["borrower", "image", "granted", "in", "total", "views", "left",
                                "as", "reported", "at"]
    assert lines[2].split() == ["bob", "cat.png", "revoked", "-", "-"]
    assert lines[3].split() == ["bob", "pic1.jpg", "5", "4", *render_when(AT).split()]
    assert lines[4].split() == ["carol", "pic1.jpg", "1", "?", "-"]
    assert out.data["shared"][1] == {"borrower": "bob", "image": "pic1.jpg", "views": 5,
                                     "granted": 5, "views_total": 5, "revoked": False,
                                     "borrower_views_left": 4, "reported": AT}
    assert out.data["shared"][0]["revoked"] is True
    assert out.data["shared"][0]["borrower_views_left"] == 1  # the JSON keeps the report


@pytest.mark.parametrize("change", ["+0", "-0", "+00"])
def test_a_change_of_zero_is_refused_before_anything_is_sent(change: str) -> None:
    with pytest.raises(AccessError, match="change nothing"):
        parse_change(change)
    sharing = Sharing(cast(Any, object()), cast(Any, object()))  # any use would raise
    try:
        with pytest.raises(AccessError, match="change nothing"):
            sharing.grant("bob", "pic1.jpg", change)
    finally:
        sharing.close()
    assert parse_change("+1") == ("grant", 1) and parse_change("-2") == ("grant", -2)


def test_version_comes_from_the_package_metadata() -> None:
    r = subprocess.run([sys.executable, "-m", "shell", "--version"], capture_output=True,
                       text=True, env=env(), cwd=str(REPO), timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"veilshare {metadata.version('veilshare')}\n"


def render_when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
