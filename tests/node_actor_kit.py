"""Helpers for actor-level tests of the node: a fake clock, a recording actor, a fake cloud of
ElectionActors and FailureTokenActors over `FakeTransport`s (tests/fake_transport.py).

Time is a fake clock the test moves; ticks are told by the test (`step`), and `ask` of each actor
after a step waits until it handled everything before (pykka mailboxes are FIFO). Messages between
nodes travel through a `FakeNetwork` at once, on the sender's thread, so a step may take a few
rounds of asks to settle (`settle`).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pykka
from fake_transport import FakeClock, FakeNetwork, FakeTransport

import config
from actors.node.base import PeerLink, Wire, refusals_to
from actors.node.election_actor import ElectionActor
from actors.node.router import Router
from actors.node.signals import CountersQuery, GoDown, Tick
from actors.node.token_actor import FailureTokenActor
from config import Config, FailuresConfig

FAST_FAILURES = FailuresConfig(enabled=True, max_down_s=2.0, mean_up_s=3.0, token_hold_s=0.5)


BOXES: dict[str, Recorder] = {}  # actor urn -> recorder (its list and condition)


class Recorder(pykka.ThreadingActor):
    """Records every message it is told; `wait(pred)` waits for one that matches. A GoDown's
    `then_send` is carried out on `peers` (as the EncryptFlowActor would) when given."""

    def __init__(self, peers: PeerLink | None = None) -> None:
        super().__init__()
        self.peers = peers
        self.got: list[Any] = []
        self.cond = threading.Condition()
        BOXES[self.actor_urn] = self

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Wire):
            return None
        if isinstance(message, GoDown) and self.peers is not None:
            for dest, msg in message.then_send:
                self.peers.send(dest, msg)
        with self.cond:
            self.got.append(message)
            self.cond.notify_all()
        return None


def recorded(ref: pykka.ActorRef[Any], kind: type | tuple[type, ...]) -> list[Any]:
    rec = ref.proxy().got.get()
    return [m for m in rec if isinstance(m, kind)]


def wait_recorded(
    ref: pykka.ActorRef[Any], pred: Callable[[list[Any]], bool], timeout: float = 10.0
) -> list[Any]:
    actor = BOXES[ref.actor_urn]
    with actor.cond:
        ok = actor.cond.wait_for(lambda: pred(actor.got), timeout=timeout)
        got = list(actor.got)
    assert ok, f"recorder did not see what was expected: {[type(m).__name__ for m in got]}"
    return got


def three_node_config(failures: FailuresConfig | None = None) -> Config:
    cfg = config.load()
    if failures is not None:
        cfg = replace(cfg, failures=failures)
    return cfg


def n_node_config(n: int) -> Config:
    """The default config with `n` loopback nodes (ids 1..n; only fake transports use them)."""
    cfg = config.load()
    nodes = tuple(
        config.NodeConfig(id=i, host="127.0.0.1", client_port=47100 + i, peer_port=47200 + i)
        for i in range(1, n + 1)
    )
    return replace(cfg, nodes=nodes)


class FakeCloud:
    """ElectionActor + FailureTokenActor per node, routed by the real Router, over fake peer
    transports; every other actor of a node is a Recorder."""

    def __init__(
        self,
        cfg: Config,
        clock: FakeClock,
        *,
        failures: bool = False,
        seed: int = 7,
        fresh: frozenset[int] = frozenset(),
    ) -> None:
        """`fresh`: nodes started on an empty data directory (a new or replaced disk)."""
        self.cfg = cfg
        self.clock = clock
        self.net = FakeNetwork()
        self.ids = [n.id for n in cfg.nodes]
        self.tp: dict[int, FakeTransport] = {}
        self.refs: dict[int, dict[str, pykka.ActorRef[Any]]] = {}
        rng = random.Random(seed)
        for node in cfg.nodes:
            tp = self.net.add(node.peer_addr)
            self.tp[node.id] = tp
            peers = PeerLink(cfg, node.id, tp)  # type: ignore[arg-type]
            refs: dict[str, pykka.ActorRef[Any]] = {
                "election": ElectionActor.start(
                    cfg,
                    node.id,
                    peers,
                    clock=clock,
                    boot_epoch=1000 + node.id,
                    loadavg=lambda: 0.0,
                    disk_kept=node.id not in fresh,
                ),
                "token": FailureTokenActor.start(
                    cfg,
                    node.id,
                    peers,
                    clock=clock,
                    rng=random.Random(rng.random()),
                    boot_epoch=1000 + node.id,
                    failures=failures,
                    wall=clock,
                ),
                "flow": Recorder.start(peers),
                "directory": Recorder.start(),
                "pending": Recorder.start(),
                "supervisor": Recorder.start(),
            }
            self.refs[node.id] = refs
            for ref in refs.values():
                ref.ask(Wire(refs))
            router = Router(
                node.id, {n.peer_addr: n.id for n in cfg.nodes if n.id != node.id}, refs
            )
            tp.subscribe(router.peer)
            tp.on_refused(refusals_to(peers, refs))

    def ref(self, node: int, name: str) -> pykka.ActorRef[Any]:
        return self.refs[node][name]

    def live(self) -> list[int]:
        return [n for n in self.ids if not self.tp[n].stopped]

    def settle(self, rounds: int = 3) -> None:
        """Let messages in flight be handled (each ask waits for the mailbox before it)."""
        for _ in range(rounds):
            for n in self.live():
                self.ref(n, "election").ask(CountersQuery())
                self.ref(n, "token").ask(CountersQuery())
                self.ref(n, "flow").ask(Wire({}))  # a Recorder ignores Wire

    def step(self, dt: float, rounds: int = 3) -> None:
        self.clock.advance(dt)
        for n in self.live():
            self.ref(n, "election").ask(Tick())
            self.ref(n, "token").ask(Tick())
        self.settle(rounds)

    def run(
        self, seconds: float, dt: float = 0.05, check: Callable[[], None] | None = None
    ) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)
            if check is not None:
                check()

    def silence(self, node: int) -> None:
        """The node stops answering (its transport is gone): a SIGKILL as peers see it."""
        self.tp[node].stopped = True

    def kill(self, node: int) -> None:
        """The node's process is gone, its host up: silent, and its port answers the others'
        datagrams with port unreachable."""
        self.tp[node].stopped = True
        self.tp[node].closed = True

    def stop(self) -> None:
        for refs in self.refs.values():
            for ref in refs.values():
                ref.stop()


class FakeReactor:
    """The node's Reactor as PeerLink uses it: its thread, and `defer` (kept; the test runs
    them when the turn is over), which refuses off that thread."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.deferred: list[tuple[Any, bool]] = []

    def defer(self, fn: Any, *, first: bool = False) -> bool:
        if threading.current_thread() is not self.thread:
            return False
        self.deferred.append((fn, first))
        return True

    def end_turn(self) -> None:
        while self.deferred:
            fn, _ = self.deferred.pop(0)
            fn()
