"""The encrypt flow of one node (actors.core.encrypt_flow), driven by hand: no sockets, no threads, a fake
clock, sends recorded. Several services stand for the nodes of a cloud, and the test plays the
network between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.core.encrypt_flow import EncryptService
from codec.messages import (
    Done,
    EncryptOffer,
    EncryptReply,
    EncryptRequest,
    ErrorReply,
    FetchPayload,
    Message,
)
from tests.imgdata import png_bytes

CLIENT = ("127.0.0.1", 40000)


@dataclass
class Node:
    """One EncryptService with its outgoing traffic recorded."""

    id: int
    now: float = 0.0
    to_client: list[Message] = field(default_factory=list)
    to_peers: list[Message] = field(default_factory=list)
    elections: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    sealing: list[str] = field(default_factory=list)
    fetches: list[Message] = field(default_factory=list)
    refusals: list[tuple[tuple[str, int], Message]] = field(default_factory=list)
    svc: Any = None

    def __post_init__(self) -> None:
        self.svc = EncryptService(
            node_id=self.id,
            send_client=lambda addr, msg, rid: self.to_client.append(msg),
            send_peers=self.to_peers.append,
            start_election=lambda rid, now: self.elections.append(rid),
            cancel_election=self.cancelled.append,
            submit_seal=lambda rid, data: self.sealing.append(rid),
            max_pixels=10_000_000,
            clock=lambda: self.now,
            send_fetch=lambda addr, msg, rid: self.fetches.append(msg),
            send_refusal=lambda addr, msg: self.refusals.append((addr, msg)),
        )


def request(rid: str = "alice#1", attempt: int = 0) -> EncryptRequest:
    return EncryptRequest(rid=rid, image="pic.png", data=png_bytes(1, 8), attempt=attempt)


def cloud() -> list[Node]:
    nodes = [Node(i) for i in (1, 2, 3)]
    for n in nodes:
        n.svc.on_request(CLIENT, request(), 0.0)
    return nodes


def win_and_reply(winner: Node, others: list[Node]) -> None:
    winner.svc.on_won("alice#1")
    for n in others:
        n.svc.on_lost("alice#1", winner.id)
    assert winner.sealing == ["alice#1"]
    winner.svc.on_sealed("alice#1", b"sealed png", 1.0, None)


def test_every_node_elects_once_per_request_id_and_only_the_winner_seals() -> None:
    a, b, c = cloud()
    a.svc.on_request(CLIENT, request(attempt=1), 0.1)  # the client's retry: same election
    assert [n.elections for n in (a, b, c)] == [["alice#1"]] * 3
    win_and_reply(b, [a, c])
    assert [type(m) for m in b.to_client] == [EncryptReply] and a.sealing == c.sealing == []
    b.svc.on_reply_done("alice#1", None, 0.2)
    assert b.to_peers == [Done(rid="alice#1", node=2, acked=True)] and b.svc.counters.served == 1
    for n in (a, c):
        n.svc.on_done("alice#1", True, 0.2)
        assert n.svc.cache == {} and n.cancelled == ["alice#1"] and n.svc.settled("alice#1")


def test_the_winner_keeps_no_payload_once_sealed_and_a_retry_is_still_answered_once() -> None:
    """Memory (issue 15): from the seal's end the winner holds the sealed file, not the payload
    too. The peers keep theirs until Done; the client's retry while the reply is in flight is
    neither sealed again nor answered twice."""
    a, b, c = cloud()
    win_and_reply(b, [a, c])
    assert b.svc.cache["alice#1"].data is None
    assert a.svc.cache["alice#1"].data == c.svc.cache["alice#1"].data == request().data
    b.svc.on_request(CLIENT, request(attempt=1), 0.1)
    assert b.sealing == ["alice#1"] and [type(m) for m in b.to_client] == [EncryptReply]
    b.svc.on_reply_done("alice#1", None, 0.2)
    assert b.svc.cache == {} and b.svc.counters.served == 1


def test_a_winner_that_goes_down_before_its_reply_leaves_the_request_to_the_others() -> None:
    a, b, c = cloud()
    b.svc.on_won("alice#1")
    for n in (a, c):
        n.svc.on_lost("alice#1", 2)
    b.svc.drop_all(0.1)  # still sealing: nothing was sent, nothing is said
    b.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    assert b.to_client == [] and b.to_peers == []
    for n in (a, c):
        n.svc.on_node_down(2, 0.2)
        assert n.elections == ["alice#1", "alice#1"] and n.svc.counters.reelected == 1


def test_a_winner_that_goes_down_with_its_reply_in_flight_says_done_first() -> None:
    """The reply is in the transport and still arrives: the peers must not answer again."""
    a, b, c = cloud()
    win_and_reply(b, [a, c])
    b.svc.drop_all(0.1)
    assert b.to_peers == [Done(rid="alice#1", node=2, acked=False)]
    for n in (a, c):  # the Done comes before the GoingDown (actors.node.cluster_state._run)
        n.svc.on_done("alice#1", False, 0.1)
        n.svc.on_node_down(2, 0.2)
        assert n.elections == ["alice#1"] and n.svc.cache == {}
    b.svc.on_reply_done("alice#1", None, 0.3)  # acknowledged after the failure: nothing more
    assert b.to_peers == [Done(rid="alice#1", node=2, acked=False)] and b.svc.cache == {}


def test_after_an_unacknowledged_reply_a_retry_is_served_again_by_a_normal_election() -> None:
    a, b, c = cloud()
    win_and_reply(b, [a, c])
    b.svc.on_reply_done("alice#1", "unacknowledged", 0.2)  # the reply may be lost
    assert b.to_peers == [Done(rid="alice#1", node=2, acked=False)]
    assert b.cancelled == ["alice#1"]  # its won election is gone: the retry starts a new one
    for n in (a, c):
        n.svc.on_done("alice#1", False, 0.2)
    for n in (a, b, c):
        n.svc.on_request(CLIENT, request(attempt=0), 0.3)  # the same upload, late: ignored
        assert n.svc.counters.late_ignored == 1 and n.elections == ["alice#1"]
        n.svc.on_request(CLIENT, request(attempt=1), 0.4)  # the client's retry
        # a peer electing for the retry is not told "Done": everyone takes part
        assert n.elections == ["alice#1", "alice#1"] and not n.svc.settled("alice#1")
    a.svc.on_won("alice#1")
    assert a.sealing == ["alice#1"]


def test_after_an_acknowledged_reply_any_retry_or_late_election_is_settled() -> None:
    """A retry that crossed the reply is not served: the client already holds that reply (it
    gets `id_in_use`, which its ended call ignores)."""
    a, b, c = cloud()
    win_and_reply(b, [a, c])
    b.svc.on_reply_done("alice#1", None, 0.2)
    a.svc.on_done("alice#1", True, 0.2)
    for n in (a, b):
        n.svc.on_request(CLIENT, request(attempt=3), 0.3)
        assert n.elections == ["alice#1"] and n.sealing == (["alice#1"] if n is b else [])
        assert [(addr, msg.code) for addr, msg in n.refusals] == [  # type: ignore[attr-defined]
            (CLIENT, "id_in_use")]
        assert n.svc.settled("alice#1")  # an Election from c is answered with Done
    c.svc.on_done("alice#1", True, 0.3)  # c missed the first Done; it drops its copy now
    assert c.svc.cache == {} and c.cancelled == ["alice#1"]


OTHER = ("127.0.0.1", 40001)  # another client (process) using the same request id


def test_a_copy_of_an_id_in_flight_from_another_client_is_refused_and_the_reply_stays_with_its_owner(
) -> None:
    """A request id belongs to the address that sent it first: a copy from elsewhere (a guessed
    `user#n`) gets `id_in_use` at once and changes nothing, so the sealed image still goes to
    the client that sent it, and only that client's retries count."""
    a, b, c = cloud()
    intruder = EncryptRequest(rid="alice#1", image="x.png", data=png_bytes(2, 8), attempt=5)
    for n in (a, b, c):
        n.svc.on_request(OTHER, intruder, 0.05)
        ((addr, msg),) = n.refusals
        assert addr == OTHER and isinstance(msg, ErrorReply)
        assert (msg.rid, msg.code, msg.retryable) == ("alice#1", "id_in_use", False)
        assert n.elections == ["alice#1"]
        assert n.svc.cache["alice#1"].client == CLIENT and n.svc.cache["alice#1"].attempt == 0
        assert n.svc.cache["alice#1"].data == request().data
    sent: list[tuple[tuple[str, int], Message]] = []
    b.svc.send_client = lambda addr, msg, rid: sent.append((addr, msg))
    win_and_reply(b, [a, c])
    assert [(addr, type(msg)) for addr, msg in sent] == [(CLIENT, EncryptReply)]


