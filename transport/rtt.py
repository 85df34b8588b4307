"""Retransmission timeout from measured round trips (RFC 6298 srtt/rttvar), one per destination.

Rules: the first sample sets srtt = r, rttvar = r/2; later ones use alpha = 1/8, beta = 1/4.
RTO = srtt + max(granularity, 4 * rttvar), clamped to [floor, ceiling]. Each consecutive timeout
multiplies it by BACKOFF = 1.5 (RTO * 1.5^n, still capped at the ceiling: gentler than TCP's x2,
so a lossy but live path recovers its stragglers sooner); an acknowledgement of new data
ends the backoff (as QUIC's PTO count and Linux TCP do). Callers feed only samples from first
transmissions (Karn: a sample from a retransmitted fragment is ambiguous). All times in seconds.
PTO, the tail-probe timeout (RFC 8985 TLP, QUIC PTO), has no floor: the sender's cheap early probe
when a path goes quiet, before the RTO (which keeps its floor) declares anything lost.
"""

from __future__ import annotations

INITIAL_RTO_S = 0.2  # before any sample, clamped to [floor, ceiling]
GRANULARITY_S = 0.001
BACKOFF = 1.5
MAX_BACKOFF_SHIFT = 32


class RttEstimator:
    """srtt/rttvar/RTO state of one path. Used by `fragments.Sender` per destination.

    The sender reads `rto` and `pto` on every turn of every busy destination, and they change
    only on a sample, a timeout or progress: they are computed then (`_derive`), not per read.
    `floor` and `ceiling` are fixed at construction."""

    __slots__ = ("_ceiling", "_floor", "_shift", "base_rto", "latest", "min", "pto", "rto",
                 "rttvar", "samples", "srtt")

    def __init__(self, floor_s: float, ceiling_s: float) -> None:
        if not 0 < floor_s <= ceiling_s:
            raise ValueError(f"need 0 < floor ({floor_s}) <= ceiling ({ceiling_s})")
        self._floor = floor_s
        self._ceiling = ceiling_s
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.latest = 0.0
        self.min = float("inf")  # smallest sample
        self.samples = 0
        self._shift = 0
        # base_rto: the RTO without backoff, clamped to [floor, ceiling] (seconds); rto: with
        # the backoff, always within [floor, ceiling]; pto: the tail-probe timeout, 2 srtt
        # (RFC 8985), at least the granularity, at most the RTO; None before the first sample
        # (no estimate, no early probe). Plain attributes (read on every turn of every busy
        # destination): only _derive writes them.
        self.base_rto = self.rto = INITIAL_RTO_S
        self.pto: float | None = None
        self._derive()

    @property
    def floor(self) -> float:
        return self._floor

    @property
    def ceiling(self) -> float:
        return self._ceiling

    def _derive(self) -> None:
        """base_rto, rto and pto from srtt, rttvar and the backoff (after any change of them)."""
        srtt = self.srtt
        raw = INITIAL_RTO_S if srtt is None else srtt + max(GRANULARITY_S, 4 * self.rttvar)
        self.base_rto = min(self._ceiling, max(self._floor, raw))
        shift = self._shift
        self.rto = min(self._ceiling, self.base_rto * BACKOFF**shift if shift else self.base_rto)
        self.pto = None if srtt is None else min(self.rto, max(2 * srtt, GRANULARITY_S))

    def sample(self, rtt_s: float) -> None:
        """Feed one round-trip measurement of a first transmission (seconds, >= 0)."""
        r = max(0.0, rtt_s)
        self.latest = r
        self.min = min(self.min, r)
        self.samples += 1
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self._shift = 0
        self._derive()

    def progress(self) -> None:
        """New data was acknowledged: end the timeout backoff."""
        if self._shift:
            self._shift = 0
            self._derive()

    def timeout(self) -> None:
        """The retransmission timer fired: back off (x1.5, capped)."""
        shift = min(self._shift + 1, MAX_BACKOFF_SHIFT)
        if shift != self._shift:
            self._shift = shift
            self._derive()

    @property
    def backoff_shift(self) -> int:
        """Consecutive timeouts since the last progress."""
        return self._shift
