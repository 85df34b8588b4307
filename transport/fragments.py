"""The pure fragment protocol: `Sender` and `Receiver` state machines and their events.

No sockets, threads or clocks: both are handed datagram fields and the time and return what to
send and what was delivered. `transport.endpoint.Endpoint` combines them with framing and
authentication for one socket; see `transport/sender.py` and `transport/receiver.py` for the rules.
"""

from transport.endpoint import Delivered, Endpoint, Event
from transport.receiver import REPLAY_WINDOW, AckOrder, Receiver, ReplayWindow
from transport.sender import Outgoing, SendDone, Sender, SendFailed

__all__ = [
    "REPLAY_WINDOW",
    "AckOrder",
    "Delivered",
    "Endpoint",
    "Event",
    "Outgoing",
    "Receiver",
    "ReplayWindow",
    "SendDone",
    "SendFailed",
    "Sender",
]