def test_a_copy_of_a_done_id_from_another_client_is_refused_not_ignored() -> None:
    """The same user from another home (its counter starts again at 1) reuses an id the nodes
    remember as Done: it is told at once, instead of waiting out its deadline for an answer
    that never comes. Once the reply was acknowledged every copy gets it, the owner's own late
    ones too (it holds its reply and ignores the refusal), also at a node that knew the id only
    from a peer's Done (it never saw the request, and cannot tell whose a copy is)."""
    a, b, c = cloud()
    win_and_reply(b, [a, c])
    b.svc.on_reply_done("alice#1", None, 0.2)
    a.svc.on_done("alice#1", True, 0.2)
    late = Node(4)
    late.svc.on_done("alice#1", True, 0.2)
    for n in (a, b):
        n.svc.on_request(OTHER, request(), 0.3)
        n.svc.on_request(CLIENT, request(attempt=0), 0.3)
        assert [(addr, msg.code, msg.message.split()[-1])  # type: ignore[attr-defined]
                for addr, msg in n.refusals] == [(OTHER, "id_in_use", "client"),
                                                 (CLIENT, "id_in_use", "already")]
        assert n.svc.counters.late_ignored == 0
    for who in (OTHER, CLIENT):
        late.svc.on_request(who, request(), 0.3)
    assert [(addr, msg.code) for addr, msg in late.refusals] == [  # type: ignore[attr-defined]
        (OTHER, "id_in_use"), (CLIENT, "id_in_use")]
    assert late.elections == [] and late.svc.cache == {}
    a.svc.expire(a.svc.done_ttl_s + 1)  # forgotten: the id is anyone's again
    a.svc.on_request(OTHER, request(), a.svc.done_ttl_s + 2)
    assert a.elections == ["alice#1", "alice#1"] and a.svc.cache["alice#1"].client == OTHER


