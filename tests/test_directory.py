"""Directory core: tokens agreed without messages, expiry, leave, refusal, replication."""

import pytest

from actors.core.directory import AlreadyOnline, BadToken, Directory, SessionEnded, token_digest

KEY = b"k" * 32


def _dir() -> Directory:
    return Directory(KEY, ttl_s=10.0)


def test_nodes_derive_the_same_token_for_one_join() -> None:
    a, b = _dir(), _dir()
    ta, ea = a.join("alice", "127.0.0.1", 4000, "alice#1", b"", b"", now=100.0)
    tb, eb = b.join("alice", "127.0.0.1", 4000, "alice#1", b"", b"", now=100.5)
    assert ta == tb and len(ta) == 16
    assert ea.token_digest == token_digest(ta) != ta


def test_another_join_gives_another_token() -> None:
    d = _dir()
    t1, _ = d.join("alice", "127.0.0.1", 4000, "alice#1", b"", b"", now=0.0)
    t2, _ = d.join("alice", "127.0.0.1", 4000, "alice#2", b"", b"", now=1.0)
    assert t1 != t2
    with pytest.raises(BadToken):
        d.check("alice", t1, now=2.0)
    assert d.check("alice", t2, now=2.0).user == "alice"


def test_second_address_refused_while_online_then_allowed_after_expiry() -> None:
    d = _dir()
    d.join("alice", "127.0.0.1", 4000, "alice#1", b"", b"", now=0.0)
    with pytest.raises(AlreadyOnline, match="127.0.0.1:4000"):
        d.join("alice", "127.0.0.1", 4001, "alice#2", b"", b"", now=5.0)
    token, entry = d.join("alice", "127.0.0.1", 4001, "alice#3", b"", b"", now=10.5)
    assert entry.port == 4001


def test_a_dead_session_is_replaced_once_by_the_joins_that_found_it_dead() -> None:
    """`stale`: a join replaces the session its node probed and found dead, and only that one;
    a second join that found the same session dead meets the first one's live session."""
    d = _dir()
    _, a1 = d.join("alice", "127.0.0.1", 4000, "alice#1", b"", b"", now=0.0)
    _, a2 = d.join("alice", "127.0.0.1", 4001, "alice#2", b"", b"", now=1.0, stale=a1)
    assert a2.port == 4001 and d.entries["alice"] == a2
    with pytest.raises(AlreadyOnline) as info:
        d.join("alice", "127.0.0.1", 4002, "alice#3", b"", b"", now=1.0, stale=a1)
    assert info.value.current == a2 and d.entries["alice"] == a2
    _, a3 = d.join("alice", "127.0.0.1", 4002, "alice#4", b"", b"", now=1.0, stale=a2)
    assert d.entries["alice"] == a3  # a2 found dead in its turn: replaced


def test_heartbeat_extends_and_silence_expires() -> None:
    d = _dir()
    t, _ = d.join("bob", "127.0.0.1", 5000, "bob#1", b"", b"", now=0.0)
    d.heartbeat("bob", t, now=8.0)
    assert [e.user for e in d.online(now=17.0)] == ["bob"]
    assert d.online(now=18.5) == []
    assert d.expire(now=18.5) == ["bob"]


def test_wrong_token_refused_for_heartbeat_and_leave() -> None:
    d = _dir()
    d.join("bob", "127.0.0.1", 5000, "bob#1", b"", b"", now=0.0)
    with pytest.raises(BadToken):
        d.heartbeat("bob", b"x" * 16, now=1.0)
    with pytest.raises(BadToken):
        d.leave("bob", b"x" * 16, now=1.0)
    assert len(d.online(now=1.0)) == 1


def test_leave_replicates_and_late_join_copy_does_not_resurrect() -> None:
    a, b = _dir(), _dir()
    t, entry = a.join("bob", "127.0.0.1", 5000, "bob#1", b"", b"", now=0.0)
    tomb = a.leave("bob", t, now=1.0)
    assert tomb is not None and a.online(now=1.0) == []
    assert a.leave("bob", t, now=1.1) is None  # the direct copy after the replicated one
    # b hears the leave before the join (reordered replication)
    assert b.merge(tomb, now=1.0) is False
    assert b.merge(entry, now=1.1) is False
    assert b.online(now=1.1) == []
    assert a.digest(now=2.0) == b.digest(now=2.0)


