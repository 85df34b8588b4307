"""How many log lines one cause may write (pure: `now` passed in).

Every refusal a node counts is also worth a log line, but a flood of bad datagrams must not turn
into a flood of lines (RELIABILITY: 60,000 garbage heartbeats wrote 3.5 MB of log in 15 s). Rule:
per cause, at most `burst` lines in each window of `window_s` seconds; the lines left out are
counted, and the first line of the cause after its window ends (or `flush`) says how many were left
out. The counters themselves are never limited: callers count every refusal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class _Window:
    start: float
    written: int = 0
    left_out: int = 0


@dataclass
class LogLimiter:
    burst: int = 5
    window_s: float = 10.0
    _windows: dict[str, _Window] = field(default_factory=dict)

    def admit(self, cause: str, now: float) -> tuple[bool, int]:
        """(write this line?, lines of this cause left out in the window that just ended, to be
        said with it). Each call is one line the caller would like to write."""
        w = self._windows.get(cause)
        if w is None or now - w.start >= self.window_s:
            left_out = w.left_out if w is not None else 0
            self._windows[cause] = _Window(start=now, written=1)
            return True, left_out
        if w.written < self.burst:
            w.written += 1
            return True, 0
        w.left_out += 1
        return False, 0

    def flush(self, now: float) -> list[tuple[str, int]]:
        """Causes whose window ended with lines left out: (cause, how many); they are reset.
        Callers write one summary line each (so a flood that stops is still summed up)."""
        out: list[tuple[str, int]] = []
        if not self._windows:  # called on every tick of every actor: nothing logged lately
            return out
        for cause, w in list(self._windows.items()):
            if now - w.start >= self.window_s:
                if w.left_out:
                    out.append((cause, w.left_out))
                del self._windows[cause]
        return out
