"""The codec's quick paths (issue 19) against the step-by-step ones they stand in for.

Each quick path must give what the plain way gives: the same canonical bytes
(`cbor2.dumps(to_map(msg), canonical=True)`), the same record, and for a bad value or body the
same DecodeError (reason and field). References here are written out independently of the
quick paths (`ref_*`), so that a quick path which skipped a check fails these tests; the last
tests show that they do, on purpose-broken specs.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from io import BytesIO
from typing import Annotated, Any

import cbor2
import pytest
from codec_samples import SAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_messages_fuzz import bad_values, leaves, values

from codec import canonical, names, quick, wire
from codec import messages as m
from codec.errors import DecodeError
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
    from_map,
    optional_fields,
    record,
    to_map,
)
from codec.names import InvalidName

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
CODES = sorted(m.MESSAGE_TYPES)


# ---- references: the plain way, written out -------------------------------------------------


def ref_field(spec: Spec, v: object, path: str) -> object:
    """check(from_wire(v)) of one decoded value, nested records through ref_from_map."""
    if isinstance(spec, Nested):
        if type(v) is not dict:
            raise DecodeError(f"expected map, got {m.kind_of(v)}", path)
        return ref_from_map(spec.cls, v, path)
    if isinstance(spec, Items):
        items = spec._length(v, path)
        return tuple(ref_field(spec.item, x, f"{path}[{i}]") for i, x in enumerate(items))
    return spec.check(v, path)


def ref_from_map(cls: type[Record], raw: dict[Any, Any], path: str = "") -> dict[str, object]:
    """The field values from_map gives for `raw` (the step-by-step order of its errors: keys,
    then structure of nested fields, then each field's check), or its DecodeError."""
    join = lambda name: f"{path}.{name}" if path else name
    specs = fields_of(cls)
    for key in raw:
        if type(key) is not str or key not in specs:
            shown = key if type(key) is str else repr(key)
            raise DecodeError("unexpected key", join(shown[:80]))
    defaults = {f.name: f.default for f in dataclasses.fields(cast_any(cls))}
    out: dict[str, object] = {}
    for name, spec in specs.items():  # structure first (Nested, Items of Nested)
        if name not in raw:
            if name in optional_fields(cls):
                out[name] = defaults[name]
                continue
            raise DecodeError("missing key", join(name))
        if isinstance(spec, (Nested, Items)):
            out[name] = ref_structure(spec, raw[name], join(name))
    for name, spec in specs.items():  # then every check, in declaration order
        value = out[name] if name in out else raw[name]
        out[name] = ref_check(spec, value, name, path)
    return out


def ref_structure(spec: Spec, v: object, path: str) -> object:
    if isinstance(spec, Nested):
        if type(v) is not dict:
            raise DecodeError(f"expected map, got {m.kind_of(v)}", path)
        return spec.cls(**ref_from_map(spec.cls, v, path))
    assert isinstance(spec, Items)
    items = spec._length(v, path)
    return tuple(
        ref_structure(spec.item, x, f"{path}[{i}]") if isinstance(spec.item, Nested) else x
        for i, x in enumerate(items)
    )


def ref_check(spec: Spec, v: object, name: str, path: str) -> object:
    try:
        return spec.check(v, name)
    except DecodeError as e:
        if not path:
            raise
        raise DecodeError(e.reason, f"{path}.{e.field}" if e.field else path) from None


def cast_any(x: object) -> Any:
    return x


def ref_strict_load(body: bytes, max_items: int) -> object:
    """codec.wire.strict_load as it was: always counted, always every tag refuser."""
    wire.count_items(body, max_items)
    fp = BytesIO(body)
    decoder = cbor2.CBORDecoder(
        fp,
        tag_hook=wire._tag_hook,
        semantic_decoders=wire._SEMANTIC,
        max_depth=wire.MAX_DEPTH - 1,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
    try:
        value = decoder.decode()
    except Exception as e:
        raise DecodeError(wire._reason(e)) from e
    extra = len(body) - fp.tell()
    if extra:
        raise DecodeError(f"trailing bytes ({extra} after the CBOR item)")
    return value


def ref_decode(code: int, body: bytes) -> dict[str, object]:
    cls = m.MESSAGE_TYPES[code]
    limit = m.max_body(code, m.DEFAULT_MAX_MESSAGE)
    if len(body) > limit:
        raise DecodeError(
            f"body of {len(body)} bytes over the {limit}-byte limit of {cls.__name__}"
        )
    raw = ref_strict_load(body, m._MAX_ITEMS[code])
    if type(raw) is not dict:
        raise DecodeError(f"body is {m.kind_of(raw)}, not a map")
    return ref_from_map(cls, raw)


def outcome(fn: Any, *args: Any) -> tuple[str, object]:
    try:
        return ("ok", fn(*args))
    except DecodeError as e:
        return ("error", (e.reason, e.field))


def as_fields(rec: Record) -> dict[str, object]:
    """A record's field values, with the type of each (1 == 1.0 == True otherwise)."""
    return {n: (type(getattr(rec, n)), getattr(rec, n)) for n in fields_of(type(rec))}


def typed(values: dict[str, object]) -> dict[str, object]:
    return {n: (type(v), v) for n, v in values.items()}


def same_decode(code: int, body: bytes) -> None:
    got, want = outcome(m.decode, code, body), outcome(ref_decode, code, body)
    assert got[0] == want[0], (got, want)
    if got[0] == "ok":
        assert isinstance(got[1], Record)
        assert as_fields(got[1]) == typed(want[1]), (got, want)  # type: ignore[arg-type]
    else:
        assert got == want


# ---- valid values of every spec -------------------------------------------------------------

NAME = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", fullmatch=True)


def valid(spec: Spec) -> st.SearchStrategy[Any]:
    """Values `spec.check` accepts (as a record holds them)."""
    if isinstance(spec, Int):
        return st.integers(spec.lo, spec.hi) | st.sampled_from([spec.lo, spec.hi])
    if isinstance(spec, Float):
        edges = st.sampled_from([spec.lo, spec.hi, -0.0, 0.5, 65504.0, 65520.0, 1.0e-7])
        return st.floats(spec.lo, spec.hi) | edges.filter(lambda x: spec.lo <= x <= spec.hi)
    if isinstance(spec, Bool):
        return st.booleans()
    if isinstance(spec, Bytes):
        top = min(spec.max_len if spec.max_len is not None else 300, 300)
        return st.binary(min_size=spec.min_len, max_size=max(top, spec.min_len))
    if isinstance(spec, Text):
        if spec.pattern is not None:
            return st.from_regex(spec.pattern, fullmatch=True).filter(
                lambda s: spec.min_len <= len(s) <= spec.max_len
            )
        return st.text(min_size=spec.min_len, max_size=min(spec.max_len, 40))
    if isinstance(spec, OneOf):
        return st.sampled_from(spec.choices)
    if isinstance(spec, NameText):
        return NAME
    if isinstance(spec, RequestIdText):
        counter = st.integers(0, names.REQUEST_N_MAX) | st.sampled_from([0, names.REQUEST_N_MAX])
        return st.builds(names.make_request_id, NAME, counter)
    if isinstance(spec, IpText):
        return st.ip_addresses().map(str)
    if isinstance(spec, Nested):
        return record_of(spec.cls)
    assert isinstance(spec, Items)
    return st.lists(valid(spec.item), max_size=min(spec.max_len, 4)).map(tuple)


def record_of(cls: type[Record]) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{n: valid(s) for n, s in fields_of(cls).items()})


MESSAGES = st.sampled_from(CODES).flatmap(lambda c: record_of(m.MESSAGE_TYPES[c]))


def catalog_specs() -> list[Spec]:
    """Every spec of every message, nested ones and list items included."""
    out: list[Spec] = []

    def walk(spec: Spec) -> None:
        out.append(spec)
        if isinstance(spec, Nested):
            for inner in fields_of(spec.cls).values():
                walk(inner)
        elif isinstance(spec, Items):
            walk(spec.item)

    for cls in m.MESSAGE_TYPES.values():
        for spec in fields_of(cls).values():
            walk(spec)
    return out


SPECS = catalog_specs()


# ---- encode: the same bytes -----------------------------------------------------------------


@settings(FUZZ, max_examples=150)
@given(msg=MESSAGES)
def test_encode_gives_cbor2_canonical_bytes_and_decodes_back(msg: m.Message) -> None:
    body = m.encode(msg)
    assert body == cbor2.dumps(to_map(msg), canonical=True)
    assert body == m.encode_steps(msg)
    back = m.decode(msg.TYPE, body)
    assert back == msg and as_fields(back) == as_fields(msg)


def test_every_sample_encodes_as_cbor2_canonical() -> None:
    for msg in SAMPLES.values():
        assert m.encode(msg) == cbor2.dumps(to_map(msg), canonical=True)


FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.builds(
    lambda bits: struct.unpack(">d", bits.to_bytes(8, "big"))[0], st.integers(0, 2**64 - 1)
)


@settings(FUZZ, max_examples=750)
@given(x=FLOATS)
def test_float_writer_is_cbor2_canonical(x: float) -> None:
    out: list[bytes] = []
    canonical.write_float(out, x)
    assert b"".join(out) == cbor2.dumps(x, canonical=True)


def test_float_writer_edges() -> None:
    for bits in range(0, 1 << 16, 7):  # a spread of every half-precision value
        x = struct.unpack(">e", bits.to_bytes(2, "big"))[0]
        for y in (x, math.nextafter(x, math.inf), math.nextafter(x, -math.inf)):
            out: list[bytes] = []
            canonical.write_float(out, y)
            assert b"".join(out) == cbor2.dumps(y, canonical=True), y
    for y in (0.0, -0.0, math.inf, -math.inf, math.nan, 3.4028234663852886e38, 1e39, 5e-324):
        out = []
        canonical.write_float(out, y)
        assert b"".join(out) == cbor2.dumps(y, canonical=True), y


@settings(FUZZ, max_examples=250)
@given(n=st.integers(-(2**64), 2**64 - 1), s=st.text(max_size=300), b=st.binary(max_size=300))
def test_int_text_bytes_writers_are_cbor2(n: int, s: str, b: bytes) -> None:
    for write, v in [
        (canonical.write_int, n),
        (canonical.write_text, s),
        (canonical.write_bytes, b),
    ]:
        out: list[bytes] = []
        write(out, v)  # type: ignore[operator]
        assert b"".join(out) == cbor2.dumps(v)
    assert canonical.head(0, 2**64 - 1) == cbor2.dumps(2**64 - 1)


@settings(FUZZ, max_examples=100)
@given(keys=st.lists(st.text(max_size=30), max_size=12, unique=True))
def test_canonical_order_is_cbor2_order(keys: list[str]) -> None:
    order = canonical.canonical_order(tuple(keys))
    assert sorted(order) == sorted(keys)
    expect = cbor2.dumps({k: 0 for k in keys}, canonical=True)
    assert cbor2.dumps({k: 0 for k in order}) == expect


# ---- construction: same record, same error --------------------------------------------------


def ref_build(cls: type[Record], kwargs: dict[str, object]) -> dict[str, object]:
    """The field values `cls(**kwargs)` holds, by each spec's check in declaration order."""
    return {n: spec.check(kwargs[n], n) for n, spec in fields_of(cls).items() if n in kwargs}


@settings(FUZZ, max_examples=125)
@given(msg=MESSAGES, data=st.data())
def test_construction_with_one_field_replaced_matches_the_checks(
    msg: m.Message, data: st.DataObject
) -> None:
    cls = type(msg)
    kwargs = {n: getattr(msg, n) for n in fields_of(cls)}
    name, spec = data.draw(st.sampled_from(list(fields_of(cls).items())))
    kwargs[name] = data.draw(values | st.sampled_from(bad_values(spec)) | valid(spec))
    if isinstance(spec, Float) and data.draw(st.booleans()):
        kwargs[name] = data.draw(st.integers(-5, 10**12))  # an int in a float field
    if isinstance(spec, Items) and type(kwargs[name]) is tuple and data.draw(st.booleans()):
        kwargs[name] = list(kwargs[name])  # type: ignore[arg-type]
    got = outcome(lambda: as_fields(cls(**kwargs)))
    want = outcome(lambda: typed(ref_build(cls, kwargs)))
    assert got == want, (name, kwargs[name])


@pytest.mark.parametrize("code", CODES)
def test_every_bad_value_of_every_field_refused_when_built(code: int) -> None:
    """Built locally (not decoded), every field refuses every bad value, naming the field."""
    sample = SAMPLES[code]
    for name, spec in fields_of(type(sample)).items():
        for bad in bad_values(spec):
            kwargs = {n: getattr(sample, n) for n in fields_of(type(sample))}
            kwargs[name] = bad
            with pytest.raises(DecodeError) as info:
                type(sample)(**kwargs)
            assert info.value.field == name, (name, bad)
            assert info.value.reason == outcome(spec.check, bad, name)[1][0]  # type: ignore[index]


# ---- decode: same record, same error --------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(code=st.sampled_from(CODES), data=st.data())
def test_decode_of_one_field_replaced_matches_the_reference(code: int, data: st.DataObject) -> None:
    wire_map = to_map(data.draw(record_of(m.MESSAGE_TYPES[code])))
    all_leaves = list(leaves(m.MESSAGE_TYPES[code], wire_map))
    _, spec, container, key = data.draw(st.sampled_from(all_leaves))
    container[key] = data.draw(values | st.sampled_from(bad_values(spec)))
    same_decode(code, cbor2.dumps(wire_map))


@settings(FUZZ, max_examples=100)
@given(code=st.sampled_from(CODES), data=st.data())
def test_decode_of_mutated_bodies_matches_the_reference(code: int, data: st.DataObject) -> None:
    body = bytearray(m.encode(data.draw(record_of(m.MESSAGE_TYPES[code]))))
    for _ in range(data.draw(st.integers(0, 3))):
        pos = data.draw(st.integers(0, len(body) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "tag"]))
        if op == "flip":
            body[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            body[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=9))
        elif op == "tag":
            body[pos:pos] = data.draw(st.sampled_from([b"\xc2", b"\xd8\x1c", b"\xd9\xd9\xf7"]))
        elif len(body) > 1:
            del body[pos]
    same_decode(code, bytes(body))


