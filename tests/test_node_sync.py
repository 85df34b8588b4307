"""A node back from a failure, before its state is synced (actors.node.node_parts with a fake node:
no sockets, no threads, sends recorded): it defers what needs the directory with a retryable
"syncing" answer instead of refusing sessions it has not heard of yet, then serves them once a
peer's state is applied."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import config
from actors.node.node_parts import NodeParts
from codec.messages import Ack, ErrorReply, Join, JoinReply, Message, PostUpdate
from codec.records import Update

ALICE = ("127.0.0.1", 40001)


class FakeNode:
    """What NodeParts needs of a NodeActor; every send is recorded."""

    def __init__(self, node_id: int) -> None:
        self.cfg = config.load()
        self.node_id = node_id
        self.now = 100.0
        self.to_client: list[tuple[tuple[str, int], Message]] = []
        self.to_peers: list[tuple[int | None, Message]] = []
        self.counters: Counter[str] = Counter()
        self.pool: Any = None

    def clock(self) -> float:
        return self.now

    def send_client(self, addr: tuple[str, int], msg: Message, *_: Any) -> None:
        self.to_client.append((addr, msg))

    def send_peers(self, msg: Message) -> None:
        self.to_peers.append((None, msg))

    def send_peer(self, peer: int, msg: Message) -> None:
        self.to_peers.append((peer, msg))

    def count(self, what: str, detail: str = "") -> None:
        self.counters[what] += 1


def make(tmp_path: Path, node_id: int) -> tuple[FakeNode, NodeParts]:
    node = FakeNode(node_id)
    parts = NodeParts(node, tmp_path / f"node-{node_id}", random.Random(node_id), failures=False)  # type: ignore[arg-type]
    parts.cluster.has_majority = lambda now: True  # type: ignore[method-assign]
    return node, parts


def update(n: int) -> Update:
    return Update(id=f"alice#{n}", kind="grant", owner="alice", borrower="bob", image="pic.jpg",
                  delta=1, addressee="bob", grant=b"\x00signed", created=1712.5)  # fmt: skip


@pytest.fixture
def two_nodes(tmp_path: Path) -> Any:
    (tmp_path / "node-1").mkdir()
    (tmp_path / "node-2").mkdir()
    a, pa = make(tmp_path, 1)
    b, pb = make(tmp_path, 2)
    yield a, pa, b, pb
    pa.close()
    pb.close()


def test_a_syncing_node_defers_a_known_session_then_serves_it(two_nodes: Any) -> None:
    a, pa, b, pb = two_nodes
    join = Join(rid="alice#1", user="alice", sign_key=bytes(32), box_key=bytes(range(32)))
    pa.on_client(ALICE, join, a.now)  # node 1 saw the join; node 2 was down and missed it
    ((_, reply),) = a.to_client
    assert isinstance(reply, JoinReply)
    pb.cluster.syncing_from = 1  # node 2 is back and has asked node 1 for its state

    post = PostUpdate(rid="alice#2", user="alice", token=reply.token, update=update(2))
    pb.on_client(ALICE, post, b.now)
    ((_, err),) = b.to_client
    assert isinstance(err, ErrorReply)
    assert (err.code, err.retryable) == ("syncing", True)  # not "bad_token": the client retries
    assert pb.pending.count() == 0 and b.counters["client_while_syncing"] == 1

    pb.on_peer(1, pa.state_snapshot(), b.now)  # the state arrives: synced
    assert not pb.cluster.syncing()
    b.to_client.clear()
    pb.on_client(ALICE, post, b.now)
    ((_, ack),) = b.to_client
    assert isinstance(ack, Ack) and ack.rid == "alice#2"
    assert pb.pending.count() == 1


def test_a_synced_node_still_refuses_an_unknown_session(two_nodes: Any) -> None:
    _, _, b, pb = two_nodes
    post = PostUpdate(rid="alice#2", user="alice", token=bytes(16), update=update(2))
    pb.on_client(ALICE, post, b.now)
    ((_, err),) = b.to_client
    assert isinstance(err, ErrorReply) and not err.retryable and err.code == "bad_token"


def test_a_started_node_syncs_before_it_serves_the_directory(two_nodes: Any) -> None:
    a, pa, b, pb = two_nodes
    pb.started(b.now)  # a (re)started process: its directory is empty
    assert pb.cluster.syncing()
    join = Join(rid="alice#1", user="alice", sign_key=bytes(32), box_key=bytes(range(32)))
    pb.on_client(ALICE, join, b.now)
    ((_, err),) = b.to_client
    assert isinstance(err, ErrorReply) and err.code == "syncing" and err.retryable
    pb.on_peer(1, pa.state_snapshot(), b.now)
    assert not pb.cluster.syncing()
    b.to_client.clear()
    pb.on_client(ALICE, join, b.now)
    ((_, reply),) = b.to_client
    assert isinstance(reply, JoinReply)
