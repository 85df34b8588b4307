"""Canonical CBOR bodies of records, faster than `cbor2.dumps(to_map(rec), canonical=True)`.

The bytes are exactly cbor2's canonical encoding (tests/test_codec_fastpath.py pins it for every
message type). `cbor2.dumps(..., canonical=True)` costs ~2 us more per call than without it, even
for a one-key map (cbor2 6.3, measured), and sorting the keys is all it does for maps of the value
kinds records hold, except floats (written in the shortest of half, single and double precision
that keeps the value). The canonical key order depends only on the keys, so it is taken once per
class from cbor2 itself. Per class, `encoder_for` picks:

- flat records (every field an int, float, bool, bytes or text): the body is written here, the
  keys' bytes precomputed, each value by a small writer; a bytes value is copied once, straight
  into the body (as codec.messages._encode_around does for long blobs);
- records without a float anywhere (nested records and lists included): `cbor2.dumps` without
  `canonical` of maps built in canonical key order;
- others (a float inside a nested record): None, the caller keeps `cbor2.dumps(canonical=True)`.
Callers: codec.messages.encode.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from operator import attrgetter
from typing import Any, cast

import cbor2

from codec.fields import (
    Bool,
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
    Spec,
    Text,
    fields_of,
)

Writer = Callable[[list[bytes], Any], None]
_TEXT_SPECS = (Text, OneOf, NameText, RequestIdText, IpText)
_SMALL = [bytes((i,)) for i in range(256)]


def canonical_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """The order cbor2's canonical encoder writes a map with these text keys in."""
    return tuple(cbor2.loads(cbor2.dumps(dict.fromkeys(names), canonical=True)))


def head(major: int, n: int) -> bytes:
    """The CBOR head of major type `major` (0..7) with argument n (0 <= n < 2**64)."""
    mt = major << 5
    if n < 24:
        return _SMALL[mt | n]
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return struct.pack(">BH", mt | 25, n)
    if n < 0x100000000:
        return struct.pack(">BI", mt | 26, n)
    return struct.pack(">BQ", mt | 27, n)


def write_int(out: list[bytes], v: int) -> None:
    out.append(head(0, v) if v >= 0 else head(1, -1 - v))


def write_float(out: list[bytes], v: float) -> None:
    """The shortest of half, single, double precision that keeps v (cbor2's canonical floats)."""
    if math.isnan(v):
        out.append(b"\xf9\x7e\x00")
        return
    try:
        single = struct.pack(">f", v)
    except OverflowError:  # beyond single precision (inf is not: it packs)
        out.append(b"\xfb" + struct.pack(">d", v))
        return
    if struct.unpack(">f", single)[0] != v:
        out.append(b"\xfb" + struct.pack(">d", v))
        return
    try:
        half = struct.pack(">e", v)
    except OverflowError:
        out.append(b"\xfa" + single)
        return
    out.append(b"\xf9" + half if struct.unpack(">e", half)[0] == v else b"\xfa" + single)


def write_bool(out: list[bytes], v: bool) -> None:
    out.append(b"\xf5" if v else b"\xf4")


def write_bytes(out: list[bytes], v: bytes) -> None:
    out.append(head(2, len(v)))
    out.append(v)


def write_text(out: list[bytes], v: str) -> None:
    data = v.encode("utf-8")
    out.append(head(3, len(data)))
    out.append(data)


def _writer(spec: Spec) -> Writer | None:
    """The writer of a flat field's values, or None when the field is not flat."""
    if isinstance(spec, Int) and -(2**64) <= spec.lo and spec.hi < 2**64:
        return write_int
    if isinstance(spec, Float):
        return write_float
    if isinstance(spec, Bool):
        return write_bool
    if isinstance(spec, Bytes):
        return write_bytes
    if isinstance(spec, _TEXT_SPECS):
        return write_text
    return None


def _getter(names: tuple[str, ...]) -> Callable[[Record], tuple[Any, ...]]:
    if len(names) > 1:
        return attrgetter(*names)
    return lambda rec: tuple(getattr(rec, n) for n in names)


def _flat_encoder(cls: type[Record]) -> Callable[[Record], bytes] | None:
    specs = fields_of(cls)
    order = canonical_order(tuple(specs))
    writers = [_writer(specs[name]) for name in order]
    if None in writers:
        return None
    keys = [cbor2.dumps(name) for name in order]
    plan = tuple(zip(keys, cast(list[Writer], writers), strict=True))
    map_head = head(5, len(order))
    get = _getter(order)

    def encode(rec: Record) -> bytes:
        out = [map_head]
        for (key, write), value in zip(plan, get(rec), strict=True):
            out.append(key)
            write(out, value)
        return b"".join(out)

    return encode


def _has_float(spec: Spec) -> bool:
    if isinstance(spec, Float):
        return True
    if isinstance(spec, Nested):
        return any(_has_float(s) for s in fields_of(spec.cls).values())
    if isinstance(spec, Items):
        return _has_float(spec.item)
    return False


def _to_ordered(spec: Spec) -> Callable[[Any], object] | None:
    """How a value of `spec` becomes its CBOR-ready form with maps in canonical key order
    (None: as it is)."""
    if isinstance(spec, Nested):
        return ordered_map_of(spec.cls)
    if isinstance(spec, Items):
        item = _to_ordered(spec.item)
        if item is None:
            return list
        return lambda v: [item(x) for x in v]
    return None


def ordered_map_of(cls: type[Record]) -> Callable[[Record], dict[str, object]]:
    """A function giving to_map(rec) with every map's keys in canonical order."""
    specs = fields_of(cls)
    order = canonical_order(tuple(specs))
    convert = tuple(_to_ordered(specs[name]) for name in order)
    get = _getter(order)
    if all(conv is None for conv in convert):
        return lambda rec: dict(zip(order, get(rec), strict=True))

    def ordered(rec: Record) -> dict[str, object]:
        return {
            name: value if conv is None else conv(value)
            for name, conv, value in zip(order, convert, get(rec), strict=True)
        }

    return ordered


def encoder_for(cls: type[Record], big_blob: int) -> Callable[[Record], bytes] | None:
    """A function giving `cbor2.dumps(to_map(rec), canonical=True)` for records of `cls`, or None
    when `cls` is not flat and holds a float (in a nested record or list) or a bytes field that
    may reach `big_blob` bytes (the caller then encodes as before)."""
    flat = _flat_encoder(cls)
    if flat is not None:
        return flat
    for spec in fields_of(cls).values():
        if _has_float(spec):
            return None
        if isinstance(spec, Bytes) and (spec.max_len is None or spec.max_len >= big_blob):
            return None
    ordered = ordered_map_of(cls)
    dumps = cbor2.dumps
    return lambda rec: dumps(ordered(rec))