def test_an_id_sent_to_one_node_ahead_of_its_owner_is_refused_to_the_owner_by_every_node() -> None:
    """Someone sends `alice#1` to node a alone, before alice does: a serves it (its peers, with
    no copy, abstain) and tells them Done. When alice's own copies come, a refuses hers (the id
    is another address's) and so do b and c, which knew the id only from that Done: a majority
    of refusals, so her client takes a fresh id at once. Before, b and c ignored her copies as
    late ones of an answered request, and her call waited out its deadline."""
    a, b, c = [Node(i) for i in (1, 2, 3)]
    a.svc.on_request(OTHER, request(), 0.0)
    a.svc.on_won("alice#1")
    a.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    a.svc.on_reply_done("alice#1", None, 0.1)
    assert a.to_peers == [Done(rid="alice#1", node=1, acked=True)]
    for n in (b, c):
        n.svc.on_done("alice#1", True, 0.1)
    for n in (a, b, c):
        n.svc.on_request(CLIENT, request(), 0.2)
        assert [(addr, msg.code) for addr, msg in n.refusals] == [  # type: ignore[attr-defined]
            (CLIENT, "id_in_use")]
    assert b.elections == c.elections == [] and b.svc.cache == c.svc.cache == {}


def test_the_owner_of_an_id_another_copy_won_with_is_refused_by_every_node_at_its_retry() -> None:
    """Someone's copy of `alice#1` reaches node a just before alice's (the race): a refuses
    hers, b and c cache hers; a wins the election with the other copy and answers its sender;
    b and c drop hers at a's Done, which says the reply was acknowledged. At alice's retry all
    three refuse (a: another address's id; b, c: answered already): a majority, so her client
    takes a fresh id. Before, b and c ignored her retries (a retry that crossed its reply, they
    thought), and her call waited out its deadline."""
    a, b, c = [Node(i) for i in (1, 2, 3)]
    a.svc.on_request(OTHER, request(), 0.0)
    for n in (a, b, c):
        n.svc.on_request(CLIENT, request(), 0.01)
    assert [addr for addr, _ in a.refusals] == [CLIENT]
    assert b.svc.cache["alice#1"].client == c.svc.cache["alice#1"].client == CLIENT
    a.svc.on_won("alice#1")
    for n in (b, c):
        n.svc.on_lost("alice#1", 1)
    a.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    a.svc.on_reply_done("alice#1", None, 0.1)
    for n in (b, c):
        n.svc.on_done("alice#1", True, 0.1)
    for n in (a, b, c):
        n.svc.on_request(CLIENT, request(attempt=1), 2.0)  # her retry
        assert [(addr, msg.code) for addr, msg in n.refusals][-1] == (  # type: ignore[attr-defined]
            CLIENT, "id_in_use")
    assert b.sealing == c.sealing == [] and b.svc.cache == c.svc.cache == {}


def test_a_payload_that_is_no_image_gets_one_refusal_from_the_winner_only() -> None:
    a, b, c = [Node(i) for i in (1, 2, 3)]
    bad = EncryptRequest(rid="alice#2", image="x.png", data=b"not an image", attempt=0)
    for n in (a, b, c):
        n.svc.on_request(CLIENT, bad, 0.0)
    a.svc.on_won("alice#2")
    b.svc.on_lost("alice#2", 1)
    assert [(type(m), getattr(m, "code", "")) for m in a.to_client] == [(ErrorReply, "not_an_image")]
    assert a.sealing == [] and b.to_client == []


def test_cached_bytes_and_done_ids_expire() -> None:
    a, _, _ = cloud()
    a.svc.expire(a.svc.cache_ttl_s + 1)
    assert a.svc.cache == {} and a.cancelled == ["alice#1"] and a.svc.counters.expired == 1
    a.svc.on_done("alice#1", True, 0.0)
    a.svc.expire(a.svc.done_ttl_s + 1)
    assert a.svc.done == {}