@settings(FUZZ, max_examples=100)
@given(code=st.sampled_from(CODES), raw=st.dictionaries(st.text(max_size=10), values, max_size=8))
def test_decode_of_random_maps_matches_the_reference(code: int, raw: dict[str, Any]) -> None:
    same_decode(code, cbor2.dumps(raw))


def test_optional_keys_absent_or_present_decode_alike() -> None:
    wire_map = to_map(SAMPLES[m.StatusReply.TYPE])
    for drop in [(), ("pid",), ("syncing",), ("pid", "syncing")]:
        same_decode(
            m.StatusReply.TYPE, cbor2.dumps({k: v for k, v in wire_map.items() if k not in drop})
        )
    state = to_map(SAMPLES[m.StateSync.TYPE])
    del state["pins"]
    same_decode(m.StateSync.TYPE, cbor2.dumps(state))
    assert m.decode(m.StateSync.TYPE, cbor2.dumps(state)).pins == ()


# ---- strict_load's shortcuts ----------------------------------------------------------------

BODIES = st.binary(max_size=64) | st.builds(
    lambda v, tail: cbor2.dumps(v) + tail, values, st.sampled_from([b"", b"\x00", b"\xc2\x41\x01"])
)


@settings(FUZZ, max_examples=500)
@given(body=BODIES, budget=st.integers(0, 80))
def test_strict_load_matches_the_plain_recipe(body: bytes, budget: int) -> None:
    got, want = outcome(wire.strict_load, body, budget), outcome(ref_strict_load, body, budget)
    assert repr(got) == repr(want)  # repr: a NaN is not equal to itself


