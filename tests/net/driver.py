"""A real client (actors.client.client_session.ClientSession, what the shell runs) driven by a script,
run inside a client host by the N-level tests: `python tests/net/driver.py MODE --config F
--user U --home H --host ADDR [options]`. Prints one JSON object per line on stdout.

Modes:
- `encrypt`: seal generated images (PNG, seeded) every `--interval` s until `--count` are done,
  `--duration` s passed or SIGTERM; one line per request {"op": "encrypt", "i", "rid", "t0",
  "t1", "ok", "node", "exact", "code"}, then {"summary": ...}: caller counters, and every reply the
  transport delivered (EncryptReply per request id; ErrorReply codes with the node address and
  time), so the test sees replies received twice and who answered "not in majority".
- `burst`: on each "go" line of stdin, `--count` encrypt requests at once (threads, request ids
  taken beforehand); rows as `encrypt`, the summary at the end of stdin (after `--linger` s).
- `interactive`: reads "encrypt PATH" lines on stdin; prints {"sent": t, "rid"} just before the
  request and {"reply": t, "node", "seal_ms", "exact", "retries"} or {"error"...} after it;
  at the end of stdin, after `--linger` s, the summary (TN-4).
- `post`: join, post `--count` grant updates for the offline user `--to`, leave (TS-2 traffic);
  with `--wait-stdin`, posts only after a line on stdin (the test cuts the network meanwhile).
  A post that fails prints {"failed": id, "code"} and the driver exits with status 1.
- `join`: join and print {"handed_over": [ids]}, the updates the join handed over (neither
  applied nor confirmed: they stay pending), then leave.
- `impostor`: a client with its own (fresh) keys sends Join for `--user` to node `--node` only,
  as a modified client would, and prints {"join": "accepted"} or {"join": code}; if accepted,
  it confirms the ids given in `--ids` with that session and prints {"confirm": "ok" | code}.
- `peer-attack`: peer requests to `--owner` (preview, image, more views) and an access update
  to `--to` posing as the owner, with a zero, a random and an expired (earlier session) token;
  one line per attempt with the error code (TS-4).
Times are time.monotonic() seconds (one clock for every namespace of the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import config
from actors.client.client_session import ClientSession, SessionError
from codec import seal
from codec.messages import (
    AccessUpdate,
    ConfirmUpdates,
    EncryptReply,
    EncryptRequest,
    ErrorReply,
    ImageRequest,
    MoreViews,
    PreviewRequest,
    Update,
)
from transport.udp import Delivery

STOP = threading.Event()


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


class Recorder:
    """Every EncryptReply and ErrorReply the client's transport delivers, with time and sender."""

    def __init__(self, session: ClientSession) -> None:
        self.lock = threading.Lock()
        self.encrypt_replies: dict[str, list[int]] = {}
        self.errors: list[tuple[float, str, str]] = []
        session.transport.subscribe(self.on_delivery, (EncryptReply, ErrorReply))

    def on_delivery(self, d: Delivery) -> None:
        with self.lock:
            if isinstance(d.msg, EncryptReply):
                self.encrypt_replies.setdefault(d.msg.rid, []).append(d.msg.node)
            else:
                self.errors.append((time.monotonic(), f"{d.addr[0]}:{d.addr[1]}", d.msg.code))


def summary(session: ClientSession, rec: Recorder) -> dict[str, Any]:
    st = session.caller.stats
    with rec.lock:
        replies = dict(rec.encrypt_replies)
        errors = list(rec.errors)
    return {"summary": {"accepted": st.replies_accepted, "received": st.replies_received,
                        "duplicates": st.duplicates, "retries": st.retries,
                        "encrypt_replies": replies, "errors": errors}}  # fmt: skip


def small_png(seed: int) -> bytes:
    from benchmarks.cloud import small_png as make

    return make(seed)


