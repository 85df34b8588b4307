"""When to restart a node process that exited: a growing back-off for one that keeps crashing.

Pure: the embedded cloud's supervisor passes `now` (monotonic seconds) in and gets decisions out.

Rules, per node:
- The first exit, or an exit after running at least `stable_s`, is step 0: restart after
  `base_s` (one crash after a long run is not a crash loop).
- An exit sooner than `stable_s` after the last start is one more crash in a row: the step grows
  by one and the delay is `base_s * factor ** step`, capped at `max_s`; at the cap the step
  stops growing.
- `Restart.announce` is True when the step differs from the last one announced for that node,
  so the supervisor prints one line per back-off step, not one per crash: a node crashing at the
  cap is announced once, then restarted every `max_s` silently.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Restart:
    """Restart the node at `at` (monotonic s), `delay_s` after its exit; `step` 0 = no back-off."""

    node: int
    at: float
    delay_s: float
    step: int
    announce: bool


class RestartBackoff:
    """Back-off state of every node of one cloud."""

    def __init__(self, *, base_s: float = 1.0, factor: float = 2.0, max_s: float = 30.0,
                 stable_s: float = 10.0) -> None:
        if base_s <= 0 or factor < 1 or max_s < base_s or stable_s <= 0:
            raise ValueError("back-off: need base_s > 0, factor >= 1, max_s >= base_s, "
                             "stable_s > 0")
        self.base_s = base_s
        self.factor = factor
        self.max_s = max_s
        self.stable_s = stable_s
        self._started: dict[int, float] = {}
        self._step: dict[int, int] = {}
        self._announced: dict[int, int] = {}

    def started(self, node: int, now: float) -> None:
        """The node's process was (re)started at `now`."""
        self._started[node] = now

    def exited(self, node: int, now: float) -> Restart:
        """The node's process exited at `now`: when to start it again."""
        if now - self._started.get(node, now) >= self.stable_s:
            self._step.pop(node, None)  # it had been running well: start over
            self._announced.pop(node, None)
        prev = self._step.get(node)
        step = 0 if prev is None else prev + 1
        if prev is not None and self._delay(prev) >= self.max_s:
            step = prev  # at the cap: the step stops growing
        self._step[node] = step
        announce = self._announced.get(node) != step
        self._announced[node] = step
        delay = self._delay(step)
        return Restart(node=node, at=now + delay, delay_s=delay, step=step, announce=announce)

    def _delay(self, step: int) -> float:
        return float(min(self.max_s, self.base_s * self.factor ** step))

    def step(self, node: int) -> int:
        """The node's current back-off step (0 = none)."""
        return self._step.get(node, 0)
