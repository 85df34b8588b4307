"""The encoder pool: EncoderActors that run the seal off the node actor's thread.

The node actor `submit`s (request id, payload); the least busy encoder seals it and tells the
result back to the `reply_to` actor as `Sealed`. numpy and zlib release the GIL, so threads run
in parallel on a multi-core host; `benchmarks/cloud.py --pool N` measures how many pay off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from codec import heap
from codec import seal as seal_mod
from codec.covers import CoverSet
from config import SealConfig
from transport.mailbox import QuickInboxActor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SealJob:
    """Mutable on purpose: the encoder takes the payload out (pykka keeps an actor's last
    message referenced until the next one arrives: the payload would outlive its seal)."""

    rid: str
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class Sealed:
    """Result told back to the submitter: png is None when sealing failed (error says why)."""

    rid: str
    png: bytes | None
    ms: float
    error: str | None


@dataclass(frozen=True, slots=True)
class Warm:
    """Prepare the covers of these payload sizes before the first request needs them."""

    sizes: tuple[int, ...]


class EncoderActor(QuickInboxActor):
    def __init__(
        self, cfg: SealConfig, max_payload: int, deliver: Callable[[Sealed], None], covers: CoverSet
    ) -> None:
        super().__init__()
        self._cfg = cfg
        self._max_payload = max_payload
        self._deliver = deliver
        self._covers = covers

    def on_receive(self, message: object) -> None:
        if isinstance(message, Warm):
            start = time.perf_counter()
            for size in message.sizes:
                try:
                    seal_mod.warm(self._covers, self._cfg, size)
                except Exception as exc:  # noqa: BLE001 - a missing tier is built on demand
                    log.warning("preparing the cover for %d bytes failed: %s", size, exc)
            # once per node start: the node's memory has its working size from here on (a
            # test that watches a node's memory waits for this line)
            log.info("covers prepared for payloads of %s bytes in %.0f ms",
                     ", ".join(map(str, message.sizes)), (time.perf_counter() - start) * 1000)
            return
        if not isinstance(message, SealJob) or message.payload is None:
            return
        payload, message.payload = message.payload, None
        large = len(payload) >= heap.TRIM_MIN_BYTES
        if large:  # the request's fragments left heap holes: give them back before sealing
            heap.trim()
        result = seal_payload(message.rid, payload, self._cfg, self._max_payload, self._covers)
        del payload  # the flow drops its copy once sealed: the reply is encoded without it
        if large:  # and the seal's slices, before the reply is encoded beside the file
            heap.trim()
        self._deliver(result)


def seal_payload(rid: str, payload: bytes, cfg: SealConfig, max_payload: int,
                 covers: CoverSet) -> Sealed:
    """Seal `payload` on the calling thread (an EncoderActor, or the flow actor itself for a
    small payload): its `Sealed`, with the error when it failed (a seal failure is an answer,
    never an exception)."""
    start = time.perf_counter()
    try:
        png = seal_mod.seal(payload, cfg=cfg, max_payload=max_payload, covers=covers)
        result = Sealed(rid, png, (time.perf_counter() - start) * 1000, None)
    except Exception as exc:  # a seal failure must not stop the caller (pykka would)
        log.warning("seal of %s failed: %s", rid, exc)
        result = Sealed(rid, None, 0.0, f"seal failed: {exc}")
    return result


class EncoderPool:
    """Owned by one node actor (single-threaded use). Tracks jobs in flight per encoder."""

    def __init__(
        self,
        size: int,
        cfg: SealConfig,
        max_payload: int,
        deliver: Callable[[Sealed], None],
        covers: CoverSet | None = None,
        warm: tuple[int, ...] = (),
    ) -> None:
        """`covers`: the tier cache the encoders share (one per node: it is thread-safe);
        `warm`: payload sizes whose covers the first encoder prepares at once."""
        self.covers = covers if covers is not None else CoverSet()
        self.cfg = cfg
        self.max_payload = max_payload
        self._refs = [
            EncoderActor.start(cfg, max_payload, deliver, self.covers) for _ in range(size)
        ]
        if warm and self._refs:
            self._refs[0].tell(Warm(warm))
        self._busy = [0] * size
        self._where: dict[str, int] = {}

    def submit(self, rid: str, payload: bytes) -> None:
        # the least busy; among equals the last, so that a request right after start does not
        # queue behind the warm-up on the first encoder
        i = min(reversed(range(len(self._refs))), key=self._busy.__getitem__)
        self._busy[i] += 1
        self._where[rid] = i
        self._refs[i].tell(SealJob(rid, payload))

    def seal_here(self, rid: str, payload: bytes) -> Sealed:
        """Seal on the calling thread, as an encoder would (same parameters and covers): for a
        payload so small that the hop to an encoder and back costs more than the seal."""
        return seal_payload(rid, payload, self.cfg, self.max_payload, self.covers)

    def finished(self, rid: str) -> None:
        i = self._where.pop(rid, None)
        if i is not None:
            self._busy[i] -= 1

    @property
    def size(self) -> int:
        return len(self._refs)

    def in_flight(self) -> int:
        return sum(self._busy)

    def stop(self) -> None:
        for ref in self._refs:
            ref.stop(block=False)
