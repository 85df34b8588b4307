"""Signed grants and encrypted payloads on the client (issue 10), for owner and borrower.

Owner, serving an image request: a random 256-bit content key encrypts the image (AES-256-GCM,
the image id as associated data); the cloud seals the *ciphertext* (it never sees the picture);
the content key is wrapped for the borrower's X25519 key; the grant (owner, borrower, image,
views total, expiry, version, wrapped key, nonce) is signed with the owner's Ed25519 key and
written into the sealed file's grant region. Access changes re-sign the grant with a higher
version (same wrapped key: the owner never keeps content keys).

Borrower: every grant is verified against the owner's public key (pinned the first time it is
seen in the directory; a different key later is refused). The authoritative views count and the
signed grant (holding the wrapped key) live in state.db; versions only move forward, so an older
file or grant never brings views back. The wrapped key is wiped, in state.db and in the sealed
file, when views reach zero, the grant expires or it is revoked; a later grant brings it back.

What this does not protect against: a modified client, a memory dump or a camera (README).
"""

from __future__ import annotations

import time

from actors.client.client_store import GivenGrant, ReceivedGrant
from actors.client.context import ClientContext
from actors.client.errors import SessionError
from codec import images, sharecrypt
from codec.errors import SealError
from codec.grant import Grant
from codec.messages import EncryptReply, Update
from codec.sharecrypt import ShareCryptError, SignedGrant

SIGNED_KINDS = ("grant", "revoke", "approve", "deny")  # every update the owner authors