def run_encrypt(session: ClientSession, args: argparse.Namespace) -> None:
    rec = Recorder(session)
    last = [""]
    next_rid = session.next_rid

    def recording_next_rid() -> str:  # the request id of each row
        last[0] = next_rid()
        return last[0]

    session.next_rid = recording_next_rid  # type: ignore[method-assign]
    folder = Path(args.home).parent / f"in-{args.user}"
    folder.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + args.duration if args.duration else float("inf")
    i = 0
    while not STOP.is_set() and i < args.count and time.monotonic() < end:
        data = small_png(args.seed * 100_000 + i)
        path = folder / f"{args.user}-{i:04d}.png"
        path.write_bytes(data)
        t0 = time.monotonic()
        row: dict[str, Any] = {"op": "encrypt", "i": i, "t0": t0}
        try:
            out = session.encrypt_file(path)
            sealed = (session.home.root / out["path"]).read_bytes()
            row.update(ok=True, node=out["node"], exact=seal.unseal(sealed).payload == data)
        except SessionError as exc:
            row.update(ok=False, code=exc.code, error=str(exc))
        row["t1"] = time.monotonic()
        row["rid"] = last[0]
        emit(row)
        i += 1
        STOP.wait(args.interval)
    emit(summary(session, rec))


def run_burst(session: ClientSession, args: argparse.Namespace) -> None:
    """On each "go" line of stdin: `--count` encrypt requests at once (threads), one row each."""
    from concurrent.futures import ThreadPoolExecutor

    rec = Recorder(session)
    pool = ThreadPoolExecutor(max_workers=args.count)
    n = 0
    emit({"ready": True})
    for line in sys.stdin:
        if line.strip() != "go":
            continue
        rids = [session.next_rid() for _ in range(args.count)]  # sqlite: this thread only
        jobs = [(rid, small_png(args.seed * 100_000 + n + k)) for k, rid in enumerate(rids)]
        n += args.count
        for row in pool.map(lambda job: burst_one(session, *job), jobs):
            emit(row)
    pool.shutdown()
    STOP.wait(args.linger)  # late replies still count in the summary
    emit(summary(session, rec))


def burst_one(session: ClientSession, rid: str, data: bytes) -> dict[str, Any]:
    row: dict[str, Any] = {"op": "encrypt", "rid": rid, "t0": time.monotonic()}
    try:
        reply = session.call(lambda r, a: EncryptRequest(rid=r, image="b.png", data=data,
                                                         attempt=a), rid=rid)  # fmt: skip
        assert isinstance(reply, EncryptReply)
        row.update(ok=True, node=reply.node, exact=seal.unseal(reply.sealed).payload == data)
    except SessionError as exc:
        row.update(ok=False, code=exc.code, error=str(exc))
    row["t1"] = time.monotonic()
    return row


def run_interactive(session: ClientSession, args: argparse.Namespace) -> None:
    rec = Recorder(session)
    emit({"ready": True})
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "encrypt":
            continue
        path = Path(words[1])
        data = path.read_bytes()
        before = session.caller.stats.retries
        rid = session.next_rid()
        emit({"sent": time.monotonic(), "rid": rid})
        try:
            reply = session.call(lambda r, a, p=path, d=data: EncryptRequest(
                rid=r, image=p.name, data=d, attempt=a), rid=rid)
            assert isinstance(reply, EncryptReply)
            emit({"reply": time.monotonic(), "node": reply.node, "seal_ms": reply.seal_ms,
                  "exact": seal.unseal(reply.sealed).payload == data,
                  "retries": session.caller.stats.retries - before})  # fmt: skip
        except SessionError as exc:
            emit({"error": str(exc), "code": exc.code, "t": time.monotonic()})
    STOP.wait(args.linger)  # late replies still count in the summary
    emit(summary(session, rec))


def run_post(session: ClientSession, args: argparse.Namespace) -> int:
    if args.wait_stdin:
        sys.stdin.readline()
    for _ in range(args.count):
        update = Update(id=session.next_rid(), kind="grant", owner=session.user, borrower=args.to,
                        image="pic.png", delta=1, addressee=args.to, grant=b"",
                        created=time.time())  # fmt: skip
        try:
            session.post_update(update)
        except SessionError as exc:
            emit({"failed": update.id, "code": exc.code, "message": str(exc)})
            return 1
        emit({"posted": update.id})
    return 0


