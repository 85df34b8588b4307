"""The node's pending store: idempotent, ordered, durable (even across kill -9), digest, epochs."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.node.pending_store import PendingStore, StoreError
from codec.messages import Update


def up(uid: str, addressee: str = "bob", delta: int = 1, kind: str = "grant") -> Update:
    owner = uid.split("#")[0]
    return Update(
        id=uid,
        kind=kind,
        owner=owner,
        borrower="bob",
        image="pic.jpg",
        delta=delta,
        addressee=addressee,
        grant=b"\x00signed\xff",
        created=1712.5,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PendingStore]:
    s = PendingStore(tmp_path / "pending.db")
    yield s
    s.close()


def test_add_is_idempotent_by_id(store: PendingStore) -> None:
    assert store.add(up("alice#1")) is True
    assert store.add(up("alice#1")) is False
    assert store.add(up("alice#1", delta=5)) is False  # same id: the first copy stays
    assert store.count() == 1
    assert store.all() == [up("alice#1")]


def test_fields_round_trip_exactly(store: PendingStore) -> None:
    u = Update(
        id="carol#9007199254740992",
        kind="revoke",
        owner="carol",
        borrower="bob",
        image="a-b_c.d.png",
        delta=-1_000_000,
        addressee="bob",
        grant=bytes(range(256)) * 16,
        created=99999999999.25,
    )
    store.add(u)
    assert store.all() == [u]


def test_for_user_is_post_order_not_id_order(store: PendingStore) -> None:
    for u in [
        up("zed#10"),
        up("alice#2"),
        up("alice#1", addressee="carol"),
        up("bob#3", "bob"),
        up("alice#11"),
    ]:
        store.add(u)
    assert [u.id for u in store.for_user("bob")] == ["zed#10", "alice#2", "bob#3", "alice#11"]
    assert [u.id for u in store.for_user("carol")] == ["alice#1"]
    assert store.for_user("nobody") == []


def test_forget_removes_only_the_named_ids(store: PendingStore) -> None:
    for i in range(1, 6):
        store.add(up(f"alice#{i}"))
    assert store.forget(["alice#2", "alice#4", "alice#99"]) == 2
    assert store.forget([]) == 0
    assert [u.id for u in store.all()] == ["alice#1", "alice#3", "alice#5"]
    with pytest.raises(StoreError):
        store.forget([3])  # type: ignore[list-item]
    assert store.count() == 3


def test_digest_depends_on_the_id_set_only(tmp_path: Path) -> None:
    with PendingStore(tmp_path / "a.db") as a, PendingStore(tmp_path / "b.db") as b:
        assert a.digest() == b.digest() and len(a.digest()) == 32
        for i in (1, 2, 3):
            a.add(up(f"alice#{i}"))
        for i in (3, 1, 2):
            b.add(up(f"alice#{i}"))
        assert a.digest() == b.digest()
        b.forget(["alice#2"])
        assert a.digest() != b.digest()
        assert b.add(up("alice#2")) is False  # a tombstone keeps a forgotten id out
        a.forget(["alice#2"])
        assert a.digest() == b.digest()
        a.add(up("alice#12"))
        b.add(up("alice#1", addressee="carol"))  # duplicate id: ignored
        assert a.digest() != b.digest()


def test_merge_adds_only_new_updates_in_peer_order(store: PendingStore) -> None:
    store.add(up("alice#1"))
    assert store.merge([up("alice#5"), up("alice#1"), up("alice#3")]) == 2
    assert store.merge([]) == 0
    assert [u.id for u in store.all()] == ["alice#1", "alice#5", "alice#3"]


def test_only_updates_are_accepted(store: PendingStore) -> None:
    with pytest.raises(StoreError, match="expected an Update"):
        store.add(b"\x89PNG image bytes")  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.merge([up("alice#1"), "x"])  # type: ignore[list-item]
    assert store.count() == 0


def test_contents_and_order_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with PendingStore(path) as s:
        for uid in ["bob#9", "alice#1", "carol#4"]:
            s.add(up(uid))
        s.epoch_raise(2, 7)
        digest = s.digest()
    with PendingStore(path) as s:
        assert [u.id for u in s.for_user("bob")] == ["bob#9", "alice#1", "carol#4"]
        assert s.digest() == digest
        assert s.epoch_get(2) == 7
        s.add(up("alice#0"))
        assert s.all()[-1].id == "alice#0"


_ADD_THEN_DIE = """
import os, signal, sys
from actors.node.pending_store import PendingStore
from codec.messages import Update
s = PendingStore(sys.argv[1])
for i in range(1, 4):
    s.add(Update(id=f"alice#{i}", kind="grant", owner="alice", borrower="bob", image="pic.jpg",
                 delta=i, addressee="bob", grant=b"", created=0.0))
    print("acked", i, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_acked_update_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    out = subprocess.run(
        [sys.executable, "-c", _ADD_THEN_DIE, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == -signal.SIGKILL
    assert out.stdout.splitlines() == ["acked 1", "acked 2", "acked 3"]
    with PendingStore(path) as s:
        assert [(u.id, u.delta) for u in s.for_user("bob")] == [
            ("alice#1", 1),
            ("alice#2", 2),
            ("alice#3", 3),
        ]


def test_store_is_synchronous_full_in_wal_mode(store: PendingStore) -> None:
    rows = store._db.query("PRAGMA journal_mode")
    assert rows == [("wal",)]
    assert store._db.query("PRAGMA synchronous") == [(2,)]  # 2 = FULL


def test_epochs_only_go_up(store: PendingStore) -> None:
    assert store.epoch_get(1) == 0
    assert store.epoch_raise(1, 5) is True
    assert store.epoch_raise(1, 5) is False
    assert store.epoch_raise(1, 3) is False
    assert store.epoch_get(1) == 5
    assert store.epoch_raise(1, 6) is True
    assert (store.epoch_get(1), store.epoch_get(2)) == (6, 0)
    for bad in [(1, -1), (1, True), (1, 1.0), ("1", 2), (1, 2**63)]:
        with pytest.raises(StoreError):
            store.epoch_raise(*bad)  # type: ignore[arg-type]
    assert store.epoch_get(1) == 6


def test_a_corrupt_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        PendingStore(path)


def test_forgotten_ids_stay_out_of_merge_and_travel_as_tombstones(tmp_path: Path) -> None:
    with PendingStore(tmp_path / "a.db") as a, PendingStore(tmp_path / "b.db") as b:
        for i in (1, 2):
            a.add(up(f"alice#{i}"))
            b.add(up(f"alice#{i}"))
        a.forget(["alice#1"], now=100.0)  # b missed the ForgetUpdates
        assert a.merge(b.all()) == 0  # b's copy does not bring it back
        b.forget(a.forgotten(), now=101.0)  # what a StateSync from a does on b
        assert b.merge(a.all()) == 0
        assert a.digest() == b.digest() and [u.id for u in b.all()] == ["alice#2"]
        assert a.expire_tombstones(now=100.0 + 10, ttl_s=5) == 1
        assert a.forgotten() == []
