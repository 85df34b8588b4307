"""Encryption and signing on the sharing path (RELIABILITY 5): pure, no I/O, randomness injected.

Callers: the owner's client when it shares an image (`encrypt_payload`, `make_grant`,
`reissue_grant`, `sealed_grant`), the node (`is_encrypted_payload`: such a payload is opaque
bytes, not an image), the borrower's client (`verify_sealed_grant` / `verify_grant`,
`open_content_key`, `open_payload`, `may_view`, `next_version_ok`, `views_left_after`).

Encrypted payload (what the cloud seals instead of the image): MAGIC b"VSAE1" then the AES-256-GCM
ciphertext of the original file with its 16-byte tag. The content key is 32 random bytes, drawn
per share; the 96-bit nonce is random per encryption and travels in the signed grant.

Associated data (`payload_aad`), the exact bytes:
    b"VSAE1" | u16 len(image id) | image id | u16 len(grant id) | grant id      (big endian, ASCII)
image id = grant id = "<owner>&<borrower>&<image>" (DESIGN "image id"; the borrower's state.db keys
the grant by it). Decrypting with another header (another owner, borrower or image) fails.

Key wrap (`wrap_key`): an ephemeral X25519 key agrees with the borrower's box key; the KEK is
HKDF-SHA256(shared, salt = ephemeral public | borrower public, info = WRAP_INFO | info), and
AES-256-GCM seals the content key under it with a zero nonce and `info` as associated data (the KEK
is used once, so the nonce never repeats). wrapped = ephemeral public (32) | ciphertext + tag (48).
The sharing path passes info = payload_aad(...), binding the wrap to the grant id.

Signed grant (`SignedGrant.encode`, at most 371 bytes, big endian):
    b"VSG1" | u8 len + owner | u8 len + borrower | u8 len + image | u32 views | f64 expires
    | u32 version | wrapped key (80) | payload nonce (12) | Ed25519 signature (64)
The signature covers SIGN_CONTEXT followed by every byte before it. Decoding is strict: exact
length, valid names, views 0..MAX_VIEWS, expires finite and >= +0.0 (0 = never), version >= 1.
The grant travels in `codec.seal.Grant.blob`; the outer Grant's owner, borrower, image and views
must equal the signed ones (`sealed_grant` builds it, `verify_sealed_grant` checks it).

What this buys (RELIABILITY 5): whoever has only the file cannot read the image (b), nor raise
its views without the owner's signing key (c). A modified client holds the content key: no
client-side scheme stops it.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from codec.errors import CodecError
from codec.grant import MAX_VIEWS, Grant
from codec.names import InvalidName, check_name

MAGIC = b"VSAE1"
GRANT_MAGIC = b"VSG1"
SIGN_CONTEXT = b"veilshare signed grant v1\x00"
WRAP_INFO = b"veilshare key wrap v1\x00"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_BYTES = 32 + KEY_BYTES + TAG_BYTES
SIGNATURE_BYTES = 64
MAX_VERSION = 2**32 - 1
_TAIL = struct.Struct(">IdI")
_ZERO_NONCE = bytes(NONCE_BYTES)
_NO_SIGNATURE = bytes(SIGNATURE_BYTES)

Rng = Callable[[int], bytes]


class ShareCryptError(CodecError, ValueError):
    """A payload, wrapped key or grant is refused (does not authenticate, is malformed, is for
    someone else), or a caller passed an invalid value. The message says which."""


class Signer(Protocol):
    """What make_grant needs of the owner's keys (actors.client.keys.ClientKeys)."""

    def sign(self, data: bytes) -> bytes: ...


class Unwrapper(Protocol):
    """What open_content_key needs of the borrower's keys (actors.client.keys.ClientKeys)."""

    def unwrap(self, wrapped: bytes, *, info: bytes) -> bytes: ...


# ---- payload -----------------------------------------------------------------------------------
def grant_id(owner: str, borrower: str, image: str) -> str:
    """The image id of DESIGN, "<owner>&<borrower>&<image>", which is also the grant id."""
    return f"{owner}&{borrower}&{image}"


