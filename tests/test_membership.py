"""Membership: the heartbeat failure detector, its states, epochs and the majority rule."""

import pytest

from actors.core.membership import CloudCoreError, Membership, Output
from codec.messages import ComingUp, Done, GoingDown, PeerHeartbeat

T = 1.0  # failure timeout, seconds


def hb(
    node: int, epoch: int = 1, state: str = "up", token_epoch: int = 0, holder: int = 0
) -> PeerHeartbeat:
    return PeerHeartbeat(
        node=node,
        epoch=epoch,
        state=state,
        load=3,
        token_epoch=token_epoch,
        token_holder=holder,
        digest=b"d" * 16,
    )


def test_a_peer_never_heard_is_unreachable_and_self_is_up() -> None:
    m = Membership(1, [1, 2, 3], T)
    assert m.state_of(1, 0.0) == "up"
    assert m.state_of(2, 0.0) == "unreachable"
    assert m.alive(0.0) == {1}
    assert m.up_peers(0.0) == set()
    assert not m.has_majority(0.0)


def test_heartbeat_makes_a_peer_up_until_it_is_silent_past_the_timeout() -> None:
    m = Membership(1, [1, 2, 3], T)
    assert m.observe(hb(2), 10.0) is False
    assert m.state_of(2, 10.0 + T) == "up"
    assert m.state_of(2, 10.0 + T + 0.001) == "unreachable"
    assert m.next_deadline() == 10.0 + T
    view = m.peer(2)
    assert view is not None and (view.load, view.digest) == (3, b"d" * 16)


def test_going_down_and_coming_up_are_announced_states() -> None:
    m = Membership(1, [1, 2, 3], T)
    m.observe(hb(2), 0.0)
    m.observe(GoingDown(node=2, epoch=1), 0.5)
    assert m.state_of(2, 0.6) == "down"
    assert m.state_of(2, 0.5 + T + 0.1) == "unreachable"  # a down node still has to heartbeat
    m.observe(hb(2, state="down"), 2.0)
    assert m.state_of(2, 2.0) == "down"
    assert 2 in m.reachable(2.0) and 2 not in m.up_peers(2.0)
    m.observe(ComingUp(node=2, epoch=1), 2.1)
    assert m.state_of(2, 2.1) == "up"


def test_majority_counts_only_up_nodes_self_included() -> None:
    m = Membership(1, [1, 2, 3], T)
    m.observe(hb(2), 0.0)
    assert m.alive(0.0) == {1, 2} and m.has_majority(0.0)
    m.observe(hb(2, state="down"), 0.1)  # a node in a simulated failure does not count
    assert not m.has_majority(0.1)
    m.observe(hb(2), 0.2)
    m.observe(hb(3), 0.2)
    m.set_self_up(False)
    assert m.alive(0.2) == {2, 3}
    assert m.state_of(1, 0.2) == "down"
    assert m.heartbeat(load=0, token_epoch=4, token_holder=2).state == "down"


@pytest.mark.parametrize(("n", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority_is_half_plus_one(n: int, majority: int) -> None:
    m = Membership(1, range(1, n + 1), T)
    assert m.majority == majority
    for peer in range(2, majority + 1):
        m.observe(hb(peer), 0.0)
    assert m.has_majority(0.0)
    if majority > 1:
        assert not Membership(1, range(1, n + 1), T).has_majority(0.0)


def test_older_epoch_is_a_leftover_and_newer_epoch_is_a_restart() -> None:
    m = Membership(1, [1, 2, 3], T)
    assert m.observe(hb(2, epoch=5), 0.0) is False
    assert m.observe(hb(2, epoch=4, state="down"), 0.1) is False
    assert m.state_of(2, 0.1) == "up" and m.epoch_of(2) == 5
    assert m.observe(GoingDown(node=2, epoch=4), 0.2) is False
    assert m.state_of(2, 0.2) == "up"
    assert m.observe(hb(2, epoch=6), 0.3) is True
    assert m.epoch_of(2) == 6 and m.epoch_of(3) == 0 and m.epoch_of(1) == 1


def test_heard_from_refreshes_a_known_peer_only() -> None:
    m = Membership(1, [1, 2, 3], T)
    m.heard_from(2, 5.0)
    assert m.state_of(2, 5.0) == "unreachable"  # never heartbeated: state unknown
    m.observe(hb(2), 0.0)
    m.heard_from(2, 5.0)
    assert m.state_of(2, 5.5) == "up"


def test_a_refused_peer_is_unreachable_at_once_until_it_is_heard_again() -> None:
    m = Membership(1, [1, 2, 3], T)
    assert m.refused(2, 0.0) is False  # never heard: unreachable already, nothing changes
    m.observe(hb(2), 0.0)
    m.observe(hb(3), 0.0)
    m.transitions(0.0)
    assert m.refused(2, 0.1) is True  # its port answered "port unreachable": gone now
    assert m.state_of(2, 0.1) == "unreachable"  # not after the failure timeout
    assert 2 not in m.up_peers(0.1) and 2 not in m.reachable(0.1) and m.alive(0.1) == {1, 3}
    assert m.next_deadline() == T  # node 3's timeout; node 2 has no deadline left to wait for
    assert m.transitions(0.1) == [(2, "unreachable")]
    assert m.refused(2, 0.2) is False  # said once
    m.heard_from(2, 0.3)  # any authenticated message of it: it was alive after all
    assert m.state_of(2, 0.3) == "up" and m.transitions(0.3) == [(2, "up")]
    m.refused(2, 0.4)
    assert m.observe(hb(2, epoch=2), 0.5) is True  # restarted: a newer epoch, up again
    assert m.state_of(2, 0.5) == "up"
    m.refused(3, 0.6)
    m.observe(ComingUp(node=3, epoch=1), 0.7)
    assert m.state_of(3, 0.7) == "up"


def test_transitions_report_each_change_once() -> None:
    m = Membership(1, [1, 2, 3], T)
    assert m.transitions(0.0) == []
    m.observe(hb(2), 0.0)
    m.observe(hb(3), 0.0)
    assert m.transitions(0.1) == [(2, "up"), (3, "up")]
    assert m.transitions(0.2) == []
    m.observe(hb(3), 0.9)
    assert m.transitions(1.5) == [(2, "unreachable")]


def test_unknown_nodes_and_other_messages_are_ignored() -> None:
    m = Membership(1, [1, 2, 3], T)
    assert m.observe(hb(9), 0.0) is False
    assert m.observe(hb(1), 0.0) is False  # our own id from the network
    assert m.observe(Done(rid="a#1", node=2, acked=True), 0.0) is False
    assert m.reachable(0.0) == set()
    with pytest.raises(CloudCoreError):
        m.state_of(9, 0.0)


def test_bad_construction_is_refused() -> None:
    with pytest.raises(CloudCoreError):
        Membership(4, [1, 2, 3], T)
    with pytest.raises(CloudCoreError):
        Membership(1, [1, 2, 3], 0.0)


def test_output_collects_sends_in_destination_order() -> None:
    out = Output()
    assert not out
    out.send_all({3, 2}, Done(rid="a#1", node=1, acked=True))
    out.extend(Output(events=["x"]))
    assert [d for d, _ in out.sends] == [2, 3] and out.events == ["x"] and out
