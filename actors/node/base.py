"""What every actor of a node shares: counters, a handler that never lets bad input stop it, the
peer link, the wiring message, and the gate for client requests.

Pykka stops an actor whose handler raises, so `NodePartActor.on_receive` catches everything: a
message that breaks a rule (or a bug) is counted and logged, and the actor carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from actors.core.loglimit import LogLimiter
from actors.node.signals import ClusterView, ComeUp, CountersQuery, GoDown, PeerRefused, Tick
from codec.messages import (
    DONE_BATCH_MAX,
    ELECTION_BATCH_MAX,
    Claim,
    ConfirmUpdates,
    Coordinator,
    Done,
    DoneBatch,
    Election,
    ElectionBatch,
    ElectionItem,
    ElectionOk,
    EncryptOffer,
    EncryptRequest,
    ErrorReply,
    Join,
    Leave,
    Message,
    PostUpdate,
)
from config import Config
from transport.mailbox import QuickInboxActor
from transport.udp import Reactor, Transport

log = logging.getLogger(__name__)

Addr = tuple[str, int]
HOUSEKEEPING_S = 1.0  # how often caches, directory entries and tombstones are expired
STATE_CHANGING = (EncryptRequest, EncryptOffer, Join, Leave, PostUpdate, ConfirmUpdates)
# answered from the directory and pending state: a node back from a failure defers them
# (retryable) until its state is synced, instead of refusing sessions it has not heard of yet
NEEDS_STATE = (Join, Leave, PostUpdate, ConfirmUpdates)


@dataclass(frozen=True, slots=True)
class Wire:
    """Sent once by the supervisor before any traffic: the refs of the node's other actors."""

    refs: dict[str, pykka.ActorRef[Any]]


_KIND = {Election: "election", ElectionOk: "ok", Claim: "claim", Coordinator: "coordinator"}


def batch_item(msg: Message) -> ElectionItem:
    """The ElectionBatch item that stands for election message `msg`."""
    rid: str = msg.rid  # type: ignore[attr-defined]
    return ElectionItem(kind=_KIND[type(msg)], rid=rid, priority=getattr(msg, "priority", 0),
                        round=msg.round, bind=getattr(msg, "bind", 0))  # type: ignore[attr-defined]


def merged(node_id: int, msgs: list[Message]) -> list[Message]:
    """The messages of one turn to one peer as one datagram when they are several election
    messages and Dones and nothing else: one ElectionBatch (carrying the Dones), or one
    DoneBatch when there are only Dones; else as they are."""
    items: list[ElectionItem] = []
    acked: list[str] = []
    unacked: list[str] = []
    for msg in msgs:
        if type(msg) in _KIND:
            items.append(batch_item(msg))
        elif isinstance(msg, ElectionBatch) and not msg.acked and not msg.unacked:
            items.extend(msg.items)
        elif isinstance(msg, Done):
            (acked if msg.acked else unacked).append(msg.rid)
        elif isinstance(msg, DoneBatch):
            acked.extend(msg.acked)
            unacked.extend(msg.unacked)
        else:
            return msgs
    if len(msgs) < 2 or len(items) > ELECTION_BATCH_MAX \
            or max(len(acked), len(unacked)) > DONE_BATCH_MAX:
        return msgs
    if not items:
        return [DoneBatch(node=node_id, acked=tuple(acked), unacked=tuple(unacked))]
    return [ElectionBatch(node=node_id, items=tuple(items), acked=tuple(acked),
                          unacked=tuple(unacked))]