def payload_aad(owner: str, borrower: str, image: str) -> bytes:
    """The associated data of a shared payload (module docstring gives the layout)."""
    for what, name in (("owner", owner), ("borrower", borrower), ("image", image)):
        _name(name, what)
    ident = grant_id(owner, borrower, image).encode("ascii")
    return MAGIC + struct.pack(">H", len(ident)) + ident + struct.pack(">H", len(ident)) + ident


def is_encrypted_payload(data: bytes) -> bool:
    """True if `data` has the shape of an encrypted payload (magic, room for the tag). The node
    seals such bytes as opaque data instead of probing them as an image."""
    return len(data) >= len(MAGIC) + TAG_BYTES and bytes(data[: len(MAGIC)]) == MAGIC


def encrypt_payload(
    plaintext: bytes, *, aad: bytes, rng: Rng = os.urandom
) -> tuple[bytes, bytes, bytes]:
    """Encrypt with a fresh random 256-bit key and 96-bit nonce: (content_key, nonce, payload),
    payload = MAGIC | ciphertext | tag. `rng(n)` returns n random bytes (tests inject one)."""
    key, nonce = _random(rng, KEY_BYTES), _random(rng, NONCE_BYTES)
    return key, nonce, MAGIC + AESGCM(key).encrypt(nonce, bytes(plaintext), bytes(aad))


def decrypt_payload(payload: bytes, content_key: bytes, nonce: bytes, *, aad: bytes) -> bytes:
    """The plaintext of `payload`; ShareCryptError if it does not authenticate."""
    if not is_encrypted_payload(payload):
        raise ShareCryptError("not an encrypted payload (no VSAE1 magic, or too short)")
    _check_len(content_key, KEY_BYTES, "content key")
    _check_len(nonce, NONCE_BYTES, "nonce")
    try:
        return AESGCM(content_key).decrypt(nonce, bytes(payload[len(MAGIC) :]), bytes(aad))
    except InvalidTag:
        raise ShareCryptError(
            "the payload does not authenticate (wrong key or nonce, another "
            "image's header, or damaged)"
        ) from None


# ---- key wrap ----------------------------------------------------------------------------------
def _kek(shared: bytes, eph_public: bytes, box_public: bytes, info: bytes) -> AESGCM:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=eph_public + box_public,
        info=WRAP_INFO + info,
    )
    return AESGCM(hkdf.derive(shared))


def wrap_key(
    content_key: bytes, borrower_box_public: bytes, *, info: bytes, rng: Rng = os.urandom
) -> bytes:
    """Wrap a 32-byte content key for the holder of the X25519 private half of
    `borrower_box_public` (32 bytes). Returns WRAPPED_BYTES (80) bytes."""
    _check_len(content_key, KEY_BYTES, "content key")
    _check_len(borrower_box_public, 32, "borrower's box key")
    eph = X25519PrivateKey.from_private_bytes(_random(rng, 32))
    eph_public = _raw_public(eph.public_key())
    try:
        shared = eph.exchange(X25519PublicKey.from_public_bytes(bytes(borrower_box_public)))
    except ValueError:
        raise ShareCryptError("the borrower's box key is not a usable X25519 key") from None
    kek = _kek(shared, eph_public, bytes(borrower_box_public), bytes(info))
    return eph_public + kek.encrypt(_ZERO_NONCE, bytes(content_key), bytes(info))


def unwrap_key(wrapped: bytes, box_private: X25519PrivateKey, *, info: bytes) -> bytes:
    """The content key inside `wrapped`; ShareCryptError if it was not wrapped for this key
    with this info, or was changed."""
    _check_len(wrapped, WRAPPED_BYTES, "wrapped key")
    eph_public = bytes(wrapped[:32])
    try:
        shared = box_private.exchange(X25519PublicKey.from_public_bytes(eph_public))
        kek = _kek(shared, eph_public, _raw_public(box_private.public_key()), bytes(info))
        return kek.decrypt(_ZERO_NONCE, bytes(wrapped[32:]), bytes(info))
    except (ValueError, InvalidTag):
        raise ShareCryptError(
            "the wrapped key does not open with this client's key (wrapped "
            "for someone else, for another grant, or damaged)"
        ) from None


