"""The directory of service: who is online, at which address, with which session token.

Pure core (no I/O): the node actor passes wall-clock `now` (seconds since the Unix epoch: entries
are replicated between nodes, so expiry must not depend on one process's monotonic clock).

Agreement on the session token without a round of messages: every node derives it from the
same inputs, `HMAC(directory key, user | host:port | join request id)`, so all nodes that see a
Join return the same token and the client may take the first answer. The directory stores only
a digest of the token (sha256, 16 bytes): a peer proves who it is by presenting the token, and
whoever reads the directory learns the digest, never the token.

Rules:
- Join from the address the user is already registered at: refreshed (a client that rejoins).
- Join while the user is online from another address: refused (`AlreadyOnline`), unless that
  entry has expired or the node found that session dead (it probes the old address first:
  actors.node.directory_actor) and joins with `stale`, that entry: it replaces that session
  only, never one that took its place meanwhile.
- Heartbeat with the right token: expiry pushed to now + ttl. Leave with the right token: removed.
- Keys: a user's public keys are pinned at the first join (trust on first use, kept on disk by
  the node); a join or replicated entry with other keys is refused (`KeysChanged`). Pins travel
  with a state sync (`pin_list`, `vote_pins`): a node that lost its disk takes the peers' pins
  while it syncs from a majority, before it accepts any join, so it cannot pin an impostor's
  keys. Each peer's last pin of a user is its vote, this node's own pin is one more; of the
  `nodes` configured nodes, keys that a majority pins become this node's pin (persisted), in
  place of its own if need be (an impostor pinned here while this node's disk was new: its
  session here ends). Votes
  that disagree with no majority for any keys dispute the user (`disputed`): joins, replicated
  entries, requests and forgets of that user are refused (`PinDisputed`) until a majority
  agrees. Uncontested keys (one peer's pin, no other votes) are taken as before. A pin taken
  from votes or from a peer's replicated entry is no vote of this node's (`taken`), or one peer
  would count twice; after a
  restart it is read from disk like a pin of its own (the disk does not say where it came from).
- A peer's forget (the addressee confirmed updates) is honoured only from a session this node
  accepted too (`has_session`): a session a single node accepted cannot wipe the others' copies.
- Forgotten-id tombstones (issue 15 item 3, decided: not a defect). A node makes a tombstone only
  when the addressee confirms from a session this node accepted (ConfirmUpdates, `check`) or a
  peer's ForgetUpdates names such a session (`has_session`), and only for ids addressed to that
  user (PendingUpdateActor `_forget_addressed`). A StateSync's tombstones are merged without a
  session check because they are copies: only the configured nodes, HMAC-authenticated, send a
  StateSync, and every tombstone any of them holds was first made under those two rules, so each
  one stands for a confirmation its addressee made from a session the node that made it had
  accepted (tests/test_node_actors.py shows the rules on one node). What that rests on is that
  no node accepts a session of keys the majority does not pin (the votes above).
- One session per user, agreed by a majority: a node holds at most one live session of a user,
  the first it accepted (by a Join, or by a peer's replicated entry when it held none). A peer's
  entry of another live session from another address does not replace it: it is kept aside as a
  rival. The client counts a join only when a majority of the nodes answered it (a quorum call),
  so of two processes of one user joining at once at most one gets a majority; the other gets
  `already online` from a majority at once. The winner's heartbeat (or request) with its token
  at a node that took the loser's session proves it holds the agreed session: that node then
  takes the rival in place of the loser's (`heartbeat`, `check`).
- Replication: `merge(entry)` keeps, per user, the entry that expires last. A leave travels as
  the entry with `expires == 0`; its token digest is kept as a tombstone for one ttl, so a late
  copy of that session's join (a client's retried Join still in flight after its Leave) or of a
  replicated entry cannot bring it back. `snapshot()` carries the tombstones too, so anti-entropy
  also ends a session at a node that missed its leave.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from codec.messages import UserEntry


class DirectoryError(Exception):
    """A directory operation was refused; the message is for the client."""

    code = "directory"


class AlreadyOnline(DirectoryError):
    code = "already_online"

    def __init__(self, message: str, current: UserEntry | None = None) -> None:
        super().__init__(message)
        self.current = current


class BadToken(DirectoryError):
    code = "bad_token"


class KeysChanged(DirectoryError):
    code = "keys_changed"


class PinDisputed(DirectoryError):
    """The nodes pin different keys for a user and no majority of them agrees (yet)."""

    code = "pin_disputed"


class SessionEnded(DirectoryError):
    """A late copy of a Join (a client retry still in flight) whose session already left."""

    code = "session_ended"


@dataclass(frozen=True, slots=True)
class PinVote:
    """What a peer's pin did (`Directory.vote_pins`): "adopted" (this node had no pin),
    "replaced" (a majority pins other keys than this node did), or "disputed" (votes differ,
    no majority)."""

    user: str
    outcome: str
    peer: int


def token_digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()[:16]


def derive_token(key: bytes, user: str, host: str, port: int, rid: str) -> bytes:
    msg = f"{user}|{host}:{port}|{rid}".encode()
    return hmac.new(key, msg, hashlib.sha256).digest()[:16]


@dataclass
class Directory:
    key: bytes
    ttl_s: float
    entries: dict[str, UserEntry] = field(default_factory=dict)
    tombs: dict[bytes, float] = field(default_factory=dict)  # token digest -> when it left
    left: dict[bytes, UserEntry] = field(default_factory=dict)  # token digest -> leave entry
    pins: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # user -> (sign, box)
    on_pin: Callable[[str, bytes, bytes], None] = lambda user, sign, box: None  # persist a pin
    rivals: dict[str, UserEntry] = field(default_factory=dict)  # user -> another live session
    nodes: int = 1  # configured nodes of the cloud: keys pinned by a majority of them win
    votes: dict[str, dict[int, tuple[bytes, bytes]]] = field(default_factory=dict)  # peer pins
    disputed: set[str] = field(default_factory=set)  # users whose pins no majority agrees on
    taken: set[str] = field(default_factory=set)  # users whose pin came from votes, not a join

    def online(self, now: float) -> list[UserEntry]:
        return sorted((e for e in self.entries.values() if e.expires > now), key=lambda e: e.user)

    def get(self, user: str, now: float) -> UserEntry | None:
        e = self.entries.get(user)
        return e if e is not None and e.expires > now else None

    def join(self, user: str, host: str, port: int, rid: str, sign_key: bytes, box_key: bytes,
             now: float, *, stale: UserEntry | None = None) -> tuple[bytes, UserEntry]:
        """Register a user; returns (token, entry). Raises AlreadyOnline (`.current` is the
        entry in the way) unless the entry in the way is `stale`: the session the caller probed
        and found dead. Another session that took its place meanwhile (a concurrent join that
        replaced the same dead one first) is in the way like any live one: two joins that both
        found one dead session must not both replace it, or this node accepts both."""
        current = self.get(user, now)
        if current is not None and (current.host, current.port) != (host, port) \
                and (stale is None or current.token_digest != stale.token_digest):
            left = int(current.expires - now) + 1
            raise AlreadyOnline(
                f"{user} is already online from {current.host}:{current.port}; if that session "
                f"crashed it expires within {left} s", current)
        self._undisputed(user)
        token = derive_token(self.key, user, host, port, rid)
        if token_digest(token) in self.tombs:
            raise SessionEnded(f"the session of {user} joined by {rid} has already left")
        self._pin(user, sign_key, box_key, refuse=True)
        entry = UserEntry(user=user, host=host, port=port, token_digest=token_digest(token),
                          sign_key=sign_key, box_key=box_key, expires=now + self.ttl_s)
        self.entries[user] = entry
        rival = self.rivals.get(user)
        if rival is not None and rival.token_digest == entry.token_digest:
            del self.rivals[user]
        return token, entry

    def _pin(self, user: str, sign_key: bytes, box_key: bytes, *, refuse: bool) -> bool:
        """Keys are pinned at a user's first join (trust on first use); False/KeysChanged if a
        later join or replicated entry names other keys."""
        pinned = self.pins.get(user)
        if pinned is None:
            if sign_key or box_key:
                self.pins[user] = (sign_key, box_key)
                if not refuse:  # from a peer's replicated entry: a copy of its pin, no vote
                    self.taken.add(user)
                self.on_pin(user, sign_key, box_key)
            return True
        if pinned == (sign_key, box_key):
            return True
        if refuse:
            raise KeysChanged(
                f"{user} joined this cloud before with other keys, so this client is refused. "
                f"Use the client home that holds {user}'s keys/ folder, or pick another name "
                "(an operator can reset the pin in each node's pending.db)")
        return False

    def pin_list(self) -> list[tuple[str, bytes, bytes]]:
        """Every pin, sorted by user (what a state sync carries)."""
        return [(u, s, b) for u, (s, b) in sorted(self.pins.items())]

    def vote_pins(self, peer: int, pins: Iterable[tuple[str, bytes, bytes]]) -> list[PinVote]:
        """A peer's pins (its state sync): each is that peer's vote for the user's keys, in place
        of its previous one; then each user is settled (module docstring). Returns what changed
        or stays in dispute, for the caller to count and log."""
        out = []
        for user, sign_key, box_key in pins:
            if not (sign_key or box_key):
                continue
            self.votes.setdefault(user, {})[peer] = (sign_key, box_key)
            outcome = self._settle(user)
            if outcome != "agreed":
                out.append(PinVote(user, outcome, peer))
        return out

    def _settle(self, user: str) -> str:
        own = self.pins.get(user)
        mine = [own] if own is not None and user not in self.taken else []  # a copy: no vote
        ballots = list(self.votes.get(user, {}).values()) + mine
        tally = Counter(ballots)
        keys, n = tally.most_common(1)[0]
        if n < self.nodes // 2 + 1 and len(tally) > 1:
            self.disputed.add(user)
            return "disputed"
        self.disputed.discard(user)
        if own == keys:
            return "agreed"
        self.pins[user] = keys
        self.taken.add(user)
        self.on_pin(user, *keys)
        for held in (self.entries, self.rivals):  # a session of the keys just outvoted ends
            e = held.get(user)
            if e is not None and (e.sign_key, e.box_key) != keys:
                del held[user]
        return "adopted" if own is None else "replaced"

    def _undisputed(self, user: str) -> None:
        if user in self.disputed:
            raise PinDisputed(
                f"the nodes of this cloud pin different keys for {user} and no majority of them "
                f"agrees, so {user} is refused until they do (an operator can compare the pins "
                "in each node's pending.db)")

    def has_session(self, user: str, session: bytes, now: float) -> bool:
        """True if `user` is online here with the session whose token digest is `session`
        (never while the user's pin is disputed)."""
        e = self.get(user, now)
        return e is not None and user not in self.disputed \
            and hmac.compare_digest(e.token_digest, session)

    def check(self, user: str, token: bytes, now: float) -> UserEntry:
        """The online entry of `user` if `token` is theirs (a rival session whose token this is
        takes the place of the current one). Raises BadToken, or PinDisputed."""
        self._undisputed(user)
        e = self.get(user, now)
        digest = token_digest(token)
        if e is not None and hmac.compare_digest(e.token_digest, digest):
            return e
        rival = self.rivals.get(user)
        if rival is not None and rival.expires > now \
                and hmac.compare_digest(rival.token_digest, digest):
            del self.rivals[user]
            self.entries[user] = rival
            return rival
        raise BadToken(f"no valid session for {user}: join again")

    def heartbeat(self, user: str, token: bytes, now: float) -> UserEntry:
        e = self.check(user, token, now)
        fresh = replace(e, expires=now + self.ttl_s)
        self.entries[user] = fresh
        return fresh

    def leave(self, user: str, token: bytes, now: float) -> UserEntry | None:
        """Remove a user; returns the tombstone entry (expires == 0) to replicate, or None when
        that session already left (its leave reached us through a peer first)."""
        if token_digest(token) in self.tombs:
            return None
        e = self.check(user, token, now)
        return self._bury(e, now)

    def _bury(self, e: UserEntry, now: float) -> UserEntry:
        del self.entries[e.user]
        tomb = replace(e, expires=0.0)
        self.tombs[e.token_digest] = now
        self.left[e.token_digest] = tomb
        return tomb

    def merge(self, entry: UserEntry, now: float) -> bool:
        """Apply a replicated entry; True if it changed our view."""
        cur = self.entries.get(entry.user)
        if entry.expires == 0.0:  # a leave: ends that session (same token digest) only
            rival = self.rivals.get(entry.user)
            if rival is not None and rival.token_digest == entry.token_digest:
                del self.rivals[entry.user]
            if cur is not None and cur.token_digest == entry.token_digest:
                self._bury(cur, now)
                return True
            self.tombs.setdefault(entry.token_digest, now)
            self.left.setdefault(entry.token_digest, entry)
            return False
        if entry.token_digest in self.tombs or entry.expires <= now or entry.user in self.disputed:
            return False  # a late copy of a session that already left, stale, or disputed
        if not self._pin(entry.user, entry.sign_key, entry.box_key, refuse=False):
            return False
        if cur is not None and cur.expires > now and cur.token_digest != entry.token_digest \
                and (cur.host, cur.port) != (entry.host, entry.port):
            rival = self.rivals.get(entry.user)  # another process's session: not in its place
            if rival is None or rival.token_digest != entry.token_digest \
                    or entry.expires > rival.expires:
                self.rivals[entry.user] = entry
            return False
        if cur is None or entry.expires > cur.expires:
            self.entries[entry.user] = entry
            return True
        return False

    def expire(self, now: float) -> list[str]:
        """Drop entries past expiry and tombstones older than one ttl; returns users dropped."""
        gone = [user for user, e in self.entries.items() if e.expires <= now]
        for user in gone:
            del self.entries[user]
        for user in [u for u, e in self.rivals.items() if e.expires <= now]:
            del self.rivals[user]
        for digest, when in list(self.tombs.items()):
            if now - when > self.ttl_s:
                del self.tombs[digest]
                self.left.pop(digest, None)
        return gone

    def snapshot(self, now: float) -> list[UserEntry]:
        """What a StateSync carries: the online entries, then the leaves still remembered
        (`expires == 0`), so a node that missed a leave ends that session when it merges."""
        return self.online(now) + sorted(self.left.values(), key=lambda e: (e.user, e.token_digest))

    def digest(self, now: float) -> bytes:
        h = hashlib.sha256()
        for e in self.online(now):
            h.update(f"{e.user}|{e.host}|{e.port}|".encode() + e.token_digest)
        for user, sign, box in self.pin_list():  # a node missing a pin differs: anti-entropy
            h.update(f"pin|{user}|".encode() + sign + b"|" + box)
        return h.digest()[:16]
