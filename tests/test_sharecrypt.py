"""codec.sharecrypt: payload AEAD, key wrap, signed grants (TD-2), view-state rules."""

from __future__ import annotations

import dataclasses
import random
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.client.keys import ClientKeys
from codec import seal, sharecrypt
from codec.sharecrypt import ShareCryptError, SignedGrant

ORIGINAL = bytes(random.Random(3).randbytes(5000))


def _keys(seed: int) -> ClientKeys:
    r = random.Random(seed)
    return ClientKeys(r.randbytes(32), r.randbytes(32))


ALICE, BOB, MALLORY = _keys(1), _keys(2), _keys(3)


def _grant(
    views: int = 3, expires: float = 0.0, version: int = 1, image: str = "pic.jpg"
) -> tuple[SignedGrant, bytes]:
    """A grant alice -> bob and the encrypted payload it opens."""
    rng = random.Random(views * 1000 + version).randbytes
    aad = sharecrypt.payload_aad("alice", "bob", image)
    key, nonce, payload = sharecrypt.encrypt_payload(ORIGINAL, aad=aad, rng=rng)
    grant = sharecrypt.make_grant(
        ALICE,
        owner="alice",
        borrower="bob",
        image=image,
        views=views,
        expires=expires,
        version=version,
        content_key=key,
        nonce=nonce,
        borrower_box_public=BOB.box_public,
        rng=rng,
    )
    return grant, payload


def _verify(blob: bytes, key: bytes = ALICE.sign_public) -> SignedGrant:
    return sharecrypt.verify_grant(blob, key, owner="alice", borrower="bob")


# ---- payload -----------------------------------------------------------------------------------
def test_payload_aad_exact_bytes() -> None:
    ident = b"alice&bob&pic.jpg"
    assert sharecrypt.payload_aad("alice", "bob", "pic.jpg") == (
        b"VSAE1" + b"\x00\x11" + ident + b"\x00\x11" + ident
    )
    with pytest.raises(ShareCryptError, match="borrower"):
        sharecrypt.payload_aad("alice", "b&b", "pic.jpg")


def test_payload_round_trip_layout_and_injected_randomness() -> None:
    stream = random.Random(9).randbytes(44)
    it = iter([stream[:32], stream[32:]])
    aad = sharecrypt.payload_aad("alice", "bob", "pic.jpg")
    key, nonce, payload = sharecrypt.encrypt_payload(ORIGINAL, aad=aad, rng=lambda n: next(it))
    assert (key, nonce) == (stream[:32], stream[32:])
    assert payload[:5] == b"VSAE1" and len(payload) == 5 + len(ORIGINAL) + 16
    assert ORIGINAL[:16] not in payload
    assert sharecrypt.is_encrypted_payload(payload)
    assert sharecrypt.decrypt_payload(payload, key, nonce, aad=aad) == ORIGINAL


def test_is_encrypted_payload() -> None:
    assert not sharecrypt.is_encrypted_payload(b"\xff\xd8\xff\xe0" + bytes(100))
    assert not sharecrypt.is_encrypted_payload(b"VSAE1" + bytes(15))
    assert sharecrypt.is_encrypted_payload(b"VSAE1" + bytes(16))


@pytest.mark.parametrize(
    "change", ["key", "nonce", "image", "borrower", "owner", "byte", "tag", "magic", "truncated"]
)
def test_payload_refused_when_anything_differs(change: str) -> None:
    aad = sharecrypt.payload_aad("alice", "bob", "pic.jpg")
    key, nonce, payload = sharecrypt.encrypt_payload(ORIGINAL, aad=aad)
    other = {
        "image": ("alice", "bob", "other.jpg"),
        "borrower": ("alice", "carol", "pic.jpg"),
        "owner": ("carol", "bob", "pic.jpg"),
    }
    if change in other:
        aad = sharecrypt.payload_aad(*other[change])
    elif change == "key":
        key = bytes([key[0] ^ 1]) + key[1:]
    elif change == "nonce":
        nonce = nonce[:-1] + bytes([nonce[-1] ^ 0x80])
    elif change == "byte":
        payload = payload[:100] + bytes([payload[100] ^ 4]) + payload[101:]
    elif change == "tag":
        payload = payload[:-1] + bytes([payload[-1] ^ 1])
    elif change == "magic":
        payload = b"VSAE2" + payload[5:]
    else:
        payload = payload[:-1]
    with pytest.raises(ShareCryptError):
        sharecrypt.decrypt_payload(payload, key, nonce, aad=aad)