# ---- signed grant ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SignedGrant:
    """A borrower's right on one image, signed by the owner. views: views granted in total by
    this version (0 = revoked; the borrower counts what it used, see views_left_after); expires:
    unix seconds, 0.0 = never; version: >= 1, only moves forward.
    Building one with invalid fields raises ShareCryptError."""

    owner: str
    borrower: str
    image: str
    views: int
    expires: float
    version: int
    wrapped_key: bytes
    nonce: bytes
    signature: bytes

    def __post_init__(self) -> None:
        for what in ("owner", "borrower", "image"):
            _name(getattr(self, what), what)
        if type(self.views) is not int or not 0 <= self.views <= MAX_VIEWS:
            raise ShareCryptError(f"grant views must be an int 0..{MAX_VIEWS}, not {self.views!r}")
        if (
            type(self.expires) is not float
            or not math.isfinite(self.expires)
            or math.copysign(1.0, self.expires) < 0
        ):
            raise ShareCryptError(
                f"grant expires must be a float >= 0 (0 = never), not {self.expires!r}"
            )
        if type(self.version) is not int or not 1 <= self.version <= MAX_VERSION:
            raise ShareCryptError(
                f"grant version must be an int 1..{MAX_VERSION}, not {self.version!r}"
            )
        _check_len(self.wrapped_key, WRAPPED_BYTES, "wrapped key")
        _check_len(self.nonce, NONCE_BYTES, "nonce")
        _check_len(self.signature, SIGNATURE_BYTES, "signature")

    @property
    def grant_id(self) -> str:
        """ "<owner>&<borrower>&<image>": the key of this grant in the borrower's state.db."""
        return grant_id(self.owner, self.borrower, self.image)

    @property
    def aad(self) -> bytes:
        """payload_aad of this grant: the associated data of its payload and of its key wrap."""
        return payload_aad(self.owner, self.borrower, self.image)

    def signed_part(self) -> bytes:
        """Every encoded byte before the signature (what SIGN_CONTEXT prefixes and Ed25519 signs)."""
        parts = [GRANT_MAGIC]
        for name in (self.owner, self.borrower, self.image):
            raw = name.encode("ascii")
            parts += [bytes([len(raw)]), raw]
        parts += [_TAIL.pack(self.views, self.expires, self.version), self.wrapped_key, self.nonce]
        return b"".join(parts)

    def encode(self) -> bytes:
        return self.signed_part() + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignedGrant:
        """Strict inverse of encode (signature NOT checked: use verify_grant)."""
        data = bytes(data)
        if data[: len(GRANT_MAGIC)] != GRANT_MAGIC:
            raise ShareCryptError("not a signed grant (no VSG1 magic)")
        pos, names = len(GRANT_MAGIC), []
        try:
            for _ in range(3):
                n = data[pos]
                names.append(data[pos + 1 : pos + 1 + n].decode("ascii"))
                pos += 1 + n
            views, expires, version = _TAIL.unpack_from(data, pos)
        except (IndexError, struct.error, UnicodeDecodeError):
            raise ShareCryptError("signed grant is truncated or its names are not ASCII") from None
        pos += _TAIL.size
        need = pos + WRAPPED_BYTES + NONCE_BYTES + SIGNATURE_BYTES
        if len(data) != need:
            raise ShareCryptError(f"signed grant is {len(data)} bytes; its fields need {need}")
        sig_at = need - SIGNATURE_BYTES
        wrapped, nonce = data[pos : sig_at - NONCE_BYTES], data[sig_at - NONCE_BYTES : sig_at]
        owner, borrower, image = names
        grant = cls(owner, borrower, image, views, expires, version, wrapped, nonce, data[sig_at:])
        if grant.encode() != data:
            raise ShareCryptError("signed grant is not in canonical form")
        return grant