def test_merge_keeps_the_later_expiry() -> None:
    a, b = _dir(), _dir()
    t, e1 = a.join("carol", "127.0.0.1", 6000, "carol#1", b"", b"", now=0.0)
    e2 = a.heartbeat("carol", t, now=5.0)
    assert b.merge(e2, now=5.0) is True
    assert b.merge(e1, now=5.0) is False
    assert b.get("carol", now=5.0) == e2
    assert a.digest(now=6.0) == b.digest(now=6.0)


def test_keys_are_pinned_at_first_join_and_other_keys_refused() -> None:
    from actors.core.directory import KeysChanged

    saved: list[tuple[str, bytes, bytes]] = []
    d = Directory(KEY, ttl_s=10.0, on_pin=lambda u, s, b: saved.append((u, s, b)))
    d.join("alice", "127.0.0.1", 4000, "alice#1", b"S" * 32, b"B" * 32, now=0.0)
    assert saved == [("alice", b"S" * 32, b"B" * 32)]
    d.join("alice", "127.0.0.1", 4000, "alice#2", b"S" * 32, b"B" * 32, now=1.0)  # same keys: ok
    with pytest.raises(KeysChanged):
        d.join("alice", "127.0.0.1", 4000, "alice#3", b"X" * 32, b"B" * 32, now=2.0)
    other = Directory(KEY, ttl_s=10.0, pins={"alice": (b"S" * 32, b"B" * 32)})
    _, forged = Directory(KEY, ttl_s=10.0).join("alice", "127.0.0.1", 9, "alice#9", b"X" * 32,
                                                b"Y" * 32, now=0.0)
    assert other.merge(forged, now=1.0) is False  # a replicated entry with other keys is refused


def test_late_copy_of_a_join_after_its_leave_is_refused() -> None:
    """A client's retried Join can still be in flight when its Leave arrives: that copy must not
    bring the session back at this node (the peers' tombstones would keep refusing its
    replication, and the nodes' directories would differ until expiry)."""
    d = _dir()
    token, _ = d.join("bob", "127.0.0.1", 4000, "bob#1", b"", b"", now=0.0)
    assert d.leave("bob", token, now=1.0) is not None
    with pytest.raises(SessionEnded, match="bob#1"):
        d.join("bob", "127.0.0.1", 4000, "bob#1", b"", b"", now=1.5)
    assert d.online(2.0) == []
    d.join("bob", "127.0.0.1", 4000, "bob#2", b"", b"", now=2.0)  # a new session is welcome
    assert [e.user for e in d.online(3.0)] == ["bob"]


def test_snapshot_carries_leaves_so_a_node_that_missed_one_converges() -> None:
    a, b = _dir(), _dir()
    token, entry = a.join("bob", "127.0.0.1", 4000, "bob#1", b"", b"", now=0.0)
    b.merge(entry, now=0.0)
    a.join("carol", "127.0.0.1", 4001, "carol#1", b"", b"", now=0.0)
    a.leave("bob", token, now=1.0)  # b never hears this leave
    snap = a.snapshot(now=2.0)
    assert [(e.user, e.expires) for e in snap] == [("carol", 10.0), ("bob", 0.0)]
    for e in snap:
        b.merge(e, now=2.0)
    assert [e.user for e in b.online(2.0)] == ["carol"]
    assert a.digest(2.0) == b.digest(2.0)
    a.expire(now=12.0)  # the leave is remembered for one ttl, then no longer carried
    assert a.snapshot(now=12.0) == []