def run_impostor(session: ClientSession, args: argparse.Namespace, cfg: config.Config) -> None:
    """A session of `--user` with this client's own keys, joined at one node only."""
    addr = cfg.node(args.node).client_addr
    keys = session.keys
    try:
        reply = session.call(lambda rid, _a: keys.join(rid, session.user, time.time()),
                             targets=[addr], deadline_s=15.0)
    except SessionError as exc:
        emit({"join": exc.code})
        return
    emit({"join": "accepted"})
    tok = reply.token  # type: ignore[attr-defined]
    ids = tuple(i for i in args.ids.split(",") if i)
    try:
        session.call(lambda rid, _a: ConfirmUpdates(rid=rid, user=session.user, token=tok,
                                                    ids=ids),
                     targets=[addr], deadline_s=15.0)  # fmt: skip
        emit({"confirm": "ok"})
    except SessionError as exc:
        emit({"confirm": exc.code})


def run_peer_attack(session: ClientSession, args: argparse.Namespace,
                    expired: bytes) -> None:  # fmt: skip
    """Peer requests to `--owner` (preview, image, more views) and an access update to
    `--to` claiming to come from the owner, each with a zero, a random and an expired token."""
    owner, borrower = session.lookup(args.owner, refresh=True), session.lookup(args.to)
    if owner is None or borrower is None:
        emit({"error": f"{args.owner} or {args.to} is not online"})
        return
    me = session.user
    update = Update(id=f"{args.owner}#999", kind="grant", owner=args.owner, borrower=args.to,
                    image=args.image, delta=5, addressee=args.to, grant=b"", created=time.time())
    tokens = {"zero": b"\0" * 16, "random": os.urandom(16), "expired": expired}
    for variant, tok in tokens.items():
        asks: dict[str, tuple[Any, Any]] = {
            "preview": (owner, lambda rid, t=tok: PreviewRequest(rid=rid, user=me, token=t)),
            "image": (owner, lambda rid, t=tok: ImageRequest(rid=rid, user=me, token=t,
                                                             image=args.image, views=1, days=0.0)),
            "more": (owner, lambda rid, t=tok: MoreViews(rid=rid, user=me, token=t,
                                                         image=args.image, views=3)),
            "access update as owner": (borrower, lambda rid, t=tok: AccessUpdate(
                rid=rid, user=args.owner, token=t, update=update)),
        }  # fmt: skip
        for name, (entry, build) in asks.items():
            row: dict[str, Any] = {"variant": variant, "request": name}
            try:
                reply = session.call(lambda rid, _a, b=build: b(rid),
                                     targets=[(entry.host, entry.port)], deadline_s=10)
                row["reply"] = type(reply).__name__
            except SessionError as exc:
                row["code"] = exc.code
            emit(row)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="driver.py")
    p.add_argument("mode", choices=["encrypt", "burst", "interactive", "post", "peer-attack",
                                    "join", "impostor"])
    p.add_argument("--wait-stdin", action="store_true", help="post: wait for a line first")
    p.add_argument("--node", type=int, default=2, help="impostor: the one node it joins at")
    p.add_argument("--ids", default="", help="impostor: update ids to confirm, comma-separated")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--linger", type=float, default=0.0, help="burst, interactive: wait at the end")
    p.add_argument("--to", default="bob")
    p.add_argument("--owner", default="alice")
    p.add_argument("--image", default="pic.png")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    cfg = config.load(args.config)
    expired = b""
    if args.mode == "peer-attack":  # a session that has ended: its token is expired
        first = ClientSession(args.user, Path(args.home), cfg, host=args.host)
        first.join()
        expired = first.require_token()
        first.close()
    session = ClientSession(args.user, Path(args.home), cfg, host=args.host)
    if args.mode == "impostor":
        try:
            run_impostor(session, args, cfg)
        finally:
            session.close()
        return 0
    if args.mode == "join":  # record what is handed over; apply and confirm nothing
        session._handover.apply = lambda updates: emit(  # type: ignore[method-assign]
            {"handed_over": [u.id for u in updates]}) or []
    try:
        session.join()
        emit({"joined": session.user, "at": list(session.transport.address)})
        if args.mode == "encrypt":
            run_encrypt(session, args)
        elif args.mode == "burst":
            run_burst(session, args)
        elif args.mode == "interactive":
            run_interactive(session, args)
        elif args.mode == "post":
            return run_post(session, args)
        elif args.mode == "join":
            pass
        else:
            run_peer_attack(session, args, expired)
    finally:
        session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
