"""One `encrypt` of several files keeps up to `in_flight` of them sealing at once
(ClientSession.encrypt): a real ClientSession over a FakeTransport, the test plays the cloud and
answers out of order. The names are the ones a one-by-one run gives (two files of one name in
different folders get `a.png` and `a-2.png` although neither's high/ copy exists yet when the
other is named), the rows come in the order given, a place frees only when a reply came."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgdata import png_bytes
from session_kit import joined_session

from actors.client.client_session import ClientSession
from actors.client.scope import CancelScope, within
from codec.messages import EncryptReply, EncryptRequest
from tests.fake_transport import FakeClock, FakeTransport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def joined(tmp_path: Path) -> Iterator[tuple[ClientSession, FakeTransport, FakeClock]]:
    yield from joined_session(tmp_path / "home")


def _files(tmp_path: Path) -> list[Path]:
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    paths = [tmp_path / "d1/a.png", tmp_path / "d2/a.png", tmp_path / "b.png", tmp_path / "c.png"]
    for i, p in enumerate(paths):
        p.write_bytes(png_bytes(40 + i))
    return paths


def _requests(tp: FakeTransport, images: int, nodes: int) -> dict[str, EncryptRequest]:
    """The first request of each image, by image name, once `images` images were sent."""
    sent = tp.wait_msg(EncryptRequest, count=images * nodes)
    first: dict[str, EncryptRequest] = {}
    for m in sent:
        first.setdefault(m.image, m)
    return first


def _reply(session: ClientSession, tp: FakeTransport, req: EncryptRequest, node: int) -> None:
    tp.deliver(session.node_addrs[node - 1], EncryptReply(
        rid=req.rid, node=node, sealed=b"sealed " + req.image.encode(), seal_ms=1.0, wait_ms=1.0))


def test_three_in_flight_names_as_one_by_one_rows_in_order(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path) -> None:
    session, tp, _clock = joined
    paths = _files(tmp_path)
    nodes = len(session.node_addrs)
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(o=session.encrypt(paths, in_flight=3)))
    worker.start()
    reqs = _requests(tp, 3, nodes)  # three images out before any reply
    assert sorted(reqs) == ["a-2.png", "a.png", "b.png"]
    assert len({r.rid for r in reqs.values()}) == 3
    assert reqs["a.png"].data == paths[0].read_bytes()
    assert reqs["a-2.png"].data == paths[1].read_bytes()  # another image: the next free name
    assert "c.png" not in {s.msg.image for s in tp.sends_of(EncryptRequest)}  # no place free
    _reply(session, tp, reqs["a-2.png"], 2)  # the second answers first: its place frees
    reqs = _requests(tp, 4, nodes)
    assert reqs["c.png"].data == paths[3].read_bytes()
    for image, node in (("c.png", 3), ("a.png", 1), ("b.png", 3)):
        _reply(session, tp, reqs[image], node)
    worker.join(10)
    assert not worker.is_alive()
    o = out["o"]
    assert o.failed == []
    assert [(r["file"], r["image"], r["path"], r["node"]) for r in o.encrypted] == [
        ("a.png", "a.png", "encrypted/a.png", 1),
        ("a.png", "a-2.png", "encrypted/a-2.png", 2),
        ("b.png", "b.png", "encrypted/b.png", 3),
        ("c.png", "c.png", "encrypted/c.png", 3),
    ]
    home = session.home.root
    assert (home / "high/a.png").read_bytes() == paths[0].read_bytes()
    assert (home / "high/a-2.png").read_bytes() == paths[1].read_bytes()
    assert (home / "encrypted/a-2.png").read_bytes() == b"sealed a-2.png"


def test_one_in_flight_sends_the_next_only_after_the_reply(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path) -> None:
    session, tp, _clock = joined
    paths = _files(tmp_path)[2:]
    nodes = len(session.node_addrs)
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(o=session.encrypt(paths, in_flight=1)))
    worker.start()
    reqs = _requests(tp, 1, nodes)
    assert list(reqs) == ["b.png"]
    assert {s.msg.image for s in tp.sends_of(EncryptRequest)} == {"b.png"}
    _reply(session, tp, reqs["b.png"], 1)
    reqs = _requests(tp, 2, nodes)
    _reply(session, tp, reqs["c.png"], 2)
    worker.join(10)
    assert [r["image"] for r in out["o"].encrypted] == ["b.png", "c.png"]


def test_a_cancel_fails_the_running_and_the_waiting_and_stores_nothing(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path) -> None:
    """Ctrl-C in the interactive shell cancels the command's scope: the images in flight end as
    cancelled (the workers run inside the caller's scope), the ones not sent are not sent."""
    session, tp, _clock = joined
    paths = _files(tmp_path)
    nodes = len(session.node_addrs)
    scope = CancelScope()
    out: dict[str, Any] = {}

    def run() -> None:
        with within(scope):
            out.update(o=session.encrypt(paths, in_flight=2))

    worker = threading.Thread(target=run)
    worker.start()
    reqs = _requests(tp, 2, nodes)
    session.cancel(scope)
    worker.join(10)
    assert not worker.is_alive()
    o = out["o"]
    assert o.encrypted == []
    assert [(f["file"], f["code"]) for f in o.failed] == [
        ("a.png", "cancelled"), ("a.png", "cancelled"), ("b.png", "cancelled"),
        ("c.png", "cancelled")]
    assert {s.msg.image for s in tp.sends_of(EncryptRequest)} == set(reqs)  # no more sent
    assert not (session.home.root / "encrypted").exists() or not any(
        (session.home.root / "encrypted").iterdir())


def test_a_file_named_twice_is_sealed_once(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    session, tp, _clock = joined
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(png_bytes(50))
    b.write_bytes(png_bytes(51))
    (tmp_path / "link.png").symlink_to(a)
    monkeypatch.chdir(tmp_path)
    # as `encrypt *.png a.png ./a.png` expands: a.png by four paths, b.png once
    paths = [Path("a.png"), Path("b.png"), Path("link.png"), Path("a.png"), Path("./a.png")]
    seen: list[tuple[int, int, str]] = []
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(
        o=session.encrypt(paths, progress=lambda i, n, f: seen.append((i, n, f)), in_flight=3)))
    worker.start()
    reqs = _requests(tp, 2, len(session.node_addrs))
    assert sorted(reqs) == ["a.png", "b.png"]
    for image, node in (("a.png", 1), ("b.png", 2)):
        _reply(session, tp, reqs[image], node)
    worker.join(10)
    assert not worker.is_alive()
    o = out["o"]
    assert o.failed == []
    assert [(r["file"], r["image"]) for r in o.encrypted] == [("a.png", "a.png"),
                                                               ("b.png", "b.png")]
    images = {s.msg.image for s in tp.sends_of(EncryptRequest)}
    assert images == {"a.png", "b.png"}  # nothing sent for the repeats
    assert len({s.msg.rid for s in tp.sends_of(EncryptRequest)}) == 2
    assert seen[-1] == (2, 2, "") and all(n == 2 for _i, n, _f in seen)


def test_a_folder_or_a_missing_file_fails_its_row_and_sends_nothing(
        joined: tuple[ClientSession, FakeTransport, FakeClock], tmp_path: Path) -> None:
    session, tp, _clock = joined
    (tmp_path / "pics").mkdir()
    o = session.encrypt([tmp_path / "pics", tmp_path / "gone.png"])
    assert o.encrypted == []
    assert [(f["file"], f["code"]) for f in o.failed] == [("pics", "unreadable"),
                                                           ("gone.png", "unreadable")]
    assert o.failed[0]["error"] == (f"{tmp_path / 'pics'} is a folder: encrypt "
                                    f"{tmp_path / 'pics' / '*'} seals the files in it")
    assert o.failed[1]["error"] == f"cannot read {tmp_path / 'gone.png'}: No such file or directory"
    assert tp.sends_of(EncryptRequest) == []
