"""One node of the cloud: a thin Pykka actor that wires the transports to the cores.

The NodeActor owns the pure cores (membership, per-request election, failure token) and the
services (encrypt flow, directory, pending updates). It feeds them messages from the two
transports (client socket, peer socket) and timer ticks from one shared ticker, and carries out
the sends they ask for. Every handler catches bad input: a message that breaks a rule is counted
and logged, the node carries on (pykka would stop an actor whose handler raises).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from actors.node.encoder import EncoderPool, Sealed
from actors.node.node_parts import NodeParts
from config import Config
from transport.policy import PEER_FILE_ENV, PolicyFile
from transport.udp import Delivery, PeerAuth, SendError, Transport

log = logging.getLogger(__name__)

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ClientIn:
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class PeerIn:
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class SendResult:
    key: str
    error: SendError | None


class NodeActor(pykka.ThreadingActor):
    """All state of one node lives in `self.parts` and is touched only on this actor's thread."""

    def __init__(self, cfg: Config, node_id: int, data_dir: Path, *, client_tp: Transport,
                 peer_tp: Transport, clock: Callable[[], float], rng: random.Random,
                 failures: bool, peer_policy_file: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.node_id = node_id
        self.clock = clock
        self.client_tp = client_tp
        self.peer_tp = peer_tp
        self.counters: Counter[str] = Counter()
        self.peer_ids = {n.peer_addr: n.id for n in cfg.nodes if n.id != node_id}
        self.parts = NodeParts(self, data_dir, rng, failures)
        self.peer_policy = PolicyFile(peer_policy_file) if peer_policy_file else None

    # ---- lifecycle ---------------------------------------------------------------------------
    def on_start(self) -> None:
        me = self.actor_ref
        self.pool = EncoderPool(self.cfg.encoder.pool_size, self.cfg.seal,
                                self.cfg.transport.max_message, me.tell)
        self.client_tp.subscribe(lambda d: me.tell(ClientIn(d)))
        self.peer_tp.subscribe(lambda d: me.tell(PeerIn(d)))
        self.parts.started(self.clock())

    def on_stop(self) -> None:
        self.pool.stop()
        self.parts.close()

    def on_failure(self, *args: Any) -> None:
        log.error("node actor failed", exc_info=args[1] if len(args) > 1 else None)

    # ---- sends ---------------------------------------------------------------------------------
    def send_client(self, addr: Addr, msg: Any, key: str | None = None,
                    deadline_s: float | None = None) -> None:
        me = self.actor_ref
        on_done = None if key is None else (lambda err: me.tell(SendResult(key, err)))
        self.client_tp.send(addr, msg, on_done=on_done, deadline_s=deadline_s)

    def send_peer(self, node_id: int, msg: Any) -> None:
        self.peer_tp.send(self.cfg.node(node_id).peer_addr, msg)

    def send_peers(self, msg: Any) -> None:
        for node in self.cfg.nodes:
            if node.id != self.node_id:
                self.peer_tp.send(node.peer_addr, msg)

    # ---- dispatch ------------------------------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        now = self.clock()
        try:
            if isinstance(message, ClientIn):
                self.parts.on_client(message.delivery.addr, message.delivery.msg, now)
            elif isinstance(message, PeerIn):
                sender = self.peer_ids.get(message.delivery.addr)
                if sender is None:
                    self.count("peer_unknown_sender", f"from {message.delivery.addr}")
                else:
                    self.parts.on_peer(sender, message.delivery.msg, now)
            elif isinstance(message, Tick):
                if self.peer_policy is not None:
                    self._poll_peer_policy(now)
                self.parts.on_tick(now)
            elif isinstance(message, Sealed):
                self.pool.finished(message.rid)
                self.parts.service.on_sealed(message.rid, message.png, message.ms, message.error)
            elif isinstance(message, SendResult):
                self.parts.on_send_result(message.key, message.error, now)
            elif isinstance(message, dict) and message.get("query") == "counters":
                return dict(self.counters)
        except Exception:  # a bug or bad input must not stop the node
            self.counters["internal_errors"] += 1
            log.exception("node %d: error handling %s", self.node_id, type(message).__name__)
        return None

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

    def count(self, what: str, detail: str = "") -> None:
        self.counters[what] += 1
        log.info("node %d: %s %s", self.node_id, what, detail)


class Ticker(threading.Thread):
    """The one shared clock source: tells Tick to the actors every `period_s`."""

    def __init__(self, refs: list[pykka.ActorRef[Any]], period_s: float) -> None:
        super().__init__(name="ticker", daemon=True)
        self._refs = refs
        self._period = period_s
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self._period):
            for ref in self._refs:
                if ref.is_alive():
                    ref.tell(Tick())

    def stop(self) -> None:
        self._stop.set()


def boot_epoch() -> int:
    """Milliseconds since the Unix epoch at start-up: a restarted node has a newer epoch."""
    return int(time.time() * 1000)


def start_node(cfg: Config, node_id: int, data_dir: Path, *, failures: bool = True,
               policy: Any = None, peer_policy: Any = None,
               rng: random.Random | None = None) -> tuple[pykka.ActorRef[Any], Callable[[], None]]:
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
    client_tp = Transport.start(me.client_addr, cfg.transport, validate_addresses=True,
                                policy=policy, name=f"node{node_id}-client")
    peer_tp = Transport.start(me.peer_addr, cfg.transport, auth=auth, policy=peer_policy,
                              name=f"node{node_id}-peer")
    ref = NodeActor.start(cfg, node_id, data_dir, client_tp=client_tp, peer_tp=peer_tp,
                          clock=time.monotonic, rng=rng or random.Random(), failures=failures,
                          peer_policy_file=os.environ.get(PEER_FILE_ENV) or None)
    ticker = Ticker([ref], period_s=0.01)
    ticker.start()

    def stop() -> None:
        ticker.stop()
        ref.stop()
        client_tp.stop()
        peer_tp.stop()

    return ref, stop


def run_node(cfg: Config, node_id: int, data_dir: Path, *, failures: bool = True,
             log_level: str = "INFO") -> int:
    """`python -m actors.server --node ID`: run until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=log_level.upper(),
                        format=f"%(asctime)s node{node_id} %(levelname)s %(name)s: %(message)s")
    ref, stop = start_node(cfg, node_id, data_dir, failures=failures and cfg.failures.enabled)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    me = cfg.node(node_id)
    log.info("node %d ready: clients %s:%d peers %s:%d data %s", node_id, me.host,
             me.client_port, me.host, me.peer_port, data_dir)
    while not done.wait(0.5):
        if not ref.is_alive():
            log.error("node actor stopped unexpectedly")
            stop()
            return 1
    stop()
    return 0
