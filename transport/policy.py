"""Seeded impairment of incoming datagrams for tests and network runs (no root, no netem).

`LossPolicy` says what to do (probabilities, delays); `PolicyGate` applies it to the datagrams a
socket receives, with its own `random.Random(seed)` and a heap of held-back datagrams. Both are
pure: the caller passes `now` (seconds) and releases what is due.

Spec string (config or the `VEILSHARE_LOSS_POLICY` environment variable of a program), e.g.
``drop=0.1,dup=0.05,delay_ms=20,jitter_ms=5,reorder=0.1,seed=1``. Keys: drop, dup, corrupt,
reorder (probabilities 0..1), delay_ms, jitter_ms (each datagram is delayed by delay_ms +/-
jitter_ms, uniformly), reorder_ms (extra hold-back of a reordered datagram, default 10), seed.
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields

ENV = "VEILSHARE_LOSS_POLICY"
PEER_FILE_ENV = "VEILSHARE_PEER_POLICY_FILE"
Addr = tuple[str, int]
_PROBABILITIES = ("drop", "dup", "corrupt", "reorder")


@dataclass(frozen=True, slots=True)
class LossPolicy:
    """Probabilities in [0, 1], times in milliseconds (see module docstring)."""

    drop: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_ms: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"loss policy {name} must be within 0..1")
        if min(self.delay_ms, self.jitter_ms, self.reorder_ms) < 0:
            raise ValueError("loss policy times must not be negative")
        if self.jitter_ms > self.delay_ms:
            raise ValueError("loss policy jitter_ms must not exceed delay_ms")

    @classmethod
    def parse(cls, spec: str) -> LossPolicy:
        """Build from ``key=value,...``; ValueError names a bad key or value."""
        known = {f.name for f in fields(cls)}
        values: dict[str, float | int] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(f"loss policy: unknown item {item!r}")
            try:
                values[key] = int(raw) if key == "seed" else float(raw)
            except ValueError:
                raise ValueError(f"loss policy: {key} must be a number, not {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LossPolicy | None:
        """The policy named by VEILSHARE_LOSS_POLICY, or None when it is unset or empty."""
        spec = environ.get(ENV, "").strip()
        return cls.parse(spec) if spec else None

    def spec(self) -> str:
        """The spec string of this policy (parse(spec()) == self)."""
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


class PolicyGate:
    """Applies a LossPolicy to incoming datagrams. `admit` returns what is delivered now;
    held-back copies come out of `due(now)` at their time. Counters in `counts`."""

    def __init__(self, policy: LossPolicy) -> None:
        self.policy = policy
        self._rng = random.Random(policy.seed)
        self._held: list[tuple[float, int, Addr, bytes]] = []
        self._n = 0
        self.counts = {"policy_dropped": 0, "policy_duplicated": 0, "policy_corrupted": 0,
                       "policy_delayed": 0}  # fmt: skip

    def set_policy(self, policy: LossPolicy) -> None:
        """Apply `policy` from now on (datagrams already held back still come out on time)."""
        if policy.seed != self.policy.seed:
            self._rng = random.Random(policy.seed)
        self.policy = policy

    def admit(self, addr: Addr, data: bytes, now: float) -> list[tuple[Addr, bytes]]:
        p, rng = self.policy, self._rng
        if p.drop and rng.random() < p.drop:
            self.counts["policy_dropped"] += 1
            return []
        copies = 1
        if p.dup and rng.random() < p.dup:
            copies = 2
            self.counts["policy_duplicated"] += 1
        ready: list[tuple[Addr, bytes]] = []
        for _ in range(copies):
            d = data
            if p.corrupt and d and rng.random() < p.corrupt:
                bit = rng.randrange(len(d) * 8)
                b = bytearray(d)
                b[bit // 8] ^= 1 << (bit % 8)
                d = bytes(b)
                self.counts["policy_corrupted"] += 1
            delay = p.delay_ms + (rng.uniform(-p.jitter_ms, p.jitter_ms) if p.jitter_ms else 0.0)
            if p.reorder and rng.random() < p.reorder:
                delay += p.reorder_ms
            if delay <= 0:
                ready.append((addr, d))
            else:
                self._n += 1
                self.counts["policy_delayed"] += 1
                heapq.heappush(self._held, (now + delay / 1000, self._n, addr, d))
        return ready

    def due(self, now: float) -> list[tuple[Addr, bytes]]:
        """Held-back datagrams whose time has come, in time order."""
        out: list[tuple[Addr, bytes]] = []
        while self._held and self._held[0][0] <= now:
            _, _, addr, d = heapq.heappop(self._held)
            out.append((addr, d))
        return out

    def next_time(self) -> float | None:
        return self._held[0][0] if self._held else None


class PolicyFile:
    """A policy that changes while a program runs: the spec in a file, re-read when the file
    changes (checked at most every `every_s`). An empty or missing file means no impairment.
    `python -m actors.server` watches the file named by VEILSHARE_PEER_POLICY_FILE for its peer
    socket: a chaos run drops or delays the traffic between nodes, in phases, as `tc netem`
    would (benchmarks.chaos, TC-3 and TC-4)."""

    def __init__(self, path: str, every_s: float = 0.05) -> None:
        self.path = path
        self.every_s = every_s
        self._next = 0.0
        self._seen: tuple[int, int] | None = None
        self.text = ""

    def poll(self, now: float) -> tuple[bool, LossPolicy | None]:
        """(changed, policy). Raises ValueError for a bad spec (the caller keeps the old one)."""
        if now < self._next:
            return False, None
        self._next = now + self.every_s
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp == self._seen:
            return False, None
        self._seen = stamp
        try:
            with open(self.path, encoding="utf-8") as fh:
                text = fh.read(4096).strip()
        except OSError:
            text = ""
        if text == self.text:
            return False, None
        self.text = text
        return True, (LossPolicy.parse(text) if text else None)
