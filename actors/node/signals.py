"""Messages between the actors of one node (in-process; the wire messages are in codec.messages).

Who tells what to whom (see the README's architecture picture):
- Router -> owner actor: `ClientIn` (a client socket message), `PeerIn` (an authenticated peer
  message with the sender's node id).
- Ticker -> every actor: `Tick`.
- ElectionActor -> subscribers: `ClusterView` (immutable, versioned) whenever it changes.
- ElectionActor -> EncryptFlowActor: `Won`, `Lost`, `PeerDown`.
- EncryptFlowActor -> ElectionActor: `StartElection`, `ForgetElection`, `Load`.
- FailureTokenActor -> ElectionActor: `TokenView`, `NeedSync`; -> every service actor: `GoDown`,
  `ComeUp`. `GoDown` to the EncryptFlowActor carries the token's own sends (GoingDown): that actor
  sends Done for its replies in flight and only then those, so Done leaves before GoingDown by
  construction (one thread, one transport).
- ElectionActor -> FailureTokenActor: `SyncDone`.
- Peer transport (through `actors.node.base.refusals_to`) -> ElectionActor, FailureTokenActor:
  `PeerRefused` (a peer's address answered ICMP port unreachable: its process is gone).
- DirectoryActor -> PendingUpdateActor: `StoreUpdate`, `ConfirmIds`, `ForgetIds`, `HandOver`,
  `BuildSync`, `ApplySync` (the directory checked the session, or merged its part of a state
  sync, first).
- PendingUpdateActor -> ElectionActor: `SyncApplied`.
- Directory/Pending/EncryptFlow/Election -> NodeActor (supervisor): `Snapshot` (status figures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.core.election import Lost as Lost  # the core's events travel as they are
from actors.core.election import Won as Won
from codec.messages import JoinReply, Message, Pin, StateSync, UserEntry
from codec.records import Update

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class ClientIn:
    addr: Addr
    msg: Message


@dataclass(frozen=True, slots=True)
class PeerIn:
    sender: int
    msg: Message


@dataclass(frozen=True, slots=True)
class Tick:
    pass


@dataclass(frozen=True, slots=True)
class SendResult:
    """A send with a completion callback finished (error None: acknowledged)."""

    key: str
    error: object | None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the ElectionActor knows of the cloud, published whenever it changes."""

    version: int
    self_up: bool
    majority: bool
    up: frozenset[int]  # nodes up, self included when up
    syncing: bool  # this node has not yet applied a peer's state since it (re)started or came back
    token_holder: int  # 0 = unknown
    holding: bool
    down_since: float  # wall-clock seconds, 0.0 when up


# ---- election <-> encrypt flow -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StartElection:
    rid: str


@dataclass(frozen=True, slots=True)
class ForgetElection:
    rid: str
    settled: bool  # the reply was acknowledged: a peer's later Election is told Done


@dataclass(frozen=True, slots=True)
class Load:
    in_flight: int  # seals in the encoder pool


@dataclass(frozen=True, slots=True)
class PeerDown:
    node: int


@dataclass(frozen=True, slots=True)
class PeerRefused:
    """`node`'s peer address answered a datagram of ours with ICMP port unreachable: no process
    listens there (killed or crashed, its host up). Membership treats it as unreachable at once."""

    node: int


# ---- failure token -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenView:
    epoch: int
    holder: int
    holding: bool
    down: bool
    down_since: float  # wall clock, 0.0 when up


@dataclass(frozen=True, slots=True)
class GoDown:
    """Simulated fail-stop. `then_send`: peer messages (node id, message) to send after the
    receiver's own goodbyes (only the EncryptFlowActor gets a non-empty one)."""

    then_send: tuple[tuple[int, Message], ...] = ()


@dataclass(frozen=True, slots=True)
class ComeUp:
    pass


@dataclass(frozen=True, slots=True)
class NeedSync:
    pass


@dataclass(frozen=True, slots=True)
class SyncDone:
    pass


# ---- directory -> pending updates ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoreUpdate:
    addr: Addr
    rid: str
    update: Update


@dataclass(frozen=True, slots=True)
class ConfirmIds:
    addr: Addr
    rid: str
    user: str
    ids: tuple[str, ...]
    session: bytes  # the token digest of the session the directory checked


@dataclass(frozen=True, slots=True)
class ForgetIds:
    """A peer's ForgetUpdates from a session this node accepted too: forget those of `ids`
    that are addressed to `user`."""

    user: str
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HandOver:
    """A join was accepted: answer it with the user's pending updates."""

    addr: Addr
    user: str
    reply: JoinReply  # without updates


@dataclass(frozen=True, slots=True)
class BuildSync:
    """A peer asked for our state: the directory's part is here, add the pending part, send."""

    to: int
    users: tuple[UserEntry, ...]
    dir_digest: bytes
    pins: tuple[Pin, ...] = ()


@dataclass(frozen=True, slots=True)
class ApplySync:
    """A peer's state: the directory merged its part; merge the pending part."""

    sender: int
    msg: StateSync


@dataclass(frozen=True, slots=True)
class SyncApplied:
    sender: int
    empty: bool = False  # the peer's state had nothing: no users, pins, updates or tombstones


# ---- snapshots for status and heartbeats ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Snapshot:
    """Figures one actor publishes: `part` names it, `values` are its status fields."""

    part: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Digest:
    """One part of the state digest ("directory" or "pending") changed."""

    part: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class CountersQuery:
    pass
