"""One node of the cloud: a thin supervisor over the node's actors.

`NodeActor` starts and wires the actors of one node (each owns one concern and its core):

    client socket --TransportActor--+                       +--> EncryptFlowActor --> EncoderActor pool
                                    +--> Router (by type) --+--> DirectoryActor --> PendingUpdateActor
    peer socket ---TransportActor---+                       +--> ElectionActor <--> FailureTokenActor
                                                            +--> NodeActor (StatusQuery)

It answers `status` from the snapshots the actors send it (`Snapshot`, `Digest`, `ClusterView`)
and the served/cached figures the EncryptFlowActor writes into its `figures` (no message),
drives the one shared `Ticker`, re-reads the chaos runs' peer policy file, and stops everything.
No actor blocks on another on a request's path; they talk by messages only (actors.node.signals).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import math
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import pykka

from actors.direct import DirectEntry
from actors.node.base import NodePartActor, PeerLink, Wire, initial_view, refusals_to
from actors.node.directory_actor import DirectoryActor
from actors.node.election_actor import ElectionActor
from actors.node.encrypt_actor import EncryptFlowActor
from actors.node.pending_actor import PendingUpdateActor
from actors.node.pending_store import PendingStore, PinStore
from actors.node.router import Router
from actors.node.signals import (
    ClientIn,
    ClusterView,
    CountersQuery,
    Digest,
    Snapshot,
    Tick,
    TokenView,
)
from actors.node.token_actor import FailureTokenActor
from codec.messages import StatusQuery, StatusReply
from config import Config
from transport.policy import PEER_FILE_ENV, PolicyFile
from transport.udp import PeerAuth, Reactor, Transport

log = logging.getLogger(__name__)

Addr = tuple[str, int]
FAST_TICK_S = 0.01  # election and token deadlines
SLOW_TICK_S = 0.1  # housekeeping, policy file


def tick_periods(failures_on: bool) -> dict[str, float]:
    """Tick period (s) of each child actor. The token ring has deadlines only while the failure
    simulation runs: off, its ticks only flush its log summaries (10 s windows), so it is
    ticked slowly (100 wake-ups a second of each node less)."""
    return {"election": FAST_TICK_S, "token": FAST_TICK_S if failures_on else SLOW_TICK_S,
            "directory": SLOW_TICK_S, "pending": SLOW_TICK_S, "flow": SLOW_TICK_S}


class NodeActor(NodePartActor):
    """The supervisor of one node. `client_tp` / `peer_tp` are its transports."""

    def __init__(
        self,
        cfg: Config,
        node_id: int,
        data_dir: Path,
        *,
        client_tp: Transport,
        peer_tp: Transport,
        clock: Callable[[], float],
        rng: random.Random,
        failures: bool,
        peer_policy_file: str | None = None,
        boot_epoch: int | None = None,
        reactor: Reactor | None = None,
    ) -> None:
        super().__init__(node_id, clock)
        self.reactor = reactor  # the transports' reader: drives the ticker (else its thread)
        self.cfg = cfg
        self.data_dir = data_dir
        self.client_tp = client_tp
        self.peer_tp = peer_tp
        self.rng = rng
        self.failures = failures
        self.boot_epoch = boot_epoch if boot_epoch is not None else int(time.time() * 1000)
        self.peer_policy = PolicyFile(peer_policy_file) if peer_policy_file else None
        self.view = initial_view(cfg)
        self.token: TokenView | None = None  # straight from the FailureTokenActor (status)
        self.figures: dict[str, Any] = {"served": 0, "cached": 0, "users": 0, "pending": 0}
        self.digests = {"directory": b"", "pending": b""}
        self.children: dict[str, pykka.ActorRef[Any]] = {}
        self.router: Router | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self.ticker: Ticker | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def on_start(self) -> None:
        cfg, nid, clock = self.cfg, self.node_id, self.clock
        peers = PeerLink(cfg, nid, self.peer_tp)
        peers.reactor = self.reactor  # a reader turn's election messages and Dones: one datagram
        disk_kept = (self.data_dir / "pending.db").exists()  # else a new or replaced disk
        store = PendingStore(self.data_dir / "pending.db")
        pins = PinStore(self.data_dir / "pending.db")
        view = self.view
        # the election's hops run on the thread that has the message (actors.direct): the
        # routers' client requests and peer messages on the transports' reader (one thread for
        # both sockets, start_node's Reactor; without one, each socket's own), the
        # flow's StartElection and the ElectionActor's Won on their callers' threads (and the
        # outcomes of the flow's client sends on the client transport's)
        entry, flow_entry = DirectEntry(), DirectEntry()
        ticker = self.ticker = Ticker([], period=FAST_TICK_S)  # the actors join below
        self.children = {
            "election": ElectionActor.start(
                cfg, nid, peers, clock=clock, boot_epoch=self.boot_epoch, disk_kept=disk_kept,
                entry=entry,
            ),
            "token": FailureTokenActor.start(
                cfg,
                nid,
                peers,
                clock=clock,
                rng=self.rng,
                boot_epoch=self.boot_epoch,
                failures=self.failures,
            ),
            "directory": DirectoryActor.start(
                cfg, nid, self.client_tp, peers, pins, view, clock=clock
            ),
            "pending": PendingUpdateActor.start(
                nid, self.client_tp, peers, store, view, clock=clock
            ),
            "flow": EncryptFlowActor.start(cfg, nid, self.client_tp, peers, view, clock=clock,
                                           figures=self.figures,  # written there: no Snapshot
                                           entry=flow_entry, later=ticker.after,
                                           after_turn=None if self.reactor is None
                                           else self.reactor.defer),
        }
        refs = {**self.children, "supervisor": self.actor_ref}
        self.refs = refs
        direct: dict[str, Any] = {**refs, "election": entry, "flow": flow_entry}
        for name, ref in self.children.items():
            ref.ask(Wire(direct if name in ("election", "flow") else refs))
        self.router = Router(nid, {n.peer_addr: n.id for n in cfg.nodes if n.id != nid}, direct)
        self._unsubscribe = [
            self.client_tp.subscribe(self.router.client_batch, batches=True),
            self.peer_tp.subscribe(self.router.peer_batch, batches=True),
        ]
        self.peer_tp.on_refused(refusals_to(peers, refs))
        periods = tick_periods(self.failures and cfg.failures.enabled)
        # the election's ticks through its entry: a tick while it is idle runs on the thread
        # that fires the ticker (100 wake-ups a second of the ElectionActor's thread less)
        ticker.add([(direct.get(name, self.children[name]) if name == "election"
                     else self.children[name], period) for name, period in periods.items()]
                   + [(self.actor_ref, SLOW_TICK_S)])
        if self.reactor is not None:
            ticker.drive(self.reactor)
        else:
            ticker.start()

    def on_stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for ref in self.children.values():
            ref.stop()

    # ---- dispatch ------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if isinstance(message, ClientIn) and isinstance(message.msg, StatusQuery):
            self.client_tp.send(message.addr, self.status_reply(message.msg.rid))
        elif isinstance(message, Snapshot):
            self.figures.update(message.values)
        elif isinstance(message, Digest):
            self.digests[message.part] = message.digest
        elif isinstance(message, ClusterView):
            if self.view is None or message.holding != self.view.holding:
                log.debug("view: holding %s (version %d)", message.holding, message.version)
            self.view = message
        elif isinstance(message, TokenView):
            self.token = message
        elif isinstance(message, Tick):
            if self.peer_policy is not None:
                self._poll_peer_policy(self.clock())
        elif isinstance(message, dict) and message.get("query") == "counters":
            return self.all_counters()
        return None

    def all_counters(self) -> dict[str, int]:
        """Every actor's counters and the router's, added up (tests, diagnostics)."""
        total: Counter[str] = Counter(self.counters)
        for ref in self.children.values():
            total.update(cast("dict[str, int]", ref.ask(CountersQuery(), timeout=5.0)) or {})
        if self.router is not None:
            total.update(self.router.counters)
        return dict(total)

    def status_reply(self, rid: str) -> StatusReply:
        v = self.view
        digest = b""
        if v.self_up:
            digest = hashlib.sha256(self.digests["directory"] + self.digests["pending"]).digest()[
                :16
            ]
        return StatusReply(
            rid=rid,
            node=self.node_id,
            state="up" if v.self_up else "down",
            served=self.figures["served"],
            cached=self.figures["cached"],
            token=v.holding if self.token is None else self.token.holding,
            users=self.figures["users"],
            pending=self.figures["pending"],
            down_since=v.down_since,
            token_holder=v.token_holder if self.token is None else self.token.holder,
            majority=v.majority,
            digest=digest,
            pid=os.getpid(),
            syncing=v.syncing,
        )

    def _poll_peer_policy(self, now: float) -> None:
        """Chaos runs change the impairment of the peer socket while the node runs."""
        assert self.peer_policy is not None
        try:
            changed, policy = self.peer_policy.poll(now)
        except ValueError as exc:
            self.count("peer_policy_refused", f"{self.peer_policy.path}: {exc}")
            return
        if changed:
            self.peer_tp.set_policy(policy)


class Tickable(Protocol):
    """What the ticker tells Tick to: an actor's ref, or a DirectEntry (the tick then runs on
    the thread that fires the ticker, its own or the node's reader, while the actor is idle)."""

    def tell(self, message: Any) -> None: ...

    def is_alive(self) -> bool: ...