class Grants:
    def __init__(self, ctx: ClientContext) -> None:
        self.s = ctx
        self.keys = ctx.keys

    def _error(self, code: str, message: str) -> Exception:
        return SessionError(code, message)

    # ---- peers' keys ----------------------------------------------------------------------------
    def peer_keys(self, user: str) -> tuple[bytes, bytes]:
        """(sign, box) public keys of `user`: pinned, or taken from the directory and pinned."""
        pinned = self.s.db.peer_keys(user)
        if pinned is not None:
            return pinned
        entry = self.s.directory.lookup(user)
        if entry is None or len(entry.sign_key) != 32 or len(entry.box_key) != 32:
            raise self._error("no_keys", f"{user}'s keys are unknown: {user} must be online once")
        self.s.db.pin_peer(user, entry.sign_key, entry.box_key)
        return entry.sign_key, entry.box_key

    def check_directory_keys(self, user: str, sign_key: bytes, box_key: bytes) -> None:
        """Refuse a directory entry whose keys differ from the ones pinned for that user."""
        if len(sign_key) == 32 and len(box_key) == 32 \
                and not self.s.db.pin_peer(user, sign_key, box_key):
            raise self._error("keys_changed",
                              f"{user}'s keys differ from the ones seen before: refusing")

    # ---- owner ------------------------------------------------------------------------------------
    def issue(self, borrower: str, box_key: bytes, image: str, data: bytes, views: int,
              days: float) -> tuple[bytes, bytes]:
        """Encrypt, seal through the cloud, sign: (sealed png, signed grant blob)."""
        me = self.s.user
        aad = sharecrypt.payload_aad(me, borrower, image)
        content_key, nonce, payload = sharecrypt.encrypt_payload(data, aad=aad)
        reply = self.s.cloud.seal(image, payload).reply
        assert isinstance(reply, EncryptReply)
        png = reply.sealed
        old = self.s.db.get_given(borrower, image)
        version = old.version + 1 if old is not None else 1
        expires = time.time() + days * 86400 if days > 0 else 0.0
        g = sharecrypt.make_grant(self.keys, owner=me, borrower=borrower, image=image,
                                  views=views, expires=expires, version=version,
                                  content_key=content_key, nonce=nonce,
                                  borrower_box_public=box_key)
        del content_key
        from codec import seal  # numpy and Pillow: loaded here, not at every client start
        png = seal.regrant(png, sharecrypt.sealed_grant(g), max_payload=self._max())
        self.s.db.put_given(GivenGrant(borrower, image, views, views, version, g.encode()))
        return png, g.encode()

    def reissue(self, borrower: str, image: str, kind: str, delta: int) -> SignedGrant:
        """The next signed grant for an access change (not stored until delivered)."""
        given = self.s.db.get_given(borrower, image)
        if given is None or not given.grant:
            raise self._error("no_grant", f"you have not shared {image} with {borrower}")
        prev = SignedGrant.decode(given.grant)
        change = 0 if kind == "deny" else delta  # a deny re-signs the same views (authentic)
        total = 0 if kind == "revoke" else max(0, min(prev.views + change, 1_000_000))
        return sharecrypt.reissue_grant(self.keys, prev, views=total, expires=prev.expires,
                                        version=prev.version + 1)

    def record_reissued(self, update: Update, signed: SignedGrant) -> GivenGrant:
        new = self.s.db.given_apply(update)
        stored = GivenGrant(new.borrower, new.image, new.views_granted, new.views_left,
                            signed.version, signed.encode())
        self.s.db.put_given(stored)
        return stored

    # ---- borrower ---------------------------------------------------------------------------------
    def accept_image(self, owner: str, image: str, png: bytes) -> SignedGrant:
        """Verify the sealed image's signed grant; store the file and the grant. Raises."""
        from codec import seal  # numpy and Pillow: loaded here, not at every client start
        sign_key, _box = self.peer_keys(owner)
        try:
            header = seal.read_header(png, max_payload=self._max())
            if header.grant is None:
                raise ShareCryptError("the image carries no grant")
            g = sharecrypt.verify_sealed_grant(header.grant, sign_key, owner=owner,
                                               borrower=self.s.user)
        except (SealError, ShareCryptError) as exc:
            raise self._error("bad_grant", f"the grant from {owner} is not valid: {exc}") from None
        if g.image != image:
            raise self._error("bad_grant", f"{owner} sent a grant for {g.image}, not {image}")
        path = self.s.home.write(self.s.home.received_path(owner, images.sealed_name(image)), png)
        stored = self.s.db.put_received(ReceivedGrant(
            owner, image, g.views, g.version, self.s.home.relative(path), g.expires, g.encode(),
            views_total=g.views))
        if not stored:
            raise self._error("stale_grant", "an equal or newer grant of this image is stored")
        return g

    def verify_update(self, u: Update) -> tuple[bytes, int, int] | None:
        """(blob, version, views total) of a signed access update; None for unsigned kinds."""
        if u.kind not in SIGNED_KINDS:
            return None
        sign_key, _box = self.peer_keys(u.owner)
        try:
            g = sharecrypt.verify_grant(u.grant, sign_key, owner=u.owner, borrower=self.s.user,
                                        image=u.image)
        except ShareCryptError as exc:
            raise self._error("bad_grant", f"update {u.id} from {u.owner} refused: {exc}") from None
        return g.encode(), g.version, g.views

    def open_view(self, rec: ReceivedGrant, png: bytes) -> bytes | None:
        """Take one view and decrypt the picture in memory; None: no view (ended/expired/0)."""
        if not rec.content_key:
            return None
        g = SignedGrant.decode(rec.content_key)
        now = time.time()
        if not sharecrypt.may_view(g, rec.views_left, now):
            self.end(rec)
            return None
        from codec import seal  # numpy and Pillow: loaded here, not at every client start
        try:  # decrypt first: a damaged file costs no view
            payload = seal.unseal(png, max_payload=self._max()).payload
            plain = sharecrypt.open_payload(g, payload, sharecrypt.open_content_key(g, self.keys))
        except (SealError, ShareCryptError) as exc:
            raise self._error("damaged", f"{rec.owner}/{rec.image} cannot be opened: {exc}") \
                from None
        left = self.s.db.take_view(rec.owner, rec.image, now=now)  # before it is shown
        if left is None:
            return None
        if left == 0:
            self.end(rec)
        return plain

    def end(self, rec: ReceivedGrant) -> None:
        """The grant ended: wipe the wrapped key from state.db and from the sealed file."""
        self.s.db.wipe_key(rec.owner, rec.image)
        path = self.s.home.root / rec.path
        from codec import seal  # numpy and Pillow: loaded here, not at every client start
        try:
            png = path.read_bytes()
            header = seal.read_header(png, max_payload=self._max())
            if header.grant is not None and header.grant.blob:
                bare = Grant(rec.owner, self.s.user, rec.image, 0)
                self.s.home.write(path, seal.regrant(png, bare, max_payload=self._max()))
        except (OSError, SealError):
            pass  # the file is gone or damaged: nothing of the key left in it to wipe

    def _max(self) -> int:
        return self.s.cfg.transport.max_message