def make_grant(
    owner_keys: Signer,
    *,
    owner: str,
    borrower: str,
    image: str,
    views: int,
    expires: float,
    version: int,
    content_key: bytes,
    nonce: bytes,
    borrower_box_public: bytes,
    rng: Rng = os.urandom,
) -> SignedGrant:
    """The owner's signed grant: wraps content_key for the borrower (info = payload_aad) and
    signs every field. nonce: the payload nonce from encrypt_payload."""
    info = payload_aad(owner, borrower, image)
    wrapped = wrap_key(content_key, borrower_box_public, info=info, rng=rng)
    unsigned = (views, float(expires), version, wrapped, bytes(nonce), _NO_SIGNATURE)
    return _signed(owner_keys, SignedGrant(owner, borrower, image, *unsigned))


def reissue_grant(
    owner_keys: Signer, previous: SignedGrant, *, views: int, expires: float, version: int
) -> SignedGrant:
    """A newer version of `previous` (more or fewer views, revoke = 0 views, a new expiry) with the
    same wrapped key and payload: the owner need not keep the content key."""
    if not next_version_ok(previous.version, version):
        raise ShareCryptError(
            f"grant version must move forward: {version} after {previous.version}"
        )
    draft = replace(previous, views=views, expires=float(expires), version=version)
    return _signed(owner_keys, draft)


def _signed(owner_keys: Signer, draft: SignedGrant) -> SignedGrant:
    signature = owner_keys.sign(SIGN_CONTEXT + draft.signed_part())
    return replace(draft, signature=bytes(signature))


def verify_grant(
    blob: bytes, owner_sign_public: bytes, *, owner: str, borrower: str, image: str | None = None
) -> SignedGrant:
    """Decode `blob` and check it was signed by `owner_sign_public` (the Ed25519 key the directory
    lists for `owner`), names `owner` and `borrower` (this client's user) and, if given, `image`.
    Raises ShareCryptError saying what is wrong."""
    grant = SignedGrant.decode(blob)
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes(owner_sign_public))
    except ValueError:
        raise ShareCryptError("the owner's signing key is not an Ed25519 public key") from None
    try:
        key.verify(grant.signature, SIGN_CONTEXT + grant.signed_part())
    except InvalidSignature:
        raise ShareCryptError(
            f"the grant is not signed by {owner}'s key (edited, or unsigned)"
        ) from None
    for what, want, got in (
        ("owner", owner, grant.owner),
        ("borrower", borrower, grant.borrower),
        ("image", image, grant.image),
    ):
        if want is not None and want != got:
            raise ShareCryptError(f"the grant is for {what} {got!r}, not {want!r}")
    return grant


JOIN_CONTEXT = b"veilshare join v1\x00"
JOIN_SKEW_S = 600.0  # a Join's stamp may differ this much from the node's wall clock


def join_signed_part(rid: str, user: str, sign_key: bytes, box_key: bytes, stamp: float) -> bytes:
    """What a Join's proof signs: JOIN_CONTEXT, then each field length-prefixed (u16) and the
    stamp as a big-endian double, so no two Joins share the signed bytes."""
    parts = [JOIN_CONTEXT]
    for field in (rid.encode(), user.encode(), bytes(sign_key), bytes(box_key)):
        parts += [struct.pack(">H", len(field)), field]
    parts.append(struct.pack(">d", stamp))
    return b"".join(parts)


def sign_join(keys: Signer, rid: str, user: str, sign_key: bytes, box_key: bytes,
              stamp: float) -> bytes:
    """The proof of a Join (the client's side)."""
    return bytes(keys.sign(join_signed_part(rid, user, sign_key, box_key, stamp)))


