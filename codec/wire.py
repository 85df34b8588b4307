"""Strict CBOR decoding of one untrusted body (RELIABILITY 3.1 recipe, cbor2 >= 6.1.4).

`strict_load(body, max_items)`:
1. counts the data items of the first CBOR item by walking the heads only (no objects built) and
   refuses a body with more than `max_items` (the ~64x expansion of "1 M empty arrays" can then not
   happen: a valid body of each message type has a known item bound); a body of at most
   `max_items` bytes is not walked (it cannot hold more items than bytes);
2. decodes with cbor2's CBORDecoder: every built-in tag refused through `semantic_decoders`
   (left out when the body can hold no tag: cbor2 would not consult them), unknown tags through
   a raising `tag_hook`, no duplicate keys, no indefinite lengths, map keys
   only text or bytes, at most MAX_DEPTH nested containers;
3. refuses trailing bytes (`fp.tell() != len(body)`).
Any exception from cbor2 becomes DecodeError(reason) with a short reason. Callers: codec.messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from io import BytesIO
from types import MappingProxyType
from typing import NoReturn

from cbor2 import CBORDecodeEOF, CBORDecoder, CBORTag

from codec.errors import DecodeError

MAX_DEPTH = 8
"""Most nested containers in a body (the top-level map counts as 1)."""

# Every tag cbor2 6.3 decodes by itself (probed: each tag 0..69999 and 2**64-1 tried with several
# payloads; the others come back as CBORTag and reach tag_hook). 28/29 are shared values (cycles),
# 35 regex, 36 MIME, 4 decimal fractions, 2/3 bignums.
BUILTIN_TAGS: tuple[int, ...] = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100,
    256, 258, 260, 261, 1004, 43000, 55799,
)  # fmt: skip


class _TagRefused(Exception):
    def __init__(self, tag: int) -> None:
        super().__init__(f"CBOR tag {tag} refused")
        self.tag = tag


def _refuser(tag: int) -> Callable[..., NoReturn]:
    def refuse(*_: object) -> NoReturn:
        raise _TagRefused(tag)

    return refuse


_SEMANTIC = MappingProxyType({tag: _refuser(tag) for tag in BUILTIN_TAGS})


def _tag_hook(tag: CBORTag, immutable: bool) -> NoReturn:
    raise _TagRefused(tag.tag)


def count_items(body: bytes | bytearray | memoryview, budget: int) -> bool:
    """Walk the heads of the first CBOR item of `body`; raise DecodeError past `budget` items.

    Tags count as items. Stops quietly on anything it does not measure (truncation, indefinite
    lengths, reserved heads): the cbor2 pass right after refuses those at the same place.
    Returns True when it walked the whole first item and met no tag (cbor2, which reads only
    that item, will meet none either), False otherwise.
    """
    pos, end, pending, count, tagged = 0, len(body), 1, 0, False
    while pending:
        if pos >= end:
            return False
        head = body[pos]
        major, info = head >> 5, head & 31
        pos += 1
        if info < 24:
            arg = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > end:
                return False
            arg = int.from_bytes(body[pos : pos + size], "big")
            pos += size
        else:
            return False
        pending -= 1
        count += 1
        if count > budget:
            raise DecodeError(f"more than {budget} CBOR items for this message type")
        if major == 2 or major == 3:
            pos += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1
            tagged = True
    return not tagged


def _reason(exc: BaseException) -> str:
    """A short reason for a cbor2 failure."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _TagRefused):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    if isinstance(exc, CBORDecodeEOF):
        return "truncated body"
    if "nesting depth" in text:
        return f"nested deeper than {MAX_DEPTH} containers"
    if "indefinite length" in text:
        return f"indefinite length refused ({text[:80]})"
    if "Duplicate map key" in text:
        return "duplicate map key"
    return f"bad CBOR: {type(exc).__name__}: {text[:120]}"


_TAG_HEAD = re.compile(b"[\xc0-\xdf]")
"""Any byte that could be the head of a tag: major type 6 (0xdc..0xdf are malformed heads)."""


def strict_load(body: bytes | bytearray | memoryview, max_items: int) -> object:
    """Decode exactly one CBOR item filling all of `body`, by the strict recipe above.

    Two shortcuts, each leaving every decision as it was: a body of at most `max_items` bytes
    cannot hold more items than that (each item takes at least its one head byte), so it is not
    counted; a body in which no tag can be met (no byte 0xc0..0xdf at all, or for a body long
    enough to be counted: no tag head met by the count) is decoded without the tag refusers,
    which cbor2 would not consult (copying the 23 of `semantic_decoders` into each decoder costs
    about as much as the decode of a small body)."""
    if len(body) > max_items:
        tag_free = count_items(body, max_items)
    else:
        tag_free = _TAG_HEAD.search(body) is None
    fp = BytesIO(body)
    decoder = CBORDecoder(
        fp,
        tag_hook=_tag_hook,
        semantic_decoders=None if tag_free else _SEMANTIC,
        max_depth=MAX_DEPTH - 1,  # cbor2 counts the outermost container as depth 0
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
    try:
        value = decoder.decode()
    except Exception as e:  # cbor2 wraps most errors, but any exception here is bad input
        raise DecodeError(_reason(e)) from e
    extra = len(body) - fp.tell()
    if extra:
        raise DecodeError(f"trailing bytes ({extra} after the CBOR item)")
    return value