def test_a_winner_still_sealing_yields_to_a_higher_claimant_and_answers_nothing() -> None:
    """Two claimants (late peer messages): the one with the lower claim yields. If its seal is
    still running, its result is dropped: the client gets one reply, not two. If the claimant it
    yielded to goes down, it elects again from its cache."""
    a, _, _ = cloud()
    a.svc.on_won("alice#1")
    assert a.sealing == ["alice#1"]
    a.svc.on_lost("alice#1", 3)  # node 3 claims too, with a higher tie hash
    a.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    assert a.to_client == [] and a.svc.counters.yielded == 1
    a.svc.on_node_down(3, 0.5)
    assert a.elections == ["alice#1", "alice#1"]
    a.svc.on_won("alice#1")
    a.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    assert [type(m) for m in a.to_client] == [EncryptReply]


def test_a_reply_already_sent_stands_when_another_claimant_appears() -> None:
    a, _, _ = cloud()
    a.svc.on_won("alice#1")
    a.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    a.svc.on_lost("alice#1", 3)
    a.svc.on_reply_done("alice#1", None, 0.2)
    assert [type(m) for m in a.to_client] == [EncryptReply]
    assert a.to_peers == [Done(rid="alice#1", node=1, acked=True)] and a.svc.counters.yielded == 0


def offer(rid: str = "alice#1", attempt: int = 0, size: int = 0) -> EncryptOffer:
    return EncryptOffer(rid=rid, image="pic.png", size=size or len(request().data), attempt=attempt)


def test_an_offer_is_elected_on_and_only_the_winner_fetches_the_bytes() -> None:
    a, b, c = (Node(i) for i in (1, 2, 3))
    for n in (a, b, c):
        n.svc.on_request(CLIENT, offer(), 0.0)
    assert [n.elections for n in (a, b, c)] == [["alice#1"]] * 3
    b.svc.on_won("alice#1")
    for n in (a, c):
        n.svc.on_lost("alice#1", 2)
    assert b.fetches == [FetchPayload(rid="alice#1", node=2, attempt=0)] and b.sealing == []
    assert a.fetches == c.fetches == []
    b.svc.on_request(CLIENT, request(), 0.01)  # the client answers the fetch: to b alone
    assert b.sealing == ["alice#1"] and b.svc.counters.fetched == 1
    b.svc.on_sealed("alice#1", b"sealed png", 1.0, None)
    assert [type(m) for m in b.to_client] == [EncryptReply]
    b.svc.on_reply_done("alice#1", None, 0.02)
    for n in (a, c):
        n.svc.on_done("alice#1", True, 0.03)
        assert n.svc.cache == {} and n.sealing == []


def test_a_re_elected_winner_fetches_again_and_a_retried_offer_refetches() -> None:
    a, b, c = (Node(i) for i in (1, 2, 3))
    for n in (a, b, c):
        n.svc.on_request(CLIENT, offer(), 0.0)
    c.svc.on_won("alice#1")
    for n in (a, b):
        n.svc.on_lost("alice#1", 3)
    a.svc.on_node_down(3, 0.5)  # the winner died before the bytes arrived
    a.svc.on_won("alice#1")
    assert a.fetches == [FetchPayload(rid="alice#1", node=1, attempt=0)]
    a.svc.on_request(CLIENT, offer(attempt=1), 1.0)  # the client's retry: ask again
    assert a.fetches[1:] == [FetchPayload(rid="alice#1", node=1, attempt=1)]
    assert a.elections == ["alice#1", "alice#1"] and a.sealing == []


def test_a_fetch_that_cannot_be_sent_ends_like_a_failed_reply() -> None:
    a = Node(1)
    a.svc.on_request(CLIENT, offer(), 0.0)
    a.svc.on_won("alice#1")
    a.svc.on_fetch_done("alice#1", None, 0.1)  # delivered: wait for the bytes
    assert a.to_peers == [] and "alice#1" in a.svc.cache
    a.svc.on_fetch_done("alice#1", "timeout", 0.2)
    assert a.to_peers == [Done(rid="alice#1", node=1, acked=False)] and a.svc.cache == {}
    a.svc.on_request(CLIENT, offer(attempt=1), 0.3)  # a later retry is served again
    assert a.elections == ["alice#1", "alice#1"]


def test_an_offer_too_large_is_refused_without_fetching() -> None:
    a = Node(1)
    a.svc.max_image = 1000
    a.svc.on_request(CLIENT, offer(size=5000), 0.0)
    a.svc.on_won("alice#1")
    assert a.fetches == [] and [m.code for m in a.to_client] == ["too_large"]  # type: ignore[attr-defined]
