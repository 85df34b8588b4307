"""Peer-to-peer sharing on the client: previews, image requests, access updates, more views.

Incoming peer requests are handled on a small worker pool (never on the transport's delivery
thread: answering an image request may seal through the cloud, whose reply comes through that
same thread). Each one must carry the sender's directory token; one that does not match the
directory is refused with `bad_token` and touches no file.

Outgoing operations are the shell's sharing commands. Update ids are request ids of their
author ("alice#12"): the owner authors grants, revokes and answers; the borrower authors
requests for more views. Updates to an online user go peer to peer; to an offline user (or when
the peer does not answer) they are posted to the cloud, which hands them over at the next join.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actors.client.client_store import ReceivedGrant, StoreError
from actors.client.context import ClientContext
from actors.client.errors import SessionError
from actors.client.grants import Grants
from actors.client.share_owner import OwnerSide
from actors.core import access
from actors.core.access import AccessError
from codec import images, sharecrypt
from codec.messages import (
    AccessUpdate,
    Ack,
    ErrorReply,
    ImageReply,
    ImageRequest,
    Message,
    MoreViews,
    PreviewReply,
    PreviewRequest,
    Update,
    UpdateApplied,
)
from codec.names import InvalidName, check_name

log = logging.getLogger(__name__)

Addr = tuple[str, int]
PEER_REQUESTS = (PreviewRequest, ImageRequest, AccessUpdate, MoreViews)
PEER_SILENT_S = 3.0  # a peer's client that acknowledges nothing for this long is gone
# why a view showed the cover (`view`'s "ended"), as the hint and the shell say it
ENDED_TEXT = {"used": "no views left", "revoked": "revoked by its owner",
              "expired": "expired"}


class Sharing:
    def __init__(self, ctx: ClientContext, grants: Grants) -> None:
        self.s = ctx
        self.grants = grants
        self.Error = SessionError
        self.owner = OwnerSide(ctx, grants)
        self.auto_approve = False
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="peer")
        self._answers: dict[str, Message] = {}  # rid -> reply, so a retried request is answered alike
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self.refused = 0

    def public_keys(self) -> tuple[bytes, bytes]:
        return self.s.keys.sign_public, self.s.keys.box_public

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- incoming -----------------------------------------------------------------------------
    def on_peer_message(self, addr: Addr, msg: Message) -> None:
        """Called on the delivery thread: hand peer requests to the pool."""
        if not isinstance(msg, PEER_REQUESTS):
            log.debug("ignored %s from %s", type(msg).__name__, addr)
            return
        with self._lock:
            cached = self._answers.get(msg.rid)
            busy = msg.rid in self._busy
            if cached is None and not busy:
                self._busy.add(msg.rid)
        if cached is not None:
            self.s.send(addr, cached)
        elif not busy:
            self._pool.submit(self._handle, addr, msg)

    def _handle(self, addr: Addr, msg: Any) -> None:
        try:
            if not self.s.directory.peer_token_ok(msg.user, msg.token, addr):
                self.refused += 1
                log.warning("refused %s from %s: token does not match the directory",
                            type(msg).__name__, addr)
                reply: Message = ErrorReply(rid=msg.rid, code="bad_token", retryable=False,
                                            message="your session token does not match the directory")
            else:
                reply = self._dispatch(addr, msg)
        except (self.Error, StoreError, AccessError, InvalidName, images.ImageError) as exc:
            reply = ErrorReply(rid=msg.rid, code=getattr(exc, "code", "refused"),
                               message=str(exc), retryable=False)
        except Exception as exc:  # never let a peer kill the worker silently
            log.exception("peer request %s failed", msg.rid)
            reply = ErrorReply(rid=msg.rid, code="internal", message=str(exc), retryable=False)
        with self._lock:
            self._busy.discard(msg.rid)
            if not isinstance(reply, ErrorReply):  # a refusal is not remembered: the same id may
                self._answers[msg.rid] = reply     # come again, genuine, and must be handled
        self.s.send(addr, reply)

    def _dispatch(self, addr: Addr, msg: Any) -> Message:
        if isinstance(msg, PreviewRequest):
            return PreviewReply(rid=msg.rid, previews=tuple(self.owner.previews()))
        if isinstance(msg, ImageRequest):
            png, grant = self.owner.serve_image(msg.user, msg.image, msg.views, msg.days)
            return ImageReply(rid=msg.rid, image=msg.image, sealed=png, grant=grant)
        if isinstance(msg, MoreViews):
            if self.s.db.get_given(msg.user, msg.image) is None:
                raise self.Error("no_grant", f"{self.s.user} never shared {msg.image} with you")
            req = self.owner.record_request(msg.rid, msg.user, msg.image, msg.views)
            self.s.notify(f"{msg.user} asks for {msg.views} more {_views(msg.views)} of "
                          f"{msg.image} "
                          f"(approve {req.id} / deny {req.id})")
            if self.auto_approve:
                self._pool.submit(self._auto_approve, req.id)
            return Ack(rid=msg.rid)
        if isinstance(msg, AccessUpdate):
            if msg.user != msg.update.owner or msg.update.addressee != self.s.user:
                raise self.Error("refused", "an access update must come from the owner, to you")
            try:  # refused: the sender gets an error, the id stays free, the user a notice
                self.grants.verify_update(msg.update)
            except self.Error as exc:
                self.s.notify(str(exc))
                raise
            for notice in self.apply_updates((msg.update,)):
                self.s.notify(notice)
            rec = self.s.db.get_received(msg.update.owner, msg.update.image)
            return UpdateApplied(rid=msg.rid, views_left=rec.views_left if rec else 0)
        raise self.Error("unexpected", type(msg).__name__)

    def _auto_approve(self, local_id: int) -> None:
        try:
            self.answer(local_id, approve=True)
        except Exception as exc:
            log.warning("auto-approve of request %d failed: %s", local_id, exc)

    # ---- updates handed to us (peer or cloud) ---------------------------------------------------
    def apply_updates(self, updates: tuple[Update, ...] | list[Update]) -> list[str]:
        """Apply each update once, in post order per author. Returns notices for the user."""
        notices = []
        for u in sorted(updates, key=lambda u: (u.id.partition("#")[0], access.position(u.id))):
            if u.addressee != self.s.user:
                continue
            if u.kind == "more" and u.owner != self.s.user:
                continue
            if u.kind == "more" and self.s.db.get_given(u.borrower, u.image) is None:
                if self.s.db.apply_once(u.id, lambda _txn: None):  # seen, no effect
                    notices.append(f"{u.borrower} asked for more views of {u.image}, which you "
                                   "never shared with them: ignored")
                continue
            if u.kind != "more" and u.borrower != self.s.user:
                continue
            try:
                signed = self.grants.verify_update(u)
            except self.Error as exc:  # unsigned or forged: refused, not recorded (the id stays
                notices.append(str(exc))  # free for the owner's real update)
                continue
            outcome = self.s.db.apply_update(u, signed)
            if outcome in ("duplicate", "stale"):
                continue
            rec = self.s.db.get_received(u.owner, u.image)
            if rec is not None and (rec.ended or rec.views_left == 0):
                self.grants.end(rec)  # the wrapped key leaves the file too
            notices.append(_describe(u, outcome))
        return notices

    # ---- outgoing: borrower ---------------------------------------------------------------------
    def _peer(self, user: str) -> tuple[Addr, bytes]:
        entry = self.s.directory.lookup(check_name(user, "user"), refresh=True)
        if entry is None:  # browse and request go peer to peer: the owner must be online
            raise self.Error("offline", f"{user} is not online (see users): browse and request "
                                        "need the owner online")
        return (entry.host, entry.port), self.s.cloud.require_token()

    def _ask(self, user: str, addr: Addr, build: Callable[[str, int], Message],
             deadline_s: float | None = None, rid: str | None = None) -> Message:
        """One request to `user`'s client at `addr`. A client that acknowledges nothing within
        PEER_SILENT_S is gone (stopped without leaving: the directory lists it a while longer):
        `no_answer` then, not a wait for the whole deadline."""
        try:
            return self.s.cloud.call(build, targets=[addr], deadline_s=deadline_s, rid=rid,
                                     silent_s=PEER_SILENT_S)
        except self.Error as exc:
            if exc.code == "no_cloud":  # silent from the start
                raise self.Error("no_answer", f"{user} does not answer (their client may have "
                                              "stopped without leaving); try again later") from None
            if exc.code == "unreachable":  # it acknowledged, then never answered
                raise self.Error("no_answer", f"{user} did not answer in time; try again "
                                              "later") from None
            raise

    def browse(self, owner: str) -> list[dict[str, Any]]:
        """owner's previews, written to previews/OWNER/; our own (what peers see) without a
        network call (our own socket would read the request as its answer)."""
        if check_name(owner, "user") == self.s.user:
            previews = tuple(self.owner.previews())
        else:
            addr, tok = self._peer(owner)
            reply = self._ask(owner, addr, lambda rid, _a: PreviewRequest(
                rid=rid, user=self.s.user, token=tok), deadline_s=20)
            if not isinstance(reply, PreviewReply):
                raise self.Error("protocol", "unexpected answer to browse")
            previews = reply.previews
        rows = []
        for p in previews:
            path = self.s.home.write(self.s.home.preview_path(owner, images.preview_name(p.image)),
                                     p.jpeg)
            rows.append({"image": p.image, "path": self.s.home.relative(path), "bytes": len(p.jpeg)})
        return rows

    def request(self, owner: str, image: str, views: int, days: float = 0.0) -> dict[str, Any]:
        check_name(image, "image name")
        views = access.check_views(views)
        if views < 1:
            raise self.Error("bad_views", "ask for at least 1 view")
        if check_name(owner, "user") == self.s.user:  # our own socket would read the request
            high = self.s.home.high_path(image)      # as its answer: never sent
            if high.is_file():
                raise self.Error("yourself", f"{image} is your own image: its original is "
                                 f"{self.s.home.relative(high)}")
            raise self.Error("yourself", f"you have no image {image!r}, and your own need no request")
        addr, tok = self._peer(owner)
        reply = self._ask(owner, addr, lambda rid, _a: ImageRequest(
            rid=rid, user=self.s.user, token=tok, image=image, views=views, days=days))
        if not isinstance(reply, ImageReply):
            raise self.Error("protocol", "unexpected answer to the image request")
        return self.store_received(owner, reply)

    def store_received(self, owner: str, reply: ImageReply) -> dict[str, Any]:
        g = self.grants.accept_image(owner, reply.image, reply.sealed)
        rec = self.s.db.get_received(owner, reply.image)
        assert rec is not None
        return {"owner": owner, "image": reply.image, "views_left": rec.views_left,
                "views": g.views, "views_total": g.views, "expires": g.expires,
                "path": rec.path}

    def more(self, owner: str, image: str, views: int) -> dict[str, Any]:
        views = access.check_views(views)
        if views < 1:
            raise self.Error("bad_views", "ask for at least 1 view")
        owner, image = check_name(owner, "user"), check_name(image, "image name")
        if self.s.db.get_received(owner, image) is None:  # said now, whether the owner is online
            # or not (offline, the request would go through the cloud for its client to drop)
            raise self.Error("no_grant", f"{owner} never shared {image} with you")
        rid = self.s.cloud.next_rid()
        update = Update(id=rid, kind="more", owner=owner,
                        borrower=self.s.user, image=image, delta=views,
                        addressee=owner, grant=b"", created=time.time())
        return self._deliver(update, lambda r, t: MoreViews(rid=r, user=self.s.user, token=t,
                                                            image=image, views=views))

    def inbox_rows(self) -> list[dict[str, Any]]:
        """Images shared with you: views left of the views granted, expiry (0 = never), revoked
        (the owner took every view back: an ended grant whose signed total is 0), expired (its
        time ran out: no view can be taken, whatever the views left say)."""
        now = time.time()
        return [{"owner": g.owner, "image": g.image, "views_left": g.views_left,
                 "views_total": g.views_total, "expires": g.expires, "path": g.path,
                 "revoked": g.ended and g.views_total == 0,
                 "expired": sharecrypt.expired(g.expires, now)}
                for g in self.s.db.inbox()]

    def find_received(self, name: str) -> ReceivedGrant:
        """IMAGE or OWNER/IMAGE -> the received grant. Raises SessionError."""
        owner, _, image = name.rpartition("/")
        check_name(image, "image name")
        if owner:
            check_name(owner, "owner")
        found = [g for g in self.s.db.inbox() if g.image == image and (not owner or g.owner == owner)]
        if not found:
            msg = f"nothing called {name!r} was shared with you; see: inbox"
            high = self.s.home.high_path(image)
            if owner in ("", self.s.user) and high.is_file():
                msg += f" ({image} is your own image: its original is {self.s.home.relative(high)})"
            raise self.Error("no_such_image", msg)
        if len(found) > 1:
            names = ", ".join(f"{g.owner}/{g.image}" for g in found)
            raise self.Error("ambiguous", f"several owners shared {image}: say which ({names})")
        return found[0]

    def view(self, name: str) -> tuple[dict[str, Any], Any]:
        """Take one view, then decode the hidden picture in memory. Returns (data, PIL image).

        With no views left (or an ended/expired grant) the picture is the default image, and
        the data says how to ask for more.
        """
        from PIL import Image

        g = self.find_received(name)
        png = (self.s.home.root / g.path).read_bytes()
        data: dict[str, Any] = {"owner": g.owner, "image": g.image, "path": g.path}
        plain = self.grants.open_view(g, png)
        if plain is None:
            ended = self._why_ended(g)
            data.update(views_left=0, shown="default", ended=ended,
                        hint=f"{ENDED_TEXT[ended]}: more {g.owner} {g.image} N")
            from codec import seal  # numpy and Pillow: loaded here, not at every client start

            return data, seal.open_sealed_cover(png)
        picture: Image.Image = images.open_for_view(plain, images.max_user_pixels(self.s.cfg))
        del plain
        rec = self.s.db.get_received(g.owner, g.image)
        data.update(views_left=rec.views_left if rec else 0, shown="image",
                    width=picture.width, height=picture.height)
        return data, picture

    def _why_ended(self, g: ReceivedGrant) -> str:
        """Why a view of `g` showed the cover: "revoked" (the owner took every view back),
        "expired" (its time ran out) or "used" (every view granted was taken)."""
        rec = self.s.db.get_received(g.owner, g.image) or g
        if rec.ended and rec.views_total == 0:
            return "revoked"
        if sharecrypt.expired(rec.expires, time.time()):
            return "expired"
        return "used"

    # ---- outgoing: owner ------------------------------------------------------------------------
    def grant(self, borrower: str, image: str, change: str) -> dict[str, Any]:
        kind, delta = parse_change(change)
        check_name(borrower, "user")
        check_name(image, "image name")
        signed = self.grants.reissue(borrower, image, kind, delta)
        update = Update(id=self.s.cloud.next_rid(), kind=kind, owner=self.s.user, borrower=borrower,
                        image=image, delta=delta, addressee=borrower, grant=signed.encode(),
                        created=time.time())
        out = self.send_update(update)
        out["views"] = self.grants.record_reissued(update, signed).views_left
        return out

    def answer(self, local_id: int, *, approve: bool, views: int | None = None) -> dict[str, Any]:
        req = next((r for r in self.s.db.requests(None) if r.id == local_id), None)
        if req is None:
            raise self.Error("no_request", f"no request {local_id}; see: requests")
        if req.state != "pending":
            raise self.Error("answered", f"request {local_id} was already {req.state}")
        n = access.check_views(views if views is not None else req.views) if approve else 0
        if self.s.db.get_given(req.borrower, req.image) is None:
            raise self.Error("no_grant", f"you have not shared {req.image} with {req.borrower}")
        signed = self.grants.reissue(req.borrower, req.image,
                                       "approve" if approve else "deny", n)
        update = Update(id=self.s.cloud.next_rid(), kind="approve" if approve else "deny",
                        owner=self.s.user, borrower=req.borrower, image=req.image, delta=n,
                        addressee=req.borrower, grant=signed.encode(),
                        created=time.time())
        out = self.send_update(update)
        self.s.db.answer_request(local_id, approve)
        stored = self.grants.record_reissued(update, signed)
        if approve:
            out["views"] = stored.views_left
        return out

    def send_update(self, update: Update) -> dict[str, Any]:
        return self._deliver(update, lambda r, t: AccessUpdate(rid=r, user=self.s.user, token=t,
                                                               update=update))

    def _deliver(self, update: Update, build_peer: Any) -> dict[str, Any]:
        """Peer to peer if the addressee is online and answers; else through the cloud.

        The peer message carries the update's own id as its request id, so the addressee
        records the same id whichever way the update reaches it (applied once either way).
        """
        tok = self.s.cloud.require_token()
        entry = self.s.directory.lookup(update.addressee, refresh=True)
        if entry is not None:
            try:
                reply = self._ask(update.addressee, (entry.host, entry.port),
                                  lambda rid, _a: build_peer(rid, tok), deadline_s=5.0,
                                  rid=update.id)
                if isinstance(reply, UpdateApplied) and update.addressee == update.borrower:
                    self.s.db.report_views(update.borrower, update.image, reply.views_left,
                                           time.time())
                    return {"id": update.id, "delivered": "now", "to": update.addressee,
                            "borrower_views_left": reply.views_left}
                if isinstance(reply, (Ack, UpdateApplied)):
                    return {"id": update.id, "delivered": "now", "to": update.addressee}
            except self.Error as exc:
                if exc.code in ("bad_token", "refused", "no_grant"):
                    raise
                log.info("peer %s did not answer (%s): posting to the cloud", update.addressee, exc)
        self.s.cloud.post_update(update)
        return {"id": update.id, "delivered": "via cloud", "to": update.addressee}


def parse_change(change: str) -> tuple[str, int]:
    """'+N' / '-N' / 'revoke' -> (kind, delta). Raises AccessError on anything else."""
    if change == "revoke":
        return "revoke", 0
    if len(change) >= 2 and change[0] in "+-" and change[1:].isdigit():
        if int(change) == 0:
            raise AccessError("change", change, "+0 and -0 change nothing; give +N or -N with "
                              "N of at least 1, or revoke")
        return "grant", access.check_delta(int(change))
    raise AccessError("change", change, "must be +N, -N or revoke")


def _describe(u: Update, outcome: str) -> str:
    if u.kind == "more":
        return f"{u.borrower} asks for {u.delta} more {_views(u.delta)} of {u.image}"
    if outcome == "no_grant":
        return f"update {u.id} from {u.owner} for {u.image}: you hold no such image"
    what = {"grant": f"{u.delta:+d} {_views(u.delta)}", "revoke": "revoked",
            "approve": f"approved +{u.delta}", "deny": "denied your request"}[u.kind]
    return f"{u.owner}/{u.image}: {what}"


def _views(n: int) -> str:
    return "view" if abs(n) == 1 else "views"


__all__ = ["Sharing", "parse_change"]