# ---- key wrap ----------------------------------------------------------------------------------
def test_wrap_round_trip_and_refusals() -> None:
    key = bytes(range(32))
    wrapped = sharecrypt.wrap_key(key, BOB.box_public, info=b"g1")
    assert len(wrapped) == 80 and key not in wrapped
    assert BOB.unwrap(wrapped, info=b"g1") == key
    assert sharecrypt.wrap_key(key, BOB.box_public, info=b"g1") != wrapped  # fresh ephemeral key
    with pytest.raises(ShareCryptError, match="does not open"):
        MALLORY.unwrap(wrapped, info=b"g1")
    with pytest.raises(ShareCryptError, match="does not open"):
        BOB.unwrap(wrapped, info=b"g2")
    refused = 0
    for bit in range(8 * len(wrapped)):
        flipped = bytearray(wrapped)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ShareCryptError):
            BOB.unwrap(bytes(flipped), info=b"g1")
        refused += 1
    assert refused == 640


def test_wrap_refuses_a_low_order_box_key() -> None:
    with pytest.raises(ShareCryptError, match="not a usable X25519 key"):
        sharecrypt.wrap_key(bytes(32), bytes(32), info=b"")


# ---- signed grant ------------------------------------------------------------------------------
def test_grant_round_trip_and_full_open() -> None:
    grant, payload = _grant(views=3, expires=1_700_000_000.5)
    blob = grant.encode()
    assert len(blob) == 4 + 6 + 4 + 8 + 16 + 80 + 12 + 64 == 194
    assert SignedGrant.decode(blob) == grant
    got = _verify(blob)
    assert (got.owner, got.borrower, got.image, got.views, got.expires, got.version) == (
        "alice",
        "bob",
        "pic.jpg",
        3,
        1_700_000_000.5,
        1,
    )
    assert got.grant_id == "alice&bob&pic.jpg"
    key = sharecrypt.open_content_key(got, BOB)
    assert sharecrypt.open_payload(got, payload, key) == ORIGINAL


def test_longest_grant_fits_the_seal_blob() -> None:
    grant, _ = _grant(image="i" * 64)
    longest = dataclasses.replace(grant, owner="o" * 64, borrower="b" * 64)
    assert len(longest.encode()) == 371 <= seal.BLOB_MAX


@pytest.mark.parametrize("case", ["owner key", "borrower", "owner", "image"])
def test_grant_refused_for_someone_else(case: str) -> None:
    grant, _ = _grant()
    blob = grant.encode()
    with pytest.raises(ShareCryptError) as info:
        if case == "owner key":
            _verify(blob, MALLORY.sign_public)
        elif case == "borrower":
            sharecrypt.verify_grant(blob, ALICE.sign_public, owner="alice", borrower="carol")
        elif case == "owner":
            sharecrypt.verify_grant(blob, ALICE.sign_public, owner="carol", borrower="bob")
        else:
            sharecrypt.verify_grant(
                blob, ALICE.sign_public, owner="alice", borrower="bob", image="other.jpg"
            )
    assert ("not signed by" if case == "owner key" else "not '") in str(info.value)


def test_every_single_bit_flip_of_a_signed_grant_is_refused() -> None:
    """TD-2: 100 % of the 1552 flips of the encoded grant are refused."""
    blob = _grant()[0].encode()
    refused = 0
    for bit in range(8 * len(blob)):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(ShareCryptError):
            _verify(bytes(flipped))
        refused += 1
    assert refused == 8 * len(blob) == 1552


def test_every_single_bit_flip_of_the_sealed_grant_region_is_refused() -> None:
    """TD-2 on the whole grant region of the header (outer fields and blob), as an attacker who
    rewrites the header with valid checksums (codec.seal.regrant) would write it."""
    region = sharecrypt.sealed_grant(_grant()[0]).to_bytes()
    counts = {"format": 0, "signature or fields": 0}
    for bit in range(8 * len(region)):
        flipped = bytearray(region)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            outer = seal.Grant.from_bytes(bytes(flipped))
        except seal.SealError:
            counts["format"] += 1
            continue
        with pytest.raises(ShareCryptError):
            sharecrypt.verify_sealed_grant(outer, ALICE.sign_public, owner="alice", borrower="bob")
        counts["signature or fields"] += 1
    assert sum(counts.values()) == 8 * len(region) == 8 * (1 + 6 + 4 + 8 + 6 + 194)
    assert counts["signature or fields"] > 1552  # every blob flip reached the signature check