class Ticker(threading.Thread):
    """The one shared clock source: tells Tick to each actor every its own period (s), and runs
    the one-shot timers of `after` (to the period: the flow's held Dones). Either on its own
    thread (`start`), which wakes every period, or driven by the node's Reactor (`drive`): its
    `fire` then runs on the reader thread between turns, on the wake-ups the sockets cause
    anyway while the node is busy (issue 19: a thread wake-up per period less)."""

    def __init__(self, refs: list[tuple[Tickable, float]], *,
                 period: float | None = None) -> None:  # fmt: skip
        super().__init__(name="ticker", daemon=True)
        self._refs = refs
        self._due: list[float] = []  # per ref: its next tick (set by run or drive)
        self._period = period or min((p for _, p in refs), default=0.01)
        self._next = math.inf  # (driven) the next fire
        self._reactor: Reactor | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()  # the timers
        self._timers: list[tuple[float, int, Callable[[], None]]] = []  # a heap
        self._seq = itertools.count()
        self._tick = Tick()

    def add(self, refs: list[tuple[Tickable, float]]) -> None:
        """More actors to tick (before `start` or `drive`)."""
        self._refs.extend(refs)

    def after(self, delay_s: float, fn: Callable[[], None]) -> None:
        """fn() on the thread that fires the ticker once `delay_s` has passed (it only tells an
        actor). A timer never dies silently: the ones pending at `stop` run then, one set after
        it at once."""
        with self._lock:
            if not self._halt.is_set():
                heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._seq), fn))
                return
        self._run_timers(fn)

    def run(self) -> None:
        self._due = [0.0] * len(self._refs)
        while not self._halt.wait(self._period):
            self.fire(time.monotonic())

    def drive(self, reactor: Reactor) -> None:
        """Fire on `reactor`'s thread every period from now, instead of a thread of our own."""
        self._due = [0.0] * len(self._refs)
        self._next = time.monotonic() + self._period
        self._reactor = reactor
        reactor.add_timer(self)

    def next_due(self) -> float:
        return math.inf if self._halt.is_set() else self._next

    def fire(self, now: float) -> None:
        """One period: Tick to each actor whose own period is due, then the timers due."""
        if self._halt.is_set():
            return
        self._next = now + self._period
        for i, (ref, period) in enumerate(self._refs):
            if now >= self._due[i] and ref.is_alive():
                self._due[i] = now + period - self._period / 2
                try:
                    ref.tell(self._tick)
                except pykka.ActorDeadError:  # stopped since is_alive (the node stops)
                    pass
        self._run_timers(*self._take(now))

    def _take(self, until: float) -> list[Callable[[], None]]:
        """The timers due by `until`, taken off the heap."""
        fns = []
        with self._lock:
            while self._timers and self._timers[0][0] <= until:
                fns.append(heapq.heappop(self._timers)[2])
        return fns

    @staticmethod
    def _run_timers(*fns: Callable[[], None]) -> None:
        for fn in fns:
            try:
                fn()
            except Exception:  # its actor stopped meanwhile (or a bug): the others still run
                log.exception("ticker: timer %r failed", fn)

    def stop(self) -> None:
        with self._lock:
            self._halt.set()
        if self._reactor is not None:
            self._reactor.remove_timer(self)
        self._run_timers(*self._take(math.inf))  # early rather than never