@settings(FUZZ, max_examples=250)
@given(v=values)
def test_count_items_says_tag_free_only_without_tags(v: object) -> None:
    body = cbor2.dumps(v)
    assert wire.count_items(body, 10**6) is True  # `values` holds no tags
    for tag in (2, 28, 55799, 4000):
        tagged = cbor2.dumps([v, cbor2.CBORTag(tag, 1)])
        assert wire.count_items(tagged, 10**6) is False
        assert wire.count_items(cbor2.dumps({"k": [cbor2.CBORTag(tag, v)]}), 10**6) is False


def test_a_tag_past_the_item_budget_is_still_refused() -> None:
    """A long body (counted) and a short one (scanned) with a tag deep inside: refused as a tag."""
    for filler in (b"a" * 5, b"a" * 500):
        body = cbor2.dumps({"rid": [cbor2.dumps(filler), cbor2.CBORTag(2, b"\x01")]})
        with pytest.raises(DecodeError) as info:
            m.decode(m.Ack.TYPE, body)
        assert info.value.reason == "CBOR tag 2 refused"


# ---- names ----------------------------------------------------------------------------------

ODD = st.text(alphabet=st.sampled_from("aZ09._-#/\\ \n\x00\u0430\u200b+éｐ"), max_size=70)
IDS = st.builds(lambda u, n: f"{u}#{n}", ODD | NAME, st.integers(-3, 2**54) | st.just("01"))


