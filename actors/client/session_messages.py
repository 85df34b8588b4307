"""The messages `ClientSessionActor` takes from other threads, and what it publishes.

Callers: actors.client.cloud and actors.client.client_session (they make the futures and wait),
tests (they drive the actor with these directly). See actors.client.session_actor.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass

import pykka

from actors.client.scope import CancelScope as Scope
from codec.messages import JoinReply, Message

Addr = tuple[str, int]
NO_CLOUD_S = 3.0  # at join: no node acknowledged or answered anything within this: no cloud


@dataclass(frozen=True, slots=True)
class CallResult:
    reply: Message
    started: float  # clock() units
    acks: dict[Addr, float]  # first acknowledgement per target, clock() units
    replies: tuple[Message, ...] = ()  # every target's reply (quorum calls)


@dataclass(frozen=True, slots=True)
class StartCall:
    rid: str
    build: Callable[[int], Message]
    targets: tuple[Addr, ...]
    future: pykka.Future[CallResult]
    deadline_s: float | None = None
    hold_s: float | None = None
    silent_s: float | None = None
    notices: queue.SimpleQueue[str] | None = None
    scope: Scope | None = None
    quorum: int = 1
    # an offered request (EncryptOffer): the message a node's FetchPayload(attempt) gets back
    fetch: Callable[[int], Message] | None = None


@dataclass(frozen=True, slots=True)
class CancelScope:
    scope: Scope


@dataclass(frozen=True, slots=True)
class JoinCloud:
    future: pykka.Future[JoinReply]
    silent_s: float | None = NO_CLOUD_S
    notices: queue.SimpleQueue[str] | None = None
    rid: str | None = None  # drawn by the caller (a state.db write); None: the actor draws it


@dataclass(frozen=True, slots=True)
class LeaveCloud:
    future: pykka.Future[None]


@dataclass(frozen=True, slots=True)
class UseToken:
    """Adopt a session token got by a Join sent by hand (tests that play a modified client)."""

    token: bytes


@dataclass(frozen=True, slots=True)
class Tick:
    pass


class SessionState:
    """What the session shows (toolbar, `token`): written by the actor only, read by anyone."""

    def __init__(self) -> None:
        self.connection = "not joined"
        self.token: bytes | None = None


__all__ = [
    "NO_CLOUD_S",
    "CallResult",
    "CancelScope",
    "JoinCloud",
    "LeaveCloud",
    "SessionState",
    "StartCall",
    "Tick",
    "UseToken",
]
