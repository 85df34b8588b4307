"""Heartbeat failure detector of the cloud, and the majority rule (pure core: no clock, no I/O).

Every node sends `PeerHeartbeat` to its peers every `election.heartbeat_interval_ms`; the node
actor feeds each one (and each `GoingDown` / `ComingUp`) to `Membership.observe`. From those the
core answers, for any `now` (seconds, the caller's monotonic clock):

- `state_of(node, now)`: "up" | "down" | "unreachable".
  down        = the node announced a simulated failure (GoingDown, or heartbeat state "down");
  unreachable = never heard, or silent for more than `failure_timeout_s`;
  up          = heard within the timeout and its last word was "up".
- `alive(now)`: the nodes that are up, self included when self is up.
- `has_majority(now)`: len(alive) >= N // 2 + 1 (RELIABILITY 2.3 rule 3).
  Only nodes that are *up* count: a node in a simulated failure takes no part in elections, so
  counting it would let two halves of a partition that both see it each believe they are a
  majority. The cost is the documented one: one node down and one cut off = no service.
- Refused: `refused(node, now)` records that the node's peer address answered ICMP port
  unreachable (no process listens there: killed or crashed, its host up). The node is then
  unreachable at once, without waiting out `failure_timeout_s`, until any message of it is
  heard again (a restart comes back with a newer epoch through the usual path). A lost host or
  a dropping firewall sends no such answer: those still take the timeout.
- Boot epochs: each node has a boot epoch that grows at every restart. A heartbeat with an older
  epoch than the one known is a leftover of a previous life and is ignored; a newer epoch means
  the node restarted (its state was lost): `observe` returns True so callers can react.

Callers: actors.core.election.ElectionCore and actors.core.token_ring.TokenRing read it; the node actor
feeds it and builds its own heartbeats with `heartbeat(...)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from codec.messages import ComingUp, GoingDown, Message, PeerHeartbeat

State = Literal["up", "down", "unreachable"]


class CloudCoreError(ValueError):
    """A cloud core was misused by its caller (unknown node id, bad argument)."""


@dataclass(slots=True)
class Output:
    """What a core asks its actor to do: `sends` (destination node id, message) in order, and
    `events` (core-specific dataclasses, see each module) for the actor to act on or log."""

    sends: list[tuple[int, Message]] = field(default_factory=list)
    events: list[object] = field(default_factory=list)

    def send(self, dest: int, msg: Message) -> None:
        self.sends.append((dest, msg))

    def send_all(self, dests: Iterable[int], msg: Message) -> None:
        for dest in sorted(dests):
            self.sends.append((dest, msg))

    def extend(self, other: Output) -> Output:
        self.sends.extend(other.sends)
        self.events.extend(other.events)
        return self

    def __bool__(self) -> bool:
        return bool(self.sends or self.events)


@dataclass(slots=True)
class PeerView:
    """What the last accepted heartbeat of a peer said; `last_seen` in the caller's seconds."""

    last_seen: float
    epoch: int
    state: Literal["up", "down"]
    load: int = 0
    token_epoch: int = 0
    token_holder: int = 0
    digest: bytes = b""
    refused: bool = False  # its address answered port unreachable since it was last heard
    slots: int = 0  # its encoder pool size, as this epoch's heartbeats say (0: not said)