@settings(FUZZ, max_examples=750)
@given(s=ODD | NAME | IDS | st.text(max_size=80))
def test_name_and_request_id_quick_rules_match_the_steps(s: str) -> None:
    assert names.name_problem(s) == names._name_problem_steps(s)
    got = outcome_names(names.parse_request_id, s)
    assert got == outcome_names(names._parse_request_id_steps, s)
    assert names.is_request_id(s) == (got[0] == "ok")
    if got[0] != "ok":
        assert s not in names.RECENT_REQUEST_IDS


def outcome_names(fn: Any, s: object) -> tuple[str, object]:
    try:
        return ("ok", fn(s))
    except InvalidName as e:
        return ("error", str(e))


def test_recent_request_ids_stay_bounded() -> None:
    for i in range(names.RECENT_MAX * 2 + 5):
        assert names.is_request_id(f"flood#{i}")
        assert len(names.RECENT_REQUEST_IDS) <= names.RECENT_MAX
    assert not names.is_request_id("flood#01") and "flood#01" not in names.RECENT_REQUEST_IDS


# ---- every quick piece against its check ----------------------------------------------------


@settings(FUZZ, max_examples=375)
@given(i=st.integers(0, len(SPECS) - 1), data=st.data())
def test_each_quick_check_accepts_only_what_check_accepts(i: int, data: st.DataObject) -> None:
    spec = SPECS[i]
    v = data.draw(values | st.sampled_from(bad_values(spec)) | valid(spec))
    assert_quick_agrees(spec, v)


