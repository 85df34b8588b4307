"""The client's directory-session core (actors.core.presence.Presence): pure, `now` passed in."""

from __future__ import annotations

from actors.core.directory import token_digest
from actors.core.presence import (
    BACK_NOTICE,
    REJOINED_NOTICE,
    UNREACHABLE_NOTICE,
    Check,
    Heartbeat,
    Notice,
    Presence,
    Rejoin,
)
from codec.messages import DirectoryReply, UserEntry

NODES = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
ME = ("127.0.0.1", 40001)
TOKEN = b"T" * 16


def listing(*entries: UserEntry) -> DirectoryReply:
    return DirectoryReply(rid="alice#9", users=entries)


def me(token: bytes = TOKEN, addr: tuple[str, int] = ME) -> UserEntry:
    return UserEntry(user="alice", host=addr[0], port=addr[1], token_digest=token_digest(token),
                     sign_key=b"", box_key=b"", expires=1.0)


def joined() -> Presence:
    p = Presence("alice", NODES, 3.0, address=ME)
    p.joining()
    assert p.connection() == "joining"
    assert p.joined(TOKEN, 0.0) == []
    return p


def round_of(p: Presence, now: float) -> int:
    effects = p.tick(now)
    assert effects[0] == Heartbeat(TOKEN)
    check = effects[1]
    assert isinstance(check, Check) and check.nodes == tuple(NODES)
    return check.round


def test_heartbeat_and_check_every_period() -> None:
    p = joined()
    assert p.tick(2.9) == []
    r = round_of(p, 3.0)
    for node in NODES:
        assert p.check_answer(r, node, listing(me()), 3.1) == []
    assert p.tick(5.9) == []
    assert round_of(p, 6.0) == r + 1


def test_only_a_majority_without_us_makes_the_session_lost() -> None:
    p = joined()
    r = round_of(p, 3.0)
    assert p.check_answer(r, NODES[0], listing(), 3.1) == []  # one stale node
    assert p.check_answer(r, NODES[1], listing(me()), 3.1) == []
    assert p.check_answer(r, NODES[2], listing(me(b"x" * 16, ("10.0.0.9", 5)), me()), 3.1) == []
    assert p.connection() == "joined"
    r = round_of(p, 6.0)
    p.check_answer(r, NODES[0], listing(), 6.1)
    p.check_answer(r, NODES[1], listing(me(addr=("127.0.0.1", 9))), 6.1)  # not our address
    assert p.connection() == "rejoining" and p.token is None
    assert p.tick(6.1) == [Rejoin()]
    assert p.tick(100.0) == []  # one join at a time
    assert p.joined(b"N" * 16, 6.5) == [Notice(REJOINED_NOTICE)]
    assert p.connection() == "joined"


def test_a_silent_round_says_unreachable_once_then_back() -> None:
    p = joined()
    for k in range(3):
        r = round_of(p, 3.0 * (k + 1))
        out = [e for node in NODES for e in p.check_answer(r, node, None, 3.0 * (k + 1) + 1)]
        assert out == ([Notice(UNREACHABLE_NOTICE)] if k == 0 else [])
    assert p.connection() == "cloud unreachable"
    r = round_of(p, 12.0)
    out = [e for node in NODES for e in p.check_answer(r, node, listing(me()), 12.1)]
    assert out == [Notice(BACK_NOTICE)] and p.connection() == "joined"


def test_a_failed_rejoin_tries_again_next_period() -> None:
    p = joined()
    r = round_of(p, 3.0)
    for node in NODES:
        p.check_answer(r, node, listing(), 3.1)
    assert p.tick(3.1) == [Rejoin()]
    assert p.join_failed("no_cloud", "no node answered", 6.1) == [Notice(UNREACHABLE_NOTICE)]
    assert p.connection() == "cloud unreachable"
    assert p.tick(9.0) == []
    assert p.tick(9.1) == [Rejoin()]
    refusal = "alice is already online from 10.0.0.2:5"
    assert p.join_failed("already_online", refusal, 9.2) == [
        Notice(f"cannot rejoin the cloud yet: {refusal}")]
    assert p.tick(12.2) == [Rejoin()]
    assert p.join_failed("already_online", refusal, 12.3) == []  # said once


def test_answers_of_an_old_round_and_a_join_after_leave_are_ignored() -> None:
    p = joined()
    r = round_of(p, 3.0)
    round_of(p, 6.0)
    for node in NODES:
        assert p.check_answer(r, node, listing(), 6.1) == []
    assert p.connection() == "joined"
    assert p.leaving() == TOKEN
    assert p.connection() == "not joined" and p.tick(50.0) == []
    assert p.joined(b"N" * 16, 51.0) == [] and p.connection() == "not joined"
    assert p.leaving() is None


def test_a_wildcard_bind_compares_the_port_only() -> None:
    p = Presence("alice", NODES, 3.0, address=("0.0.0.0", ME[1]))
    p.joining()
    p.joined(TOKEN, 0.0)
    r = p.tick(3.0)[1]
    assert isinstance(r, Check)
    for node in NODES:
        p.check_answer(r.round, node, listing(me(addr=("10.1.2.3", ME[1]))), 3.1)
    assert p.connection() == "joined"
