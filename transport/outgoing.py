"""State of the messages being sent and of their destinations (owned by `transport.sender`)."""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass

from transport.frames import fragment_count
from transport.reorder import Reorder
from transport.rtt import RttEstimator

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SendDone:
    """The peer acknowledged the whole message of `handle`."""

    handle: int


@dataclass(frozen=True, slots=True)
class SendFailed:
    """The send of `handle` failed: `kind` "unacknowledged" / "undelivered" (see SendError)."""

    handle: int
    kind: str
    reason: str


class Outgoing:
    """One message being sent (read by the endpoint to build its DATA datagrams)."""

    __slots__ = ("acked", "addr", "body", "count", "created", "cum", "deadline_s", "epoch",
                 "first_sent", "first_seq", "fs", "handle", "last_progress", "last_seq", "msg_id",
                 "n_acked", "next_new", "prompt", "queued", "retx", "tx", "type_code")  # fmt: skip

    def __init__(self, handle: int, addr: Addr, type_code: int, epoch: int, msg_id: int,
                 body: bytes, fs: int, now: float, deadline_s: float,
                 prompt: bool = False) -> None:  # fmt: skip
        self.handle = handle
        self.addr = addr
        self.type_code = type_code
        self.epoch = epoch
        self.msg_id = msg_id
        self.body = memoryview(body)
        self.fs = fs  # fragment size: the destination's (Path.fs), fixed for the message
        count = self.count = fragment_count(len(body), fs)
        self.acked = bytearray((count + 7) >> 3)  # bit i: fragment i acknowledged
        self.n_acked = 0
        self.tx = bytearray(count)  # transmissions, capped at 255
        self.first_seq = array("q", bytes(8 * count))
        self.first_sent = array("d", bytes(8 * count))
        self.last_seq = array("q", bytes(8 * count))
        self.next_new = 0
        self.retx: deque[int] = deque()
        self.queued = False
        self.created = now
        self.last_progress = now
        self.deadline_s = deadline_s
        self.cum = 0
        self.prompt = prompt  # the caller waits on the outcome: no ACK delay (sender.send)

    def is_acked(self, i: int) -> bool:
        return bool(self.acked[i >> 3] >> (i & 7) & 1)

    def has_work(self) -> bool:
        return bool(self.retx) or self.next_new < self.count


class Path:
    """One destination: its RTT estimator, fragments in flight (oldest first), the queue of
    messages with something to send, the transmission counter echoed by ACKs, and the messages
    whose ACK may come up to the ACK delay late (their timers allow for it); `fs` and `window`
    are the fragment size and the window (fragments in flight) its messages use."""

    __slots__ = ("addr", "fs", "inflight", "last_active", "last_progress", "lazy", "probes",
                 "queue", "reorder", "rtt", "seq", "window")  # fmt: skip

    def __init__(self, addr: Addr, rtt: RttEstimator, fs: int, window: int) -> None:
        self.addr = addr
        self.rtt = rtt
        self.fs = fs
        self.window = window
        self.inflight: dict[tuple[int, int], float] = {}  # (handle, index) -> timer base
        self.queue: deque[Outgoing] = deque()
        self.seq = 0
        self.last_progress = float("-inf")
        self.last_active = float("-inf")  # last transmission or acknowledgement of new data
        self.probes = 0  # tail probes since then
        self.lazy: set[int] = set()  # one-fragment messages whose ACK the peer may hold back
        self.reorder = Reorder()
