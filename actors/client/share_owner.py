"""The owner's side of sharing: previews of `high/`, serving image requests, the request inbox.

Images an owner shares live in `high/` (the `encrypt` command copies them there). Previews are
small JPEGs made once into `low/` and sent on `browse`. An image request is capped by
`client.max_views_per_grant`, sealed through the cloud if `encrypted/` holds no copy yet, given
the borrower's grant in place (`codec.seal.regrant`) and recorded in `state.db`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.client.client_store import ViewRequest
from actors.client.context import ClientContext
from actors.client.errors import SessionError
from actors.client.grants import Grants
from actors.core import access
from codec import images
from codec.messages import Preview
from codec.names import check_name, is_valid_name

log = logging.getLogger(__name__)

MAX_PREVIEWS = 256


class OwnerSide:
    def __init__(self, ctx: ClientContext | Any, grants: Grants | None) -> None:
        self.s = ctx
        self.grants = grants

    def shareable(self) -> list[str]:
        """Names of the images in high/ (valid names only, sorted)."""
        folder = self.s.home.root / "high"
        return sorted(p.name for p in folder.iterdir() if p.is_file() and is_valid_name(p.name))

    def previews(self) -> list[Preview]:
        out = []
        for name in self.shareable()[:MAX_PREVIEWS]:
            low = self.s.home.low_path(images.preview_name(name))
            limit = images.max_user_pixels(self.s.cfg)
            try:
                data = self.s.home.high_path(name).read_bytes()
                jpeg = low.read_bytes() if low.exists() else b""
                if not images.preview_fits(jpeg, data, limit):  # none yet, or an older version's
                    jpeg = images.make_preview(data, max_pixels=limit)
                    self.s.home.write(low, jpeg)
            except (OSError, images.ImageError) as exc:
                log.warning("no preview for %s: %s", name, exc)
                continue
            out.append(Preview(image=name, jpeg=jpeg))
        return out

    def serve_image(self, borrower: str, image: str, views: int,
                    days: float = 0.0) -> tuple[bytes, bytes]:
        """(sealed png carrying the borrower's signed grant, the signed grant) for a request.

        The payload is the image encrypted for this borrower (actors.client.grants): the cloud seals
        ciphertext, and the owner's own plaintext copy in encrypted/ never leaves this client."""
        check_name(image, "image name")
        high = self.s.home.high_path(image)
        if not high.is_file():
            raise SessionError("no_such_image", f"{self.s.user} has no image {image!r}")
        entry = self.s.directory.lookup(borrower)  # just checked by peer_token_ok: the cached copy
        if entry is None:
            raise SessionError("offline", f"{borrower} is not online")
        assert self.grants is not None
        self.grants.check_directory_keys(borrower, entry.sign_key, entry.box_key)
        views = access.cap_views(views, self.s.cfg.client.max_views_per_grant)
        png, blob = self.grants.issue(borrower, entry.box_key, image, high.read_bytes(), views,
                                        days)
        self.s.db.report_views(borrower, image, views, time.time())  # what the borrower gets
        self.s.notify(f"shared {image} with {borrower}: {views} view{'s' * (views != 1)}")
        return png, blob

    def record_request(self, rid: str, borrower: str, image: str, views: int) -> ViewRequest:
        return self.s.db.add_request(rid, borrower, image, views)
