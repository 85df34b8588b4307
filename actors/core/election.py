"""Bully election per request id, many at once (pure core: `now` passed in, sends returned).

Each request id (rid) has its own election among the nodes that cached that request. A node's
*key* in the election of `rid` is (priority, tie_hash(rid, node), node): priority is the free
capacity the node computed from its own load (`priority()`), the hash spreads equal loads over
the nodes, the node id only breaks hash collisions. Higher key wins.

The bully rounds choose a candidate; a majority vote makes it the only winner. Under peer delay
or loss two nodes may each believe they are the highest live one; each then *claims* the
request, and seals only once a majority of the nodes (itself included) voted for it. A node votes
for one claimant per rid (itself while it claims), so two claimants cannot both win while no
voter goes down or restarts (majorities intersect).

Unasked votes (issue 19): in the common case every node hears every peer's Election, so every
node knows the top key before anyone asks. A node that heard every live peer's Election in its
first round (no restart, nobody suspected) and is not the top votes for the top at once, exactly
as if the top's Claim had come (it is its one vote for that rid: state lost). The top, when it
decides with every live peer's answer in its first round, usually holds a majority of votes
already and wins without a Claim round; otherwise it waits one answer timeout for the votes and
then claims as before (the fallback). All up, 3 nodes: 6 Elections and 2 votes, two link delays
(an Election, a vote), instead of 6 Elections, 2 Claims and 2 votes over three link delays.
A vote counts only for the round it names (Rounds, below): one for an earlier round may still be
in flight after a restart (the voter answers the new round's Election by electing again). Not
done: a winner chosen from heartbeat loads without Elections (it herds requests on stale loads).

Bindings (issue 19; `bind=True`, config `election.bind_votes`, the default): one link delay. A node
that starts a rid without having voted for it (no Claim or Coordinator came first) and sees a
majority *binds* its vote: its Election carries `bind`, the set B of nodes it counts live and heard
from in the last half failure timeout (itself included, a bit per id), and it then votes for nobody
but top(B), the highest key among the nodes of B that are still live in its view, and only once it
knows every one of those keys. That is a vote cast before the voter knows whom for, so nobody has to
wait for it: a node counts a peer's binding as the peer's vote once it knows the key of every node
of B and its own key is the top (`_binds_to_me`). All up, 3 nodes: 6 Elections, no vote, and the top
wins when the last Election reaches it. A bound voter goes to `lost` to top(B) without sending
anything; a Claim of another node gets no vote (`claim_refused_bound`); a Claim of the top that came
before the voter knew every key gets its vote as soon as it does (`deferred`: a top that cannot
count the binding, its view of B differs, claims at once and must not wait a timeout). Why at most
one winner still holds: every key is the same everywhere (one priority per node and rid: an
abstention stays the node's key for that rid, even if its copy comes later), so every node that
knows B's keys computes the same top(B), and a voter's binding and its explicit votes all go to that
one node while it stays up in the voter's view (the voter changing its vote after the top went down,
or was judged down while only slow, is the same case as for any vote, below). What it costs: a bound
node cannot decide on the round timeout while a live node of B is silent (it may be the top, and
have counted the binding). So (a) a node without its copy of the request abstains after the grace
when a bound peer's Election comes, not only in its abstain window, and (b) a bound node still
missing a key after an answer timeout sends that node its Election again with the ASK bit, which
every node answers with its Election whatever its state (the answer never carries ASK: no loop); a
node that stays silent (paused) holds the request until it is declared down, and is left out of the
bindings of requests that start after half the failure timeout. A bound top needs no answer from a
live node outside its binding to decide. A vote that changed is resolved as before (Coordinators,
tie_hash order).

Ceilings (issue 19; `ceilings=True`, what the election actor runs): the top wins on the first
binding. A key is (priority, tie hash, node), and a node's priority never exceeds its ceiling,
priority(0, 0, 0.0, its pool size), the pool size its heartbeats say (`slots`). So the key a node has
not heard from q in this election is at most (q's ceiling, tie_hash(rid, q), q), which anyone who had
q's heartbeat can compute. Where a binding needs a key not heard yet, that bound stands in for it: a
node whose own key (or a known one) is above the bound of every key still missing knows top(B)
already (`_top_bound`), and a top counts a peer's binding once every key it names is known or
bounded below its own (`_binds_to_me`). Every key of B is at most its bound, so the top found so is
top(B) with every key known: each node still finds the same top, and at most one winner stands as
above (while no node restarts with a larger pool before its peers hear its new heartbeat: a new
epoch's GoingDown or ComingUp says no pool size, which leaves its keys unbounded). The top with a
majority of bindings counted wins at once in its first round (no restart, suspect or peer gone),
without the keys still on their way: all up and idle (every priority at its node's ceiling, as
on one host, where the election actor leaves the host load out), the node with the highest tie
hash wins on the first peer's Election, not the last one's, which on a loaded host of two cores is
the slowest node's turn (the nineteenth session, docs/perf-history.md). A node with jobs in flight
is below its ceiling, and a node that could be above the top (a larger pool) has to be heard: the
others then wait for its key as before. A latecomer's first Election whose binding is the winner's
vote needs no Coordinator (`won`), and one that reaches a node lost already needs no answer: ours
went to it at our start. A peer's Election above its ceiling turns the ceilings off for good
(`above_ceiling`).

Messages (codec.messages; the election actor sends those of a busy mailbox to one peer as one
ElectionBatch, which the receiver feeds here item by item). Each carries a `round` (below):
  Election(rid, node, priority)  "I take part, this is my key". Every participant sends it once per
                                 round to every live peer; it is also the *answer* to a peer's
                                 Election, whatever the order of the two keys (a higher node's
                                 Election plays the bully's Ok: it carries the key, which Ok
                                 lacks). So a node knows when every live peer has answered.
                                 From a claimant or winner a node voted for, of a newer round
                                 than the one voted for: it abdicated.
  Claim(rid, node)               "I would win: vote for me", resent every answer timeout to the
                                 live peers that have not voted for it.
  ElectionOk(rid, node)          the vote for a Claim (or unasked, for the top key heard), and
                                 the acknowledgement of Coordinator. An unasked vote is resent
                                 every 2 answer timeouts until the winner says anything (or
                                 Done comes): a lost one would leave the top short of answers.
                                 A node that yielded releases a vote it gets (its Election).
  Coordinator(rid, node)         "I won": the answer of a winner to a late Election or Claim,
                                 and resent every answer timeout to live peers that neither
                                 voted nor acknowledged. Whoever hears it follows it.

States of one rid on one node, and rules:
  pending   Peers' Elections (or a Claim/Coordinator) arrived before our own request: keys are
            kept; a Claim gets our vote (the first claimant, or a later one if that one is no
            longer up; a claimant refused while the first was up gets it, unasked, as soon as
            the first goes down). Nothing else is answered (our own Election goes out at
            start), except, while `abstain_until`, a real Election by an abstention (an
            Election of priority 0), sent only if our copy of the request has not come
            `abstain_grace_s` later: a request we missed while down never comes (until the
            client's retry), a fresh one's copy follows a peer's Election by milliseconds and
            then we take part with our real key (an abstention at once made the peer claim at
            once, bypassing the load-based choice for every request of the window). A bound
            peer's Election (Bindings) is answered so too, whenever it comes, and an ASK at
            once if we abstained already; with bindings an abstention stays our key. A bare ASK
            (a restarted unbound peer's) is not: a node that forgot the request (Done) must not
            give a peer that missed the Done the quorum to serve it again.
            Expires after pending_ttl_s.
  electing  start(): send Election to live peers, round deadline = now + answer_timeout_s.
            - every live peer answered, a peer has the top key, first round, no suspect
                                                              -> vote for it unasked: lost
            - a live peer with a higher key is known          -> waiting (for that peer)
            - every live peer has answered, ours is highest   -> decide now (no timer wait)
            - round deadline passes (some live peers silent)  -> decide: silent peers are ignored
            - a peer goes down/unreachable (electing or waiting)  -> evaluate again at once: the
              silent peer may have been the gone one (killed before its Election left), so
              every live peer may have answered now (a top decides, a voter votes unasked)
            A vote for our current round is an answer; it is kept for decide.
            - a peer we answered opens a new round (a restart; or, with bindings, its first
              Election after it voted while pending) -> answer it again: its earlier answers
              were cleared, and a bound voter whose top it is would go to lost without a word
            decide: with a majority (Membership.has_majority) AND answers in this election from
            a majority of the nodes (self included) -> claiming (won at once if the unasked
            votes make a majority; Claim sent at once unless every live peer answered in the
            first round and no peer went down meanwhile, else after an answer timeout: a voter
            that waited for us while a peer died votes unasked only once it sees the death
            too, which can be a heartbeat later); without, never claim: emit
            NoMajority once, stay electing and decide again every answer timeout. (The quorum of
            answers keeps a node that is cut off, but does not know it yet, from serving.)
  waiting   A higher live peer exists; wait 2 x answer_timeout_s for its Claim. Timeout ->
            restart with that peer *suspected* (ignored until it says anything new on this rid).
            The expected peer going down/unreachable -> restart. An Election of that peer (it
            started a new round: it saw the old winner go down later than we did) is answered
            again, or it would wait out its round for the answer it already had.
  claiming  Claim sent to the live peers. Votes (ElectionOk) from a majority (self included) ->
            won; after a restart, a vote counts only from a peer that answered the new round
            (a vote it sent, or resent, before our new Election reached it comes before that
            answer, and it may have given that vote up since). A Claim of a higher claimant (tie_hash order) or a Coordinator -> withdraw: the
            peers that voted for us get an Election (released), we vote for the other -> lost.
            A peer's Election is answered with our Claim, and so is a lower claimant's Claim
            (it yields to ours but never votes unasked: a top waiting for unasked votes would
            wait an answer timeout for its vote; seen after an abstention, whose peer claims at
            once, then elects for real with a higher key). No majority of votes within
            pending_ttl_s -> restart (abdication).
  won       Emit Won(rid): the caller seals now. Peers that have not voted yet acknowledge the
            Claim or the Coordinator we resend them, for at most pending_ttl_s. A latecomer's
            Election or Claim is answered with Coordinator ("first coordinator stays"), and so,
            once per peer, is a resent vote (that voter has not heard us: it stops resending).
  lost      We voted for the winner (or heard its Coordinator): emit Lost(rid, winner). Claims of
            others are refused while it is up. The winner going down/unreachable (or sending a
            new Election: it abdicated) -> restart. This is the re-election from the cache.
  (gone)    forget(rid) on Done; clear() when this node goes down (a down node keeps nothing and
            takes no part: while Membership says self is down, every input is ignored).
  restart   = new round: keys heard stay known (they are facts about peers), Election is sent to
            every live peer again, with ASK (every peer in the election answers it, whatever its
            state: the answers of earlier rounds were cleared, and a bound voter whose top we
            are would follow us without a word), emit Restart(rid, reason).

Rounds. A node numbers its rounds of every request from one counter, which clear() keeps (a round
is never reused while the process lives; a restarted process is a new boot epoch, whose peers'
transports refuse what was sent to the old one). A new round opens at start(), at every restart,
when a peer goes down or unreachable while we elect or claim, and before an Election that releases
votes (withdraw, yield, a vote that came after we yielded). Our Election, Claim and Coordinator
carry the current round; a vote (ElectionOk) carries the round of its claimant as the voter last
heard it. A claimant counts a vote only if it carries the round it last sent that voter
(`sent_round`, else `stale_vote`), and a voter takes an Election of the claimant it voted for as
an abdication only if its round is newer than the one it voted for (else `late_election`).
A Claim of a round older than one already heard from its claimant gets no vote (`stale_claim`:
the claimant left that claim; following it could leave two nodes each following the other).
Traced in TN-5 (DEBUG node logs): node 1's input from its peers was cut for 10 s; they had voted
for it unasked and kept resending; node 1 saw them unreachable. At the heal node 1 sent its
Election again, which node 2 took for an abdication (it elected again and voted for node 3), and
then the copy of node 2's vote that its transport still resent (5 s send deadline) reached node
1, which won with it: two winners. Now node 1's Election after the heal is of a new round and the
old vote counts for nothing.

Two winners need a voter that changed its vote: its claimant went down or restarted (or was
judged so by the failure detector while only slow). They are resolved by tie_hash alone, which
every node can compute for any node: a won node that hears a Coordinator of a node with a higher
tie_hash yields (Lost), else it answers with its own Coordinator; a lost node follows the
Coordinator with the higher tie_hash. Messages between two nodes may be reordered: the transport
delivers each message on its own, so one lost and resent arrives after later ones (issue 19,
traced under 50 % peer loss: a claimant's round Election came 500 ms late, after its Claim).
A claimant's Election that comes after its Claim (or Coordinator) of the same round is that
round's, overtaken, not an abdication (rounds: before them a heuristic, the first Election after
an early Claim, which missed Elections of several earlier rounds all overtaken). Taken as an
abdication, the voter gave its vote to a second claimant while the first won with it (two
replies, nobody down).

Callers: the node actor (via its cluster wrapper) feeds start/on_message/on_tick/peer_down and
performs `Output.sends`; the encrypt service acts on the Won/Lost/Restart/NoMajority events. The
ElectionActor runs a peer's message on the peer transport's reader thread and StartElection on the
client transport's (actors.direct), and the Won on its thread starts the seal.

Where the time goes, all up, one client (`python -m benchmarks.election_trace`; figures in
docs/profile-after.md): from the winner's turn on its copy of the request, the last node's copy
arrives and leaves as its Election, one link delay to the top, each voter's unasked vote one link
delay back. A link delay (send, the peer's reader thread waking in another process) is 0.7-1.3 ms
on the shared 2-core host, most of the 2-3 ms; each actor hop on the way cost 0.1-0.4 ms (over
1 ms at 6 clients) until they ran on the sender's thread. With Bindings the votes' link delay
is gone: the top wins when the last copy's Election reaches it.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from actors.core.membership import CloudCoreError, Membership, Output
from codec.messages import Claim, Coordinator, Election, ElectionOk, Message

Key = tuple[int, int, int]  # (priority, tie hash, node id)
TieHash = Callable[[str, int], int]

SLOT_POINTS = 100  # priority points of one free encoder slot
BASE_SLOTS = 10_000  # keeps the priority >= 0 with up to this many jobs beyond capacity


UNBOUNDED = 2**63  # the ceiling of a node whose pool size is not known: above every key
ASK = 1  # bit 0 of an Election's bind (no node has id 0): "I lack your key, answer"
MAX_BIND_ID = 62  # a binding is a Count bitmask (< 2**63): node ids above this never bind


def _mask(nodes: Iterable[int]) -> int:
    """The binding of `nodes`, 0 (none) if one of their ids does not fit."""
    mask = 0
    for q in nodes:
        if not 0 < q <= MAX_BIND_ID:
            return 0
        mask |= 1 << q
    return mask


def tie_hash(rid: str, node: int) -> int:
    """Deterministic on every host (not Python's salted hash): 64 bits of BLAKE2b."""
    digest = hashlib.blake2b(f"{rid}\x00{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def priority(jobs_in_flight: int, queued: int, loadavg: float, capacity: int) -> int:
    """Election priority (>= 0, higher = more free capacity).

    jobs_in_flight, queued: jobs of this node's encoder pool; capacity: its worker count;
    loadavg: the host's 1-minute load average divided by its CPU count (psutil), or 0.0 where
    it cannot order the nodes (all of them on one host: the election actor). One free slot
    is worth SLOT_POINTS; load costs 1 point per 0.1, at most SLOT_POINTS - 1, so the jobs decide
    and the host load only orders nodes with equal jobs (nodes sharing a host then tie, and the
    tie hash spreads them). The highest, `priority(0, 0, 0.0, capacity)`, is the ceiling of a
    node of that capacity (Ceilings)."""
    free = capacity - jobs_in_flight - queued
    penalty = min(SLOT_POINTS - 1, int(max(0.0, loadavg) * 10))
    return max(0, SLOT_POINTS * (BASE_SLOTS + free) - penalty)


@dataclass(frozen=True, slots=True)
class Won:
    rid: str


@dataclass(frozen=True, slots=True)
class Lost:
    rid: str
    winner: int


@dataclass(frozen=True, slots=True)
class Restart:
    rid: str
    reason: str


@dataclass(frozen=True, slots=True)
class Probe:
    """A peer re-elects a request we lost to `node`, which is still up in our view: the peer may
    know `node` is gone. The caller sends `node` something now (a killed process's port answers
    ICMP port unreachable at once) instead of learning it at its next heartbeat."""

    node: int


@dataclass(frozen=True, slots=True)
class NoMajority:
    """This node cannot win `rid` for now: it sees no majority (answer clients "not in majority")."""

    rid: str


@dataclass(slots=True)
class _Rid:
    rid: str
    state: str  # pending | electing | waiting | claiming | won | lost
    prio: int = -1
    keys: dict[int, Key] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)  # peers heard in the current round
    sent_to: set[int] = field(default_factory=set)
    suspects: set[int] = field(default_factory=set)
    unacked: set[int] = field(default_factory=set)
    votes: set[int] = field(default_factory=set)  # claiming: peers that voted for us
    told: set[int] = field(default_factory=set)  # lost: peers whose Election we answered
    refused: set[int] = field(default_factory=set)  # pending: claimants we refused a vote
    abstain_to: set[int] = field(default_factory=set)  # pending: owed an abstention (grace)
    # lost: the coordinator; waiting: the peer expected; pending: a Coordinator heard
    winner: int = 0
    round_start: float = 0.0
    won_at: float = 0.0
    claim_at: float = 0.0
    deadline: float | None = None
    gen: int = 0
    no_majority_said: bool = False
    voted_at: float | None = None  # lost by an unasked vote the winner has not answered yet
    restarts: int = 0  # rounds this node restarted (after one, no Claim is skipped)
    peer_gone: bool = False  # a peer went down while we elected: claim at once (peer_down)
    round: int = 0  # our current round (ElectionCore._new_round): in each message we send
    sent_round: dict[int, int] = field(default_factory=dict)  # peer -> round of our last
    # Election or Claim to it: its vote counts only if it carries that round
    heard_round: dict[int, int] = field(default_factory=dict)  # peer -> highest round heard
    voted_round: int = -1  # pending/lost: the round of the claimant we voted for
    ties: dict[int, int] = field(default_factory=dict)  # node -> tie_hash(rid, node) (_tie_of)
    bound: int = 0  # our binding (Bindings): a bit per node id, 0 for none
    binds: dict[int, int] = field(default_factory=dict)  # peer -> its binding, from its Election
    abstained: bool = False  # we abstained: our key stays 0 for this rid (Bindings)
    deferred: set[int] = field(default_factory=set)  # bound: claimants we could not vote for yet


class ElectionCore:
    """All elections of one node. Times in seconds of the caller's monotonic clock."""

    def __init__(
        self,
        self_id: int,
        membership: Membership,
        answer_timeout_s: float,
        tie_hash: TieHash = tie_hash,
        *,
        pending_ttl_s: float | None = None,
        max_pending: int = 4096,
        abstain_grace_s: float | None = None,
        bind: bool = True,
        ceilings: bool = False,
    ) -> None:
        if self_id != membership.self_id:
            raise CloudCoreError(
                f"self id {self_id} differs from membership's {membership.self_id}"
            )
        if not answer_timeout_s > 0:
            raise CloudCoreError(f"answer_timeout_s must be > 0, not {answer_timeout_s!r}")
        self.self_id = self_id
        self.bind = bind  # our Elections bind our votes (Bindings); else the unasked votes only
        # a key not heard yet is bounded by its node's ceiling (Ceilings); off: it is unknown,
        # and a binding's top is known only with every key of it
        self.ceilings = ceilings
        self.m = membership
        self.answer_timeout_s = answer_timeout_s
        self.coordinator_timeout_s = 2 * answer_timeout_s
        self.pending_ttl_s = pending_ttl_s if pending_ttl_s is not None else 20 * answer_timeout_s
        self.max_pending = max_pending
        self._tie = tie_hash
        self._rids: dict[str, _Rid] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._watch: dict[int, set[str]] = {}  # node -> rids waiting for it / lost to it
        self._npending = 0
        self._rounds = 0  # rounds numbered by this node so far (never reset: see _new_round)
        self.counters: dict[str, int] = {}
        # until then, a peer's Election for a request we have no copy of (pending) is answered
        # with an abstention, an Election of priority 0 (set by the caller after a restart on a
        # kept disk or a simulated failure: requests sent meanwhile never reached us)
        self.abstain_until = -math.inf
        # a pending request's copy gets this long to arrive before we abstain (see pending)
        self.abstain_grace_s = (abstain_grace_s if abstain_grace_s is not None
                                else answer_timeout_s / 10)

    # ---- queries ------------------------------------------------------------------------------
    def key(self, rid: str, node: int, prio: int) -> Key:
        return (prio, self._tie(rid, node), node)

    def state_of(self, rid: str) -> str | None:
        e = self._rids.get(rid)
        return e.state if e is not None else None

    def winner(self, rid: str) -> int | None:
        """The coordinator of `rid` as this node knows it (self if won), else None."""
        e = self._rids.get(rid)
        if e is None or e.state not in ("won", "lost"):
            return None
        return self.self_id if e.state == "won" else e.winner

    def active(self) -> int:
        """Elections this node takes part in (pending ones excluded)."""
        return len(self._rids) - self._npending

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            when, gen, rid = heap[0]
            e = self._rids.get(rid)
            if e is not None and e.gen == gen and e.deadline == when:
                return when
            heapq.heappop(heap)
        return None

    # ---- inputs -------------------------------------------------------------------------------
    def start(self, rid: str, prio: int, now: float) -> Output:
        """Take part in the election of `rid` with priority `prio` (>= 0). Idempotent while the
        election runs; on a lost election whose winner is no longer up it restarts."""
        out = Output()
        if not self.m.self_up:
            return out
        e = self._rids.get(rid)
        if e is not None and e.state != "pending":
            if e.state == "lost" and self.m.state_of(e.winner, now) != "up":
                self._restart(e, now, "winner not up", out)
            return out
        if e is None:
            e = self._rids[rid] = _Rid(rid, "electing")
        else:
            self._npending -= 1
            e.abstain_to.clear()  # our copy came in time: we take part with our real key
        e.prio = 0 if e.abstained and self.bind else prio  # an abstention stays our key (Bindings)
        e.round_start = now
        self._new_round(e)
        heard = e.winner
        e.state, e.winner = "electing", 0
        if heard and self.m.state_of(heard, now) == "up":
            self._lose(e, heard, out)
            return out
        if self.bind and e.voted_round < 0 and self.m.has_majority(now):  # no vote given: bind it
            # to the peers heard lately: one silent for half the failure timeout (paused?)
            # would hold the request until it is declared down (see Bindings)
            fresh = self.m.fresh_peers(now, self.m.failure_timeout_s / 2)
            e.bound = _mask(fresh | {self.self_id})
        self._evaluate(e, now, out)
        return out

    def on_message(self, src: int, msg: Message, now: float) -> Output:
        """Feed an Election, ElectionOk or Coordinator received from peer `src`."""
        out = Output()
        node = getattr(msg, "node", None)
        if src not in self.m.peer_ids or node != src:
            self._count("bad_sender")
            return out
        if not self.m.self_up:
            return out
        if isinstance(msg, Election):
            self._on_election(msg, now, out)
        elif isinstance(msg, Claim):
            self._on_claim(msg.rid, src, msg.round, now, out)
        elif isinstance(msg, Coordinator):
            self._on_coordinator(msg.rid, src, msg.round, now, out)
        elif isinstance(msg, ElectionOk):
            e = self._rids.get(msg.rid)
            if e is not None and e.state in ("electing", "waiting", "claiming") and (
                msg.round != e.sent_round.get(src)
            ):
                # a vote for another round of ours than the one we last sent this voter: it
                # may have given that vote up since (a partition's heal delivered votes resent
                # 4 s earlier, after our new Election had made the voter elect again)
                self._count("stale_vote")
            elif e is not None and e.state in ("electing", "waiting"):
                # a vote for our current round (unasked: the voter heard every live peer and
                # ours is the top key; or the voter yielded to an earlier Claim of ours and
                # heard this round since): it is also an answer. Before rounds it counted only
                # in our first round (a vote for an earlier one could still be in flight), and
                # a node whose peers had all voted for it after its restart elected for ever
                # (the TN-5 fault on the fake network, one seed in 400)
                e.votes.add(src)
                e.answered.add(src)
                self._evaluate(e, now, out)
            elif e is not None and e.state == "lost" and src != e.winner:
                # a vote that came after we yielded: release it (the voter elects again)
                self._count("vote_released")
                self._new_round(e)  # a round the voter has not seen: it gives its vote up
                self._send_election(e, (src,), out)
            elif e is not None and e.state == "claiming":
                if e.restarts and src not in e.answered:
                    # after a restart, a vote counts once its voter answered this round: one
                    # sent (or resent) before our new Election reached it precedes its answer
                    # (no reordering between two nodes) and may have been given up since
                    self._count("vote_before_answer")
                    return out
                e.votes.add(src)
                if len(e.votes) + 1 >= self.m.majority:
                    self._win(e, now, out)
            elif e is not None and e.state == "won":
                if src in e.unacked:
                    self._acked(e, src)
                elif src not in e.told:  # a voter resent its vote: it has not heard us. Once
                    e.told.add(src)  # per peer (its acknowledgement is an ElectionOk too)
                    out.send(src, self._coordinator_msg(e))
        return out

    def on_tick(self, now: float) -> Output:
        out = Output()
        if not self.m.self_up:
            return out
        for node in [n for n in self._watch if self.m.state_of(n, now) != "up"]:
            for rid in sorted(self._watch.get(node, ())):
                self._restart(self._rids[rid], now, f"node {node} not up", out)
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, gen, rid = heapq.heappop(heap)
            e = self._rids.get(rid)
            if e is not None and e.gen == gen and e.deadline == when:
                e.deadline = None
                self._on_timer(e, now, out)
        return out

    def peer_down(self, node: int, now: float) -> Output:
        """`node` went down, became unreachable or restarted: forget what it said; elections it
        won or was expected to win restart; others decide without it."""
        out = Output()
        for e in list(self._rids.values()):
            e.keys.pop(node, None)
            e.binds.pop(node, None)
            e.sent_to.discard(node)
            e.unacked.discard(node)
            e.suspects.discard(node)
            e.votes.discard(node)  # back up, it remembers nothing: its vote is void
            e.sent_round.pop(node, None)  # a vote of it that comes now is stale
            e.heard_round.pop(node, None)  # a restarted process numbers its rounds from 1
            if e.state in ("electing", "waiting", "claiming"):
                # what we send from now on carries a round this node has not seen: a vote it
                # sent before (still resent by its transport) never counts, even once it is back
                self._new_round(e)
            if e.state in ("lost", "waiting") and e.winner == node:
                self._restart(e, now, f"node {node} down", out)
            elif e.state == "pending" and e.winner == node:
                # our claimant is gone: a claimant we refused gets our vote now, not when it
                # resends its Claim an answer timeout later (a killed winner's re-election)
                e.winner = 0
                e.refused.discard(node)
                w = next((q for q in sorted(e.refused) if self.m.state_of(q, now) == "up"), 0)
                if w:
                    e.winner = w
                    self._vote(e, w, out)
            elif e.state in ("electing", "waiting") and self.m.self_up:
                # the peer we had not heard from is gone: we may now have every live peer's
                # answer. A top claims at once (a voter waiting for it votes only once it sees
                # the death too); a voter waiting for the top votes for it now, unasked (the
                # top may be deciding without the gone peer and waiting for that vote)
                e.peer_gone = True
                self._evaluate(e, now, out)
            elif e.state == "claiming" and self.m.self_up:
                # the unasked vote we waited for may have been the gone node's: ask the live
                # peers now instead of after the answer timeout (a Claim may always be resent)
                self._send_claim(e, self.m.up_peers(now) - e.votes, out)
        return out

    def forget(self, rid: str) -> None:
        """Done(rid) arrived (or the request expired): drop everything about it."""
        e = self._rids.pop(rid, None)
        if e is not None:
            self._unwatch(e)
            if e.state == "pending":
                self._npending -= 1

    def clear(self) -> None:
        """This node goes down: keep nothing."""
        self._rids.clear()
        self._heap.clear()
        self._watch.clear()
        self._npending = 0

    # ---- message handlers ---------------------------------------------------------------------
    def _on_election(self, msg: Election, now: float, out: Output) -> None:
        p = msg.node
        e = self._entry(msg.rid, now)
        if e is None:
            return
        earlier = e.heard_round.get(p)  # p's latest round before this Election
        if self.ceilings and msg.priority > self._ceiling_of(p):
            # a key above what its node's heartbeat said (another code's priorities?): the
            # bounds do not hold. Ceilings off for good
            self._count("above_ceiling")
            self.ceilings = False
        self._heard(e, p, msg.round)
        e.keys[p] = (msg.priority, self._tie_of(e, p), p)
        ask = msg.bind & ASK
        answered = False  # our Election went to p for this one already (an ASK's answer)
        if msg.bind:
            e.binds[p] = msg.bind & ~ASK
            if ask and e.state != "pending":  # p lacks our key: answer whatever our state
                self._send_election(e, (p,), out)  # (never with ASK: no loop)
                answered = True
            elif ask and e.abstained:  # our key is the abstention's: say it again, at once
                out.send(p, self._abstention_msg(e))
        e.answered.add(p)
        e.suspects.discard(p)
        if e.state in ("pending", "lost") and e.winner == p and msg.round <= e.voted_round:
            # of the round we voted for (or older): sent before the Claim we voted for and
            # overtaken by it, not an abdication (which always opens a new round)
            self._count("late_election")
            return
        if e.state == "pending":
            if e.winner == p:  # the claimant we voted for abdicated
                e.winner = 0
            if (msg.priority > 0 or ask) and (now < self.abstain_until or msg.bind & ~ASK):
                # maybe sent while we were down (or a bound peer waits for our key: Bindings):
                # unless our copy comes within the grace, we take no part, and say so
                # (_on_timer); never to another abstention (two nodes without a copy would
                # answer each other for ever) unless it asks (ASK: its answers never ask)
                if not e.abstain_to:
                    self._arm(e, now + self.abstain_grace_s)
                e.abstain_to.add(p)
            return
        if e.state == "claiming":  # our claim answers it: it votes for us unless it voted
            if self._binds_to_me(e, p):
                e.votes.add(p)
                if len(e.votes) + 1 >= self.m.majority:
                    self._win(e, now, out)
                    return
            self._send_claim(e, (p,), out)
            return
        if e.state == "won":
            if not ask and self._binds_to_me(e, p):  # its first Election is its vote for us
                e.votes.add(p)  # (we won before it came: Ceilings); it needs no Coordinator
                if p in e.unacked:
                    self._acked(e, p)
                return
            out.send(p, self._coordinator_msg(e))
            self._await_ack(e, p, now)
            return
        if e.state == "lost" and p == e.winner:
            self._restart(e, now, f"winner {p} re-elects", out)
            return
        if (e.state == "lost" and self.ceilings and not ask and earlier is None
                and p in e.sent_to):
            # p's first Election, a start, not a restart (which asks): our Election went to it
            # at our start. We lost before it came (Ceilings: the top was known without its key)
            return
        if e.state == "lost":  # p restarted a round: our answer is fresh evidence for it. Once
            if p not in e.told:  # per peer while lost: two lost nodes would answer each
                e.told.add(p)  # other's answers forever (a late Election starts that)
                if not answered:
                    self._send_election(e, (p,), out)
                out.events.append(Probe(e.winner))
            return
        if p not in e.sent_to:
            e.sent_to.add(p)
            if not answered:
                self._send_election(e, (p,), out)
        elif answered:  # the ASK's answer is the answer again that the rules below would send
            pass
        elif e.state == "waiting" and p == e.winner:
            # the peer we wait for started a new round (its winner went down after it had our
            # answer): answers of an earlier round do not count in its new one, so answer again
            self._send_election(e, (p,), out)
        elif (earlier is not None and msg.round > earlier) or (
            earlier is None and self.bind and not msg.bind
        ):
            # p opened a round after our answer reached it without asking (a restart asks:
            # above), or, unbound with bindings on, sent a first Election after it had voted
            # (it took a Claim while pending, and its winner was gone at its start). Its answers
            # were cleared, and a bound voter whose top is p goes to lost without a word: answer
            # again, or p waits in NoMajority for good (the twelfth session's TN-4 gap)
            self._count("answered_new_round")
            self._send_election(e, (p,), out)
        if e.state != "lost":
            self._evaluate(e, now, out)

    def _on_coordinator(self, rid: str, w: int, round_: int, now: float, out: Output) -> None:
        e = self._entry(rid, now)
        if e is None:
            return
        self._heard(e, w, round_)
        e.suspects.discard(w)
        if e.state == "pending":
            e.winner = w
            self._vote(e, w, out)
        elif e.state in ("electing", "waiting"):
            self._lose(e, w, out)
        elif e.state == "claiming":  # w won with a majority: ours cannot be one
            self._withdraw(e, w, out)
        elif e.state == "lost":
            if w == e.winner:
                self._heard_winner(e)
                self._vote(e, w, out)
            elif self._claim(e, w) > self._claim(e, e.winner):
                self._lose(e, w, out)
        elif self._claim(e, w) > self._claim(e, self.self_id):  # won: two claimants
            self._lose(e, w, out)
        else:
            out.send(w, self._coordinator_msg(e))
            self._await_ack(e, w, now)

    def _on_claim(self, rid: str, w: int, round_: int, now: float, out: Output) -> None:
        """w asks for our vote. We vote for one claimant per rid: the first one, unless it is no
        longer up; a claimant yields to a higher claim (it has not sealed: it had no majority)."""
        e = self._entry(rid, now)
        if e is None:
            return
        if round_ < e.heard_round.get(w, -1):
            # w opened a newer round since (it restarted: it abandoned that claim): following
            # it now would leave us lost to a node that is not claiming, and it perhaps lost to
            # us (two nodes that each followed the other: the TN-5 fault on the fake network,
            # seed 1367 of 2,400, where a Claim resent before a partition came after its heal)
            self._count("stale_claim")
            return
        self._heard(e, w, round_)
        e.suspects.discard(w)
        if e.state == "pending":
            if e.winner in (0, w) or self.m.state_of(e.winner, now) != "up":
                e.winner = w
                self._vote(e, w, out)
            else:
                e.refused.add(w)  # voted for when our claimant goes down (peer_down)
                self._count("claim_refused")
        elif e.state in ("electing", "waiting"):
            if e.bound and self._top_bound(e, self.m.up_peers(now)) != w:
                self._count("claim_refused_bound")  # our vote is bound to another (or to a key
                e.deferred.add(w)  # not known yet: voted for once it is, see _evaluate)
                return
            self._lose(e, w, out)
        elif e.state == "claiming":
            if self._claim(e, w) > self._claim(e, self.self_id):
                self._withdraw(e, w, out)
            else:  # w yields to our Claim, and a claimant never votes unasked: ask it now
                self._send_claim(e, (w,), out)  # (we may be waiting for that)
        elif e.state == "lost":
            if w == e.winner:
                self._heard_winner(e)
                self._vote(e, w, out)
            else:  # we voted for another claimant that is still up: our vote stays
                self._count("claim_refused")
        else:  # won: tell the late claimant
            out.send(w, self._coordinator_msg(e))
            self._await_ack(e, w, now)

    # ---- transitions --------------------------------------------------------------------------
    def _evaluate(self, e: _Rid, now: float, out: Output) -> None:
        """electing/waiting: introduce ourselves to new live peers, then wait, or decide."""
        live = self.m.up_peers(now)
        new = live - e.sent_to
        if new:  # peers that were not live before get a full answer timeout to answer
            e.sent_to |= new
            e.round_start = now
            # after a restart, ASK: a peer that answered an earlier round (or while we were
            # pending) may not answer this one by itself (a bound voter whose top we are goes to
            # lost without a word), and our quorum of answers would never come. A peer that has
            # no copy (it forgot the request: Done) stays silent: only a bound Election makes a
            # pending node abstain, and a bare ASK binds nothing.
            self._send_round(e, new, self._election_msg(e, ask=e.restarts > 0), out)
        candidates = live - e.suspects
        if e.bound:
            top = self._top_bound(e, live)
            if top == self.self_id and self._wins_on_bindings(e, live, now):
                # the top of our binding with a majority of bindings counted: win now, without
                # the keys still on their way (Ceilings: each is below ours whatever it is)
                self._decide(e, live, now, out)
                return
            if top is not None and top != self.self_id:  # our vote is bound to the top: our
                # Election was it. A top that cannot count it claims at once: if its Claim came
                # already, vote now
                self._lose(e, top, out, vote=top in e.deferred)
                return
            missing = [q for q in self._members(e.bound) if q in live and q not in e.keys]
            if top is None or missing:
                # a key of our binding is missing: no vote, no claim until it comes (with
                # Ceilings we may know we are the top, but not win yet: the keys then come with
                # the bindings we lack, and never deciding on the round timeout without them
                # keeps the quorum of answers as it was)
                round_end = e.round_start + self.answer_timeout_s
                if now >= round_end:  # our Election may be lost: ask the silent ones again
                    self._send_round(e, missing, self._election_msg(e, ask=True), out)
                    e.round_start = now
                    round_end = now + self.answer_timeout_s
                self._arm(e, round_end)
                return
            higher = []  # the top of our binding: a peer outside it cannot have our vote, and
            # we need no answer from it (a peer of our binding that is live answered: its key)
            candidates = {q for q in self._members(e.bound) if q in live and q != self.self_id}
        else:
            mine = self._own_key(e)
            higher = [e.keys[q] for q in candidates if q in e.keys and e.keys[q] > mine]
        if higher:
            best = max(higher)[2]
            if (
                e.restarts == 0
                and not e.suspects
                and candidates <= e.answered
                and self.m.has_majority(now)
            ):
                # every live peer answered and one of them has the top key: vote for it now
                # (as if its Claim had come), so it usually has its majority when it decides
                self._lose(e, best, out)
                e.voted_at = now  # resent until the winner says anything (or Done comes)
                self._arm(e, now + self.coordinator_timeout_s)
                return
            if e.state != "waiting" or e.winner != best:
                self._unwatch(e)
                e.state, e.winner = "waiting", best
                self._watch.setdefault(best, set()).add(e.rid)
                self._arm(e, now + self.coordinator_timeout_s)
            return
        if e.state == "waiting":
            self._unwatch(e)
            e.state, e.winner = "electing", 0
        round_end = e.round_start + self.answer_timeout_s
        if now < round_end and not candidates <= e.answered:
            self._arm(e, round_end)
            return
        self._decide(e, live, now, out)

    def _decide(self, e: _Rid, live: set[int], now: float, out: Output) -> None:
        # Win only on evidence: a majority (self included) must have answered this election.
        # A node cut off from its peers still counts them live until the failure detector
        # notices; without this quorum it would win its requests on the round timeout alone
        # while the majority side serves them too (two replies for one request).
        answered = sum(1 for q in live if q in e.answered)
        if not self.m.has_majority(now) or answered + 1 < self.m.majority:
            if not e.no_majority_said:
                e.no_majority_said = True
                out.events.append(NoMajority(e.rid))
            e.round_start = now
            self._arm(e, now + self.answer_timeout_s)
            return
        e.state = "claiming"
        e.claim_at = now
        e.votes &= live
        e.votes.update(q for q in live if self._binds_to_me(e, q))
        if len(e.votes) + 1 >= self.m.majority:
            self._win(e, now, out)
            return
        if (e.restarts == 0 and not e.suspects and not e.peer_gone and live <= e.answered
                and all(e.keys.get(q, (1,))[0] > 0 for q in live)
                and not all(q in e.binds for q in live)):
            # first round, every live peer answered: each of them has every key we have (or
            # will, with our Election) and votes unasked; the Claim is the fallback after an
            # answer timeout. A peer that abstained (priority 0: the election actor's answer
            # for a request it has no copy of) never votes unasked: claim at once
            self._arm(e, now + self.answer_timeout_s)
            return
        self._send_claim(e, live, out)
        self._arm(e, now + self.answer_timeout_s)

    def _win(self, e: _Rid, now: float, out: Output) -> None:
        """A majority (self included) voted for us: no other node can win `rid` while the
        voters stay up. Peers that have not voted yet acknowledge our Claim or, after an answer
        timeout, the Coordinator we resend them."""
        e.state = "won"
        e.won_at = now
        e.told.clear()  # won: peers whose resent vote we answered with Coordinator
        e.unacked = self.m.up_peers(now) - e.votes
        out.events.append(Won(e.rid))
        if e.unacked:
            self._arm(e, now + self.answer_timeout_s)
        else:
            self._disarm(e)

    def _withdraw(self, e: _Rid, w: int, out: Output) -> None:
        """Our claim yields to w: release the peers that voted for us (an Election from the
        node they follow makes them elect again) and vote for w."""
        voters, e.votes = e.votes, set()
        if voters:
            self._new_round(e)  # a round they have not seen: they give their votes up
            self._send_election(e, voters, out)
        self._lose(e, w, out)

    def _lose(self, e: _Rid, w: int, out: Output, vote: bool = True) -> None:
        if e.state in ("electing", "waiting"):  # release the unasked votes we held: our
            voters, e.votes = e.votes - {w}, set()  # Election (a new round) makes them
            if voters:  # elect again
                self._new_round(e)
                self._send_election(e, voters, out)
        self._unwatch(e)
        e.state, e.winner = "lost", w
        e.voted_at = None
        e.unacked.clear()
        e.told.clear()
        self._disarm(e)
        self._watch.setdefault(w, set()).add(e.rid)
        out.events.append(Lost(e.rid, w))
        if vote:
            self._vote(e, w, out)
        else:  # bound (Bindings): the round our Election voted in, for late_election
            e.voted_round = e.heard_round.get(w, 0)

    def _restart(self, e: _Rid, now: float, reason: str, out: Output) -> None:
        if e.state == "waiting" and reason == "no coordinator":
            e.suspects.add(e.winner)
        self._unwatch(e)
        e.state, e.winner = "electing", 0
        e.sent_to.clear()
        e.sent_round.clear()
        e.answered.clear()  # answers of an earlier round are no evidence for this one
        e.unacked.clear()
        e.votes.clear()
        e.restarts += 1
        self._new_round(e)
        e.round_start = now
        out.events.append(Restart(e.rid, reason))
        self._evaluate(e, now, out)

    def _heard_winner(self, e: _Rid) -> None:
        if e.voted_at is not None:
            e.voted_at = None
            self._disarm(e)

    def _on_timer(self, e: _Rid, now: float, out: Output) -> None:
        if e.state == "lost":  # our unasked vote may be lost: the winner would wait forever
            if e.voted_at is not None and now - e.voted_at <= self.pending_ttl_s:
                out.send(e.winner, ElectionOk(rid=e.rid, node=self.self_id, round=e.voted_round))
                self._arm(e, now + self.coordinator_timeout_s)
            else:
                e.voted_at = None
        elif e.state == "pending":
            if not e.abstain_to:
                self.forget(e.rid)
                return
            out.send_all(e.abstain_to, self._abstention_msg(e))
            e.abstain_to.clear()
            e.abstained = True
            self._arm(e, e.round_start + self.pending_ttl_s)
        elif e.state == "electing":
            self._evaluate(e, now, out)
        elif e.state == "waiting":
            self._restart(e, now, "no coordinator", out)
        elif e.state == "claiming":
            if now - e.claim_at > self.pending_ttl_s:  # abdicate (Elections release the voters)
                self._restart(e, now, "claim not accepted", out)
                return
            self._send_claim(e, self.m.up_peers(now) - e.votes, out)
            self._arm(e, now + self.answer_timeout_s)
        elif e.state == "won":
            e.unacked &= self.m.up_peers(now)
            if now - e.won_at > self.pending_ttl_s:
                e.unacked.clear()  # a peer silent that long is hung: stop resending
            out.send_all(e.unacked, self._coordinator_msg(e))
            if e.unacked:
                self._arm(e, now + self.answer_timeout_s)

    # ---- helpers ------------------------------------------------------------------------------
    def _entry(self, rid: str, now: float) -> _Rid | None:
        e = self._rids.get(rid)
        if e is not None:
            return e
        if self._npending >= self.max_pending:
            self._count("pending_full")
            return None
        e = self._rids[rid] = _Rid(rid, "pending", round_start=now)  # (start() resets it)
        self._npending += 1
        self._arm(e, now + self.pending_ttl_s)
        return e

    def _claim(self, e: _Rid, node: int) -> tuple[int, int]:
        """Order of two claimants of one rid: tie hash, then node id (computable anywhere)."""
        return (self._tie_of(e, node), node)

    def _tie_of(self, e: _Rid, node: int) -> int:
        """tie_hash(e.rid, node), computed once per rid and node (a pure function: a BLAKE2b
        per call, several calls per message otherwise); kept as long as the rid's entry."""
        tie = e.ties.get(node)
        if tie is None:
            tie = e.ties[node] = self._tie(e.rid, node)
        return tie

    def _own_key(self, e: _Rid) -> Key:
        return (e.prio, self._tie_of(e, self.self_id), self.self_id)

    def _election_msg(self, e: _Rid, ask: bool = False) -> Election:
        """Our Election of the current round; `ask`: we lack the receiver's key (Bindings)."""
        return Election(rid=e.rid, node=self.self_id, priority=e.prio, round=e.round,
                        bind=e.bound | ASK if ask else e.bound)

    def _abstention_msg(self, e: _Rid) -> Election:
        """We have no copy of the request: we take no part (priority 0), bound to nothing."""
        return Election(rid=e.rid, node=self.self_id, priority=0, round=e.round)

    @staticmethod
    def _members(mask: int) -> Iterable[int]:
        while mask:
            low = mask & -mask
            yield low.bit_length() - 1
            mask ^= low

    def _top_bound(self, e: _Rid, live: set[int]) -> int | None:
        """The node our binding gives our vote to: the top key among its nodes that are live
        (ourselves included); None while the key of one of them is unknown (and, with Ceilings,
        its bound is above the best key known)."""
        best = self._own_key(e)
        unknown = []
        for q in self._members(e.bound):
            if q != self.self_id and q in live:
                k = e.keys.get(q)
                if k is None:
                    if not self.ceilings:
                        return None
                    unknown.append(q)
                else:
                    best = max(best, k)
        for q in unknown:  # (Ceilings) a key not heard may be the top unless its bound is below
            if self._ceiling_key(e, q) > best:
                return None
        return best[2]

    def _binds_to_me(self, e: _Rid, q: int) -> bool:
        """Peer q's binding is a vote for us: it names us, and we know the key of every node it
        names (or, with Ceilings, its bound), ours the top (q then votes for nobody else while
        we are up in its view)."""
        mask = e.binds.get(q, 0)
        if not mask >> self.self_id & 1:
            return False
        mine = self._own_key(e)
        for m in self._members(mask):
            if m != self.self_id:
                k = e.keys.get(m)
                if k is None:  # not heard: below us only if its bound is (Ceilings)
                    if not self.ceilings or self._ceiling_key(e, m) > mine:
                        return False
                elif k > mine:
                    return False
        return True

    def _wins_on_bindings(self, e: _Rid, live: set[int], now: float) -> bool:
        """(Ceilings) In our first round (no restart, suspect or peer gone), the bindings of
        live peers counted for us make a majority with our own vote."""
        return (self.ceilings and e.restarts == 0 and not e.suspects
                and not e.peer_gone and self.m.has_majority(now)
                and sum(1 for q in live if self._binds_to_me(e, q)) + 1 >= self.m.majority)

    def _ceiling_of(self, node: int) -> int:
        """The highest priority `node` can have: that of its pool idle on an idle host, by the
        pool size its heartbeats say (Ceilings); above any priority if they say none."""
        slots = self.m.slots_of(node)
        return priority(0, 0, 0.0, slots) if slots > 0 else UNBOUNDED

    def _ceiling_key(self, e: _Rid, node: int) -> Key:
        """The highest key `node` can have in the election of `e` (Ceilings)."""
        return (self._ceiling_of(node), self._tie_of(e, node), node)

    def _coordinator_msg(self, e: _Rid) -> Coordinator:
        return Coordinator(rid=e.rid, node=self.self_id, round=e.round)

    def _new_round(self, e: _Rid) -> None:
        """Open a round of ours for `e`: numbered from one counter of this node, which clear()
        keeps, so a round is never reused while the process lives (a peer's transport refuses
        what was sent to a previous process of ours: its boot epoch)."""
        self._rounds += 1
        e.round = self._rounds

    def _send_election(self, e: _Rid, peers: Iterable[int], out: Output) -> None:
        self._send_round(e, peers, self._election_msg(e), out)

    def _send_claim(self, e: _Rid, peers: Iterable[int], out: Output) -> None:
        self._send_round(e, peers, Claim(rid=e.rid, node=self.self_id, round=e.round), out)

    def _send_round(self, e: _Rid, peers: Iterable[int], msg: Message, out: Output) -> None:
        """`msg` (of our current round) to `peers`: each one's vote must now name that round."""
        for q in peers:
            e.sent_round[q] = e.round
        out.send_all(peers, msg)

    def _heard(self, e: _Rid, p: int, round_: int) -> None:
        if round_ > e.heard_round.get(p, -1):
            e.heard_round[p] = round_

    def _vote(self, e: _Rid, w: int, out: Output) -> None:
        """Our vote for `w` (also the acknowledgement of its Coordinator), for the latest round
        of w we heard: w counts it only if that is the round it last sent us."""
        e.voted_round = e.heard_round.get(w, 0)
        out.send(w, ElectionOk(rid=e.rid, node=self.self_id, round=e.voted_round))

    def _acked(self, e: _Rid, peer: int) -> None:
        """Won: `peer` follows us now; the resends of our Coordinator stop with the last one."""
        e.unacked.discard(peer)
        if not e.unacked:
            self._disarm(e)

    def _await_ack(self, e: _Rid, peer: int, now: float) -> None:
        if not e.unacked:
            self._arm(e, now + self.answer_timeout_s)
        e.unacked.add(peer)

    def _arm(self, e: _Rid, when: float) -> None:
        e.gen += 1
        e.deadline = when
        heapq.heappush(self._heap, (when, e.gen, e.rid))

    def _disarm(self, e: _Rid) -> None:
        e.gen += 1
        e.deadline = None

    def _unwatch(self, e: _Rid) -> None:
        if e.state in ("waiting", "lost"):
            rids = self._watch.get(e.winner)
            if rids is not None:
                rids.discard(e.rid)
                if not rids:
                    del self._watch[e.winner]

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1
