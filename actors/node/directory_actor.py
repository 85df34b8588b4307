"""DirectoryActor: the directory of service (sessions, tokens, key pins, expiry).

Owns the pure core `actors.core.directory.Directory` and the pins table (`PinStore`, written on
this actor's thread). Client requests it answers: Join, ClientHeartbeat, Leave, DirectoryQuery;
for PostUpdate and ConfirmUpdates it checks the session and the author, then hands the request to
the PendingUpdateActor (which commits and answers). A Join is answered by the PendingUpdateActor
too (`HandOver`: the join reply carries the user's pending updates).

A Join of a user who is online from another address probes that address (a transport send whose
acknowledgement proves the old session alive): alive, the join is refused (`already online`);
silent for PROBE_S, the new session replaces it.

Peer messages: DirectoryChange (merge), StateRequest (our users and key pins, then the
PendingUpdateActor adds its part and sends the StateSync), StateSync (the peer's pins are its
votes: keys a majority pins are taken, a user whose pins disagree without a majority is refused;
then merge the users, then the PendingUpdateActor merges its part, tombstones included, and
reports it applied: a peer's tombstones are copies of ones made under the session rules, see
actors.core.directory),
ForgetUpdates (honoured, as `ForgetIds` to the PendingUpdateActor, only if this node accepted the
confirming session too). A node that is down (simulated) keeps no entries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from actors.core.directory import AlreadyOnline, Directory, DirectoryError
from actors.node.base import PeerLink, ServicePartActor
from actors.node.pending_store import PinStore
from actors.node.signals import (
    ApplySync,
    BuildSync,
    ClientIn,
    ClusterView,
    ConfirmIds,
    Digest,
    ForgetIds,
    GoDown,
    HandOver,
    PeerIn,
    SendResult,
    Snapshot,
    StoreUpdate,
)
from codec import sharecrypt
from codec.messages import (
    Ack,
    ClientHeartbeat,
    ConfirmUpdates,
    DirectoryChange,
    DirectoryQuery,
    DirectoryReply,
    ErrorReply,
    ForgetUpdates,
    Join,
    JoinReply,
    Leave,
    Message,
    Pin,
    PostUpdate,
    StateRequest,
    StateSync,
    UserEntry,
)
from codec.records import LIST_MAX, STATE_SYNC_UPDATES_MAX
from config import Config
from transport.udp import Transport

Addr = tuple[str, int]
PROBE_S = 0.5  # an online client's transport acknowledges a probe well within this


class DirectoryActor(ServicePartActor):
    def __init__(
        self,
        cfg: Config,
        node_id: int,
        client_tp: Transport,
        peers: PeerLink,
        pins: PinStore,
        view: ClusterView,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(node_id, client_tp, peers, view, clock=clock, wall=wall)
        self.pin_store = pins
        key = hashlib.sha256(b"veilshare directory v1|" + cfg.secret_bytes()).digest()
        self.directory = Directory(key, cfg.directory.ttl_s, pins=pins.pins(), on_pin=pins.pin_set,
                                   nodes=len(cfg.nodes))
        # join rid -> (new address, Join, the session in its way, being probed)
        self.probing: dict[str, tuple[Addr, Join, UserEntry]] = {}
        self.published: tuple[bytes, int] | None = None

    def on_stop(self) -> None:
        self.pin_store.close()

    # ---- dispatch ---------------------------------------------------------------------------
    def serve(self, message: Any) -> None:
        if isinstance(message, ClientIn):
            self._client(message.addr, message.msg)
        elif isinstance(message, PeerIn):
            self._peer(message.sender, message.msg)
        elif isinstance(message, SendResult):
            kind, _, rid = message.key.partition(":")
            if kind == "probe":
                self._probed(rid, message.error)

    def housekeeping(self, now: float) -> None:
        self.directory.expire(self.wall())

    def going_down(self, message: GoDown) -> None:
        self.directory.entries.clear()
        self.probing.clear()

    # ---- client socket --------------------------------------------------------------------------
    def _client(self, addr: Addr, msg: Message) -> None:
        if self.refused(self.client_tp, addr, msg, self.view, self.up):
            return
        rid = getattr(msg, "rid", None)
        try:
            self._serve(addr, msg, self.wall())
        except DirectoryError as exc:
            self.count("directory_refused", str(exc))
            if rid is not None:
                self.client_tp.send(
                    addr, ErrorReply(rid=rid, code=exc.code, message=str(exc), retryable=False)
                )

    def _serve(self, addr: Addr, msg: Message, wall: float) -> None:
        if isinstance(msg, Join):
            _check_proof(msg, wall)
            try:
                self._join(addr, msg, wall)
            except AlreadyOnline as exc:  # is that session alive? its transport must ack a probe
                if exc.current is None or msg.rid in self.probing:
                    raise
                old = (exc.current.host, exc.current.port)
                self.probing[msg.rid] = (addr, msg, exc.current)
                me = self.actor_ref
                key = f"probe:{msg.rid}"
                self.client_tp.send(
                    old,
                    Ack(rid=msg.rid),
                    deadline_s=PROBE_S,
                    on_done=lambda err: me.tell(SendResult(key, err)),
                )
        elif isinstance(msg, ClientHeartbeat):
            entry = self.directory.heartbeat(msg.user, msg.token, wall)
            if entry.host != addr[0] or entry.port != addr[1]:
                self.count("heartbeat_wrong_address", f"{msg.user} from {addr}")
        elif isinstance(msg, Leave):
            tomb = self.directory.leave(msg.user, msg.token, wall)
            if tomb is not None:
                self.peers.send_all(DirectoryChange(op="leave", entry=tomb))
        elif isinstance(msg, DirectoryQuery):
            users = tuple(self.directory.online(wall))
            self.client_tp.send(addr, DirectoryReply(rid=msg.rid, users=users))
        elif isinstance(msg, PostUpdate):
            self.directory.check(msg.user, msg.token, wall)
            u = msg.update
            author = u.id.partition("#")[0]
            poster_role = u.borrower if u.kind == "more" else u.owner
            if (
                msg.user != author or msg.user != poster_role
            ):  # ids and kinds belong to their author
                raise DirectoryError(f"{msg.user} may not post update {u.id} ({u.kind})")
            self.tell("pending", StoreUpdate(addr, msg.rid, u))
        elif isinstance(msg, ConfirmUpdates):
            entry = self.directory.check(msg.user, msg.token, wall)
            self.tell(
                "pending",
                ConfirmIds(addr, msg.rid, msg.user, tuple(msg.ids), entry.token_digest),
            )
        else:
            self.count("client_unexpected", type(msg).__name__)

    def _join(self, addr: Addr, msg: Join, wall: float, stale: UserEntry | None = None) -> None:
        token, entry = self.directory.join(
            msg.user,
            addr[0],
            addr[1],
            msg.rid,
            msg.sign_key,
            msg.box_key,
            wall,
            stale=stale,
        )
        self.peers.send_all(DirectoryChange(op="join", entry=entry))
        self.tell(
            "pending", HandOver(addr, msg.user, JoinReply(rid=msg.rid, token=token, updates=()))
        )

    def _probed(self, rid: str, error: object | None) -> None:
        """The old session of a joining user answered the probe (alive: refuse) or not (dead:
        the new session replaces it)."""
        addr, msg, old = self.probing.pop(rid, (None, None, None))
        if addr is None or msg is None or not self.up:
            return
        try:  # dead: replace that session, not one that replaced it meanwhile (core.directory)
            self._join(addr, msg, self.wall(), stale=old if error is not None else None)
        except DirectoryError as exc:
            self.count("directory_refused", str(exc))
            self.client_tp.send(
                addr, ErrorReply(rid=rid, code=exc.code, message=str(exc), retryable=False)
            )

    # ---- peer socket -----------------------------------------------------------------------------
    def _peer(self, sender: int, msg: Message) -> None:
        if not self.up:
            return
        wall = self.wall()
        if isinstance(msg, DirectoryChange):
            self.directory.merge(msg.entry, wall)
        elif isinstance(msg, StateRequest):
            users = self.directory.snapshot(wall)
            if len(users) > LIST_MAX:  # online entries come first; the oldest news (leaves) wait
                self.count("state_sync_truncated", f"{len(users)} directory entries")
                users = users[:LIST_MAX]
            pins = self.directory.pin_list()
            if len(pins) > STATE_SYNC_UPDATES_MAX:
                self.count("state_sync_truncated", f"{len(pins)} key pins")
                pins = pins[:STATE_SYNC_UPDATES_MAX]
            self.tell(
                "pending",
                BuildSync(
                    sender,
                    tuple(users),
                    self.directory.digest(wall),
                    tuple(Pin(user=u, sign_key=s, box_key=b) for u, s, b in pins),
                ),
            )
        elif isinstance(msg, StateSync):
            pinned = ((p.user, p.sign_key, p.box_key) for p in msg.pins)
            for vote in self.directory.vote_pins(sender, pinned):  # before the users' entries
                if vote.outcome == "disputed":
                    self.count("pin_conflict", f"node {sender} pins other keys for {vote.user} "
                                               "and no majority agrees: the user is refused")
                elif vote.outcome == "replaced":
                    self.count("pin_replaced", f"a majority pins other keys for {vote.user} "
                                               "than this node did: the majority's are taken")
            for entry in msg.users:
                self.directory.merge(entry, wall)
            self.tell("pending", ApplySync(sender, msg))
        elif isinstance(msg, ForgetUpdates):
            if self.directory.has_session(msg.user, msg.session, wall):
                self.tell("pending", ForgetIds(msg.user, tuple(msg.ids)))
            else:
                self.count(
                    "forget_refused",
                    f"node {sender}: {msg.user}'s session is not one this node accepted",
                )
        else:
            self.count("peer_unexpected", type(msg).__name__)

    # ---- snapshots -------------------------------------------------------------------------------
    def publish(self) -> None:
        wall = self.wall()
        digest = self.directory.digest(wall)
        users = len(self.directory.online(wall))
        if self.published == (digest, users):
            return
        self.published = (digest, users)
        self.tell("election", Digest("directory", digest))
        self.tell("supervisor", Digest("directory", digest))
        self.tell("supervisor", Snapshot("directory", {"users": users}))


class BadProof(DirectoryError):
    code = "bad_proof"


def _check_proof(msg: Join, wall: float) -> None:
    """Only the holder of a user's private signing key may join as that user: the public keys
    alone (which the directory lists to everyone) would otherwise let anyone take a session of an
    offline user and confirm (so make every node forget) her pending updates."""
    try:
        sharecrypt.verify_join(msg.rid, msg.user, msg.sign_key, msg.box_key, msg.stamp,
                               msg.proof, wall)
    except sharecrypt.ShareCryptError as exc:
        raise BadProof(f"join refused: {exc}") from None