class PeerLink:
    """Sends to the other nodes over the peer transport, by node id (in id order for all).

    A send with `turn=True` made on the node's reader thread (`reactor`) is held until the
    reader's turn is over (the reactor's `defer(first=True)`: before its timers and seals, for
    the peers wait for these). Then the turn's messages to each peer leave together (`merged`):
    a loaded node reads several datagrams per turn, and a client's acknowledgement of one reply
    and its next request reach the winner together, so a turn that ends a request mostly starts
    another. Any other send first sends what is held (under the same lock: a GoingDown never
    overtakes the Dones held before it)."""

    def __init__(self, cfg: Config, node_id: int, tp: Transport) -> None:
        self.tp = tp
        self.node_id = node_id
        self.addrs = {
            n.id: n.peer_addr for n in sorted(cfg.nodes, key=lambda n: n.id) if n.id != node_id
        }
        self.reactor: Reactor | None = None  # set by the node (see the class docstring)
        self._held: dict[int, list[Message]] = {}
        self._lock = threading.RLock()  # guards _held; held while it is sent (order)

    def send(self, node: int, msg: Message) -> None:
        with self._lock:
            if self._held:
                self.flush_turn()
            self.tp.send(self.addrs[node], msg)

    def send_each(self, items: list[tuple[int, Message]], *, turn: bool = False) -> None:
        """Each (node, message) of `items`, in order, in one pass (Transport.send_many: one hold
        of its lock, a message object given for several nodes encoded once)."""
        if not items or turn and self._hold(items):
            return
        with self._lock:
            if self._held:
                self.flush_turn()
            if len(items) == 1:
                node, msg = items[0]
                self.tp.send(self.addrs[node], msg)
            else:
                addrs = self.addrs
                self.tp.send_many([(addrs[node], msg, None) for node, msg in items])

    def send_all(self, msg: Message, *, turn: bool = False) -> None:
        """`msg` to every peer: encoded once, sent in one pass (Transport.send_many)."""
        self.send_each([(node, msg) for node in self.addrs], turn=turn)

    def _hold(self, items: list[tuple[int, Message]]) -> bool:
        reactor = self.reactor
        if reactor is None or threading.current_thread() is not reactor.thread:
            return False
        with self._lock:
            if not self._held and not reactor.defer(self.flush_turn, first=True):
                return False
            for node, msg in items:
                self._held.setdefault(node, []).append(msg)
        return True

    def flush_turn(self) -> None:
        """Send what is held (see the class docstring)."""
        with self._lock:
            held, self._held = self._held, {}
            sends = [(self.addrs[node], out, None) for node, msgs in held.items()
                     for out in merged(self.node_id, msgs)]
            if sends:
                self.tp.send_many(sends)

    def node_at(self, addr: Addr) -> int | None:
        """The peer whose address is `addr` (None: not a peer's)."""
        return next((n for n, a in self.addrs.items() if a == tuple(addr)), None)


def refusals_to(peers: PeerLink, refs: dict[str, pykka.ActorRef[Any]]) -> Callable[[Addr], None]:
    """For `Transport.on_refused` of the peer transport: a peer address that answered port
    unreachable becomes `PeerRefused(node)` to the two failure detectors (the ElectionActor's
    and the FailureTokenActor's membership); other addresses are ignored."""

    def refused(addr: Addr) -> None:
        node = peers.node_at(addr)
        if node is not None:
            for name in ("election", "token"):
                refs[name].tell(PeerRefused(node))

    return refused


@dataclass(frozen=True, slots=True)
class Inbound:
    """Several messages for one actor, told at once (the router's messages of one reader turn):
    the actor handles them one by one, in order, as if each had been told alone."""

    items: tuple[Any, ...]


def initial_view(cfg: Config) -> ClusterView:
    """The view every actor starts with: up, no majority heard yet, syncing if there are peers."""
    return ClusterView(
        version=0,
        self_up=True,
        majority=False,
        up=frozenset(),
        syncing=len(cfg.nodes) > 1,
        token_holder=0,
        holding=False,
        down_since=0.0,
    )


def client_gate(
    node_id: int, view: ClusterView, up: bool, msg: Message
) -> tuple[str | None, ErrorReply | None] | None:
    """Whether a client request may be served now: None (yes), or (counter or None, answer or
    None).

    A node that is down answers nothing; without a majority, state-changing requests get a
    retryable "not_in_majority"; while syncing, requests that need the directory and pending
    state get a retryable "syncing"."""
    if not up:
        return ("client_while_down", None)
    rid = getattr(msg, "rid", None)
    if isinstance(msg, STATE_CHANGING) and not view.majority:
        answer = (
            None
            if rid is None
            else ErrorReply(
                rid=rid,
                code="not_in_majority",
                retryable=True,
                message=f"node {node_id} sees no majority of the cloud; try again",
            )
        )
        return (None, answer)
    if isinstance(msg, NEEDS_STATE) and view.syncing:
        answer = (
            None
            if rid is None
            else ErrorReply(
                rid=rid,
                code="syncing",
                retryable=True,
                message=f"node {node_id} is syncing its state after a failure; try again",
            )
        )
        return ("client_while_syncing", answer)
    return None


