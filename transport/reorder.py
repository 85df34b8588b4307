"""Reordering tolerance of the sender's loss detection, per destination (after RACK, RFC 8985 6.2).

The sender's rule: a fragment missing from an ACK that a later transmission triggered is lost. On
a path that reorders, that rule takes fragments that are only late for lost, and each costs a
spurious retransmission (a shuffled path at 10 % loss: 1.9 data datagrams per fragment). So a hole
is declared lost only a reordering window after the ACK that showed it (less the time by which it
was sent before the trigger), unless an ACK shows it held meanwhile.

The window is 0 until the path shows reordering (on a FIFO path a hole is a loss, and waiting
costs), then at least min_rtt / 4 (RACK's default) and what the path taught, at most srtt:
- The receiver's ACKs say how late it saw a fragment come after a later transmission (it knows
  the seqs); it also acknowledges at once a late fragment that an earlier ACK reported missing.
  So the sender learns from the first ACKs of a transfer, before it has wasted a retransmission.
- A suspected hole that an ACK shows held (it was late, not lost): if it took more than half the
  window, the window doubles. On a FIFO path this never happens: there a hole is a loss.
- A fragment declared lost that an ACK shows held although its retransmission cannot explain it
  (there is none yet, or the ACK's trigger was sent before it): the window doubles, and covers
  at least the time by which that declaration came too early.
The echoed seq makes the last two exact. A suspect whose time comes after the window has grown
waits for the new window. DECAY_AFTER declarations in a row with no evidence halve what was learned.

Pure state: `transport.sender` feeds it and carries out its verdicts. Times are seconds.
"""

from __future__ import annotations

import heapq

Key = tuple[int, int]  # (message handle, fragment index)
DECAY_AFTER = 64  # fragments declared lost with no evidence before the learned window halves
MAX_MARKS = 1 << 16  # suspected and declared-lost fragments remembered per destination


class Reorder:
    """The reordering window of one destination, its suspected and declared-lost fragments."""

    __slots__ = ("clean", "heap", "learned", "marks")

    def __init__(self) -> None:
        self.learned = 0.0  # window taught by evidence (seconds)
        self.clean = 0  # declarations since the last evidence
        # suspected or declared lost: key -> (seq of that transmission, base time, declared,
        # seq of the next transmission or -1); base: when a suspect's window starts, or when
        # the fragment was declared lost
        self.marks: dict[Key, tuple[int, float, bool, int]] = {}
        self.heap: list[tuple[float, int, int, int]] = []  # suspects: (due, handle, index, seq)

    def window(self, min_rtt: float) -> float:
        """The reordering window now (seconds); `min_rtt` is inf before any sample. 0 until the
        path has shown reordering: on a FIFO path a hole is a loss, and waiting costs."""
        if not self.learned:
            return 0.0
        return max(self.learned, min_rtt / 4 if min_rtt != float("inf") else 0.0)

    def suspect(self, key: Key, seq: int, base: float, due: float) -> None:
        """Hole `key` (transmission `seq`) is lost at `due` (base + window) unless acknowledged;
        a hole reported again keeps its first time."""
        m = self.marks.get(key)
        if m is None or m[0] != seq:
            self._mark(key, (seq, base, False, -1))
            heapq.heappush(self.heap, (due, key[0], key[1], seq))

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float, window: float) -> list[tuple[Key, int]]:
        """Suspects whose window (the current one) has passed: (key, seq). The caller declares
        each lost if that transmission is still the last one and still unacknowledged."""
        out = []
        heap, marks = self.heap, self.marks
        while heap and heap[0][0] <= now:
            _, handle, i, seq = heapq.heappop(heap)
            key = (handle, i)
            m = marks.get(key)
            if m is None or m[0] != seq or m[2] or m[3] >= 0:
                continue  # acknowledged, declared or sent again meanwhile
            due = m[1] + window
            if due > now:  # the window has grown since
                heapq.heappush(heap, (due, handle, i, seq))
                continue
            out.append((key, seq))
        return out

    def declared_lost(self, key: Key, seq: int, now: float) -> None:
        """Transmission `seq` of `key` was declared lost at `now` (queued for retransmission)."""
        self._mark(key, (seq, now, True, -1))
        self.clean += 1
        if self.learned and self.clean >= DECAY_AFTER:
            self.clean = 0
            self.learned /= 2

    def reported(self, late: float, srtt: float) -> None:
        """The receiver saw a fragment come `late` seconds after a later transmission."""
        if late > self.learned:
            self.learned = min(srtt, late) if srtt else late

    def sent_again(self, key: Key, seq: int) -> None:
        """Marked fragment `key` left again as transmission `seq` (the first such one counts)."""
        m = self.marks[key]
        if m[3] < 0:
            self.marks[key] = (m[0], m[1], m[2], seq)

    def acked(self, key: Key, trigger: int, now: float, srtt: float, window: float) -> bool:
        """Marked fragment `key` was newly acknowledged by an ACK that transmission `trigger`
        caused. True if that was evidence of reordering (the window may have grown); the
        caller only asks for keys in `marks`."""
        _, base, declared, again = self.marks.pop(key)
        if 0 <= again <= trigger:
            return False  # a later transmission may be what arrived: no evidence
        if declared:
            self.learned = min(srtt, max(2 * window, now - base))
        elif now - base > window / 2:
            self.learned = min(srtt, 2 * window)
        self.clean = 0
        return True

    def forget(self, handle: int) -> None:
        """The message `handle` finished: drop its marks (its heap entries expire unused)."""
        for key in [k for k in self.marks if k[0] == handle]:
            del self.marks[key]

    def clear(self) -> None:
        """Nothing is in flight to this destination: no suspect is left."""
        self.heap.clear()

    def _mark(self, key: Key, value: tuple[int, float, bool, int]) -> None:
        marks = self.marks
        if key not in marks and len(marks) >= MAX_MARKS:
            del marks[next(iter(marks))]
        marks[key] = value
