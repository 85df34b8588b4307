"""Message catalog: round trips, construction checks, body limits and the TI-1 bad-body table."""

from __future__ import annotations

import dataclasses

import cbor2
import pytest
from codec_samples import GRANT, SAMPLES, TOKEN

from codec import messages as m
from codec.errors import CodecError
from codec.messages import CONTROL_MAX_BODY, MESSAGE_TYPES, DecodeError, decode, encode, max_body
from codec.wire import BUILTIN_TAGS, MAX_DEPTH


def test_every_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(MESSAGE_TYPES)
    assert len(MESSAGE_TYPES) == 40


def test_codes_in_their_ranges_and_classes_well_formed() -> None:
    for code, cls in MESSAGE_TYPES.items():
        assert cls.TYPE == code and 1 <= code <= 89
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and "__slots__" in cls.__dict__
    bulk = {c for c, cls in MESSAGE_TYPES.items() if cls.BULK}
    assert bulk == {1, 2, 5, 9, 14, 39, 42, 61, 63}  # 14, 42: 4096 ids exceed 64 KiB


@pytest.mark.parametrize("code", sorted(MESSAGE_TYPES))
def test_round_trip_every_type(code: int) -> None:
    msg = SAMPLES[code]
    body = encode(msg)
    back = decode(code, body)
    assert back == msg and type(back) is type(msg)
    assert encode(back) == body  # canonical: same message, same bytes
    assert len(body) <= max_body(code, m.DEFAULT_MAX_MESSAGE)
    assert cbor2.dumps(cbor2.loads(body), canonical=True) == body


def test_exact_bytes_of_a_small_message() -> None:
    assert encode(m.Ack(rid="alice#7")) == b"\xa1\x63rid\x67alice#7"
    # canonical key order: shorter keys first, then bytewise
    body = encode(m.Token(epoch=1, holder=2, seq=3))
    assert body == b"\xa3\x63seq\x03\x65epoch\x01\x66holder\x02"
    assert encode(m.GoingDown(node=1, epoch=0)) == b"\xa2\x64node\x01\x65epoch\x00"


