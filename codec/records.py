"""Field types and nested records shared by the messages of codec.messages.

The aliases are `Annotated` types carrying a codec.fields spec; message fields are declared with
them. Units: Millis in milliseconds, WallClock in seconds since the Unix epoch. The nested records
(`Update`, `UserEntry`, `Preview`) are carried as maps inside messages; they have no type code.
Callers: codec.messages (re-exports everything here), actors, client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from codec.fields import (
    Bytes,
    Float,
    Int,
    IpText,
    Items,
    NameText,
    Nested,
    OneOf,
    Record,
    RequestIdText,
    record,
)

U63 = 2**63 - 1
LIST_MAX = 4096
STATE_SYNC_UPDATES_MAX = 16384

Rid = Annotated[str, RequestIdText()]
UserName = Annotated[str, NameText()]
ImageName = Annotated[str, NameText()]
NodeId = Annotated[int, Int(1, 255)]
NodeOrZero = Annotated[int, Int(0, 255)]  # 0 = unknown
Count = Annotated[int, Int(0, U63)]
Epoch = Annotated[int, Int(0, U63)]
Views = Annotated[int, Int(1, 1_000_000)]
ViewsLeft = Annotated[int, Int(0, 1_000_000)]  # a borrower's views left (0 included)
Port = Annotated[int, Int(0, 65535)]
ProcessId = Annotated[int, Int(0, 2**31 - 1)]  # an OS process id; 0 = not known
BearerToken = Annotated[bytes, Bytes(16, min_len=16)]
PublicKey = Annotated[bytes, Bytes(64)]
Digest = Annotated[bytes, Bytes(32)]
Grant = Annotated[bytes, Bytes(4096)]
Blob = Annotated[bytes, Bytes(None)]  # bounded by the body limit
Millis = Annotated[float, Float(0.0, 1e9)]
WallClock = Annotated[float, Float(0.0, 1e11)]
UpDown = Annotated[str, OneOf(("up", "down"))]


# ---- nested records -------------------------------------------------------------------------


@record
@dataclass(frozen=True, slots=True)
class Update(Record):
    """A pending access update. `id` is a request id of its author; `delta` views (+/-)."""

    id: Rid
    kind: Annotated[str, OneOf(("grant", "revoke", "more", "approve", "deny"))]
    owner: UserName
    borrower: UserName
    image: ImageName
    delta: Annotated[int, Int(-1_000_000, 1_000_000)]
    addressee: UserName
    grant: Grant
    created: WallClock


@record
@dataclass(frozen=True, slots=True)
class UserEntry(Record):
    """A directory entry: where a user is online, its keys, when the entry expires."""

    user: UserName
    host: Annotated[str, IpText()]
    port: Port
    token_digest: Digest
    sign_key: PublicKey
    box_key: PublicKey
    expires: WallClock


@record
@dataclass(frozen=True, slots=True)
class Pin(Record):
    """A user's pinned public keys (trust on first use), as a state sync carries them."""

    user: UserName
    sign_key: PublicKey
    box_key: PublicKey


@record
@dataclass(frozen=True, slots=True)
class Preview(Record):
    """A small JPEG preview of one image."""

    image: ImageName
    jpeg: Annotated[bytes, Bytes(256 * 1024)]


Updates = Annotated[tuple[Update, ...], Items(Nested(Update), LIST_MAX)]
UserEntries = Annotated[tuple[UserEntry, ...], Items(Nested(UserEntry), LIST_MAX)]
UpdateIds = Annotated[tuple[str, ...], Items(RequestIdText(), LIST_MAX)]