def boot_epoch() -> int:
    """Milliseconds since the Unix epoch at start-up: a restarted node has a newer epoch."""
    return int(time.time() * 1000)


def start_node(
    cfg: Config,
    node_id: int,
    data_dir: Path,
    *,
    failures: bool = True,
    policy: Any = None,
    peer_policy: Any = None,
    rng: random.Random | None = None,
) -> tuple[pykka.ActorRef[Any], Callable[[], None]]:
    """Start one node in this process; returns its actor ref and a stop function."""
    from transport.udp import SqliteEpochStore

    data_dir.mkdir(parents=True, exist_ok=True)
    me = cfg.node(node_id)
    auth = PeerAuth(
        secret=cfg.secret_bytes(),
        self_id=node_id,
        peers={n.id: n.peer_addr for n in cfg.nodes},
        epoch_store=SqliteEpochStore(data_dir / "epochs.db"),
    )
    reactor = Reactor(f"node{node_id}")  # one reader thread for both sockets (issue 19)
    client_tp = Transport.start(
        me.client_addr,
        cfg.transport,
        reactor=reactor,
        validate_addresses=True,
        policy=policy,
        name=f"node{node_id}-client",
    )
    peer_tp = Transport.start(  # recv_errors: a killed peer's port unreachable, at once
        me.peer_addr, cfg.transport, auth=auth, policy=peer_policy, name=f"node{node_id}-peer",
        recv_errors=True, reactor=reactor,
    )
    ref = NodeActor.start(
        cfg,
        node_id,
        data_dir,
        client_tp=client_tp,
        peer_tp=peer_tp,
        clock=time.monotonic,
        rng=rng or random.Random(),
        failures=failures,
        peer_policy_file=os.environ.get(PEER_FILE_ENV) or None,
        reactor=reactor,
    )

    def stop() -> None:
        ref.stop()
        client_tp.stop()
        peer_tp.stop()

    return ref, stop


def run_node(
    cfg: Config, node_id: int, data_dir: Path, *, failures: bool = True, log_level: str = "INFO"
) -> int:
    """`python -m actors.server --node ID`: run until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=log_level.upper(),
        format=f"%(asctime)s node{node_id} %(levelname)s %(name)s: %(message)s",
    )
    ref, stop = start_node(cfg, node_id, data_dir, failures=failures and cfg.failures.enabled)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    me = cfg.node(node_id)
    log.info(
        "node %d ready: clients %s:%d peers %s:%d data %s",
        node_id,
        me.host,
        me.client_port,
        me.host,
        me.peer_port,
        data_dir,
    )
    while not done.wait(0.5):
        if not ref.is_alive():
            log.error("node actor stopped unexpectedly")
            stop()
            return 1
    stop()
    return 0