def test_float_fields_accept_int_refuse_bool_and_non_finite() -> None:
    reply = m.EncryptReply(rid="a#1", node=1, sealed=b"", seal_ms=3, wait_ms=0)
    assert reply.seal_ms == 3.0 and type(reply.seal_ms) is float
    body = {"rid": "a#1", "node": 1, "sealed": b"", "seal_ms": 3, "wait_ms": 0}
    assert decode(2, cbor2.dumps(body)) == reply
    for bad in [True, float("nan"), float("inf"), -0.5, "3"]:
        with pytest.raises(DecodeError) as info:
            m.EncryptReply(rid="a#1", node=1, sealed=b"", seal_ms=bad, wait_ms=0)  # type: ignore[arg-type]
        assert info.value.field == "seal_ms"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: m.ImageRequest("bob#1", "bob", TOKEN, "a.jpg", views=True, days=0.0), "views"),
        (lambda: m.ImageRequest("bob#1", "bob", TOKEN, "a.jpg", views=0, days=0.0), "views"),
        (lambda: m.ImageRequest("bob#1", "bob", TOKEN, "a.jpg", views=2**64, days=0.0), "views"),
        (lambda: m.ImageRequest("bob#1", "bob", TOKEN, "a.jpg", views=1.0, days=0.0), "views"),  # type: ignore[arg-type]
        (lambda: m.ImageRequest("bob#1", "bob", TOKEN, "../a.jpg", views=1, days=0.0), "image"),
        (lambda: m.ImageRequest("bob#1", "bob", TOKEN[:15], "a.jpg", views=1, days=0.0), "token"),
        (lambda: m.ImageRequest("bob#01", "bob", TOKEN, "a.jpg", views=1, days=0.0), "rid"),
        (lambda: m.ImageRequest("bob#1", "\u0430lice", TOKEN, "a.jpg", views=1, days=0.0), "user"),
        (lambda: m.ErrorReply("a#1", "Bad-Code", "x", False), "code"),
        (lambda: m.ErrorReply("a#1", "bad", "x" * 513, False), "message"),
        (lambda: m.ErrorReply("a#1", "bad", "\ud800", False), "message"),
        (lambda: m.ErrorReply("a#1", "bad", "x", 1), "retryable"),  # type: ignore[arg-type]
        (lambda: m.StatusReply("a#1", 1, "sideways", 0, 0, True, 0, 0, 0.0, 0, True, b""), "state"),
        (lambda: m.Token(epoch=-1, holder=1, seq=0), "epoch"),
        (lambda: m.Token(epoch=0, holder=0, seq=0), "holder"),
        (lambda: m.PostUpdate("a#1", "alice", TOKEN, update="x"), "update"),  # type: ignore[arg-type]
        (lambda: dataclasses.replace(GRANT, delta=1_000_001), "delta"),
        (lambda: dataclasses.replace(GRANT, kind="steal"), "kind"),
        (lambda: dataclasses.replace(GRANT, grant=bytes(4097)), "grant"),
        (lambda: dataclasses.replace(GRANT, grant=bytearray(3)), "grant"),  # type: ignore[arg-type]
        (lambda: m.UserEntry("bob", "example.com", 1, b"", b"", b"", 0.0), "host"),
        (lambda: m.UserEntry("bob", "10.0.0.1", 65536, b"", b"", b"", 0.0), "port"),
        (lambda: m.ForgetUpdates(ids=("a#1",) * 4097, user="bob", session=bytes(16)), "ids"),
        (lambda: m.ForgetUpdates(ids=("a#1", "nope"), user="bob", session=bytes(16)), "ids[1]"),
        (lambda: m.DirectoryReply("a#1", users=[GRANT]), "users[0]"),  # type: ignore[arg-type]
        (lambda: m.PreviewReply("a#1", previews="ab"), "previews"),  # type: ignore[arg-type]
    ],
)
def test_building_an_invalid_message_raises_decode_error(build: object, field: str) -> None:
    with pytest.raises(DecodeError) as info:
        build()  # type: ignore[operator]
    assert info.value.field == field
    assert isinstance(info.value, CodecError) and str(info.value).startswith(f"field {field}: ")


