"""Every message of Veilshare: frozen, slotted dataclasses <-> one canonical CBOR map each.

A message class is declared in a few lines:

    @register(1, bulk=True)
    @dataclass(frozen=True, slots=True)
    class EncryptRequest(Message):
        rid: Rid
        image: ImageName
        data: Blob

Field types are the aliases of codec.records (`Annotated` types carrying a codec.fields spec).
Building a message checks every field and raises DecodeError(reason, field): one rule for local and remote.
The type code is not in the body; it travels in the transport header (`msg.TYPE`).

Body limits: control types (BULK False) at most CONTROL_MAX_BODY bytes; BULK types up to the
transport's max_message. `max_body` gives the limit from the type code alone, so the transport can
refuse before buffering. Codes: 1-29 client <-> node, 30-59 node <-> node, 60-89 client <-> client.
Callers: transport (max_body, decode, encode), actors, client, shell.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, cast

import cbor2

from codec import errors, records
from codec.canonical import encoder_for
from codec.fields import (
    Bytes,
    Float,
    Items,
    Nested,
    OneOf,
    Record,
    RequestIdText,
    Text,
    from_map,
    kind_of,
    max_items,
    record,
    to_map,
)
from codec.records import (
    STATE_SYNC_UPDATES_MAX,
    BearerToken,
    Blob,
    Count,
    Digest,
    Epoch,
    Grant,
    ImageName,
    Millis,
    NodeId,
    NodeOrZero,
    ProcessId,
    PublicKey,
    Rid,
    UpdateIds,
    Updates,
    UpDown,
    UserEntries,
    UserName,
    Views,
    ViewsLeft,
    WallClock,
)
from codec.wire import strict_load

CONTROL_MAX_BODY = 64 * 1024
DONE_BATCH_MAX = 256  # request ids in one DoneBatch (with 64-character ids: about 17 KB)
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
# Re-exported here: part of this module's API.
DecodeError = errors.DecodeError
Update = records.Update
UserEntry = records.UserEntry
Pin = records.Pin
Preview = records.Preview

BIG_BLOB = 1 << 20  # a bytes field this long is copied once into the body (see _encode_around)
_MARKER = b"\xffveilshare-blob\xff"  # 16 bytes: CBOR item 0x50 + these, unique in the body

ITEM_SLACK = 64
"""CBOR items allowed beyond a type's largest valid body, so that a stray key or a wrong-typed
value is refused by the field checks (naming the field) rather than by the item count."""


class Message(Record):
    """Base of every message. TYPE: the unique code; BULK: body may exceed CONTROL_MAX_BODY."""

    __slots__ = ()
    TYPE: ClassVar[int]
    BULK: ClassVar[bool] = False


MESSAGE_TYPES: dict[int, type[Message]] = {}
_MAX_ITEMS: dict[int, int] = {}
_ENCODERS: dict[type[Message], Callable[[Message], bytes]] = {}
M = TypeVar("M", bound=Message)


def register(code: int, *, bulk: bool = False) -> Callable[[type[M]], type[M]]:
    """Class decorator: give a message class its TYPE code and BULK flag and enter it in MESSAGE_TYPES."""

    def decorate(cls: type[M]) -> type[M]:
        if type(code) is not int or not 1 <= code <= 65535 or code in MESSAGE_TYPES:
            raise TypeError(f"{cls.__name__}: type code {code!r} invalid or already used")
        record(cls)
        cls.TYPE = code
        cls.BULK = bulk
        MESSAGE_TYPES[code] = cls
        _MAX_ITEMS[code] = max_items(cls) + ITEM_SLACK
        fast = encoder_for(cls, BIG_BLOB)
        if fast is not None:
            _ENCODERS[cls] = cast(Callable[[Message], bytes], fast)
        return cls

    return decorate


# ---- client <-> node (1-29) -----------------------------------------------------------------


@register(1, bulk=True)
@dataclass(frozen=True, slots=True)
class EncryptRequest(Message):
    """attempt: 0 for the first send, +1 per client retry (a late copy of a served attempt is
    ignored; a higher attempt is served again)."""

    rid: Rid
    image: ImageName
    data: Blob
    attempt: Count


@register(2, bulk=True)
@dataclass(frozen=True, slots=True)
class EncryptReply(Message):
    rid: Rid
    node: NodeId
    sealed: Blob
    seal_ms: Millis
    wait_ms: Millis  # from the request's arrival at the node to the start of the seal (election)


@register(3)
@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    rid: Rid
    code: Annotated[str, Text(32, min_len=1, pattern="[a-z_]+")]
    message: Annotated[str, Text(512)]
    retryable: bool


@register(4)
@dataclass(frozen=True, slots=True)
class Join(Message):
    """`proof`: the Ed25519 signature by `sign_key` of codec.sharecrypt.join_signed_part (the
    other fields, `stamp` the client's wall clock): only the holder of the keys may join."""

    rid: Rid
    user: UserName
    sign_key: PublicKey
    box_key: PublicKey
    stamp: WallClock
    proof: Annotated[bytes, Bytes(64, min_len=64)]


@register(5, bulk=True)
@dataclass(frozen=True, slots=True)
class JoinReply(Message):
    rid: Rid
    token: BearerToken
    updates: Updates


@register(6)
@dataclass(frozen=True, slots=True)
class ClientHeartbeat(Message):
    user: UserName
    token: BearerToken


@register(7)
@dataclass(frozen=True, slots=True)
class Leave(Message):
    user: UserName
    token: BearerToken


@register(8)
@dataclass(frozen=True, slots=True)
class DirectoryQuery(Message):
    rid: Rid


@register(9, bulk=True)
@dataclass(frozen=True, slots=True)
class DirectoryReply(Message):
    rid: Rid
    users: UserEntries


@register(10)
@dataclass(frozen=True, slots=True)
class StatusQuery(Message):
    rid: Rid


@register(11)
@dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """One node's status. down_since: wall clock s (0.0 = not down); token_holder 0 = unknown.

    Fields with a default were added later: a sender that predates them omits them and the
    receiver reads the default. pid: the node's process id on its host (0 = not told).
    syncing: the node is up but still copying the state of a peer (after start or a failure)."""

    rid: Rid
    node: NodeId
    state: UpDown
    served: Count
    cached: Count
    token: bool
    users: Count
    pending: Count
    down_since: WallClock
    token_holder: NodeOrZero
    majority: bool
    digest: Digest  # directory + pending state (equal on converged nodes)
    pid: ProcessId = 0
    syncing: bool = False


@register(12)
@dataclass(frozen=True, slots=True)
class PostUpdate(Message):
    rid: Rid
    user: UserName
    token: BearerToken
    update: Update


@register(13)
@dataclass(frozen=True, slots=True)
class Ack(Message):
    rid: Rid


@register(14, bulk=True)
@dataclass(frozen=True, slots=True)
class ConfirmUpdates(Message):
    rid: Rid
    user: UserName
    token: BearerToken
    ids: UpdateIds


@register(16)
@dataclass(frozen=True, slots=True)
class EncryptOffer(Message):
    """A large image announced without its bytes: the nodes elect on it and only the winner
    takes the payload (FetchPayload -> an EncryptRequest to that node alone). size: its bytes."""

    rid: Rid
    image: ImageName
    size: Count
    attempt: Count


@register(17)
@dataclass(frozen=True, slots=True)
class FetchPayload(Message):
    """Node `node` won the election of the offered request `rid`: send it the EncryptRequest."""

    rid: Rid
    node: NodeId
    attempt: Count


# ---- node <-> node (30-59) ------------------------------------------------------------------


@register(30)
@dataclass(frozen=True, slots=True)
class PeerHeartbeat(Message):
    node: NodeId
    epoch: Epoch
    state: UpDown
    load: Count
    token_epoch: Epoch
    token_holder: NodeOrZero
    digest: Digest
    # the node's encoder pool size (0: not said): with it a peer knows the highest key the node
    # can have in an election (actors.core.election, Ceilings)
    slots: Count = 0


@register(31)
@dataclass(frozen=True, slots=True)
class Election(Message):
    """`node` takes part in the election of `rid` with this key priority, in its round `round`
    (see below)."""

    rid: Rid
    node: NodeId
    priority: Count
    round: Count
    bind: Count = 0


# `bind` (Election, ElectionItem): the sender's binding, a bit per node id (1 << id) of the nodes it
# counted live and heard from lately when it started, itself included; 0 for none. Such a node
# gives its vote to nobody but the top key among them: the top counts the Election as that vote
# once it knows every one of those keys. Bit 0 (no node has id 0), ASK: "I lack your key, send
# me your Election" (actors.core.election, Bindings).
# `round` (Election, Claim, Coordinator, ElectionOk): a sender numbers each of its rounds of a
# request's election from one counter (per process, never reused). A vote (ElectionOk) carries
# the round of the claimant it votes for, as the voter heard it; the claimant counts it only if
# that is the round it last sent the voter. A vote sent before the voter heard a newer round
# (resent by the transport long after: a partition's heal) then counts for nothing, and a
# claimant's message of an older round is not taken for an abdication (actors.core.election).


@register(32)
@dataclass(frozen=True, slots=True)
class ElectionOk(Message):
    rid: Rid
    node: NodeId
    round: Count


@register(33)
@dataclass(frozen=True, slots=True)
class Coordinator(Message):
    rid: Rid
    node: NodeId
    round: Count


@register(34)
@dataclass(frozen=True, slots=True)
class Done(Message):
    """The request `rid` was answered by `node`. acked: the client's transport acknowledged that
    reply, so a retry of the request that crossed it needs no answer; False when the reply
    failed or its outcome is unknown (a client retry with a higher attempt is served again)."""

    rid: Rid
    node: NodeId
    acked: bool


@register(35)
@dataclass(frozen=True, slots=True)
class Token(Message):
    epoch: Epoch
    holder: NodeId
    seq: Count


@register(36)
@dataclass(frozen=True, slots=True)
class GoingDown(Message):
    node: NodeId
    epoch: Epoch


@register(37)
@dataclass(frozen=True, slots=True)
class ComingUp(Message):
    node: NodeId
    epoch: Epoch


@register(38)
@dataclass(frozen=True, slots=True)
class StateRequest(Message):
    node: NodeId


@register(39, bulk=True)
@dataclass(frozen=True, slots=True)
class StateSync(Message):
    node: NodeId
    users: UserEntries
    updates: Annotated[tuple[Update, ...], Items(Nested(Update), STATE_SYNC_UPDATES_MAX)]
    forgotten: Annotated[tuple[str, ...], Items(RequestIdText(), STATE_SYNC_UPDATES_MAX)]
    digest: Digest
    # the sender's key pins (added after StateSync shipped: an older sender's sync has none)
    pins: Annotated[tuple[Pin, ...], Items(Nested(Pin), STATE_SYNC_UPDATES_MAX)] = ()


@register(40)
@dataclass(frozen=True, slots=True)
class DirectoryChange(Message):
    op: Annotated[str, OneOf(("join", "leave"))]
    entry: UserEntry


@register(41)
@dataclass(frozen=True, slots=True)
class ReplicateUpdate(Message):
    update: Update


@register(42, bulk=True)
@dataclass(frozen=True, slots=True)
class ForgetUpdates(Message):
    """`user` confirmed these ids from the session whose token digest is `session`: a peer
    forgets them only if it accepted that session too (and only ids addressed to `user`)."""

    ids: UpdateIds
    user: UserName
    session: Digest


@register(43)
@dataclass(frozen=True, slots=True)
class TokenVote(Message):
    epoch: Epoch
    candidate: NodeId
    voter: NodeId


@register(45)
@dataclass(frozen=True, slots=True)
class DoneBatch(Message):
    """Several Done of `node` in one message (those its encrypt flow ended while its mailbox
    was busy): the requests in `acked`, then those in `unacked` (see Done.acked)."""

    node: NodeId
    acked: Annotated[tuple[str, ...], Items(RequestIdText(), DONE_BATCH_MAX)]
    unacked: Annotated[tuple[str, ...], Items(RequestIdText(), DONE_BATCH_MAX)]


@register(44)
@dataclass(frozen=True, slots=True)
class Claim(Message):
    """`node` would win the election of `rid` and asks for votes (ElectionOk): it seals only
    once a majority (itself included) voted for it, and each node votes for one claimant."""

    rid: Rid
    node: NodeId
    round: Count


ELECTION_BATCH_MAX = 256  # election messages in one ElectionBatch (64-character ids: ~20 KB)


@record
@dataclass(frozen=True, slots=True)
class ElectionItem(Record):
    """One election message inside an ElectionBatch: `kind` names it (Election, ElectionOk,
    Claim, Coordinator); `priority` is the Election's, 0 for the others; `round` is each one's."""

    kind: Annotated[str, OneOf(("election", "ok", "claim", "coordinator"))]
    rid: Rid
    priority: Count
    round: Count
    bind: Count


@register(46)
@dataclass(frozen=True, slots=True)
class ElectionBatch(Message):
    """Several election messages of `node` to one peer in one datagram: those its election
    actor produced while its mailbox was busy (concurrent requests), or in one turn of its
    reader, in the order it sent them. `acked` / `unacked`: Dones that left in the same turn
    (as a DoneBatch's: the receiver hands them to its encrypt flow as one)."""

    node: NodeId
    items: Annotated[tuple[ElectionItem, ...], Items(Nested(ElectionItem), ELECTION_BATCH_MAX)]
    acked: Annotated[tuple[str, ...], Items(RequestIdText(), DONE_BATCH_MAX)] = ()
    unacked: Annotated[tuple[str, ...], Items(RequestIdText(), DONE_BATCH_MAX)] = ()


# ---- client <-> client (60-89) --------------------------------------------------------------


@register(60)
@dataclass(frozen=True, slots=True)
class PreviewRequest(Message):
    rid: Rid
    user: UserName
    token: BearerToken


@register(61, bulk=True)
@dataclass(frozen=True, slots=True)
class PreviewReply(Message):
    rid: Rid
    previews: Annotated[tuple[Preview, ...], Items(Nested(Preview), 256)]


@register(62)
@dataclass(frozen=True, slots=True)
class ImageRequest(Message):
    rid: Rid
    user: UserName
    token: BearerToken
    image: ImageName
    views: Views
    days: Annotated[float, Float(0.0, 36500.0)]  # grant expiry asked for (0 = never)


@register(63, bulk=True)
@dataclass(frozen=True, slots=True)
class ImageReply(Message):
    rid: Rid
    image: ImageName
    sealed: Blob
    grant: Grant


@register(64)
@dataclass(frozen=True, slots=True)
class AccessUpdate(Message):
    rid: Rid
    user: UserName
    token: BearerToken
    update: Update


@register(65)
@dataclass(frozen=True, slots=True)
class MoreViews(Message):
    rid: Rid
    user: UserName
    token: BearerToken
    image: ImageName
    views: Views


@register(66)
@dataclass(frozen=True, slots=True)
class UpdateApplied(Message):
    """The borrower's answer to an AccessUpdate it applied (issue 17): the views it has left on
    that image now, so the owner's `grant` and `shared` can say so. Answers the update's rid."""

    rid: Rid
    views_left: ViewsLeft


# ---- encode / decode ------------------------------------------------------------------------


def max_body(type_code: int, max_message: int, *, control_max: int = CONTROL_MAX_BODY) -> int:
    """Body limit in bytes of `type_code`: max_message for BULK types, else control_max (capped by
    max_message). Raises DecodeError for an unknown type. The transport calls it on a message's
    first fragment, before buffering anything."""
    cls = MESSAGE_TYPES.get(type_code) if type(type_code) is int else None
    if cls is None:
        raise DecodeError(f"unknown message type {type_code!r}")
    return max_message if cls.BULK else min(control_max, max_message)


def encode(msg: Message) -> bytes:
    """The canonical CBOR body of `msg` (deterministic: equal messages give equal bytes).

    Most types go through codec.canonical (the same bytes, written faster); the others here."""
    fast = _ENCODERS.get(type(msg))
    if fast is not None:
        return fast(msg)
    if MESSAGE_TYPES.get(getattr(msg, "TYPE", -1)) is not type(msg):
        raise TypeError(f"not a registered message: {type(msg).__name__}")
    return encode_steps(msg)


def encode_steps(msg: Message) -> bytes:
    """encode() the plain way: cbor2's canonical encoder over `to_map(msg)` (long blobs copied
    once). The reference the fast encoders are tested against."""
    fields = to_map(msg)
    big = next((k for k, v in fields.items() if type(v) is bytes and len(v) >= BIG_BLOB), None)
    if big is None:
        return cbor2.dumps(fields, canonical=True)
    return _encode_around(fields, big)


def _encode_around(fields: dict[str, Any], big: str) -> bytes:
    """The bytes cbor2.dumps(fields, canonical=True) gives, with the long bytes value of `big`
    copied once: cbor2 writes into a growing buffer and returns a copy of it, so a 46 MiB sealed
    reply took about twice its size on top for a moment (benchmarks.memory --trace). The map is
    encoded with a 16-byte marker in its place (canonical key order does not depend on values),
    then joined around the real value's CBOR head: one allocation of the exact size."""
    data = fields[big]
    head = cbor2.dumps({**fields, big: _MARKER}, canonical=True)
    item = b"\x50" + _MARKER
    at = head.find(item)
    if at < 0 or head.find(item, at + 1) >= 0:  # the marker must name exactly one item
        return cbor2.dumps(fields, canonical=True)
    n = len(data)
    size = struct.pack(">BI", 0x5A, n) if n < 1 << 32 else struct.pack(">BQ", 0x5B, n)
    return b"".join((head[:at], size, data, head[at + len(item):]))


def decode(
    type_code: int,
    body: bytes | bytearray | memoryview,
    max_message: int = DEFAULT_MAX_MESSAGE,
    *,
    control_max: int = CONTROL_MAX_BODY,
) -> Message:
    """Strictly decode the body of a message of `type_code` (RELIABILITY 3.1). Raises only
    DecodeError(reason, field): field None for a bad body, else the offending field's path."""
    limit = max_body(type_code, max_message, control_max=control_max)
    cls = MESSAGE_TYPES[type_code]
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise DecodeError(f"body is {kind_of(body)}, not bytes")
    data = bytes(body) if isinstance(body, memoryview) else body
    if len(data) > limit:
        raise DecodeError(
            f"body of {len(data)} bytes over the {limit}-byte limit of {cls.__name__}"
        )
    raw = strict_load(data, _MAX_ITEMS[type_code])
    if type(raw) is not dict:
        raise DecodeError(f"body is {kind_of(raw)}, not a map")
    return from_map(cls, raw)
