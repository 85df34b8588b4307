"""What the dashboard shows, derived from successive status polls: pure, clock passed in.

`CloudTimeline.add(now, rows)` takes one poll (the rows of actors.status.query_status, one per
configured node, "unreachable" for a node that did not answer) at wall-clock time `now` (s);
`snapshot(now)` returns the JSON-ready state of docs/json.md (`dashboard`). Only the last
`window_s` seconds are kept.

Rules:
- A node's state is the poll's: "up", "down" (a simulated failure: it holds the token and said
  so), "unreachable" (no answer within the poll's timeout), or "syncing" (up, but still copying a
  peer's state). Each stretch of a state other than "up" is a period [start, end) on the node's
  row; it begins at the first poll that saw it and ends at the first poll that did not.
- A node that answers with another pid than before was restarted. If no poll saw it away, the
  gap between the last poll with the old pid and the first with the new one becomes a period
  "restarted", so a restart always shows on the timeline. Restarts are counted and logged.
- The token holder is the node that says it holds the token; if none does, the holder most of
  the answering nodes name; 0 when nobody knows (failures off, or no answer). Each holder is a
  segment; a change of holder is a "token move" event.
- A node's pid is the last one it told (kept while it is unreachable, 0 before its first answer).
- Requests per second per node: the growth of its `served` counter over the last
  `rate_window_s`, with restarts handled (a counter that went back, or a new pid, restarts from
  0). A poll without an answer adds a gap (null) to the node's series.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]
MAX_EVENTS = 50


@dataclass(slots=True)
class Period:
    node: int
    state: str  # "down", "unreachable", "syncing", "restarted"
    start: float
    end: float | None = None  # None: still going on

    def json(self) -> dict[str, Any]:
        return {"node": self.node, "state": self.state, "start": self.start, "end": self.end}


@dataclass(slots=True)
class Segment:
    node: int  # token holder (0 = unknown)
    start: float
    end: float | None = None

    def json(self) -> dict[str, Any]:
        return {"node": self.node, "start": self.start, "end": self.end}


@dataclass(slots=True)
class NodeTrack:
    """What the timeline remembers of one node between polls."""

    row: Row
    state: str = "unknown"
    since: float = 0.0
    pid: int = 0
    served: int = 0
    total: int = 0  # requests served since the dashboard started (restart-proof)
    last_seen: float = 0.0  # last poll with an answer
    restarts: int = 0


def node_state(row: Row) -> str:
    if row["state"] == "up" and row.get("syncing"):
        return "syncing"
    return str(row["state"])


class CloudTimeline:
    """The dashboard's memory of the last minutes. Not thread-safe: the caller serialises."""

    def __init__(self, node_ids: list[int], *, window_s: float = 300.0,
                 rate_window_s: float = 2.0) -> None:
        if window_s <= 0 or rate_window_s <= 0:
            raise ValueError("timeline: window_s and rate_window_s must be > 0")
        self.window_s = window_s
        self.rate_window_s = rate_window_s
        self.nodes = {i: NodeTrack(row={"id": i, "state": "unknown"}) for i in node_ids}
        self.periods: list[Period] = []
        self.token: list[Segment] = []
        self.samples: dict[int, deque[tuple[float, int | None]]] = {i: deque() for i in node_ids}
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.polls = 0
        self.answering = 0
        self.last_poll = 0.0
        self.first_poll = 0.0

    # ---- input ------------------------------------------------------------------------------
    def add(self, now: float, rows: list[Row]) -> None:
        """One poll: a row per configured node (rows of unknown nodes are ignored)."""
        by_id = {r["id"]: r for r in rows if r.get("id") in self.nodes}
        if self.polls == 0:
            self.first_poll = now
        for node_id, track in self.nodes.items():
            row = by_id.get(node_id, {"id": node_id, "state": "unreachable"})
            self._node(now, track, row)
        self.answering = sum(1 for r in by_id.values() if r["state"] != "unreachable")
        self._token(now, by_id)
        self.polls += 1
        self.last_poll = now
        self._prune(now)

    def _node(self, now: float, track: NodeTrack, row: Row) -> None:
        node_id = int(row["id"])
        state = node_state(row)
        answered = state != "unreachable"
        pid = int(row.get("pid") or 0)
        restarted = answered and pid != 0 and track.pid != 0 and pid != track.pid
        if restarted:
            track.restarts += 1
            self._event(now, f"node {node_id} restarted: pid {track.pid} -> {pid}")
            if track.state == "up" and state == "up":  # no poll saw it away
                self.periods.append(Period(node_id, "restarted", track.last_seen, now))
        if state != track.state:
            self._close(node_id, now)
            if state not in ("up", "unknown"):
                self.periods.append(Period(node_id, state, now))
            if track.state != "unknown" or state != "up":
                self._event(now, f"node {node_id}: {track.state} -> {state}")
            track.state, track.since = state, now
        if answered:
            served = int(row.get("served", 0))
            reset = restarted or served < track.served
            track.total += served if reset else served - track.served
            track.served, track.last_seen = served, now
            track.pid = pid or track.pid
            track.row = row
        else:
            track.row = {**track.row, "state": "unreachable"}
        self.samples[node_id].append((now, track.total if answered else None))

    def _close(self, node_id: int, now: float) -> None:
        for p in self.periods:
            if p.node == node_id and p.end is None:
                p.end = now

    def _token(self, now: float, rows: dict[int, Row]) -> None:
        holder = self.holder_of(rows)
        holder = holder if holder in self.nodes else 0  # a node outside the config: unknown
        current = self.token[-1] if self.token else None
        if current is not None and current.node == holder:
            return
        if current is not None:
            current.end = now
            self._event(now, f"token: node {current.node or '?'} -> node {holder or '?'}")
        self.token.append(Segment(holder, now))

    @staticmethod
    def holder_of(rows: dict[int, Row]) -> int:
        up = [r for r in rows.values() if r["state"] != "unreachable"]
        claims = sorted(int(r["id"]) for r in up if r.get("token"))
        if claims:
            return claims[0]
        named = Counter(int(r.get("token_holder") or 0) for r in up)
        named.pop(0, None)
        return named.most_common(1)[0][0] if named else 0

    def _event(self, now: float, text: str) -> None:
        self.events.append({"t": now, "text": text})

    def _prune(self, now: float) -> None:
        edge = now - self.window_s
        self.periods = [p for p in self.periods if p.end is None or p.end >= edge]
        self.token = [s for s in self.token if s.end is None or s.end >= edge]
        for series in self.samples.values():
            while series and series[0][0] < edge:
                series.popleft()
        while self.events and self.events[0]["t"] < edge:
            self.events.popleft()

    # ---- output -----------------------------------------------------------------------------
    def rate_at(self, node_id: int, i: int) -> float | None:
        """Requests per second of `node_id` at its i-th sample (None: no answer then)."""
        series = self.samples[node_id]
        t, total = series[i]
        if total is None:
            return None
        for j in range(i - 1, -1, -1):
            t0, total0 = series[j]
            if total0 is not None and (t - t0 >= self.rate_window_s or j == 0):
                return (total - total0) / (t - t0) if t > t0 else 0.0
        return 0.0

    def snapshot(self, now: float) -> dict[str, Any]:
        """The dashboard's JSON state (docs/json.md, `dashboard`)."""
        nodes: list[dict[str, Any]] = []
        for node_id, track in self.nodes.items():
            r = track.row
            rates = self.samples[node_id]
            nodes.append({
                "id": node_id, "state": track.state, "since": track.since,
                "pid": track.pid,
                "majority": bool(r.get("majority", False)), "served": int(r.get("served", 0)),
                "cached": int(r.get("cached", 0)), "users": int(r.get("users", 0)),
                "pending": int(r.get("pending", 0)), "token": bool(r.get("token", False)),
                "rate": (self.rate_at(node_id, len(rates) - 1) or 0.0) if rates else 0.0,
                "restarts": track.restarts,
            })
        up = [n for n in nodes if n["state"] in ("up", "syncing")]
        return {
            "now": now, "window_s": self.window_s, "polls": self.polls,
            "started": self.first_poll, "last_poll": self.last_poll,
            "answering": self.answering,
            "holder": self.token[-1].node if self.token else 0,
            "users": max((n["users"] for n in up), default=0),
            "nodes": nodes,
            "periods": [p.json() for p in self.periods],
            "token": [s.json() for s in self.token],
            "rates": [{"node": i, "points": [[t, self.rate_at(i, k)]
                                             for k, (t, _) in enumerate(s)]}
                      for i, s in self.samples.items()],
            "events": list(self.events),
        }
