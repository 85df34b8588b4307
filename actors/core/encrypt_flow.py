"""The encrypt flow of one node: the request cache, who seals, the reply, `Done`.

States of one cached request (keyed by request id):

    electing --won--> sealing --sealed--> replying --reply acked/failed--> (Done sent, dropped)
        |        |           ^
        |        +--won, offered only--> fetching --payload--+   (fetch failed: as a failed reply)
        |
        +--lost(winner)--> waiting --Done(rid)--> dropped
                              |
                              +--winner went down--> electing (re-election from the cache)

Rules:
- Every up node caches a client's EncryptRequest and takes part in the election for its id.
  A large image is offered instead (EncryptOffer: name and size, no bytes): the nodes cache the
  offer and elect on it; the winner asks the client for the bytes (FetchPayload) and the client
  sends the EncryptRequest to that node alone. A re-elected winner fetches again; a client retry
  of an offer that is still being fetched asks the client again.
  Only the winner looks at the payload (an image header check; ciphertext is opaque): a bad
  one gets one "not_an_image" answer, and the request is Done like any other.
- The winner seals (encoder pool), sends EncryptReply, then tells its peers Done(rid); everyone
  drops the cached bytes. Nothing of an image is written to disk, nothing stays after Done.
- A request id that was Done is remembered (id, attempt, and whether the client's transport
  acknowledged the reply; no bytes) for `done_ttl_s`. A late copy of the same attempt (an upload
  that was still in flight) is ignored; any copy once the reply was acknowledged (a retry that
  crossed the reply) gets `id_in_use` (below), which the answered client ignores. A client retry
  with a higher attempt after a reply that was not acknowledged is served again (sealing is
  deterministic, the client keeps the first reply).
- A peer that elects for a request we know was answered and acknowledged (it missed the
  Coordinator and the Done) is told Done again instead of being answered (`settled`); a peer
  electing for a retry of an unacknowledged reply takes part in a normal election.
- A request id belongs to the client address that sent it first (for as long as the id is cached or
  remembered as Done): a copy of it from another address is refused at once with `id_in_use`
  (counted, logged), never merged, and so is any copy of an id whose reply was acknowledged (the
  client that was answered ignores the refusal). Ids are `user#n`, easy to guess: before, a copy
  from a third party moved the reply to it; and the same user from another home (its counter
  starting again at 1), or the owner of an id someone else's copy won with at one node, met
  silence and read "unreachable" at its deadline. The client answers `id_in_use` by skipping ids
  and asking again under a fresh one (actors.client.cloud `Cloud.seal`).
- Cached requests expire after `cache_ttl_s` whatever happens, so a lost Done cannot pin memory.
- A winner that goes down (simulated failure) with a reply already sent tells its peers Done
  first: that reply still arrives, so nobody else answers the request.

This class does no I/O: the node actor passes `now` and callables to send and to seal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from codec import images, sharecrypt
from codec.messages import (
    Done,
    EncryptOffer,
    EncryptReply,
    EncryptRequest,
    ErrorReply,
    FetchPayload,
    Message,
)

log = logging.getLogger(__name__)

Addr = tuple[str, int]


@dataclass(slots=True)
class Cached:
    rid: str
    client: Addr
    image: str
    data: bytes | None  # None: offered, not fetched yet
    attempt: int
    since: float
    size: int = 0
    state: str = "electing"  # electing | fetching | sealing | replying | waiting
    winner: int = 0
    sealing_at: float = 0.0


class DoneId(NamedTuple):
    """What a node remembers of a request id that was Done (no bytes), for `done_ttl_s`."""

    attempt: int
    when: float
    acked: bool  # the client's transport acknowledged the reply
    client: Addr | None  # the address that sent it; None when only a peer's Done told us


@dataclass(slots=True)
class ServiceCounters:
    served: int = 0
    refused: int = 0
    reelected: int = 0
    expired: int = 0
    late_ignored: int = 0
    yielded: int = 0
    fetched: int = 0


@dataclass
class EncryptService:
    """Cache + flow. Callers: the node actor (one thread), in message order."""

    node_id: int
    send_client: Callable[[Addr, Message, str], None]  # (addr, msg, rid) -> None; completion via on_reply_done
    send_peers: Callable[[Message], None]
    start_election: Callable[[str, float], None]  # (rid, now)
    cancel_election: Callable[[str], None]
    submit_seal: Callable[[str, bytes], None]  # (rid, payload) -> later on_sealed
    max_pixels: int
    clock: Callable[[], float]
    send_fetch: Callable[[Addr, Message, str], None]  # like send_client; completion via on_fetch_done
    send_refusal: Callable[[Addr, Message], None]  # (addr, msg): an answer outside the flow, no completion
    cache_ttl_s: float = 120.0
    max_image: int = 2**62  # largest payload whose sealed reply fits a message (codec.seal)
    max_reply: int = 2**62  # largest sealed PNG a reply may carry
    done_ttl_s: float = 300.0
    cache: dict[str, Cached] = field(default_factory=dict)
    done: dict[str, DoneId] = field(default_factory=dict)
    counters: ServiceCounters = field(default_factory=ServiceCounters)

    # ---- client side -------------------------------------------------------------------
    def on_request(self, client: Addr, msg: EncryptRequest | EncryptOffer, now: float) -> None:
        """An EncryptRequest (the bytes: sent to every node, or fetched by the winner) or an
        EncryptOffer (no bytes yet)."""
        rid = msg.rid
        attempt = msg.attempt
        data = msg.data if isinstance(msg, EncryptRequest) else None
        prior = self.done.get(rid)
        cached = self.cache.get(rid)
        owner = cached.client if cached is not None else (prior.client if prior else None)
        if owner is not None and owner != client:
            self._in_use(client, rid, "is in use by another client")
            return
        if prior is not None and prior.acked:
            # the reply's client holds it (its transport acknowledged it): a copy now is a late
            # one of that client's (its call has ended: the refusal answers nothing), or comes
            # from a client that got no answer (a second home of the user; the owner of an id
            # someone else's copy won with at another node, ahead of the owner's or racing it).
            # Ignored, that client would wait out its deadline; refused, it takes a fresh id.
            self._in_use(client, rid, "was answered already")
            return
        if prior is not None and attempt <= prior.attempt:  # the reply may still come
            self.counters.late_ignored += 1
            return
        if cached is not None:  # the same client's retry (or a late copy): same bytes
            cached.attempt = max(cached.attempt, attempt)
            if cached.data is None and data is not None:
                cached.data = data
                if cached.state == "fetching":
                    self.counters.fetched += 1
                    self._seal(cached)
            elif cached.state == "fetching":  # a retry of the offer: our fetch may have been lost
                self._fetch(cached)
            return
        size = len(data) if data is not None else msg.size  # type: ignore[union-attr]
        log.debug("request %s attempt %d from %s", rid, attempt, client)
        self.cache[rid] = Cached(rid, client, msg.image, data, attempt, now, size)
        self.start_election(rid, now)

    def _in_use(self, client: Addr, rid: str, why: str) -> None:
        """Refuse a copy of `rid` with `id_in_use` (the node actor counts and logs it)."""
        self.send_refusal(client, ErrorReply(rid=rid, code="id_in_use", retryable=False,
                                             message=f"request id {rid} {why}"))

    # ---- election outcomes ---------------------------------------------------------------
    def on_won(self, rid: str) -> None:
        cached = self.cache.get(rid)
        log.debug("won %s (%s)", rid, cached.state if cached is not None else "not cached")
        if cached is None or cached.state in ("sealing", "replying"):
            return
        if cached.state == "fetching":
            return
        cached.winner = self.node_id
        if cached.size > self.max_image:  # refused before sealing (or fetching): it could never be sent
            cached.state = "sealing"
            self._refuse(cached, "too_large", too_large(cached.size, self.max_image))
            return
        if cached.data is None:
            cached.state = "fetching"
            self._fetch(cached)
            return
        self._seal(cached)

    def _fetch(self, cached: Cached) -> None:
        self.send_fetch(cached.client, FetchPayload(rid=cached.rid, node=self.node_id,
                                                    attempt=cached.attempt), cached.rid)

    def on_fetch_done(self, rid: str, error: object | None, now: float) -> None:
        """Our FetchPayload reached the client (error None: its bytes follow) or could not be
        sent: then the client is unreachable, and it ends as a reply that failed would (Done,
        not acknowledged: a retry of the client is served again)."""
        cached = self.cache.get(rid)
        if error is not None and cached is not None and cached.state == "fetching":
            self.on_reply_done(rid, error, now)

    def _seal(self, cached: Cached) -> None:
        assert cached.data is not None
        rid = cached.rid
        cached.state = "sealing"
        cached.sealing_at = self.clock()  # after the election (and the fetch of an offer)
        cached.size = len(cached.data)
        if cached.size > self.max_image:
            self._refuse(cached, "too_large", too_large(len(cached.data), self.max_image))
            return
        try:  # only the winner looks at the payload (its header only)
            if not sharecrypt.is_encrypted_payload(cached.data):  # ciphertext: opaque bytes
                images.probe(cached.data, self.max_pixels)
        except images.ImageError as exc:
            self._refuse(cached, "not_an_image", str(exc))
            return
        self.submit_seal(rid, cached.data)

    def _refuse(self, cached: Cached, code: str, message: str) -> None:
        """One final answer instead of a seal; the request is Done like any other."""
        self.counters.refused += 1
        log.info("request %s refused: %s", cached.rid, message)
        cached.state = "replying"
        self.send_client(cached.client, ErrorReply(rid=cached.rid, code=code, message=message,
                                                   retryable=False), cached.rid)

    def on_lost(self, rid: str, winner: int) -> None:
        """Another node coordinates `rid`. Also after we won: two claimants (messages between the
        nodes lost or late), and the other one's claim is higher. While our seal is still running
        we yield and its result is dropped (one reply instead of two); once our reply is out, it
        stands."""
        cached = self.cache.get(rid)
        if cached is None or cached.state == "replying":
            return
        if cached.state == "sealing":
            self.counters.yielded += 1
        cached.state = "waiting"
        cached.winner = winner

    def on_sealed(self, rid: str, png: bytes | None, ms: float, error: str | None) -> None:
        cached = self.cache.get(rid)
        if cached is None or cached.state != "sealing":  # gone, or we yielded to another claimant
            return
        log.debug("sealed %s in %.1f ms", rid, ms)
        cached.state = "replying"
        # the winner needs its copy of the payload no more: not keeping it beside the sealed
        # file and its encoded reply saves a payload's size at a node's peak (benchmarks.memory).
        # A re-election (this node gone before Done) takes it from a peer's cache or the client.
        cached.data = None
        if png is None:
            reply: Message = ErrorReply(rid=rid, code="seal_failed", message=error or "seal failed",
                                        retryable=False)
        elif len(png) > self.max_reply:  # the bound of codec.seal was wrong: still one answer
            reply = ErrorReply(rid=rid, code="too_large", retryable=False,
                               message=too_large(cached.size, self.max_image))
        else:
            wait_ms = max(0.0, (cached.sealing_at - cached.since) * 1000)
            reply = EncryptReply(rid=rid, node=self.node_id, sealed=png, seal_ms=ms,
                                 wait_ms=wait_ms)
        self.send_client(cached.client, reply, rid)

    def on_reply_done(self, rid: str, error: object | None, now: float) -> None:
        """The reply was acknowledged (error None) or its send failed: either way we are done."""
        cached = self.cache.pop(rid, None)
        if cached is None:
            return
        log.debug("reply %s done (%s)", rid, error or "acknowledged")
        if error is None:
            self.counters.served += 1
        else:
            log.info("reply %s to %s not acknowledged: %s", rid, cached.client, error)
        self.done[rid] = DoneId(cached.attempt, now, error is None, cached.client)
        self.cancel_election(rid)  # a retry must find no won election that would ignore it
        self.send_peers(Done(rid=rid, node=self.node_id, acked=error is None))

    # ---- peers -----------------------------------------------------------------------------
    def on_done(self, rid: str, acked: bool, now: float) -> None:
        cached = self.cache.pop(rid, None)
        attempt = cached.attempt if cached is not None else 0
        prior = self.done.get(rid, DoneId(0, 0.0, False, None))
        client = cached.client if cached is not None else prior.client
        self.done[rid] = DoneId(max(attempt, prior.attempt), now, acked or prior.acked, client)
        self.cancel_election(rid)

    def settled(self, rid: str) -> bool:
        """True if `rid` was answered and its reply acknowledged by the client's transport."""
        prior = self.done.get(rid)
        return prior is not None and prior.acked

    def on_node_down(self, node: int, now: float) -> None:
        """The winner of some requests went down before Done: elect again from the cache."""
        for cached in list(self.cache.values()):
            if cached.state == "waiting" and cached.winner == node:
                log.debug("re-elect %s: winner %d down", cached.rid, node)
                cached.state = "electing"
                cached.winner = 0
                self.counters.reelected += 1
                self.start_election(cached.rid, now)

    def drop_all(self, now: float) -> None:
        """Going down (simulated fail-stop): keep nothing. A reply already handed to the
        transport still reaches its client (the transport outlives the simulated failure), so
        its Done goes out first: otherwise the peers would see the winner go down, elect again
        and answer the same request a second time (RELIABILITY 2.3 rule 4: received = 1 when
        there is no partition). A request still sealing is dropped unanswered; the peers elect
        again and one of them answers it."""
        for rid, cached in list(self.cache.items()):
            self.cancel_election(rid)
            if cached.state == "replying":  # outcome unknown: a later retry is served again
                self.done[rid] = DoneId(cached.attempt, now, False, cached.client)
                self.send_peers(Done(rid=rid, node=self.node_id, acked=False))
        self.cache.clear()

    def expire(self, now: float) -> None:
        for rid, cached in list(self.cache.items()):
            if now - cached.since > self.cache_ttl_s:
                del self.cache[rid]
                self.cancel_election(rid)
                self.counters.expired += 1
        for rid, prior in list(self.done.items()):
            if now - prior.when > self.done_ttl_s:
                del self.done[rid]


def too_large(length: int, limit: int) -> str:
    """The message of a `too_large` refusal (client and node say the same)."""
    return (f"the image is {length / 2**20:.1f} MiB; the largest a sealed reply can carry is "
            f"{limit / 2**20:.1f} MiB ({limit} bytes)")
