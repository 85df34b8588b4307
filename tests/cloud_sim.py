"""A fake network and fake clock for the cloud cores (membership, election, failure token).

Everything runs in one thread: messages go through `FakeNet` (seeded loss, random delay, FIFO per
link), time is a float that the harness advances to the next due event. Used by
tests/test_election.py and tests/test_failure_token.py.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.core.election import ElectionCore, Lost, TieHash, Won, tie_hash
from actors.core.membership import Membership, Output
from actors.core.token_ring import Minted, NeedSync, TokenRing, WentDown
from codec.messages import Done, Message
from config import FailuresConfig

IDS = (1, 2, 3)


class FakeNet:
    """Datagram-like delivery: each message is dropped with probability `loss`, else delivered
    after a delay in `delay` seconds, never before an earlier message on the same link (unless
    made `late`)."""

    def __init__(
        self, rng: random.Random, loss: float = 0.0, delay: tuple[float, float] = (2e-4, 8e-4)
    ):
        self.rng = rng
        self.loss = loss
        self.delay = delay
        self.queue: list[tuple[float, int, int, int, Message]] = []
        self.link_last: dict[tuple[int, int], float] = {}
        self.seq = 0
        self.sent = 0
        self.dropped = 0
        self.cut: set[tuple[int, int]] = set()  # (src, dst) links that drop everything
        self.slow: dict[tuple[int, int], float] = {}  # (src, dst) -> extra delay, seconds
        self.deaf_to: set[tuple[int, type[Message]]] = set()  # (dst, type): never delivered
        # (src, dst, type) -> extra delay of the next such message, which later messages on the
        # link overtake (the real transport: one message lost and resent arrives after others)
        self.late: dict[tuple[int, int, type[Message]], float] = {}
        # (src, dst) -> when the link heals: meanwhile its messages are held as the real
        # transport resends them, and those sent less than `resend_s` before the heal arrive
        # after it (in any order); older ones are dropped (transport.send_deadline_s)
        self.held: dict[tuple[int, int], float] = {}
        self.resend_s = 5.0
        self.spread_s = 1.0  # after the heal, within this (the resend timers run on)

    def send(self, src: int, dst: int, msg: Message, now: float) -> None:
        self.sent += 1
        if ((src, dst) in self.cut or (dst, type(msg)) in self.deaf_to
                or self.rng.random() < self.loss):
            self.dropped += 1
            return
        heal = self.held.get((src, dst))
        if heal is not None and now < heal:
            if heal - now > self.resend_s:
                self.dropped += 1
                return
            self.seq += 1
            at = heal + self.rng.uniform(0.0, min(self.spread_s, self.resend_s - (heal - now)))
            heapq.heappush(self.queue, (at, self.seq, src, dst, msg))
            return
        extra = self.slow.get((src, dst), 0.0)
        late = self.late.pop((src, dst, type(msg)), None)
        at = max(now + extra + self.rng.uniform(*self.delay), self.link_last.get((src, dst), 0.0))
        if late is None:
            self.link_last[(src, dst)] = at
        else:
            at += late
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, src, dst, msg))

    def next_time(self) -> float | None:
        return self.queue[0][0] if self.queue else None

    def pop_due(self, now: float) -> list[tuple[int, int, Message]]:
        due = []
        while self.queue and self.queue[0][0] <= now:
            _, _, src, dst, msg = heapq.heappop(self.queue)
            due.append((src, dst, msg))
        return due


@dataclass
class Record:
    """Events seen by one node, with the (fake) time they happened."""

    won: dict[str, float] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    events: list[tuple[float, object]] = field(default_factory=list)


class ElectionCluster:
    """N election cores whose memberships agree (heartbeats are fed directly, without loss)."""

    def __init__(
        self,
        ids: tuple[int, ...] = IDS,
        *,
        seed: int = 0,
        loss: float = 0.0,
        answer_timeout_s: float = 0.3,
        failure_timeout_s: float = 1.0,
        tie_hash: TieHash = tie_hash,
        bind: bool = True,
        ceilings: bool = False,
        slots: int = 2,
    ) -> None:
        self.ids = ids
        self.now = 0.0
        self.rng = random.Random(seed)
        self.net = FakeNet(self.rng, loss)
        self.members = {i: Membership(i, ids, failure_timeout_s) for i in ids}
        self.cores = {i: ElectionCore(i, self.members[i], answer_timeout_s, tie_hash, bind=bind,
                                      ceilings=ceilings)
                      for i in ids}
        # priorities a test gives start() are mapped through this first (None: as given)
        self.prio_map: Callable[[int], int] | None = None
        self.rec = {i: Record() for i in ids}
        # nodes alive by heartbeat that send no election message
        self.silent: set[int] = set()
        self.hb_interval = failure_timeout_s / 5
        self.hb_alive = set(ids)  # nodes whose heartbeats reach everyone
        self.hb_deaf: set[int] = set()  # nodes that hear no heartbeat (their input is cut)
        self.hb_cut: set[tuple[int, int]] = set()  # (src, dst): src's heartbeats do not reach dst
        # feed Membership.transitions to ElectionCore.peer_down, as the election actor does
        # (off by default: most tests call peer_down themselves, at chosen moments)
        self.track_transitions = False
        # the encrypt flow's Done, as the node actors do it: a winner sends Done(rid) to its
        # peers at once (they forget the request), and the winner and every node its Done
        # reached answer any later election message of it with Done again (the election actor's
        # `settled`, for an acknowledged reply); off by default
        self.done_on_win = False
        self.settled: dict[int, set[str]] = {i: set() for i in ids}
        self.next_hb = 0.0
        self.slots = {i: slots for i in ids}  # each node's pool size, as its heartbeats say
        self.heartbeats()

    def heartbeats(self) -> None:
        for i in self.hb_alive:
            for j in self.ids:
                if (i != j and j in self.hb_alive and j not in self.hb_deaf
                        and (i, j) not in self.hb_cut):
                    self.members[j].observe(
                        self.members[i].heartbeat(load=0, token_epoch=0, token_holder=0,
                                                  slots=self.slots[i]), self.now
                    )
        self.next_hb = self.now + self.hb_interval

    def apply(self, node: int, out: Output) -> None:
        rec = self.rec[node]
        for ev in out.events:
            rec.events.append((self.now, ev))
            if isinstance(ev, Won):
                rec.won[ev.rid] = self.now
                rec.lost.pop(ev.rid, None)
                if self.done_on_win:
                    self.settled[node].add(ev.rid)
                    out.sends.extend((p, Done(rid=ev.rid, node=node, acked=True))
                                     for p in self.ids if p != node)
            elif isinstance(ev, Lost):
                rec.lost[ev.rid] = ev.winner
                rec.won.pop(ev.rid, None)
        if node in self.silent:
            return
        for dst, msg in out.sends:
            self.net.send(node, dst, msg, self.now)

    def see_down(self, node: int, gone: int) -> None:
        """`node` sees `gone` unreachable now (its port refused), and its election learns it, as
        the election actor does on PeerRefused."""
        self.members[node].refused(gone, self.now)
        self.apply(node, self.cores[node].peer_down(gone, self.now))

    def start(self, node: int, rid: str, prio: int) -> None:
        if self.prio_map is not None:
            prio = self.prio_map(prio)
        self.apply(node, self.cores[node].start(rid, prio, self.now))

    def _advance(self, limit: float, settle: bool) -> bool:
        """Advance to the next event (delivery, core deadline, heartbeat) not after `limit`.
        Returns False when `limit` is reached, or (settle) when nothing is left to happen."""
        times = [
            t
            for t in (self.net.next_time(), *(c.next_deadline() for c in self.cores.values()))
            if t is not None
        ]
        if settle and not times:
            return False
        self.now = max(self.now, min([*times, self.next_hb, limit]))
        if self.now >= self.next_hb:
            self.heartbeats()
            for i, core in self.cores.items():
                if self.track_transitions:
                    for node, state in self.members[i].transitions(self.now):
                        if state != "up":
                            self.apply(i, core.peer_down(node, self.now))
                self.apply(i, core.on_tick(self.now))
        for src, dst, msg in self.net.pop_due(self.now):
            self._deliver(src, dst, msg)
        for i, core in self.cores.items():
            deadline = core.next_deadline()
            if deadline is not None and deadline <= self.now:
                self.apply(i, core.on_tick(self.now))
        return self.now < limit

    def _deliver(self, src: int, dst: int, msg: Message) -> None:
        if isinstance(msg, Done):
            if self.members[dst].self_up:
                self.cores[dst].forget(msg.rid)
                if self.done_on_win:  # the election actor: ForgetElection(settled=True)
                    self.settled[dst].add(msg.rid)
            return
        if self.done_on_win and getattr(msg, "rid", None) in self.settled[dst]:
            if self.members[dst].self_up:
                self.net.send(dst, src, Done(rid=msg.rid, node=dst, acked=True), self.now)
            return
        self.apply(dst, self.cores[dst].on_message(src, msg, self.now))

    def run(self, max_steps: int = 1_000_000) -> None:
        """Run until no message is in flight and no core has a deadline."""
        for _ in range(max_steps):
            if not self._advance(float("inf"), settle=True):
                return
        raise AssertionError("the cluster did not settle")

    def run_for(self, seconds: float) -> None:
        """Advance fake time by `seconds` (heartbeats and ticks included)."""
        end = self.now + seconds
        while self._advance(end, settle=False):
            pass


FAST_FAILURES = FailuresConfig(enabled=True, max_down_s=2.0, mean_up_s=3.0, token_hold_s=0.5)


class TokenCluster:
    """N nodes of Membership + TokenRing, PySyncObj style: every step advances the fake clock by
    `dt`, delivers what is due and ticks every node that is not frozen. A frozen node (SIGSTOP)
    neither ticks nor sends; what is sent to it waits in its inbox until it thaws."""

    def __init__(
        self,
        seed: int,
        *,
        loss: float = 0.0,
        ids: tuple[int, ...] = IDS,
        cfg: FailuresConfig = FAST_FAILURES,
        failure_timeout_s: float = 1.0,
        hb_interval_s: float = 0.2,
        dt: float = 0.02,
        sync_delay_s: float = 0.05,
    ) -> None:
        self.ids = ids
        self.now = 0.0
        self.dt = dt
        self.hb_interval_s = hb_interval_s
        self.sync_delay_s = sync_delay_s
        self.failure_timeout_s = failure_timeout_s
        self.net = FakeNet(random.Random(seed * 7919 + 1), loss, delay=(0.001, 0.01))
        self.members = {i: Membership(i, ids, failure_timeout_s) for i in ids}
        self.rings = {
            i: TokenRing(
                i, ids, cfg, random.Random(seed * 1000 + i), membership=self.members[i], now=0.0
            )
            for i in ids
        }
        self.frozen_until = {i: 0.0 for i in ids}
        self.inbox: dict[int, list[tuple[int, Message]]] = {i: [] for i in ids}
        self.next_hb = {i: 0.0 for i in ids}
        self.sync_at: dict[int, float | None] = {i: None for i in ids}
        self.mints: list[tuple[float, int, int]] = []  # (time, node, epoch)
        self.downs: list[tuple[float, int, int]] = []  # (time, node, epoch of its token)
        self.acquired: dict[tuple[int, int], int] = {}  # (epoch, seq) -> node that held it

    def frozen(self, node: int) -> bool:
        return self.now < self.frozen_until[node]

    def freeze(self, node: int, seconds: float) -> None:
        self.frozen_until[node] = self.now + seconds

    def apply(self, node: int, out: Output) -> None:
        for ev in out.events:
            if isinstance(ev, Minted):
                self._check_mint(node, ev.epoch, ev.lost_holder)
                self.mints.append((self.now, node, ev.epoch))
            elif isinstance(ev, WentDown):
                epoch = self.rings[node].epoch
                newest = max((e for _, _, e in self.mints), default=0)
                assert epoch == newest, f"node {node} went down with stale token {epoch} < {newest}"
                self.downs.append((self.now, node, epoch))
            elif isinstance(ev, NeedSync):
                self.sync_at[node] = self.now + self.sync_delay_s
        for dst, msg in out.sends:
            self.net.send(node, dst, msg, self.now)

    def owner(self) -> tuple[int, int, int] | None:
        """(epoch, seq, node) of the newest token: held, or being passed to `node`."""
        best: tuple[int, int, int] | None = None
        for i, r in self.rings.items():
            if r.holding:
                cand = (r.epoch, r.seq, i)
            elif r.pending is not None:
                cand = (r.pending.epoch, r.pending.seq, r.pending.target)
            else:
                continue
            if best is None or cand > best:
                best = cand
        return best

    def _check_mint(self, node: int, epoch: int, b: int) -> None:
        """A new token replaces a lost one, once: epochs only grow, and the node the minter
        believed to hold the token was frozen (now or within the failure timeout), silent to the
        minter, or unknown (start)."""
        newest = max((e for _, _, e in self.mints), default=0)
        assert epoch > newest, f"epoch {epoch} minted twice or out of order"
        if b in (0, node):
            return
        heard = self.members[node].peer(b)
        silent = heard is None or self.now - heard.last_seen > self.failure_timeout_s
        frozen_lately = self.now - self.frozen_until[b] <= self.failure_timeout_s
        assert frozen_lately or silent, f"t={self.now:.2f}: {node} minted {epoch}; {b} was heard"

    def step(self) -> None:
        self.now += self.dt
        for src, dst, msg in self.net.pop_due(self.now):
            self.inbox[dst].append((src, msg))
        for i in self.ids:
            if not self.frozen(i):
                self._run_node(i)

    def _run_node(self, i: int) -> None:
        ring, member, now = self.rings[i], self.members[i], self.now
        inbox, self.inbox[i] = self.inbox[i], []
        for src, msg in inbox:
            member.heard_from(src, now)
            member.observe(msg, now)
            self.apply(i, ring.on_message(src, msg, now))
        sync_at = self.sync_at[i]
        if sync_at is not None and now >= sync_at:
            self.sync_at[i] = None
            self.apply(i, ring.sync_done(now))
        deadline = ring.next_deadline()
        if deadline is not None and deadline <= now:
            self.apply(i, ring.on_tick(now))
        if now >= self.next_hb[i]:
            self.next_hb[i] = now + self.hb_interval_s
            epoch, holder = ring.token_view()
            hb = member.heartbeat(load=0, token_epoch=epoch, token_holder=holder)
            for j in member.peer_ids:
                self.net.send(i, j, hb, now)

    def holders(self) -> dict[int, int]:
        """node -> epoch of the token it holds."""
        return {i: r.epoch for i, r in self.rings.items() if r.holding}

    def check(self) -> None:
        """The TC-7 invariants at this step."""
        down = [i for i, r in self.rings.items() if r.phase == "down"]
        assert len(down) <= 1, f"t={self.now:.2f}: nodes {down} down at once"
        held = self.holders()
        assert len(set(held.values())) == len(held), (
            f"t={self.now:.2f}: two holders of one epoch {held}"
        )
        for i, r in self.rings.items():
            if r.holding:
                first = self.acquired.setdefault((r.epoch, r.seq), i)
                assert first == i, f"token {(r.epoch, r.seq)} held by {first} and {i}"
