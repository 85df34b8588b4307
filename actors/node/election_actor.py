"""ElectionActor: membership, the failure detector, the per-request bully elections, state sync.

Owns two pure cores, `actors.core.membership.Membership` (heartbeats, who is up, majority) and
`actors.core.election.ElectionCore` (one bully election per request id). It:
- sends this node's heartbeats (load from the EncryptFlowActor's `Load`, token fields from the
  FailureTokenActor's `TokenView`, the state digest from the Directory and PendingUpdate actors'
  `Digest`, and its encoder pool size: the bound of its keys, the core's Ceilings) and feeds the
  peers' heartbeats, GoingDown and ComingUp to Membership;
- computes this node's priority at each StartElection from its pool's jobs, and from the host
  load only when the cloud's nodes are on several hosts (on one, the load is the same for all
  and would only keep every key below its ceiling);
- runs elections on `StartElection` from the EncryptFlowActor and tells it `Won` / `Lost`, and
  `PeerDown` when a peer goes down, becomes unreachable or restarts (re-election from the cache);
  `PeerRefused` (the peer transport heard ICMP port unreachable from a peer's address: its
  process is gone) makes that peer unreachable at once instead of after the failure timeout, so
  a killed winner's requests are elected again within a heartbeat or so;
- sends the election messages it produced while its mailbox was busy (concurrent requests)
  together: one ElectionBatch per peer, cut when a `_FlushElection` it told itself with the
  first one arrives (every message older than it handled); one message alone goes as itself.
  What messages handled on the node's reader send waits for the end of its turn in the PeerLink
  (`turn=True`), which sends a turn's election messages and Dones to a peer as one ElectionBatch.
  A received ElectionBatch is handled item by item, like the messages it carries;
- answers a peer's Election, Claim or (resent) vote for a request whose reply was acknowledged
  (it missed the Done) with Done again (`ForgetElection(settled=True)` tells it which), except a
  bound first Election (no ASK), which crossed the Done sent to it (`done_crossed`);
- abstains, for a while after it restarted on its kept disk or came back from a simulated
  failure (`missed_s`): a peer's Election for a request this node has no copy of (pending in the
  core) still 30 ms later (the core's `abstain_grace_s`, a tenth of the answer timeout: a fresh
  request's copy comes within it and the node takes part for real) is answered with an Election
  of priority 0, lower than any real one. Requests sent while
  this node was down or not running never reach it (until the client's retry), so when their
  winner dies the one node left with a copy needs that answer for its majority of answers;
  without it, it waited for the client's retry (8 s: 4 x client.retry_s after the last
  acknowledgement);
- handles peer messages on the thread that read them (the peer transport's reader: the router
  tells its `DirectEntry`, see actors.direct) while it is idle, and sends what they
  produced at once: a thread wake-up less on each side of every link delay of an election;
- publishes a `ClusterView` (versioned, immutable) to its subscribers whenever it changes;
- syncs state: at start-up (a restarted process lost its directory) and on `NeedSync` (back from a
  simulated failure) it asks the up peers for their state until the Directory and PendingUpdate
  actors report the states of enough of them applied (`SyncApplied`), then tells the
  FailureTokenActor `SyncDone`. Enough means that this node's state, merged, is that of a majority
  (`sync_need`): a majority less one peer when the node kept its disk (its own state counts), a
  majority of peers when it started on an empty data directory (a replaced disk). An update
  acknowledged by a majority is then in the merged state whichever majority answered. One
  exception makes a new cloud start: on an empty data directory, a majority less one peer
  suffices when every state it applied was empty too (no users, pins, updates or tombstones: no
  peer ever accepted a user, so there is nothing acknowledged to miss). Anti-entropy
  asks a peer whose heartbeat digest differs from ours for `SYNC_AFTER` heartbeats in a row.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from actors.core import election as el
from actors.core.membership import Membership, Output
from actors.direct import DirectActor, DirectEntry
from actors.node.base import NodePartActor, PeerLink, batch_item
from actors.node.signals import (
    ClusterView,
    ComeUp,
    Digest,
    ForgetElection,
    GoDown,
    Load,
    NeedSync,
    PeerDown,
    PeerIn,
    PeerRefused,
    StartElection,
    SyncApplied,
    SyncDone,
    Tick,
    TokenView,
)
from codec.messages import (
    ELECTION_BATCH_MAX,
    Claim,
    ComingUp,
    Coordinator,
    Done,
    Election,
    ElectionBatch,
    ElectionItem,
    ElectionOk,
    GoingDown,
    Message,
    PeerHeartbeat,
    StateRequest,
)
from config import Config, NodeConfig

log = logging.getLogger(__name__)

SYNC_AFTER = 3  # heartbeats with a different digest before we ask that peer for its state
SYNC_RETRY_S = 1.0
SETTLED_TTL_S = 300.0  # as long as the encrypt flow remembers a request it answered
SETTLED_MAX = 65536
LIVENESS = (PeerHeartbeat, GoingDown, ComingUp)
PROBE_GAP_S = 0.02  # at most one probe of a node per this interval (see _probe)
ELECTION_MESSAGES = (Election, Claim, ElectionOk, Coordinator)


class _FlushElection:
    """Told to ourselves with the first election message kept: when it arrives, every message
    that was waiting before it has been handled, so what they produced leaves together."""


def item_message(node: int, item: ElectionItem) -> Message:
    """The election message an ElectionBatch item of `node` stands for."""
    if item.kind == "election":
        return Election(rid=item.rid, node=node, priority=item.priority, round=item.round,
                        bind=item.bind)
    kind = {"ok": ElectionOk, "claim": Claim, "coordinator": Coordinator}[item.kind]
    return kind(rid=item.rid, node=node, round=item.round)


class ElectionActor(DirectActor, NodePartActor):
    def __init__(
        self,
        cfg: Config,
        node_id: int,
        peers: PeerLink,
        *,
        clock: Callable[[], float],
        boot_epoch: int,
        loadavg: Callable[[], float] | None = None,
        disk_kept: bool = True,
        entry: DirectEntry | None = None,
    ) -> None:
        super().__init__(node_id, clock)
        self.direct_init(entry)  # the router's peer messages, on the transport's reader thread
        self.cfg = cfg
        self.peers = peers
        ids = [n.id for n in cfg.nodes]
        self.m = Membership(node_id, ids, cfg.election.failure_timeout_ms / 1000, epoch=boot_epoch)
        self.election = el.ElectionCore(node_id, self.m, cfg.election.answer_timeout_ms / 1000,
                                        bind=cfg.election.bind_votes, ceilings=True)
        self.hb_period = cfg.election.heartbeat_interval_ms / 1000
        # how long requests missed while down can stay in the cloud: until the client's retry
        self.missed_s = 4 * cfg.client.retry_s + cfg.election.failure_timeout_ms / 1000
        now = clock()
        # a process restarted on its kept disk missed the requests sent while it was dead; a new
        # data directory is a new cloud (or a replaced disk: then the window is not opened)
        if disk_kept:
            self.election.abstain_until = now + self.missed_s
        self.next_hb = now
        # a (re)started process lost the directory: sync before serving it
        self.syncing_from: int | None = -1 if self.m.peer_ids else None
        self.disk_kept = disk_kept
        self.synced: set[int] = set()  # peers whose state this sync applied
        self.synced_data = False  # one of those states was not empty
        self.sync_asked: set[int] = set()  # peers asked since the last (re)try
        self.sync_deadline = now
        self.sync_reason = "at start-up"
        self.digest_mismatch: dict[int, int] = {}
        self.token = TokenView(epoch=0, holder=0, holding=False, down=False, down_since=0.0)
        self.digests = {"directory": b"", "pending": b""}
        self.digest = b""
        self.in_flight = 0
        self.settled: OrderedDict[str, float] = OrderedDict()
        self.view: ClusterView | None = None
        self.view_key: tuple[Any, ...] | None = None  # what self.view says (see _publish)
        self.subscribers: list[Any] = []
        # the host load orders hosts, not the nodes of one host (the same load for each, read a
        # moment apart): there it is left out, and an idle node's key reaches the ceiling
        self._loadavg = loadavg or (_host_load() if _hosts(cfg.nodes) > 1 else _no_load)
        self.outbox: dict[int, list[Message]] = {}  # peer -> election messages, sent on flush
        self.probed: dict[int, float] = {}  # node -> when we last probed it (see _probe)

    def direct_done(self) -> None:
        self._flush()  # what a peer message made leaves now, from the reader thread

    def wired(self) -> None:
        self.subscribers = [
            self.refs[name]
            for name in ("flow", "directory", "pending", "supervisor")
            if name in self.refs
        ]
        self._publish(self.clock())

    # ---- dispatch -------------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        now = self.clock()
        if isinstance(message, Tick):
            self._tick(now)
        elif isinstance(message, _FlushElection):
            self._flush()
        elif isinstance(message, PeerIn):
            self._peer(message.sender, message.msg, now)
        elif isinstance(message, PeerRefused):
            log.debug("refused: node %d", message.node)
            if self.m.refused(message.node, now):
                log.info("node %d: its peer port is closed (port unreachable): gone", message.node)
                self._transitions(now)
                self._publish(now)
        elif isinstance(message, StartElection):
            prio = el.priority(self.in_flight, 0, self._loadavg(), self.cfg.encoder.pool_size)
            log.debug("start %s priority %d", message.rid, prio)
            self._run(self.election.start(message.rid, prio, now))
        elif isinstance(message, ForgetElection):
            self.election.forget(message.rid)
            if message.settled:
                self.settled[message.rid] = now
                self.settled.move_to_end(message.rid)
                while len(self.settled) > SETTLED_MAX:
                    self.settled.popitem(last=False)
        elif isinstance(message, Load):
            self.in_flight = message.in_flight
        elif isinstance(message, Digest):
            self.digests[message.part] = message.digest
            self.digest = hashlib.sha256(
                self.digests["directory"] + self.digests["pending"]
            ).digest()[:16]
        elif isinstance(message, TokenView):
            self.token = message
            self._publish(now)
        elif isinstance(message, GoDown):
            self.election.clear()
            self.outbox.clear()  # a down node takes no part
            self.m.set_self_up(False)
            self._publish(now)
        elif isinstance(message, ComeUp):
            self.m.set_self_up(True)
            self.election.abstain_until = now + self.missed_s
            self._publish(now)
        elif isinstance(message, NeedSync):
            log.info("back from a simulated failure: syncing state before passing the token")
            self.syncing_from = -1
            self.synced = set()
            self.synced_data = False
            self.sync_reason = "after a failure"
            self._ask_state(now)
            self._publish(now)
        elif isinstance(message, SyncApplied):
            self._sync_applied(message.sender, message.empty, now)
        return None

    # ---- peers ----------------------------------------------------------------------------------
    def _peer(self, sender: int, msg: Any, now: float) -> None:
        if isinstance(msg, LIVENESS):
            if self.m.observe(msg, now):
                log.info("node %d restarted (new boot epoch)", sender)
                self._peer_gone(sender, now)
            if isinstance(msg, PeerHeartbeat):
                self._check_digest(sender, msg, now)
            elif isinstance(msg, GoingDown):
                self._peer_gone(sender, now)
            return
        self.m.heard_from(sender, now)  # any authenticated message proves the peer is alive
        if isinstance(msg, ElectionBatch):
            for item in msg.items:
                self._election_in(sender, item_message(sender, item), now)
        elif isinstance(msg, ELECTION_MESSAGES):
            self._election_in(sender, msg, now)
        else:
            self.count("peer_unexpected", type(msg).__name__)

    def _election_in(self, sender: int, msg: Message, now: float) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("in %d: %s", sender, msg)
        if isinstance(msg, (Election, Claim, ElectionOk)) and msg.rid in self.settled \
                and self.m.self_up:
            if isinstance(msg, Election) and msg.bind and not msg.bind & el.ASK:
                # a bound peer's first Election, which crossed the Done the winner sent it: that
                # Done is on its way (with ceilings the winner often wins, seals and is done
                # before the last node starts). Were it lost for good, the peer's ASK after an
                # answer timeout, or its restart's, gets the answer below
                self.counters["done_crossed"] += 1
                return
            # a peer that missed the Done of an acknowledged reply re-elects (or resends its
            # unasked vote): tell it again
            self.peers.send(sender, Done(rid=msg.rid, node=self.node_id, acked=True))
            return
        # a peer's Election before our own copy of the request: the core keeps it pending (and
        # abstains while `abstain_until`, see above)
        self._run(self.election.on_message(sender, msg, now))

    def _peer_gone(self, node: int, now: float) -> None:
        self._run(self.election.peer_down(node, now))
        self.tell("flow", PeerDown(node))

    def _check_digest(self, sender: int, hb: PeerHeartbeat, now: float) -> None:
        if (
            not (self.m.self_up and self.m.has_majority(now))
            or hb.state != "up"
            or self.syncing_from is not None
        ):
            return
        if hb.digest == self.digest:
            self.digest_mismatch.pop(sender, None)
            return
        n = self.digest_mismatch.get(sender, 0) + 1
        self.digest_mismatch[sender] = n
        if n >= SYNC_AFTER:
            self.digest_mismatch[sender] = 0
            self.peers.send(sender, StateRequest(node=self.node_id))

    # ---- timers ----------------------------------------------------------------------------------
    def _heartbeat(self) -> PeerHeartbeat:
        return self.m.heartbeat(
            load=self.in_flight,
            token_epoch=self.token.epoch,
            token_holder=self.token.holder,
            digest=self.digest,
            slots=self.cfg.encoder.pool_size,  # (the bound of our keys: election's Ceilings)
        )

    def _tick(self, now: float) -> None:
        if now >= self.next_hb:
            self.next_hb = now + self.hb_period
            hb = self._heartbeat()
            for peer in sorted(self.m.peer_ids):
                self.peers.send(peer, hb)
        self._transitions(now)
        self._run(self.election.on_tick(now))
        if self.syncing_from is not None:
            if now >= self.sync_deadline:
                self._ask_state(now)
            else:
                self._ask_new(now)
        while self.settled and now - next(iter(self.settled.values())) > SETTLED_TTL_S:
            self.settled.popitem(last=False)
        self._publish(now)

    def _transitions(self, now: float) -> None:
        for node, state in self.m.transitions(now):
            log.info("node %d: %s", node, state)  # rare; benchmarks.chaos reads it
            if state != "up":
                self._peer_gone(node, now)

    # ---- state sync ------------------------------------------------------------------------------
    def sync_need(self) -> int:
        """How many peers' states a sync merges before this node serves: with its own disk, a
        majority counting itself; on an empty data directory, a majority of the other nodes
        (a majority counting itself while every state applied was empty: a new cloud)."""
        own = self.disk_kept or not self.synced_data
        need = self.m.majority - (1 if own else 0)
        return max(1, min(need, len(self.m.peer_ids)))

    def _ask_state(self, now: float) -> None:
        """Ask every up peer whose state is not applied yet (again after SYNC_RETRY_S); a peer
        that comes up meanwhile is asked at once (`_ask_new`)."""
        peers = self.m.up_peers(now) - self.synced
        self.sync_deadline = now + (SYNC_RETRY_S if peers else self.hb_period)
        self.sync_asked = set(peers)
        for peer in sorted(peers):
            self.peers.send(peer, StateRequest(node=self.node_id))

    def _ask_new(self, now: float) -> None:
        for peer in sorted(self.m.up_peers(now) - self.synced - self.sync_asked):
            self.sync_asked.add(peer)
            self.peers.send(peer, StateRequest(node=self.node_id))

    def _sync_applied(self, sender: int, empty: bool, now: float) -> None:
        if self.syncing_from is None:
            return  # anti-entropy: merged, nothing waits for it
        self.synced.add(sender)
        self.synced_data = self.synced_data or not empty
        if len(self.synced) < self.sync_need():
            return
        log.info(
            "state synced from nodes %s (%s)",
            ", ".join(str(n) for n in sorted(self.synced)),
            self.sync_reason,
        )
        self.syncing_from = None
        self.synced = set()
        self.synced_data = False
        self.disk_kept = True  # what it merged is on its disk now
        self.tell("token", SyncDone())
        self._publish(now)

    # ---- the view --------------------------------------------------------------------------------
    def _publish(self, now: float) -> None:
        """Tell the subscribers a new ClusterView if anything in it changed (called on every
        tick: the comparison is on a plain tuple, the view is built only when it changed)."""
        up = self.m.self_up
        alive = self.m.alive(now)
        token = self.token
        key = (up, up and len(alive) >= self.m.majority, alive, self.syncing_from is not None,
               token.holder, token.holding, token.down_since)
        if key == self.view_key:
            return
        self.view_key = key
        old = self.view
        self.view = ClusterView(
            version=1 if old is None else old.version + 1,
            self_up=up,
            majority=key[1],
            up=frozenset(alive),
            syncing=key[3],
            token_holder=token.holder,
            holding=token.holding,
            down_since=token.down_since,
        )
        for ref in self.subscribers:
            ref.tell(self.view)

    def _run(self, out: Output) -> None:
        for dest, msg in out.sends:
            if not self.outbox and not self.in_direct:
                self.actor_ref.tell(_FlushElection())
            self.outbox.setdefault(dest, []).append(msg)
        for ev in out.events:
            if isinstance(ev, (el.Won, el.Lost)):
                self.tell("flow", ev)
            elif isinstance(ev, el.Probe):
                self._probe(ev.node)
            log.debug("election: %s", ev)

    def _probe(self, node: int) -> None:
        """A heartbeat to `node` now, at most one per PROBE_GAP_S (see el.Probe)."""
        now = self.clock()
        if now - self.probed.get(node, -PROBE_GAP_S) < PROBE_GAP_S:
            return
        self.probed[node] = now
        self.counters["probes"] += 1
        self.peers.send(node, self._heartbeat())

    def _flush(self) -> None:
        """Send what the messages handled since the last flush produced: per peer, one message
        alone as itself, several as ElectionBatches; all peers' in one Transport.send_many."""
        outbox, self.outbox = self.outbox, {}
        sends: list[tuple[int, Message]] = []
        for dest, msgs in outbox.items():
            if log.isEnabledFor(logging.DEBUG):
                log.debug("out %d: %s", dest, "; ".join(map(str, msgs)))
            if len(msgs) == 1:
                sends.append((dest, msgs[0]))
                continue
            for i in range(0, len(msgs), ELECTION_BATCH_MAX):
                part = msgs[i:i + ELECTION_BATCH_MAX]
                if len(part) == 1:
                    sends.append((dest, part[0]))
                else:
                    items = tuple(batch_item(m) for m in part)
                    sends.append((dest, ElectionBatch(node=self.node_id, items=items)))
        self.peers.send_each(sends, turn=True)  # on the node's reader: at the turn's end


def _no_load() -> float:
    return 0.0


def _hosts(nodes: Iterable[NodeConfig]) -> int:
    """How many hosts the cloud's nodes are on, by address (every loopback address is one)."""
    hosts = set()
    for n in nodes:
        try:
            loop = ipaddress.ip_address(n.host).is_loopback
        except ValueError:  # a name
            loop = n.host == "localhost"
        hosts.add("loopback" if loop else n.host)
    return len(hosts)


def _host_load() -> Callable[[], float]:
    """psutil's 1-minute load average per CPU, read at most once a second."""
    cpus = os.cpu_count() or 1
    cache = [0.0, 0.0]  # (when, value)

    def load() -> float:
        now = time.monotonic()
        if now - cache[0] > 1.0:
            cache[0], cache[1] = now, psutil.getloadavg()[0] / cpus
        return cache[1]

    return load
