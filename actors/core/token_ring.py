"""The failure-simulation token ring (pure core: `now` and a random.Random passed in).

One token circulates among the nodes in id order, skipping nodes that are down or unreachable
(Membership). Only its holder may go down (fail-stop, simulated), so at most one node is down.

Messages (codec.messages):
  Token(epoch, holder, seq)   "`holder` holds the token of `epoch` at step `seq`". Sent by the
                              giver to every peer: to `holder` it is the pass (resent every
                              failure_timeout/4 until acknowledged), to the others news; then by
                              the new holder to every peer (acknowledgement and announcement).
                              Only a pass names its receiver. (epoch, seq) orders tokens.
  TokenVote(epoch, candidate, voter)   one vote to mint a new token of `epoch` at `candidate`.
  GoingDown / ComingUp        sent by this core when the node goes down / comes back.
  PeerHeartbeat               read for its token_epoch / token_holder fields (see token_view()).

Phases of this node: up -> (holder only) down -> syncing -> up.
Rules:
 1. Holding: on receiving a pass (or minting) the node holds the token for cfg.token_hold_s, then
    passes it to the next node in id order that Membership says is up (none: keep it, retry).
 2. Going down: during each hold, a failure moment is drawn from an exponential of mean
    cfg.mean_up_s (so failures form a Poisson process of that mean over token time); if it falls
    within the hold, the holder goes down then, but only if every other node is up, was heard
    within `confirm_within_s` (two heartbeats in the node: a crash or cut of a peer is unknown
    for at most that long, not the whole failure timeout), AND each one's last heartbeat names
    this node as holder of this epoch (RELIABILITY 2.3 rule 2; the second
    half keeps a holder whose token was replaced while it was frozen from going down). If that
    is not so at the moment, it retries until the hold ends. Down: GoingDown to all, event
    WentDown, Membership self down, for uniform(0, cfg.max_down_s) seconds, keeping the token.
    With fewer than 3 nodes no node ever goes down: the others would have no majority left.
 3. Coming back: ComingUp to all, event NeedSync; the token is passed on only after sync_done()
    (RELIABILITY 2.3 rule 5). A down node comes back early when another node becomes unreachable
    (a real crash or cut while it simulates one): the simulation never holds the cloud below a
    majority for longer than the failure detector needs to notice.
 4. Lost token: the node believed to hold it (or to be receiving it) is unreachable for longer
    than the failure timeout, or restarted (new boot epoch), or nobody is known to hold it one
    failure timeout after start. A node with a majority in view then proposes epoch
    E = (highest epoch known, voted or proposed) + 1 for the first up node after the lost holder
    in id order, by sending TokenVote to its peers. A node votes at most once per epoch, only if
    it too believes the token lost, and adopts the first proposal it sees for an epoch. The
    candidate mints Token(E, itself, 0) once it has a majority of votes, its own included
    (RELIABILITY 2.3 rule 1). No vote twice per epoch => at most one token per epoch. A failed
    round is retried after a random 0.5..1 failure timeout with a higher epoch.
 4b. A holder that sees no majority (cut off, or back from a simulated failure into a
    partition) releases the token: the majority side mints a newer one, and a minority node
    never reports holding a token meanwhile.
 5. Epoch rule: a token or heartbeat with a newer epoch supersedes ours (event Dropped if we held
    one); a Token of an older (epoch, seq) is dropped and answered with our newer knowledge.
 6. A node that is down takes no part: it votes for nothing and proposes nothing.
With cfg.enabled false the core is inert.

Callers: the node actor (via its cluster wrapper) feeds on_message/on_tick/sync_done, sends
`Output.sends`, and handles the events (WentDown: drop caches and elections; NeedSync: fetch
state from a peer then call sync_done). Membership is shared with the election core.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from actors.core.membership import CloudCoreError, Membership, Output
from codec.messages import ComingUp, GoingDown, Message, PeerHeartbeat, Token, TokenVote
from config import FailuresConfig

MAX_VOTE_EPOCHS = 64  # distinct future epochs whose votes are remembered


@dataclass(frozen=True, slots=True)
class WentDown:
    until: float  # when the node comes back, caller's seconds


@dataclass(frozen=True, slots=True)
class NeedSync:
    """Back from a simulated failure: fetch the state from a live peer, then call sync_done()."""


@dataclass(frozen=True, slots=True)
class Minted:
    epoch: int
    lost_holder: int  # the node believed to hold the token that was lost (0 = none known)


@dataclass(frozen=True, slots=True)
class Dropped:
    """The token we held was superseded by a newer epoch."""

    epoch: int


@dataclass(frozen=True, slots=True)
class TokenStatus:
    holder: int  # holder as this node knows it (0 = unknown); self when holding
    epoch: int
    seq: int  # -1 = unknown (known from a heartbeat only)
    holding: bool
    down: bool
    down_since: float  # 0.0 when not down
    syncing: bool


@dataclass(slots=True)
class _Pass:
    target: int
    epoch: int
    seq: int
    resend_at: float


class TokenRing:
    """Token ring of one node. Times are seconds of the caller's monotonic clock."""

    def __init__(
        self,
        self_id: int,
        node_ids: Iterable[int],
        cfg: FailuresConfig,
        rng: random.Random,
        *,
        membership: Membership,
        now: float,
        confirm_within_s: float | None = None,
    ) -> None:
        ids = tuple(sorted(set(node_ids)))
        if ids != membership.node_ids or self_id != membership.self_id:
            raise CloudCoreError("TokenRing and Membership disagree on the nodes")
        self.self_id = self_id
        self.ids = ids
        self.cfg = cfg
        self.rng = rng
        self.m = membership
        self.timeout_s = membership.failure_timeout_s
        self.resend_s = self.timeout_s / 4
        # rule 2 counts a peer as up for going down only if heard this recently (default: the
        # failure timeout): a crash or cut is then not yet known for at most this long
        self.confirm_within_s = confirm_within_s if confirm_within_s is not None else self.timeout_s
        self.last_input = now
        self.listen_until = now + self.timeout_s  # start: listen before acting (see _wake)
        self.phase = "up"  # up | down | syncing
        self.epoch, self.seq, self.holder = 0, -1, 0
        self.holder_boot = 0
        self.holding = False
        self.hold_until = 0.0
        self.down_at: float | None = None
        self.up_at = 0.0
        self.down_since = 0.0
        self.pending: _Pass | None = None
        self.voted: dict[int, tuple[int, float]] = {}  # epoch -> (candidate we voted for, when)
        self.votes: dict[int, dict[int, tuple[int, float]]] = {}  # epoch -> voter -> (cand., when)
        self.retry_at: float | None = None  # when our current mint round may be retried
        self.counters: dict[str, int] = {}

    # ---- queries ------------------------------------------------------------------------------
    def status(self) -> TokenStatus:
        return TokenStatus(
            holder=self.self_id if self.holding else self.holder,
            epoch=self.epoch,
            seq=self.seq,
            holding=self.holding,
            down=self.phase == "down",
            down_since=self.down_since if self.phase == "down" else 0.0,
            syncing=self.phase == "syncing",
        )

    def token_view(self) -> tuple[int, int]:
        """(token_epoch, token_holder) for this node's PeerHeartbeat."""
        return (self.epoch, self.holder)

    def next_deadline(self) -> float | None:
        if not self.cfg.enabled:
            return None
        times: list[float] = []
        if self.phase == "down":  # also when a peer may turn unreachable: come back early then
            peer_timeout = self.m.next_deadline()
            return self.up_at if peer_timeout is None else min(self.up_at, peer_timeout)
        if self.holding and self.phase == "up":
            times.append(self.hold_until if self.down_at is None else self.down_at)
        if self.pending is not None:
            times.append(self.pending.resend_at)
        if self.retry_at is not None:
            times.append(self.retry_at)
        elif not self.holding:
            times.append(self._lost_check_at())
        times.append(self.last_input + self.resend_s)  # so that a stall is told from idleness
        return min(times)

    # ---- inputs -------------------------------------------------------------------------------
    def on_message(self, src: int, msg: Message, now: float) -> Output:
        """Feed a Token, TokenVote or PeerHeartbeat from peer `src` (others are ignored).
        Feed PeerHeartbeat to Membership.observe first."""
        out = Output()
        if not self.cfg.enabled or src not in self.m.peer_ids:
            return out
        self._wake(now)
        if isinstance(msg, Token):
            self._on_token(src, msg, now, out)
        elif isinstance(msg, TokenVote):
            if msg.voter == src:
                self._on_vote(msg, now, out)
            else:
                self._count("bad_sender")
        elif isinstance(msg, PeerHeartbeat) and msg.node == src:
            self._on_heartbeat(msg, out)
        return out

    def on_tick(self, now: float) -> Output:
        out = Output()
        if not self.cfg.enabled:
            return out
        self._wake(now)
        if self.phase == "down":
            if now >= self.up_at or self._peer_lost(now):
                self._come_up(out)
            return out
        if self.holding and self.phase != "down" and not self.m.has_majority(now):
            self.holding = False  # cut off from the majority: it will mint a newer token
            self.pending = None
            self._count("released_no_majority")
        if self.holding and self.phase == "up":
            if self.down_at is not None and now >= self.down_at and self._try_go_down(now, out):
                return out
            if now >= self.hold_until:
                self._pass(now, out)
        p = self.pending
        if p is not None and now >= p.resend_at:
            p.resend_at = now + self.resend_s
            out.send(p.target, Token(epoch=p.epoch, holder=p.target, seq=p.seq))
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
        if self.retry_at is None and self._token_lost(now):
            self._propose(now, out)
        return out

    def sync_done(self, now: float) -> Output:
        """The state fetched after coming back is applied: pass the token on."""
        out = Output()
        self._wake(now)
        if self.phase == "syncing":
            self.phase = "up"
            self.down_since = 0.0
            if self.holding:
                self._pass(now, out)
        return out

    def _wake(self, now: float) -> None:
        """Called on every input. A gap of more than failure_timeout/2 since the previous input
        (next_deadline asks for a tick every failure_timeout/4) means this process was stalled
        (SIGSTOP, swap): what it knows is old, and the messages queued meanwhile look fresh. So
        it listens for one failure timeout before it votes, proposes, mints or goes down."""
        if now - self.last_input > self.timeout_s / 2:
            self._count("stalls")
            self.listen_until = now + self.timeout_s
            self.votes.clear()
        self.last_input = max(self.last_input, now)

    # ---- passing, going down, coming back ---------------------------------------------------
    def _acquire(self, epoch: int, seq: int, now: float) -> None:
        self._learn(epoch, seq, self.self_id)
        self.holding = True
        self.hold_until = now + self.cfg.token_hold_s
        moment = self.rng.expovariate(1.0 / self.cfg.mean_up_s)
        self.down_at = now + moment if moment < self.cfg.token_hold_s else None

    def _pass(self, now: float, out: Output) -> None:
        target = self._next_up(now)
        if target is None:  # nobody to give it to: keep it for another hold
            self.hold_until = now + self.cfg.token_hold_s
            self.down_at = None
            return
        self.holding = False
        self.down_at = None
        self._learn(self.epoch, self.seq + 1, target)
        self.pending = _Pass(target, self.epoch, self.seq, now + self.resend_s)
        # to the target a pass, to the others news (so they know whom to watch)
        out.send_all(self.m.peer_ids, Token(epoch=self.epoch, holder=target, seq=self.seq))

    def _next_up(self, now: float) -> int | None:
        i = self.ids.index(self.self_id)
        for node in self.ids[i + 1 :] + self.ids[:i]:
            if self.m.state_of(node, now) == "up":
                return node
        return None

    def _try_go_down(self, now: float, out: Output) -> bool:
        if len(self.ids) - 1 < self.m.majority:
            self.down_at = None
            return False
        if now > self.hold_until or now < self.listen_until or not self._all_confirm(now):
            retry = now + self.resend_s
            self.down_at = retry if retry < self.hold_until else None
            return False
        self.phase = "down"
        self.down_at = None
        self.down_since = now
        self.up_at = now + self.rng.uniform(0.0, self.cfg.max_down_s)
        self.m.set_self_up(False)
        out.send_all(self.m.peer_ids, GoingDown(node=self.self_id, epoch=self.m.epoch))
        out.events.append(WentDown(self.up_at))
        return True

    def _all_confirm(self, now: float) -> bool:
        """Every other node is up and its last heartbeat names us holder of our epoch."""
        for node in self.m.peer_ids:
            view = self.m.peer(node)
            if self.m.state_of(node, now) != "up" or view is None:
                return False
            if now - view.last_seen > self.confirm_within_s:
                return False
            if view.token_epoch != self.epoch or view.token_holder != self.self_id:
                return False
        return True

    def _peer_lost(self, now: float) -> bool:
        """While down (simulated): another node became unreachable (a real crash or a cut). Come
        back at once, so a simulation never keeps the cloud below a majority (rule 2)."""
        lost = any(self.m.state_of(n, now) == "unreachable" for n in self.m.peer_ids)
        if lost:
            self._count("early_come_up")
        return lost

    def _come_up(self, out: Output) -> None:
        self.phase = "syncing"
        self.m.set_self_up(True)
        out.send_all(self.m.peer_ids, ComingUp(node=self.self_id, epoch=self.m.epoch))
        out.events.append(NeedSync())

    # ---- knowledge ----------------------------------------------------------------------------
    def _learn(self, epoch: int, seq: int, holder: int) -> None:
        """Adopt (epoch, seq, holder) as the current token; drop ours if the epoch is newer."""
        if epoch > self.epoch:
            self.voted = {e: c for e, c in self.voted.items() if e > epoch}
            self.votes = {e: v for e, v in self.votes.items() if e > epoch}
            self.retry_at = None
        if self.holding and (epoch, seq) > (self.epoch, self.seq) and holder != self.self_id:
            self.holding = False
            self.down_at = None
        self.epoch, self.seq = epoch, seq
        if holder != self.holder:
            self.holder_boot = self.m.epoch_of(holder)
        self.holder = holder
        if self.pending is not None and (epoch, seq) > (self.pending.epoch, self.pending.seq):
            self.pending = None

    def _on_token(self, src: int, msg: Token, now: float, out: Output) -> None:
        theirs, mine = (msg.epoch, msg.seq), (self.epoch, self.seq)
        if theirs < mine:
            self._count("stale_token")
            self._tell_current(src, out)
            return
        if theirs == mine:
            if msg.holder == self.self_id and self.holding:
                out.send(src, msg)  # our acknowledgement was lost: again
            elif self.pending is not None and msg.holder == self.pending.target:
                self.pending = None  # the receiver's acknowledgement
            return
        held = self.epoch if self.holding else None
        if msg.holder == self.self_id:
            self._acquire(msg.epoch, msg.seq, now)
            out.send_all(self.m.peer_ids, msg)  # acknowledgement to the giver, news to the rest
        else:
            self._learn(msg.epoch, msg.seq, msg.holder)
        if held is not None and msg.epoch > held:
            out.events.append(Dropped(held))

    def _tell_current(self, dest: int, out: Output) -> None:
        """Answer stale news with ours; never a Token naming `dest` holder (that would be a pass)."""
        if self.seq >= 0 and self.holder not in (0, dest):
            out.send(dest, Token(epoch=self.epoch, holder=self.holder, seq=self.seq))

    def _on_heartbeat(self, hb: PeerHeartbeat, out: Output) -> None:
        if hb.token_epoch > self.epoch:
            held = self.epoch if self.holding else None
            self._learn(hb.token_epoch, -1, hb.token_holder)
            if held is not None:
                out.events.append(Dropped(held))
        elif (
            self.pending is not None
            and hb.node == self.pending.target
            and (hb.token_epoch, hb.token_holder) == (self.pending.epoch, hb.node)
        ):
            self.pending = None

    # ---- lost token: votes and minting ---------------------------------------------------------
    def _token_lost(self, now: float) -> bool:
        if self.phase == "down" or self.holding or now < self.listen_until:
            return False
        b = self.holder
        if b == 0 or b == self.self_id:
            return True  # nobody known, or we are named but do not have it (we restarted)
        if self.m.state_of(b, now) == "unreachable":
            return True
        boot = self.m.epoch_of(b)
        if self.holder_boot == 0:
            self.holder_boot = boot
        return boot > self.holder_boot

    def _lost_check_at(self) -> float:
        """When the believed holder turns unreachable if it stays silent (or the start grace)."""
        view = self.m.peer(self.holder) if self.holder != self.self_id else None
        grace = self.listen_until
        if view is None:
            return grace
        return max(grace, view.last_seen + self.timeout_s + 1e-9)

    def _propose(self, now: float, out: Output) -> None:
        if not self.m.has_majority(now):
            self.retry_at = now + self.resend_s
            return
        floor = max(self.epoch, *self.voted, 0)
        fresh = {e: b for e, b in self._fresh_votes(now).items() if e > floor}
        if fresh:  # join the newest live proposal rather than split the votes
            epoch = max(fresh)
            ballots = sorted(fresh[epoch].values())
            candidate = max(ballots, key=ballots.count)
            if candidate == self.self_id or self.m.state_of(candidate, now) == "up":
                self._vote(epoch, candidate, now, out)
                return
        epoch = max(floor, *self.votes, 0) + 1
        self._vote(epoch, self._candidate(now), now, out)

    def _fresh_votes(self, now: float) -> dict[int, dict[int, int]]:
        """epoch -> {voter: candidate} of the votes received within the failure timeout.
        Older ones belong to rounds that ended (the holder was found again): they never count."""
        limit = now - self.timeout_s
        fresh: dict[int, dict[int, int]] = {}
        for epoch, ballots in self.votes.items():
            live = {v: c for v, (c, t) in ballots.items() if t >= limit}
            if live:
                fresh[epoch] = live
        return fresh

    def _candidate(self, now: float) -> int:
        alive = self.m.alive(now)
        lost = self.holder if self.holder in self.ids else self.ids[-1]
        i = self.ids.index(lost)
        for node in self.ids[i + 1 :] + self.ids[: i + 1]:
            if node in alive:
                return node
        return self.self_id

    def _vote(self, epoch: int, candidate: int, now: float, out: Output) -> None:
        self.voted[epoch] = (candidate, now)
        self.retry_at = now + self.timeout_s * self.rng.uniform(0.5, 1.0)
        out.send_all(
            self.m.peer_ids, TokenVote(epoch=epoch, candidate=candidate, voter=self.self_id)
        )
        self._tally(epoch, now, out)

    def _on_vote(self, msg: TokenVote, now: float, out: Output) -> None:
        if self.phase == "down" or now < self.listen_until:
            return
        if msg.epoch <= self.epoch:
            self._count("stale_vote")
            self._tell_current(msg.voter, out)
            return
        self.votes.setdefault(msg.epoch, {})[msg.voter] = (msg.candidate, now)
        if len(self.votes) > MAX_VOTE_EPOCHS:
            del self.votes[min(self.votes)]
        c = msg.candidate
        if (
            msg.epoch > max(self.voted, default=0)
            and self._token_lost(now)
            and (c == self.self_id or self.m.state_of(c, now) == "up")
        ):
            self._vote(msg.epoch, c, now, out)
        else:
            self._tally(msg.epoch, now, out)

    def _tally(self, epoch: int, now: float, out: Output) -> None:
        """Mint if a majority voted for us at `epoch` in this round (our own vote included)."""
        mine = self.voted.get(epoch)
        if mine is None or mine[0] != self.self_id or now - mine[1] > self.timeout_s:
            return
        if epoch <= self.epoch or not self._token_lost(now):
            return
        ballots = self._fresh_votes(now).get(epoch, {})
        count = 1 + sum(1 for v, c in ballots.items() if c == self.self_id and v != self.self_id)
        if count < self.m.majority:
            return
        lost = self.holder
        self._acquire(epoch, 0, now)
        out.events.append(Minted(epoch, lost))
        out.send_all(self.m.peer_ids, Token(epoch=epoch, holder=self.self_id, seq=0))

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