def test_a_node_without_a_pin_takes_the_peers_pin_and_then_refuses_other_keys() -> None:
    """A replaced disk: the node has no pins until a state sync brings them; the impostor with
    fresh keys is refused once the real user's pin is adopted."""
    from actors.core.directory import KeysChanged

    real = Directory(KEY, ttl_s=10.0)
    real.join("gina1", "127.0.0.1", 4000, "gina1#1", b"S" * 32, b"B" * 32, now=0.0)
    saved: list[tuple[str, bytes, bytes]] = []
    fresh = Directory(KEY, ttl_s=10.0, on_pin=lambda u, s, b: saved.append((u, s, b)))
    votes = fresh.vote_pins(2, real.pin_list())
    assert [(v.user, v.outcome) for v in votes] == [("gina1", "adopted")]
    assert saved == [("gina1", b"S" * 32, b"B" * 32)]  # persisted like a pin of its own
    with pytest.raises(KeysChanged):
        fresh.join("gina1", "127.0.0.2", 5000, "gina1#7", b"X" * 32, b"Y" * 32, now=1.0)
    assert fresh.join("gina1", "127.0.0.1", 4000, "gina1#2", b"S" * 32, b"B" * 32, now=1.0)


def test_one_peers_other_pin_does_not_replace_this_nodes_own_but_disputes_it() -> None:
    """Of 3 nodes, this one and one peer disagree and the third has not voted: no majority, so
    the pin stays and gina1 is refused at once, with a reason, whichever keys she presents."""
    from actors.core.directory import PinDisputed

    d = Directory(KEY, ttl_s=10.0, pins={"gina1": GINA}, nodes=3)
    votes = d.vote_pins(2, [("gina1", *IMPOSTOR)])
    assert [(v.user, v.outcome, v.peer) for v in votes] == [("gina1", "disputed", 2)]
    assert d.pins["gina1"] == GINA
    for keys in (GINA, IMPOSTOR):
        with pytest.raises(PinDisputed, match="no majority"):
            d.join("gina1", "127.0.0.1", 4000, "gina1#1", *keys, now=0.0)
    assert d.vote_pins(2, [("gina1", *GINA)]) == []  # the peer now agrees: settled, no news
    assert d.join("gina1", "127.0.0.1", 4000, "gina1#2", *GINA, now=0.0)


GINA = (b"S" * 32, b"B" * 32)
IMPOSTOR = (b"X" * 32, b"Y" * 32)


def test_a_majority_pin_replaces_the_pin_of_an_impostor_on_a_new_disk() -> None:
    """Issue 15 item 2: node 1's disk was new and an impostor joined there first; nodes 2 and 3
    pin the real keys. Their state syncs give a majority: node 1 takes (and persists) the real
    keys, refuses the impostor and accepts gina1."""
    from actors.core.directory import KeysChanged

    saved: list[tuple[str, bytes, bytes]] = []
    d = Directory(KEY, ttl_s=10.0, nodes=3, on_pin=lambda u, s, b: saved.append((u, s, b)))
    d.join("gina1", "127.0.0.2", 5000, "gina1#9", *IMPOSTOR, now=0.0)
    assert saved == [("gina1", *IMPOSTOR)]
    assert [v.outcome for v in d.vote_pins(2, [("gina1", *GINA)])] == ["disputed"]
    assert [v.outcome for v in d.vote_pins(3, [("gina1", *GINA)])] == ["replaced"]
    assert d.pins["gina1"] == GINA and saved[-1] == ("gina1", *GINA)
    assert "gina1" not in d.disputed and d.get("gina1", 1.0) is None  # the impostor's session
    with pytest.raises(KeysChanged):
        d.join("gina1", "127.0.0.2", 5000, "gina1#10", *IMPOSTOR, now=1.0)
    assert d.join("gina1", "127.0.0.1", 4000, "gina1#1", *GINA, now=1.0)