class Membership:
    """Failure detector for one node. `node_ids`: every configured node, self included."""

    def __init__(
        self, self_id: int, node_ids: Iterable[int], failure_timeout_s: float, *, epoch: int = 1
    ) -> None:
        ids = tuple(sorted(set(node_ids)))
        if self_id not in ids:
            raise CloudCoreError(f"self id {self_id} is not among the nodes {ids}")
        if not failure_timeout_s > 0:
            raise CloudCoreError(f"failure_timeout_s must be > 0, not {failure_timeout_s!r}")
        self.self_id = self_id
        self.node_ids = ids
        self.peer_ids = tuple(n for n in ids if n != self_id)
        self.failure_timeout_s = failure_timeout_s
        self.epoch = epoch
        self.majority = len(ids) // 2 + 1
        self._self_up = True
        self._peers: dict[int, PeerView] = {}
        self._reported: dict[int, State] = {}

    # ---- self ---------------------------------------------------------------------------------
    @property
    def self_up(self) -> bool:
        return self._self_up

    def set_self_up(self, up: bool) -> None:
        """Called by the failure token when this node goes down or comes back (simulated)."""
        self._self_up = up

    def heartbeat(
        self, *, load: int, token_epoch: int, token_holder: int, digest: bytes = b"",
        slots: int = 0,
    ) -> PeerHeartbeat:
        """This node's heartbeat (token fields from TokenRing.token_view(); `slots`: its encoder
        pool size)."""
        return PeerHeartbeat(
            node=self.self_id,
            epoch=self.epoch,
            state="up" if self._self_up else "down",
            load=load,
            token_epoch=token_epoch,
            token_holder=token_holder,
            digest=digest,
            slots=slots,
        )

    # ---- input --------------------------------------------------------------------------------
    def observe(self, msg: Message, now: float) -> bool:
        """Feed a PeerHeartbeat, GoingDown or ComingUp (other types are ignored).

        Returns True when the message shows that its node restarted (a newer boot epoch)."""
        if isinstance(msg, PeerHeartbeat):
            return self.on_heartbeat(
                msg.node,
                now,
                msg.state,  # type: ignore[arg-type]
                msg.epoch,
                load=msg.load,
                token_epoch=msg.token_epoch,
                token_holder=msg.token_holder,
                digest=msg.digest,
                slots=msg.slots,
            )
        if isinstance(msg, GoingDown):
            return self._announce(msg.node, msg.epoch, now, "down")
        if isinstance(msg, ComingUp):
            return self._announce(msg.node, msg.epoch, now, "up")
        return False

    def on_heartbeat(
        self,
        node: int,
        now: float,
        state: Literal["up", "down"],
        epoch: int,
        *,
        load: int = 0,
        token_epoch: int = 0,
        token_holder: int = 0,
        digest: bytes = b"",
        slots: int = 0,
    ) -> bool:
        """Record a heartbeat of `node` received at `now`. True if the node restarted."""
        if node not in self.peer_ids:
            return False
        old = self._peers.get(node)
        if old is not None and epoch < old.epoch:
            return False  # from a previous life of that node
        self._peers[node] = PeerView(now, epoch, state, load, token_epoch, token_holder, digest,
                                     slots=slots)
        return old is not None and epoch > old.epoch

    def heard_from(self, node: int, now: float) -> None:
        """Any authenticated message from a peer proves it is alive: refresh its last_seen (its
        state stays what its last heartbeat said). The actor calls it for every peer message."""
        view = self._peers.get(node)
        if view is not None:
            view.refused = False
            if now > view.last_seen:
                view.last_seen = now

    def refused(self, node: int, now: float) -> bool:
        """`node`'s peer address answered port unreachable: unreachable from now until a message
        of it is heard (`heard_from`, a heartbeat, GoingDown or ComingUp). True if that changed
        its state (it was up or down, not already unreachable)."""
        view = self._peers.get(node)
        if view is None:  # never heard: unreachable already
            return False
        was = self.state_of(node, now)
        view.refused = True
        return was != "unreachable"

    def _announce(self, node: int, epoch: int, now: float, state: Literal["up", "down"]) -> bool:
        if node not in self.peer_ids:
            return False
        old = self._peers.get(node)
        if old is not None and epoch < old.epoch:
            return False
        if old is None or epoch > old.epoch:
            self._peers[node] = PeerView(now, epoch, state)
            return old is not None
        old.last_seen = now
        old.state = state
        old.refused = False
        return False

    # ---- queries ------------------------------------------------------------------------------
    def peer(self, node: int) -> PeerView | None:
        """The last accepted heartbeat of `node` (None if never heard)."""
        return self._peers.get(node)

    def slots_of(self, node: int) -> int:
        """The encoder pool size the current epoch of peer `node` said in its last heartbeat (0:
        not said, or not heard: a GoingDown or ComingUp of a new epoch says nothing of it)."""
        view = self._peers.get(node)
        return view.slots if view is not None else 0

    def epoch_of(self, node: int) -> int:
        """Boot epoch of `node` as last heard (0 = never heard); self: our own."""
        if node == self.self_id:
            return self.epoch
        view = self._peers.get(node)
        return view.epoch if view is not None else 0

    def state_of(self, node: int, now: float) -> State:
        if node == self.self_id:
            return "up" if self._self_up else "down"
        if node not in self.peer_ids:
            raise CloudCoreError(f"unknown node {node}")
        view = self._peers.get(node)
        if view is None or view.refused or now - view.last_seen > self.failure_timeout_s:
            return "unreachable"
        return view.state

    def reachable(self, now: float) -> set[int]:
        """Peers heard within the timeout, whatever they said (up or down)."""
        limit = now - self.failure_timeout_s
        return {n for n, v in self._peers.items() if v.last_seen >= limit and not v.refused}

    def up_peers(self, now: float) -> set[int]:
        """Peers that are up (heard within the timeout, last word "up"); self never included."""
        return self.fresh_peers(now, self.failure_timeout_s)

    def fresh_peers(self, now: float, within: float) -> set[int]:
        """Up peers heard from (any message) in the last `within` seconds (at most the timeout)."""
        limit = now - min(within, self.failure_timeout_s)
        return {n for n, v in self._peers.items()
                if v.last_seen >= limit and v.state == "up" and not v.refused}

    def alive(self, now: float) -> set[int]:
        """Up nodes, self included when self is up."""
        nodes = self.up_peers(now)
        if self._self_up:
            nodes.add(self.self_id)
        return nodes

    def has_majority(self, now: float) -> bool:
        return len(self.alive(now)) >= self.majority

    def next_deadline(self) -> float | None:
        """Earliest time a peer that is reachable now turns unreachable, if nothing more is heard."""
        times = [v.last_seen + self.failure_timeout_s for v in self._peers.values()
                 if not v.refused]
        return min(times) if times else None

    def transitions(self, now: float) -> list[tuple[int, State]]:
        """Peers whose state changed since the previous call: [(node, new state)], by node id.

        For the actor's log and for `ElectionCore.peer_down` (call it for "down"/"unreachable")."""
        changes: list[tuple[int, State]] = []
        for node in self.peer_ids:
            state = self.state_of(node, now)
            if self._reported.get(node, "unreachable") != state:
                changes.append((node, state))
            self._reported[node] = state
        return changes
