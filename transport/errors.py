"""Exceptions of the transport package: one base, `TransportError`.

"Caller misused us" (`MessageRejected`, `SendError(kind="rejected")`) is kept apart from "peer sent
garbage" (`FrameError`, which never leaves the package: bad datagrams are counted and dropped).
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every exception raised by the transport package."""


class FrameError(TransportError):
    """A datagram does not parse or fails its checksum/tag. Caught inside the endpoint and counted."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageRejected(TransportError):
    """`Endpoint.send` refused a message before sending anything (too large for its type, unknown
    type, id space exhausted). Raised to the caller; nothing went on the wire."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SendError(TransportError):
    """A send future failed. `kind` is one of:

    - "unacknowledged": every fragment went out at least once but the peer never acknowledged the
      whole message before the deadline: the message may have been delivered (outcome unknown).
      Retry with the same request/update id at the layer above.
    - "undelivered": some fragment never left this host (window or anti-amplification budget never
      opened), so the peer cannot have the message.
    - "rejected": refused locally before sending (too large for its type, transport stopped).
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