def test_a_node_without_a_pin_waits_for_a_majority_when_peers_disagree() -> None:
    """Five nodes: two peers pin K1, one pins K2: 2 of 5 is no majority, the user is refused
    (joins, replicated entries, requests, forgets); a third K1 settles it."""
    from actors.core.directory import PinDisputed

    saved: list[tuple[str, bytes, bytes]] = []
    d = Directory(KEY, ttl_s=10.0, nodes=5, on_pin=lambda u, s, b: saved.append((u, s, b)))
    assert [v.outcome for v in d.vote_pins(2, [("gina1", *GINA)])] == ["adopted"]  # uncontested
    assert [v.outcome for v in d.vote_pins(3, [("gina1", *IMPOSTOR)])] == ["disputed"]
    assert [v.outcome for v in d.vote_pins(4, [("gina1", *GINA)])] == ["disputed"]
    with pytest.raises(PinDisputed):
        d.join("gina1", "127.0.0.1", 4000, "gina1#1", *GINA, now=0.0)
    other = Directory(KEY, ttl_s=10.0)
    _, entry = other.join("gina1", "127.0.0.1", 4000, "gina1#1", *GINA, now=0.0)
    assert d.merge(entry, now=1.0) is False and d.get("gina1", 1.0) is None
    assert not d.has_session("gina1", entry.token_digest, now=1.0)
    assert [v.outcome for v in d.vote_pins(5, [("gina1", *GINA)])] == []  # 3 of 5: agreed
    assert d.pins["gina1"] == GINA and saved == [("gina1", *GINA)]
    assert d.merge(entry, now=1.0) is True
    token, _ = d.join("gina1", "127.0.0.1", 4000, "gina1#1", *GINA, now=1.0)
    assert d.check("gina1", token, now=1.0).user == "gina1"


def test_a_pin_copied_from_a_peers_entry_is_not_a_vote_of_this_node() -> None:
    """gina1 joined at node 2 only; node 1 pinned her keys from node 2's replicated entry. Node
    3 pins other keys: one vote each (node 2's counted once), so no majority: disputed."""
    two = Directory(KEY, ttl_s=10.0)
    _, entry = two.join("gina1", "127.0.0.1", 4000, "gina1#1", *GINA, now=0.0)
    d = Directory(KEY, ttl_s=10.0, nodes=3)
    assert d.merge(entry, now=1.0) and d.pins["gina1"] == GINA
    assert [v.outcome for v in d.vote_pins(2, [("gina1", *GINA)])] == []
    assert [v.outcome for v in d.vote_pins(3, [("gina1", *IMPOSTOR)])] == ["disputed"]
    own = Directory(KEY, ttl_s=10.0, nodes=3)  # a join here is this node's own vote
    own.join("gina1", "127.0.0.1", 4000, "gina1#1", *GINA, now=0.0)
    own.vote_pins(2, [("gina1", *GINA)])
    assert own.vote_pins(3, [("gina1", *IMPOSTOR)]) == [] and "gina1" not in own.disputed


def test_a_peers_later_pin_is_its_vote_in_place_of_the_earlier_one() -> None:
    """A pin taken from one peer is not this node's vote too (node 2 would count twice); a peer
    that changes its pin changes its vote."""
    d = Directory(KEY, ttl_s=10.0, nodes=3)
    assert [v.outcome for v in d.vote_pins(2, [("gina1", *GINA)])] == ["adopted"]
    assert [v.outcome for v in d.vote_pins(3, [("gina1", *IMPOSTOR)])] == ["disputed"]
    assert d.pins["gina1"] == GINA  # kept, but refused while disputed
    assert [v.outcome for v in d.vote_pins(2, [("gina1", *IMPOSTOR)])] == ["replaced"]
    assert d.pins["gina1"] == IMPOSTOR and "gina1" not in d.disputed


def test_the_digest_differs_while_a_pin_is_missing() -> None:
    """Anti-entropy compares digests: a node that lacks a pin must look different."""
    a = Directory(KEY, ttl_s=10.0, pins={"gina1": (b"S" * 32, b"B" * 32)})
    b = Directory(KEY, ttl_s=10.0)
    assert a.digest(0.0) != b.digest(0.0)
    b.vote_pins(2, [("gina1", b"S" * 32, b"B" * 32)])
    assert a.digest(0.0) == b.digest(0.0)


def test_has_session_only_for_the_session_this_directory_accepted() -> None:
    d = _dir()
    token, entry = d.join("gina1", "127.0.0.1", 4000, "gina1#1", b"", b"", now=0.0)
    assert d.has_session("gina1", entry.token_digest, now=1.0)
    assert not d.has_session("gina1", token_digest(b"impostor" * 2), now=1.0)
    assert not d.has_session("gina1", entry.token_digest, now=11.0)  # expired
    assert not d.has_session("bob", entry.token_digest, now=1.0)


