"""One session per user, agreed by a majority (issue 15 item 3), on a real cloud: three node
processes on loopback, two client sessions of one user (the same keys, two homes, two
addresses) joining at the same moment, round after round.

Each round exactly one join succeeds and the other fails with `already_online` (a majority of
the nodes refused it), and the winner's session is the one its requests are served with; the
loser is not left with a session whose heartbeats the nodes refuse.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import config
from actors.client.client_session import ClientSession, SessionError
from benchmarks.localcloud import Cloud
from codec.messages import ConfirmUpdates

pytestmark = pytest.mark.timeout(300)

ROUNDS = 20


def _join_ready(cfg: config.Config, home: Path, user: str) -> None:
    """A first session of `user` in `home` (keys made, cloud past its start-up sync), left."""
    import time

    s = ClientSession(user, home, cfg)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                s.join()
                return
            except SessionError:
                assert time.monotonic() < deadline, "the cloud never accepted a join"
                time.sleep(0.2)
    finally:
        s.close()


def _session_ok(s: ClientSession, addr: tuple[str, int]) -> bool:
    """Whether the node at `addr` accepts `s`'s session token (an empty ConfirmUpdates)."""
    tok = s.require_token()
    try:
        s.call(lambda rid, _a: ConfirmUpdates(rid=rid, user=s.user, token=tok, ids=()),
               targets=[addr], deadline_s=10.0)
        return True
    except SessionError:
        return False


def test_two_concurrent_joins_of_one_user_have_one_winner(
    cloud_factory: Callable[..., Cloud], tmp_path: Path
) -> None:
    cloud = cloud_factory(3)
    cfg = config.load(cloud.config)
    homes = [tmp_path / "dan-a", tmp_path / "dan-b"]
    _join_ready(cfg, homes[0], "dan")
    homes[1].mkdir()
    shutil.copytree(homes[0] / "keys", homes[1] / "keys")  # the same user on a second machine
    tally = {"a": 0, "b": 0}
    for rnd in range(ROUNDS):
        sessions = {"a": ClientSession("dan", homes[0], cfg), "b": ClientSession("dan", homes[1], cfg)}
        gate = threading.Barrier(2)
        outcome: dict[str, str] = {}

        def join(name: str) -> None:
            gate.wait(timeout=30)
            try:
                sessions[name].join()
                outcome[name] = "joined"
            except SessionError as exc:
                outcome[name] = exc.code

        threads = [threading.Thread(target=join, args=(n,)) for n in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        try:
            assert sorted(outcome.values()) == ["already_online", "joined"], (rnd, outcome)
            winner = next(n for n, o in outcome.items() if o == "joined")
            tally[winner] += 1
            # the winner's session is the agreed one: a majority of the nodes serve it
            served = sum(_session_ok(sessions[winner], node.client_addr) for node in cfg.nodes)
            assert served >= 2, (rnd, served)
        finally:
            for s in sessions.values():
                s.close()  # the winner leaves: the next round starts with dan offline
    print(f"[concurrent joins] {ROUNDS} rounds, winners {tally}")


def test_the_public_keys_alone_do_not_make_a_session(
    cloud_factory: Callable[..., Cloud], tmp_path: Path
) -> None:
    """Anyone can learn a user's public keys (the directory lists them with the user's entry).
    With them alone, an impostor's Join of an offline user (which, accepted, would let it
    confirm and so make every node forget the user's pending updates) is refused by the nodes
    (`bad_proof`, the proof is not made with the user's private signing key); the user's own
    join is accepted afterwards."""
    import dataclasses
    import time

    from actors.client.keys import ClientKeys

    cloud = cloud_factory(3)
    cfg = config.load(cloud.config)
    _join_ready(cfg, tmp_path / "erin", "erin")
    erin = ClientKeys.load_or_create(tmp_path / "erin")
    (tmp_path / "mallory").mkdir()
    mallory = ClientSession("mallory", tmp_path / "mallory", cfg)
    try:
        with pytest.raises(SessionError) as err:
            mallory.call(lambda rid, _a: dataclasses.replace(
                mallory.keys.join(rid, "erin", time.time()),
                sign_key=erin.sign_public, box_key=erin.box_public), deadline_s=30.0)
        assert err.value.code == "bad_proof"
        assert "not signed by the key it presents" in str(err.value)
    finally:
        mallory.close()
    _join_ready(cfg, tmp_path / "erin", "erin")
    logged = [n for n in (1, 2, 3) if "join refused: the join of erin is not signed"
              in cloud.log_text(n)]
    assert len(logged) >= 2  # a majority of the nodes refused it, each with a log line
