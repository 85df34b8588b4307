"""TI-2 (random bytes: only DecodeError) and TI-3 (one field mutated: DecodeError names the field)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from codec_samples import SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    RequestIdText,
    Spec,
    Text,
    fields_of,
    optional_fields,
    to_map,
)
from codec.messages import MESSAGE_TYPES, DecodeError, Message, decode, encode
from codec.names import is_request_id, is_valid_name

CODES = sorted(MESSAGE_TYPES)
FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def _decode_or_refuse(code: int, body: bytes) -> Message | None:
    try:
        msg = decode(code, body)
    except DecodeError:
        return None
    assert type(msg) is MESSAGE_TYPES[code]
    return msg


# ---- TI-2 -----------------------------------------------------------------------------------

ALL_CODES = [*CODES, -1, 0, 15, 29, 59, 89, 255, 2**16]


@settings(FUZZ, max_examples=1_000)
@given(
    codes=st.binary(min_size=10, max_size=10),
    bodies=st.lists(st.binary(max_size=48), min_size=10, max_size=10),
)
def test_ti2_random_bytes_only_decode_error(codes: bytes, bodies: list[bytes]) -> None:
    """10,000 random bodies in all: 1,000 examples of 10 (hypothesis costs ~1 ms per example)."""
    for code_byte, body in zip(codes, bodies, strict=True):
        _decode_or_refuse(ALL_CODES[code_byte % len(ALL_CODES)], body)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.floats(),
    st.text(max_size=40), st.binary(max_size=40),
)  # fmt: skip
keys = st.text(max_size=8) | st.sampled_from(["rid", "user", "token", "node", "update", "ids", "x"])
level1 = scalars | st.lists(scalars, max_size=4) | st.dictionaries(keys, scalars, max_size=4)
values = level1 | st.lists(level1, max_size=3) | st.dictionaries(keys, level1, max_size=3)


@settings(FUZZ, max_examples=400)
@given(code=st.sampled_from(CODES), raw=st.dictionaries(keys, values, max_size=6))
def test_ti2_random_cbor_maps_only_decode_error(code: int, raw: dict[str, Any]) -> None:
    _decode_or_refuse(code, cbor2.dumps(raw))


@settings(FUZZ, max_examples=800)
@given(code=st.sampled_from(CODES), data=st.data())
def test_ti2_mutated_valid_bodies(code: int, data: st.DataObject) -> None:
    body = bytearray(encode(SAMPLES[code]))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(body) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if op == "flip":
            body[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            body[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=9))
        elif len(body) > 1:
            del body[pos]
    msg = _decode_or_refuse(code, bytes(body))
    if msg is not None:
        assert decode(code, encode(msg)) == msg


# ---- TI-3 -----------------------------------------------------------------------------------

Leaf = tuple[str, Spec, Any, Any]  # (field path, spec, container holding it, key or index)


def leaves(cls: type, wire: dict[str, Any], path: str = "") -> Iterator[Leaf]:
    """Every field of a wire map, nested records and first list items included."""
    for name, spec in fields_of(cls).items():
        here = f"{path}.{name}" if path else name
        yield here, spec, wire, name
        if isinstance(spec, Nested):
            yield from leaves(spec.cls, wire[name], here)
        elif isinstance(spec, Items) and wire[name]:
            yield f"{here}[0]", spec.item, wire[name], 0
            if isinstance(spec.item, Nested):
                yield from leaves(spec.item.cls, wire[name][0], f"{here}[0]")


WRONG_TYPE: dict[type[Spec], object] = {
    Int: "3", Float: "1.5", Bool: 1, Bytes: "x", Text: b"x", NameText: b"x", RequestIdText: b"x",
    OneOf: b"up", IpText: b"\x7f\x00\x00\x01", Nested: "x", Items: "x",
}  # fmt: skip


def bad_values(spec: Spec) -> list[object]:
    """Values that break `spec`: wrong type, True for an int, -1, 2**64-1, too long, null."""
    out: list[object] = [WRONG_TYPE[type(spec)], None, 0 if isinstance(spec, Bool) else True]
    if isinstance(spec, (Int, Float)):
        out += [spec.lo - 1, 2**64 - 1, -(2**64)]
    if isinstance(spec, Float):
        out += [float("nan"), float("-inf"), spec.hi * 2]
    if isinstance(spec, Text):
        out.append("a" * (spec.max_len + 1))
    if isinstance(spec, (NameText, IpText, OneOf)):
        out += ["a" * 65, ".."]
    if isinstance(spec, RequestIdText):
        out += ["a" * 65 + "#1", "a#" + "9" * 17, "a#-1"]
    if isinstance(spec, Bytes):
        out += [bytes(spec.max_len + 1)] if spec.max_len is not None else []
        out += [bytes(spec.min_len - 1)] if spec.min_len else []
    return out


def _refused_naming(code: int, wire: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(code, cbor2.dumps(wire))
    assert info.value.field == field, (info.value, field)


def _absent_takes_default(code: int, wire: dict[str, Any], sample: Message, key: str) -> None:
    """A field added after its message shipped (declared with a default) may be absent: an
    older sender omits it and the receiver reads the default."""
    default = next(f.default for f in dataclasses.fields(sample) if f.name == key)
    assert default is not dataclasses.MISSING
    assert getattr(decode(code, cbor2.dumps(wire)), key) == default


def _leaf(sample: Message, i: int) -> tuple[dict[str, Any], Leaf]:
    """A fresh wire map of `sample` and its i-th leaf (so each mutation starts clean)."""
    wire = to_map(sample)
    return wire, list(leaves(type(sample), wire))[i]


@pytest.mark.parametrize("code", CODES)
def test_ti3_every_field_every_mutation_names_the_field(code: int) -> None:
    sample = SAMPLES[code]
    all_leaves = list(leaves(type(sample), to_map(sample)))
    for i, (_, spec, _, _) in enumerate(all_leaves):
        for bad in bad_values(spec):
            wire, (path, _, container, key) = _leaf(sample, i)
            container[key] = bad
            _refused_naming(code, wire, path)
        wire, (path, _, container, key) = _leaf(sample, i)
        if isinstance(container, dict):  # missing key
            del container[key]
            if container is wire and key in optional_fields(type(sample)):
                _absent_takes_default(code, wire, sample, key)
            else:
                _refused_naming(code, wire, path)
        if isinstance(spec, Nested):  # extra key inside a nested record
            wire, (path, _, container, key) = _leaf(sample, i)
            container[key]["zz_extra"] = 1
            _refused_naming(code, wire, f"{path}.zz_extra")
    wire = to_map(sample)
    wire["zz_extra"] = 1
    _refused_naming(code, wire, "zz_extra")


def oracle(spec: Spec, v: object) -> bool | None:
    """Whether a scalar leaf should accept the wire value v (None: not a scalar spec)."""
    if isinstance(spec, Int):
        return type(v) is int and spec.lo <= v <= spec.hi
    if isinstance(spec, Float):
        if type(v) is not int and type(v) is not float:
            return False
        return math.isfinite(v) and spec.lo <= v <= spec.hi
    if isinstance(spec, Bool):
        return type(v) is bool
    if isinstance(spec, Bytes):
        return (
            type(v) is bytes
            and spec.min_len <= len(v)
            and (spec.max_len is None or len(v) <= spec.max_len)
        )
    if isinstance(spec, NameText):
        return is_valid_name(v)
    if isinstance(spec, RequestIdText):
        return is_request_id(v)
    if isinstance(spec, OneOf):
        return v in spec.choices and type(v) is str
    if isinstance(spec, Text):
        if type(v) is not str or not spec.min_len <= len(v) <= spec.max_len:
            return False
        return spec.pattern is None or re.fullmatch(spec.pattern, v) is not None
    return None


@settings(FUZZ, max_examples=600)
@given(code=st.sampled_from(CODES), data=st.data())
def test_ti3_any_value_in_one_field_decodes_or_names_it(code: int, data: st.DataObject) -> None:
    sample = SAMPLES[code]
    wire = to_map(sample)
    path, spec, container, key = data.draw(st.sampled_from(list(leaves(type(sample), wire))))
    container[key] = value = data.draw(values)
    try:
        msg = decode(code, cbor2.dumps(wire))
    except DecodeError as e:
        assert e.field is not None, e
        assert e.field == path or e.field.startswith((path + ".", path + "[")), (e, path)
        assert oracle(spec, value) is not True, (e, value)
    else:
        assert oracle(spec, value) is not False, (path, value)
        assert decode(code, encode(msg)) == msg
