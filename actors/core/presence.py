"""The client's directory session: joined, heartbeats, the check that the cloud still knows us, rejoin.

Pure core: the client session actor passes `now` (monotonic seconds) and what it learnt, and
carries out the effects: `Heartbeat` (send ClientHeartbeat to every node), `Check` (ask each
node for the directory: one DirectoryQuery call per node), `Rejoin` (join again with the
client's own keys), `Notice` (one line for the user).

States (`session`): `none` (never joined, or left) -> `joining` -> `joined`; `joined` -> `lost`
(the nodes no longer know this session) -> `rejoining` -> `joined`. Independently `reachable`
says whether the cloud answered the latest check or join.

Rules:
- While joined, every `heartbeat_s`: a heartbeat to every node, and a check round: every node is
  asked for the directory. A node that lists this user with this session's address and token
  digest (actors.core.directory.token_digest: the digest binds user, address and join) "lists"
  us; a node that answers without such an entry does not. The nodes keep the directory
  replicated, so one node's answer may be stale (a node back from a failure, not yet synced):
  the session counts as lost only when a majority of the configured nodes answered without us
  (expiry after a pause, a cloud restart). Then the client joins again at once, and again at
  every period until a join succeeds.
- A check round (or a rejoin) in which no node answered anything makes the cloud `unreachable`:
  one notice when that starts, one when it ends (`the cloud answers again`, or `rejoined the
  cloud` when the session had to be joined again). Never one per retry.
- `connection()` is what the toolbar shows: `not joined`, `joining`, `joined`, `rejoining`,
  `cloud unreachable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.core.directory import token_digest
from codec.messages import DirectoryReply

Addr = tuple[str, int]

UNREACHABLE_NOTICE = "the cloud does not answer: commands will fail until it is back (see the toolbar)"
BACK_NOTICE = "the cloud answers again"
REJOINED_NOTICE = "rejoined the cloud"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    token: bytes


@dataclass(frozen=True, slots=True)
class Check:
    round: int
    nodes: tuple[Addr, ...]


@dataclass(frozen=True, slots=True)
class Rejoin:
    pass


@dataclass(frozen=True, slots=True)
class Notice:
    text: str


PresenceEffect = Heartbeat | Check | Rejoin | Notice


@dataclass
class _Round:
    number: int
    waiting: set[Addr]
    listed: set[Addr] = field(default_factory=set)
    unlisted: set[Addr] = field(default_factory=set)


class Presence:
    """One client's directory session (see the module docstring). One thread only."""

    def __init__(self, user: str, nodes: list[Addr], heartbeat_s: float, *,
                 address: Addr | None = None) -> None:
        self.user = user
        self.nodes = tuple(nodes)
        self.heartbeat_s = heartbeat_s
        self.address = address  # None or a wildcard host: only the port is compared
        self.session = "none"
        self.reachable: bool | None = None  # None: not known yet
        self.token: bytes | None = None
        self._next = float("inf")
        self._round: _Round | None = None
        self._rounds = 0
        self._rejoin_error = ""

    @property
    def majority(self) -> int:
        return len(self.nodes) // 2 + 1

    def connection(self) -> str:
        if self.session in ("none", "left"):
            return "not joined"
        if self.reachable is False:
            return "cloud unreachable"
        if self.session in ("lost", "rejoining"):
            return "rejoining"
        return self.session  # joining | joined

    # ---- inputs -------------------------------------------------------------------------------
    def joining(self) -> None:
        if self.session in ("none", "left"):
            self.session = "joining"

    def joined(self, token: bytes, now: float) -> list[PresenceEffect]:
        """A join succeeded with `token` (first join or rejoin). After a leave: ignored."""
        if self.session == "left":
            return []
        notices: list[PresenceEffect] = []
        if self.session in ("lost", "rejoining"):
            notices.append(Notice(REJOINED_NOTICE))
        self.session = "joined"
        self.token = token
        self.reachable = True
        self._rejoin_error = ""
        self._round = None
        self._next = now + self.heartbeat_s
        return notices

    def join_failed(self, code: str, message: str, now: float) -> list[PresenceEffect]:
        """A join failed: first join -> back to none; a rejoin -> try again next period."""
        if self.session == "joining":
            self.session = "none"
            return []
        if self.session != "rejoining":
            return []
        self.session = "lost"
        self._next = now + self.heartbeat_s
        if code in ("unreachable", "no_cloud"):
            return self._unreachable()
        out: list[PresenceEffect] = []
        if self.reachable is False:
            self.reachable = True
        if message != self._rejoin_error:  # a refusal (already online, keys changed): once
            self._rejoin_error = message
            out.append(Notice(f"cannot rejoin the cloud yet: {message}"))
        return out

    def leaving(self) -> bytes | None:
        """The session ends: the token to send Leave with (None: nothing to leave)."""
        token, self.token = self.token, None
        self.session = "left"
        self._next = float("inf")
        self._round = None
        return token

    def tick(self, now: float) -> list[PresenceEffect]:
        if now < self._next:
            return []
        if self.session == "joined" and self.token is not None:
            self._next = now + self.heartbeat_s
            self._rounds += 1
            self._round = _Round(self._rounds, set(self.nodes))
            return [Heartbeat(self.token), Check(self._rounds, self.nodes)]
        if self.session == "lost":
            self.session = "rejoining"
            self._next = float("inf")  # join_failed / joined set the next time
            return [Rejoin()]
        return []

    def check_answer(self, number: int, node: Addr, reply: DirectoryReply | None,
                     now: float) -> list[PresenceEffect]:
        """One node's answer to check round `number` (None: it did not answer)."""
        r = self._round
        if r is None or r.number != number or node not in r.waiting or self.session != "joined":
            return []
        r.waiting.discard(node)
        if reply is not None:
            (r.listed if self._lists_me(reply) else r.unlisted).add(node)
        if len(r.unlisted) >= self.majority:
            self._round = None
            self.session = "lost"
            self.token = None
            self._next = now  # rejoin at the next tick
            self.reachable = True  # it answered; `rejoined the cloud` will say the rest
            return []
        if r.waiting:
            return []
        self._round = None
        if not r.listed and not r.unlisted:
            return self._unreachable()
        if self.reachable is False:
            self.reachable = True
            return [Notice(BACK_NOTICE)]
        self.reachable = True
        return []

    # ---- helpers ------------------------------------------------------------------------------
    def _lists_me(self, reply: DirectoryReply) -> bool:
        if self.token is None:
            return False
        digest = token_digest(self.token)
        for e in reply.users:
            if e.user != self.user or e.token_digest != digest:
                continue
            if self.address is None:
                return True
            host, port = self.address
            if e.port == port and (host in ("0.0.0.0", "::", "") or e.host == host):
                return True
        return False

    def _unreachable(self) -> list[PresenceEffect]:
        if self.reachable is False:
            return []
        self.reachable = False
        return [Notice(UNREACHABLE_NOTICE)]
