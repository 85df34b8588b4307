"""`TrafficRate`: whether a transport's datagrams move often enough for its reader to poll after
them (`transport.poll_after_io_us`, see transport.udp). Sans-IO: the caller passes `now`.

Events are counted in buckets of `bucket_s`, each starting at the first event after the last
one ended. Traffic is busy while the bucket before the current one (if it ended just before)
or the current one so far had at least `min_events`: an exchange of requests, not the sparse
heartbeats of an idle cloud. After a bucket with no event at all the past no longer counts.
"""

from __future__ import annotations

import math


class TrafficRate:
    __slots__ = ("_bucket_s", "_events", "_last_busy", "_min", "_start")

    def __init__(self, bucket_s: float, min_events: int) -> None:
        self._bucket_s, self._min = bucket_s, min_events
        self._events = 0  # in the current bucket
        self._start = -math.inf  # of the current bucket
        self._last_busy = False  # the bucket just before the current one had min_events

    def moved(self, now: float) -> None:
        """Datagrams moved at `now` (a send, or a reader turn that read or sent)."""
        if now - self._start >= self._bucket_s:  # a new bucket: was the one ending busy?
            self._last_busy = (self._events >= self._min
                               and now - self._start < 2 * self._bucket_s)  # and just before?
            self._start, self._events = now, 0
        self._events += 1

    def busy(self, now: float) -> bool:
        """Whether datagrams move often enough at `now` to poll after them."""
        if now - self._start >= 2 * self._bucket_s:
            return False  # a quiet bucket came between: whatever the last one was
        return self._last_busy or self._events >= self._min