def test_views_raised_without_the_owner_key_are_refused() -> None:
    grant, _ = _grant(views=1)
    raised = dataclasses.replace(grant, views=1000)
    with pytest.raises(ShareCryptError, match="not signed by alice's key"):
        _verify(raised.encode())
    forged = sharecrypt.reissue_grant(MALLORY, grant, views=1000, expires=0.0, version=2)
    with pytest.raises(ShareCryptError, match="not signed by alice's key"):
        _verify(forged.encode())
    outer = dataclasses.replace(sharecrypt.sealed_grant(grant), views=1000)  # unsigned field
    with pytest.raises(ShareCryptError, match="differ from its signed grant"):
        sharecrypt.verify_sealed_grant(outer, ALICE.sign_public, owner="alice", borrower="bob")
    with pytest.raises(ShareCryptError, match="no signed grant"):
        sharecrypt.verify_sealed_grant(
            seal.Grant("alice", "bob", "pic.jpg", 1000),
            ALICE.sign_public,
            owner="alice",
            borrower="bob",
        )


def test_signed_grant_in_a_sealed_image_opens_the_payload() -> None:
    grant, payload = _grant(views=2)
    png = seal.seal(payload, cover="640x480")
    png = seal.regrant(png, sharecrypt.sealed_grant(grant))
    opened = seal.unseal(png)
    got = sharecrypt.verify_sealed_grant(
        opened.grant, ALICE.sign_public, owner="alice", borrower="bob"
    )
    assert got == grant and opened.payload == payload
    key = sharecrypt.open_content_key(got, BOB)
    assert sharecrypt.open_payload(got, opened.payload, key) == ORIGINAL
    other, _ = _grant(views=2, image="other.jpg")  # a valid grant of another image
    with pytest.raises(ShareCryptError, match="does not open"):
        sharecrypt.open_content_key(dataclasses.replace(other, wrapped_key=grant.wrapped_key), BOB)
    with pytest.raises(ShareCryptError, match="does not authenticate"):
        sharecrypt.open_payload(other, opened.payload, key)


@pytest.mark.parametrize(
    "mutation",
    ["truncated", "trailing", "magic", "nan", "negative zero", "version 0", "names", "views"],
)
def test_decode_is_strict(mutation: str) -> None:
    blob = _grant()[0].encode()
    tail_at = 4 + 6 + 4 + 8  # owner, borrower, image fields of the sample
    views, expires, version = struct.unpack_from(">IdI", blob, tail_at)
    tails = {
        "nan": (views, float("nan"), version),
        "negative zero": (views, -0.0, version),
        "version 0": (views, expires, 0),
        "views": (seal.MAX_VIEWS + 1, expires, version),
    }
    if mutation in tails:
        bad = blob[:tail_at] + struct.pack(">IdI", *tails[mutation]) + blob[tail_at + 16 :]
    else:
        bad = {
            "truncated": blob[:-1],
            "trailing": blob + b"\0",
            "magic": b"VSG2" + blob[4:],
            "names": blob[:5] + b"al/ce" + blob[10:],
        }[mutation]
    with pytest.raises(ShareCryptError):
        SignedGrant.decode(bad)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 193), st.integers(1, 255)), min_size=1, max_size=6))
def test_mutated_grants_raise_only_sharecrypt_error(edits: list[tuple[int, int]]) -> None:
    blob = bytearray(_BLOB)
    for pos, xor in edits:
        blob[pos] ^= xor
    if bytes(blob) == _BLOB:
        return
    with pytest.raises(ShareCryptError):
        _verify(bytes(blob))


_BLOB = _grant()[0].encode()


# ---- newer versions and view rules -------------------------------------------------------------
def test_reissue_keeps_the_key_and_only_moves_forward() -> None:
    grant, payload = _grant(views=3)
    more = sharecrypt.reissue_grant(ALICE, grant, views=5, expires=0.0, version=2)
    got = _verify(more.encode())
    assert (got.views, got.version, got.wrapped_key, got.nonce) == (
        5,
        2,
        grant.wrapped_key,
        grant.nonce,
    )
    assert sharecrypt.open_payload(got, payload, sharecrypt.open_content_key(got, BOB)) == ORIGINAL
    for version in (1, 2):
        with pytest.raises(ShareCryptError, match="move forward"):
            sharecrypt.reissue_grant(ALICE, more, views=9, expires=0.0, version=version)


def test_version_rule() -> None:
    assert sharecrypt.next_version_ok(0, 1) and sharecrypt.next_version_ok(4, 5)
    assert not sharecrypt.next_version_ok(5, 5) and not sharecrypt.next_version_ok(5, 4)