class NodePartActor(QuickInboxActor):
    """Base of the node's actors: `handle(message)` in subclasses; counters; wiring."""

    def __init__(self, node_id: int, clock: Callable[[], float]) -> None:
        super().__init__()
        self.node_id = node_id
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.refs: dict[str, pykka.ActorRef[Any]] = {}
        self._early: list[Any] = []  # messages that came before Wire
        self.log_limit = LogLimiter()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Inbound):
            for item in message.items:
                self.on_receive(item)
            return None
        try:
            if isinstance(message, Wire):
                self.refs = dict(message.refs)
                self.wired()
                early, self._early = self._early, []
                for m in early:  # told before the wiring (a sibling wired first): in order now
                    self.on_receive(m)
                return None
            if isinstance(message, CountersQuery):
                return dict(self.counters)
            if not self.refs:
                self._early.append(message)
                return None
            if isinstance(message, Tick):
                self.flush_log()
            return self.handle(message)
        except Exception:  # a bug or bad input must not stop the actor
            self.counters["internal_errors"] += 1
            log.exception(
                "node %d %s: error handling %s",
                self.node_id,
                type(self).__name__,
                type(message).__name__,
            )
        return None

    def on_failure(self, *args: Any) -> None:
        log.error(
            "node %d %s failed",
            self.node_id,
            type(self).__name__,
            exc_info=args[1] if len(args) > 1 else None,
        )

    def wired(self) -> None:
        """Called once the other actors' refs are known."""

    def handle(self, message: Any) -> Any:
        raise NotImplementedError

    def tell(self, name: str, message: Any) -> None:
        ref = self.refs.get(name)
        if ref is not None:
            ref.tell(message)

    def refused(
        self, client_tp: Transport, addr: Addr, msg: Message, view: ClusterView, up: bool
    ) -> bool:
        """Apply `client_gate`: True (counted, answered where there is an answer) if the
        request may not be served now."""
        refused = client_gate(self.node_id, view, up, msg)
        if refused is None:
            return False
        counter, answer = refused
        if counter is not None:
            self.count(counter, type(msg).__name__)
        if answer is not None:
            client_tp.send(addr, answer)
        return True

    def count(self, what: str, detail: str = "") -> None:
        """Count a refusal (always) and log it (at most LogLimiter.burst lines per cause and
        window; the next line says how many were left out)."""
        self.counters[what] += 1
        write, left_out = self.log_limit.admit(what, self.clock())
        if write:
            more = f" ({left_out} more lines of {what} left out)" if left_out else ""
            log.info("node %d: %s %s%s", self.node_id, what, detail, more)

    def flush_log(self) -> None:
        """On a tick: one summary line per cause whose flood stopped with lines left out."""
        for what, n in self.log_limit.flush(self.clock()):
            log.info("node %d: %s: %d more lines left out", self.node_id, what, n)


class ServicePartActor(NodePartActor):
    """A node actor that serves clients or peers (Directory, PendingUpdate, EncryptFlow): its
    client transport and peer link, the latest ClusterView, whether the node is up (GoDown and
    ComeUp from the FailureTokenActor), housekeeping once every HOUSEKEEPING_S, and `publish()`
    (its snapshots) after every message. Subclasses implement `serve`."""

    def __init__(
        self,
        node_id: int,
        client_tp: Transport,
        peers: PeerLink,
        view: ClusterView,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(node_id, clock)
        self.client_tp = client_tp
        self.peers = peers
        self.view = view
        self.wall = wall
        self.up = True
        self.next_housekeeping = 0.0

    def wired(self) -> None:
        self.publish()

    def handle(self, message: Any) -> Any:
        if isinstance(message, ClusterView):
            self.view = message
        elif isinstance(message, GoDown):  # simulated fail-stop
            self.up = False
            self.going_down(message)
        elif isinstance(message, ComeUp):
            self.up = True
        elif isinstance(message, Tick):
            now = self.clock()
            if now < self.next_housekeeping:  # expiries need seconds, not every tick
                return None  # nothing changed: nothing to publish
            self.next_housekeeping = now + HOUSEKEEPING_S
            self.housekeeping(now)
        else:
            self.serve(message)
        self.publish()
        return None

    def serve(self, message: Any) -> None:
        raise NotImplementedError

    def going_down(self, message: GoDown) -> None:
        """Keep nothing in memory (the node goes down)."""

    def housekeeping(self, now: float) -> None:
        """Expiries, once every HOUSEKEEPING_S."""

    def publish(self) -> None:
        """Tell the other actors what changed (snapshots)."""