A_ADDR, B_ADDR = ("127.0.0.1", 4000), ("127.0.0.1", 4001)


def test_a_peers_entry_of_another_live_session_does_not_replace_this_nodes() -> None:
    """Two processes of dan join at once: node 1 took A, node 3 took B. Their replicated
    entries cross; each node keeps the session it took (the old rule, later expiry wins,
    swapped them, so B's retried Join at node 1 was then accepted too)."""
    n1, n3 = _dir(), _dir()
    ta, ea = n1.join("dan", *A_ADDR, "dan#1", b"", b"", now=0.0)
    tb, eb = n3.join("dan", *B_ADDR, "dan#2", b"", b"", now=0.5)  # expires later than A
    assert n1.merge(eb, now=0.6) is False
    assert n3.merge(ea, now=0.6) is False
    assert n1.get("dan", 0.7) == ea and n3.get("dan", 0.7) == eb
    with pytest.raises(AlreadyOnline):  # B's retried Join at node 1: still refused
        n1.join("dan", *B_ADDR, "dan#2", b"", b"", now=0.8)
    # A won the majority: its heartbeat at node 3 proves it; node 3 takes A's session
    assert n3.heartbeat("dan", ta, now=1.0).token_digest == ea.token_digest
    with pytest.raises(BadToken):
        n3.check("dan", tb, now=1.1)
    assert n3.rivals == {}


def test_a_rival_session_that_left_or_expired_is_not_promoted() -> None:
    n3 = _dir()
    n1 = _dir()
    ta, ea = n1.join("dan", *A_ADDR, "dan#1", b"", b"", now=0.0)
    n3.join("dan", *B_ADDR, "dan#2", b"", b"", now=0.0)
    n3.merge(ea, now=0.1)
    tomb = n1.leave("dan", ta, now=0.2)
    assert tomb is not None
    n3.merge(tomb, now=0.3)
    with pytest.raises(BadToken):
        n3.check("dan", ta, now=0.4)
    n3.merge(ea, now=0.5)  # a late copy of the join: the tombstone refuses it
    with pytest.raises(BadToken):
        n3.check("dan", ta, now=0.6)


def test_two_concurrent_joins_one_winner_by_majority_in_every_interleaving() -> None:
    """Three nodes, two processes of dan each sending a Join to every node (as the client's
    quorum call does), every node replicating each session it takes to the others, in random
    orders. A node that holds a live session refuses the other process (its probe finds that
    process alive). Exactly one process gets JoinReplies from a majority; the other gets
    `already online` from a majority (the client fails at once)."""
    import random

    for seed in range(300):
        rng = random.Random(seed)
        nodes = [_dir() for _ in range(3)]
        events: list[tuple[str, int, object]] = [("join", n, p) for n in range(3) for p in "AB"]
        replies: dict[str, dict[int, str]] = {"A": {}, "B": {}}
        now = 0.0
        while events:
            kind, n, what = events.pop(rng.randrange(len(events)))
            now += 0.01
            if kind == "join":
                addr, rid = (A_ADDR, "dan#1") if what == "A" else (B_ADDR, "dan#2")
                try:
                    _, entry = nodes[n].join("dan", *addr, rid, b"", b"", now=now)
                except AlreadyOnline:
                    replies[str(what)][n] = "already_online"
                    continue
                replies[str(what)][n] = "joined"
                events += [("merge", m, entry) for m in range(3) if m != n]
            else:
                nodes[n].merge(what, now=now)  # type: ignore[arg-type]
        joined = {p: sum(r == "joined" for r in got.values()) for p, got in replies.items()}
        refused = {p: sum(r == "already_online" for r in got.values()) for p, got in replies.items()}
        winners = [p for p in "AB" if joined[p] >= 2]
        assert len(winners) == 1, (seed, replies)
        loser = "B" if winners == ["A"] else "A"
        assert refused[loser] >= 2, (seed, replies)