def test_views_left_after_applies_the_signed_change() -> None:
    v1 = _grant(views=3)[0]
    v2 = sharecrypt.reissue_grant(ALICE, v1, views=5, expires=0.0, version=2)  # +2
    v3 = sharecrypt.reissue_grant(ALICE, v2, views=1, expires=0.0, version=3)  # -4
    v4 = sharecrypt.reissue_grant(ALICE, v3, views=0, expires=0.0, version=4)  # revoke
    assert sharecrypt.views_left_after(None, 0, v1) == 3
    assert sharecrypt.views_left_after(v1, 1, v2) == 3  # used 2 of 3, then +2
    assert sharecrypt.views_left_after(v2, 3, v3) == 0  # floored at 0
    assert sharecrypt.views_left_after(v2, 5, v3) == 1
    assert sharecrypt.views_left_after(v3, 1, v4) == 0
    with pytest.raises(ShareCryptError, match="not a newer version"):
        sharecrypt.views_left_after(v2, 3, v1)  # replaying an old grant
    other = _grant(views=9, version=7, image="other.jpg")[0]
    with pytest.raises(ShareCryptError, match="not a newer version"):
        sharecrypt.views_left_after(v2, 3, other)


def test_may_view() -> None:
    forever, _ = _grant(views=2, expires=0.0)
    until, _ = _grant(views=2, expires=1000.0)
    revoked = sharecrypt.reissue_grant(ALICE, forever, views=0, expires=0.0, version=2)
    assert sharecrypt.may_view(forever, 1, now=1e12)
    assert not sharecrypt.may_view(forever, 0, now=0.0)
    assert sharecrypt.may_view(until, 2, now=999.9)
    assert not sharecrypt.may_view(until, 2, now=1000.0)
    assert not sharecrypt.may_view(revoked, 2, now=0.0)
    # the expiry rule alone (inbox and view say "expired" by it)
    assert not sharecrypt.expired(0.0, now=1e12)  # never
    assert not sharecrypt.expired(1000.0, now=999.9)
    assert sharecrypt.expired(1000.0, now=1000.0)


def test_building_an_invalid_grant_is_refused() -> None:
    grant, _ = _grant()
    cases: tuple[tuple[str, Any], ...] = (
        ("views", -1),
        ("views", True),
        ("expires", 0),
        ("expires", -1.0),
        ("expires", float("inf")),
        ("version", 0),
        ("version", 2**32),
        ("nonce", b"x" * 11),
        ("signature", bytearray(64)),
        ("image", "../x"),
    )
    for field, value in cases:
        with pytest.raises(ShareCryptError):
            dataclasses.replace(grant, **{field: value})


# ---- a Join's proof ---------------------------------------------------------------------------
def _join_fields(keys: ClientKeys, stamp: float = 1000.0) -> dict[str, Any]:
    j = keys.join("alice#7", "alice", stamp)
    return {"rid": j.rid, "user": j.user, "sign_key": j.sign_key, "box_key": j.box_key,
            "stamp": j.stamp, "proof": j.proof}


def test_a_join_proof_verifies_only_for_its_own_fields_and_key() -> None:
    ok = _join_fields(ALICE)
    sharecrypt.verify_join(**ok, now=1000.0)
    for field, value in (("rid", "alice#8"), ("user", "alicf"), ("box_key", BOB.box_public),
                         ("stamp", 1000.5), ("sign_key", MALLORY.sign_public)):
        with pytest.raises(ShareCryptError, match="not signed by the key it presents"):
            sharecrypt.verify_join(**{**ok, field: value}, now=1000.0)
    forged = {**_join_fields(MALLORY), "sign_key": ALICE.sign_public,
              "box_key": ALICE.box_public}  # alice's public keys, mallory's signature
    with pytest.raises(ShareCryptError, match="not signed"):
        sharecrypt.verify_join(**forged, now=1000.0)
    with pytest.raises(ShareCryptError, match="not an Ed25519 public key"):
        sharecrypt.verify_join(**{**ok, "sign_key": b"\x01" * 5}, now=1000.0)


def test_a_join_proof_is_refused_outside_the_clock_skew() -> None:
    ok = _join_fields(ALICE, stamp=5000.0)
    skew = sharecrypt.JOIN_SKEW_S
    for now in (5000.0 - skew, 5000.0 + skew):
        sharecrypt.verify_join(**ok, now=now)
    for now in (5000.0 - skew - 1, 5000.0 + skew + 1):
        with pytest.raises(ShareCryptError, match="from this node's clock"):
            sharecrypt.verify_join(**ok, now=now)