def test_lists_become_tuples_and_messages_are_hashable() -> None:
    msg = m.ForgetUpdates(ids=["a#1", "b#2"], user="bob", session=bytes(16))  # type: ignore[arg-type]
    assert msg.ids == ("a#1", "b#2")
    assert hash(msg) == hash(m.ForgetUpdates(ids=("a#1", "b#2"), user="bob", session=bytes(16)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.ids = ()  # type: ignore[misc]


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(TypeError):
        encode(GRANT)  # type: ignore[arg-type]


def test_max_body() -> None:
    assert max_body(13, 64 << 20) == CONTROL_MAX_BODY == 65536
    assert max_body(1, 64 << 20) == 64 << 20
    assert max_body(1, 5000) == 5000 and max_body(13, 5000) == 5000
    assert max_body(13, 64 << 20, control_max=1 << 20) == 1 << 20
    for bad in [0, 15, 99, 2**16, -1, "1", True, None]:
        with pytest.raises(DecodeError, match="unknown message type"):
            max_body(bad, 1 << 20)  # type: ignore[arg-type]


# ---- TI-1: one DecodeError per bad body, naming the reason ----------------------------------

ELECTION = encode(m.Election(rid="alice#1", node=3, priority=1, round=1))  # control type, 4 fields


def _map_with(key: str, raw_value: bytes) -> bytes:
    """A one-pair CBOR map {key: <raw_value bytes>}."""
    return b"\xa1" + cbor2.dumps(key) + raw_value


def _nest(depth: int) -> bytes:
    """`depth` nested arrays: [[...[]...]]."""
    return b"\x81" * (depth - 1) + b"\x80"


TI1_CASES: list[tuple[str, int, bytes, str, int]] = [
    # (case, type code, body, reason fragment, max_message)
    ("oversized control body", 13, _map_with("rid", cbor2.dumps("a" * 70000)), "limit", 1 << 26),
    ("oversized bulk body", 1, encode(SAMPLES[1]), "over the 2000-byte limit", 2000),
    (
        "1 MB nested empties, control type",
        13,
        b"\x9a\x00\x0f\x42\x40" + b"\x80" * 1_000_000,
        "over the 65536-byte limit",
        1 << 26,
    ),
    (
        "1 MB nested empties, bulk type",
        1,
        b"\x9a\x00\x0f\x42\x40" + b"\x80" * 1_000_000,
        "CBOR items",
        1 << 26,
    ),
    (
        "16 M empty maps, bulk type",
        1,
        b"\x9a\x01\x00\x00\x00" + b"\xa0" * (16 << 20),
        "CBOR items",
        1 << 26,
    ),
    ("depth 9", 5, _map_with("rid", _nest(MAX_DEPTH)), f"nested deeper than {MAX_DEPTH}", 1 << 26),
    (
        "28/29 shared-ref cycle",
        31,
        _map_with("rid", b"\xd8\x1c\x81\xd8\x1d\x00"),
        "CBOR tag 2",
        1 << 26,
    ),
    ("trailing byte", 31, ELECTION + b"\x00", "trailing bytes (1 ", 1 << 26),
    ("trailing map", 31, ELECTION + b"\xa0", "trailing bytes", 1 << 26),
    (
        "duplicate keys",
        31,
        b"\xa2" + cbor2.dumps("rid") + cbor2.dumps("a#1") + cbor2.dumps("rid") + cbor2.dumps("a#2"),
        "duplicate map key",
        1 << 26,
    ),
    ("indefinite map", 31, b"\xbf" + ELECTION[1:] + b"\xff", "indefinite length", 1 << 26),
    ("indefinite array", 42, _map_with("ids", b"\x9f\xff"), "indefinite length", 1 << 26),
    ("indefinite text", 13, _map_with("rid", b"\x7f\x63a#1\xff"), "indefinite length", 1 << 26),
    (
        "indefinite bytes",
        7,
        b"\xa2"
        + cbor2.dumps("user")
        + cbor2.dumps("bob")
        + cbor2.dumps("token")
        + b"\x5f\x50"
        + TOKEN
        + b"\xff",
        "indefinite length",
        1 << 26,
    ),
    ("truncated body", 31, ELECTION[:-1], "truncated body", 1 << 26),
    (
        "truncated length",
        1,
        b"\xa1\x64data\x5b\x7f\xff\xff\xff\xff\xff\xff\xff",
        "truncated body",
        1 << 26,
    ),
    ("empty body", 13, b"", "truncated body", 1 << 26),
    ("break alone", 13, b"\xff", "bad CBOR", 1 << 26),
    ("reserved head", 13, b"\x1c", "bad CBOR", 1 << 26),
    ("invalid UTF-8", 13, _map_with("rid", b"\x62\xff\xfe"), "bad CBOR", 1 << 26),
    ("non-text map key", 13, b"\xa1\x01\x01", "bad CBOR", 1 << 26),
    ("array key", 13, b"\xa1\x81\x01\x01", "bad CBOR", 1 << 26),
    ("not a map", 13, cbor2.dumps(["rid", "a#1"]), "not a map", 1 << 26),
    ("bare int", 13, b"\x01", "not a map", 1 << 26),
    (
        "self-describe tag on top",
        13,
        b"\xd9\xd9\xf7" + encode(m.Ack("a#1")),
        "CBOR tag 55799",
        1 << 26,
    ),
]


@pytest.mark.parametrize(
    ("code", "body", "reason", "max_message"),
    [case[1:] for case in TI1_CASES],
    ids=[case[0] for case in TI1_CASES],
)
def test_ti1_bad_body_refused_with_reason(
    code: int, body: bytes, reason: str, max_message: int
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(code, body, max_message)
    assert reason in info.value.reason
    assert info.value.field is None


@pytest.mark.parametrize("tag", [*BUILTIN_TAGS, 6, 4000, 2**32, 2**64 - 1])
@pytest.mark.parametrize("payload", [b"\x61x", b"\x00", b"\x41\x01", b"\x82\x01\x02", b"\xa0"])
def test_ti1_every_tag_refused(tag: int, payload: bytes) -> None:
    head = cbor2.dumps(cbor2.CBORTag(tag, None))[:-1]  # the tag head without its `null` content
    for body in [_map_with("rid", head + payload), head + encode(m.Ack("a#1"))]:
        with pytest.raises(DecodeError) as info:
            decode(3, body)
        assert info.value.reason == f"CBOR tag {tag} refused"


def test_builtin_tag_list_is_complete() -> None:
    """Every tag cbor2 decodes by itself is in BUILTIN_TAGS (an unknown tag comes back as CBORTag)."""
    payloads = [b"\x40", b"\x60", b"\x80", b"\x00", b"\xa0", b"\xf6", b"\x82\x00\x00"]
    for tag in range(1100):
        if tag in BUILTIN_TAGS:
            continue
        head = cbor2.dumps(cbor2.CBORTag(tag, None))[:-1]
        for p in payloads:
            assert isinstance(cbor2.loads(head + p), cbor2.CBORTag), tag


def test_depth_eight_passes_the_cbor_layer() -> None:
    nested: list[object] = []
    for _ in range(MAX_DEPTH - 3):
        nested = [nested]
    body = cbor2.dumps({"rid": "a#1", "token": TOKEN, "updates": [nested]})  # map + 7 arrays = 8
    with pytest.raises(DecodeError) as info:
        decode(5, body)
    assert info.value.field == "updates[0]" and "expected map" in info.value.reason


def test_non_bytes_body_refused() -> None:
    with pytest.raises(DecodeError, match="not bytes"):
        decode(13, "abc")  # type: ignore[arg-type]
    assert decode(13, memoryview(encode(m.Ack("a#1")))) == m.Ack("a#1")
    assert decode(13, bytearray(encode(m.Ack("a#1")))) == m.Ack("a#1")


@pytest.mark.parametrize("code", sorted(MESSAGE_TYPES))
def test_every_truncation_refused(code: int) -> None:
    body = encode(SAMPLES[code])
    for cut in sorted({0, 1, 2, len(body) // 2, len(body) - 1}):
        with pytest.raises(DecodeError):
            decode(code, body[:cut])


def test_status_reply_from_an_older_node_decodes_with_pid_0_and_not_syncing() -> None:
    """pid and syncing were added to StatusReply after it shipped: a node that predates them
    sends a map without those keys; it decodes, with the defaults. Every other key stays
    required, and a new reply carries both."""
    new = SAMPLES[m.StatusReply.TYPE]
    wire = cbor2.loads(encode(new))
    assert (wire["pid"], wire["syncing"]) == (48213, True)
    old = {k: v for k, v in wire.items() if k not in ("pid", "syncing")}
    got = decode(m.StatusReply.TYPE, cbor2.dumps(old))
    assert (got.pid, got.syncing) == (0, False)
    assert dataclasses.replace(got, pid=48213, syncing=True) == new
    for key in ("digest", "majority", "served"):
        with pytest.raises(DecodeError, match="missing key") as info:
            decode(m.StatusReply.TYPE, cbor2.dumps({k: v for k, v in old.items() if k != key}))
        assert info.value.field == key
    for bad in (-1, 2**31, True, "12"):
        with pytest.raises(DecodeError) as info:
            decode(m.StatusReply.TYPE, cbor2.dumps({**wire, "pid": bad}))
        assert info.value.field == "pid"


@pytest.mark.parametrize("size", [m.BIG_BLOB - 1, m.BIG_BLOB, 3 * m.BIG_BLOB + 7])
def test_a_long_bytes_field_gives_the_same_body_as_cbor2(size: int) -> None:
    """A sealed reply's long `sealed` field is copied once into the body (not through cbor2's
    growing buffer): the bytes are exactly cbor2's canonical encoding, whatever the contents
    (the marker the encoder puts in its place among them)."""
    from codec.fields import to_map

    for fill in (b"\x00", bytes(range(256)), m._MARKER):
        data = (fill * (size // len(fill) + 1))[:size]
        msg = m.EncryptReply(rid="alice#1", node=2, sealed=data, seal_ms=1.5, wait_ms=0.25)
        body = encode(msg)
        assert body == cbor2.dumps(to_map(msg), canonical=True)
        assert decode(m.EncryptReply.TYPE, body) == msg