def verify_join(rid: str, user: str, sign_key: bytes, box_key: bytes, stamp: float,
                proof: bytes, now: float, skew_s: float = JOIN_SKEW_S) -> None:
    """A node's check of a Join: `proof` made with the private half of `sign_key`, over these
    fields, and `stamp` within `skew_s` of the node's wall clock `now` (a Join recorded long ago is
    not accepted again). Raises ShareCryptError saying which. Who knows a user's public keys (the
    directory lists them) cannot join as that user without the private signing key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes(sign_key))
    except ValueError:
        raise ShareCryptError("the signing key is not an Ed25519 public key") from None
    try:
        key.verify(bytes(proof), join_signed_part(rid, user, sign_key, box_key, stamp))
    except InvalidSignature:
        raise ShareCryptError(
            f"the join of {user} is not signed by the key it presents"
        ) from None
    if abs(now - stamp) > skew_s:
        raise ShareCryptError(
            f"the join is stamped {stamp - now:+.0f} s from this node's clock (at most "
            f"{skew_s:.0f} s apart): check the client's clock"
        )


def sealed_grant(signed: SignedGrant) -> Grant:
    """The codec.seal.Grant to write into the sealed image (codec.seal.regrant)."""
    return Grant(signed.owner, signed.borrower, signed.image, signed.views, signed.encode())


def verify_sealed_grant(
    grant: Grant | None, owner_sign_public: bytes, *, owner: str, borrower: str
) -> SignedGrant:
    """verify_grant on a sealed image's grant, and its unsigned outer fields must equal the signed
    ones (a sealed image without a signed grant is refused)."""
    if grant is None or not grant.blob:
        raise ShareCryptError("the sealed image carries no signed grant")
    signed = verify_grant(grant.blob, owner_sign_public, owner=owner, borrower=borrower)
    outer = (grant.owner, grant.borrower, grant.image, grant.views)
    if outer != (signed.owner, signed.borrower, signed.image, signed.views):
        raise ShareCryptError("the sealed grant's fields differ from its signed grant")
    return signed


def open_content_key(grant: SignedGrant, keys: Unwrapper) -> bytes:
    """The content key of a verified grant, unwrapped with the borrower's keys."""
    return keys.unwrap(grant.wrapped_key, info=grant.aad)


def open_payload(grant: SignedGrant, payload: bytes, content_key: bytes) -> bytes:
    """The original image bytes of a shared sealed image's payload (kept in memory only)."""
    return decrypt_payload(payload, content_key, grant.nonce, aad=grant.aad)


# ---- view state rules --------------------------------------------------------------------------
def expired(expires: float, now: float) -> bool:
    """A grant's time ran out: `expires` (unix seconds, 0.0 = never) is not after `now`."""
    return expires != 0.0 and now >= expires


def may_view(grant: SignedGrant, views_left: int, now: float) -> bool:
    """A view may be taken: views left (the borrower's authoritative count) and not expired.
    now: unix seconds. A revoked grant has views_left 0."""
    return views_left > 0 and grant.views > 0 and not expired(grant.expires, now)


def next_version_ok(stored_version: int, new_version: int) -> bool:
    """Grant versions only move forward (stored_version 0 = no grant stored yet)."""
    return new_version > stored_version


def views_left_after(old: SignedGrant | None, views_left: int, new: SignedGrant) -> int:
    """The borrower's views left once `new` (verified, newer version) replaces `old`: the signed
    change of granted views applied to the local count, within 0..new.views. Revoke (0) gives 0.
    Raises ShareCryptError if new is not newer or is another grant."""
    if old is None:
        return new.views
    if new.grant_id != old.grant_id or not next_version_ok(old.version, new.version):
        raise ShareCryptError("the new grant is not a newer version of the stored one")
    return max(0, min(new.views, views_left + new.views - old.views))


# ---- helpers -----------------------------------------------------------------------------------
def _name(value: object, what: str) -> str:
    try:
        return check_name(value, what)
    except InvalidName as exc:
        raise ShareCryptError(f"grant: {exc}") from None


def _check_len(value: object, size: int, what: str) -> None:
    if type(value) is not bytes or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ShareCryptError(f"{what} must be {size} bytes, got {got}")


def _random(rng: Rng, n: int) -> bytes:
    out = rng(n)
    if type(out) is not bytes or len(out) != n:
        raise ShareCryptError(f"rng returned {out!r:.40} for {n} bytes")
    return out


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