def assert_quick_agrees(spec: Spec, v: object) -> None:
    """quick(v) returns what check returns (same type too), or raises where check raises;
    quick_expr is true only where check returns v itself."""
    want = outcome(spec.check, v, "x")
    try:
        got = ("ok", spec.quick()(v))
    except (quick.Refused, DecodeError):
        got = ("refused", None)
    if got[0] == "ok":
        assert want[0] == "ok" and type(got[1]) is type(want[1]) and got[1] == want[1], (spec, v)
    elif not isinstance(spec, (Text, IpText)):  # these run `check` itself
        assert want[0] == "error", (spec, v)
    src = quick._Source()
    expr = spec.quick_expr("v", src.const)
    if expr is not None:
        src.env["v"] = v
        if eval(expr, src.env):
            assert want == ("ok", v) and want[1] is v, (spec, v)


# ---- the tests above have teeth: a quick path that skips a check fails them -----------------


class _LooseInt(Int):
    """An Int whose quick paths forget the upper bound (a deliberately broken quick path)."""

    def quick_expr(self, v: str, const: Any) -> str | None:
        return f"type({v}) is int and {const(self.lo)} <= {v}"


@record
@dataclasses.dataclass(frozen=True, slots=True)
class _Loose(Record):
    rid: m.Rid
    node: Annotated[int, _LooseInt(1, 255)]


def test_a_quick_path_that_skips_a_check_is_caught() -> None:
    cls = _Loose
    with pytest.raises(AssertionError):
        assert_quick_agrees(fields_of(cls)["node"], 256)
    kwargs = {"rid": "a#1", "node": 256}
    built = outcome(lambda: as_fields(cls(**kwargs)))
    assert built[0] == "ok"  # the broken quick path lets it through when built ...
    assert built != outcome(lambda: typed(ref_build(cls, kwargs)))  # ... and the reference does not
    decoded = outcome(lambda: as_fields(from_map(cls, kwargs)))
    assert decoded[0] == "ok"  # the same when read from a decoded map
    assert decoded != outcome(lambda: typed(ref_from_map(cls, kwargs)))
    # the real Int's quick paths refuse it, with the check's own reason
    with pytest.raises(DecodeError, match="256 outside 1..255"):
        m.ElectionOk(rid="a#1", node=256, round=1)
    with pytest.raises(DecodeError, match="256 outside 1..255"):
        from_map(m.ElectionOk, {**kwargs, "round": 1})


def _declare_fresh() -> type[Record]:
    @record
    @dataclasses.dataclass(frozen=True, slots=True)
    class Fresh(Record):
        rid: m.Rid
        node: Annotated[int, Int(1, 255)]
        note: Annotated[str, Text(8)] = ""

    return Fresh


def test_quick_paths_are_generated_at_first_use_and_check_from_the_first() -> None:
    """A record's quick paths are generated when first used, not at import (the cost of every
    process start). The first use checks as every later one: a bad value refused with the
    check's reason, built or decoded; a subclass never declared takes the steps (refused)."""
    cls = _declare_fresh()
    stub = cls.__post_init__
    with pytest.raises(DecodeError, match="256 outside 1..255"):
        cls(rid="a#1", node=256)  # the very first construction
    assert cls.__post_init__ is not stub  # generated now, kept for the next ones
    assert as_fields(cls(rid="a#1", node=3)) == typed({"rid": "a#1", "node": 3, "note": ""})

    cls = _declare_fresh()
    with pytest.raises(DecodeError, match="256 outside 1..255"):
        from_map(cls, {"rid": "a#1", "node": 256})  # the very first decode
    assert as_fields(from_map(cls, {"rid": "a#1", "node": 7, "note": "x"})) == \
        typed({"rid": "a#1", "node": 7, "note": "x"})

    cls = _declare_fresh()

    class Undeclared(cls):  # type: ignore[valid-type,misc]
        __slots__ = ()

    with pytest.raises(TypeError):
        Undeclared(rid="a#1", node=3)  # its first construction: the steps refuse it
