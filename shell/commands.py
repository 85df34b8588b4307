"""The command table: name, arguments, help, handler. Handlers return data, never print.

`run_line(ctx, line)` parses one command line and returns an `Outcome` (data for `--json`,
text for people, ok flag for the exit status). Errors are `CommandError` with a clear
message; nothing here raises a traceback at the user.
"""

from __future__ import annotations

import glob as glob_mod
import logging
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.client.client_session import ClientSession, SessionError
from actors.client.client_store import StoreError
from actors.client.peer import ENDED_TEXT
from actors.core.access import AccessError
from codec.names import InvalidName
from shell import render
from shell.words import expand, split_commands, split_words

log = logging.getLogger(__name__)


class CommandError(Exception):
    """Bad usage or a failed command: the message is for the user, `code` for scripts."""

    def __init__(self, message: str, code: str = "usage") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Outcome:
    data: dict[str, Any]
    text: str
    ok: bool = True


@dataclass
class Context:
    session: ClientSession
    progress: Callable[[int, int, str], None] | None = None
    quit_requested: bool = False
    art_out: Any = None  # the terminal the picture of `view` goes to (None: sys.stdout)
    view_seconds: float = 10.0  # a terminal picture closes by itself after this long
    # Commands handed over by another process (shell.handoff): that process's folder (relative
    # files are read from there), and why `view` cannot run here (it has no terminal of theirs).
    cwd: Path | None = None
    view_refusal: str | None = None
    # One command at a time per session: the shell's own and those handed over share the lock.
    turn: threading.Lock = field(default_factory=threading.Lock)


Handler = Callable[[Context, list[str]], Outcome]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    handler: Handler
    min_args: int = 0
    max_args: int | None = 0
    arg_kinds: tuple[str, ...] = field(default=())  # for completion: file, user, image, ...


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, help_text: str, *, min_args: int = 0,
            max_args: int | None = 0, arg_kinds: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, usage, help_text, fn, min_args, max_args, arg_kinds)
        return fn

    return register


# ---- commands -------------------------------------------------------------------------------
@command("encrypt", "encrypt FILE...", "seal images through the cloud into encrypted/",
         min_args=1, max_args=None, arg_kinds=("file",))
def _encrypt(ctx: Context, args: list[str]) -> Outcome:
    """Any readable path; globs were expanded by run_line. Each image is named after its file
    (codec.names.image_name_for); the table and JSON show the name it got ("image")."""
    paths = [Path(a).expanduser() for a in args]
    before = ctx.session.caller.stats.duplicates
    twice_before = ctx.session.home.accepted_twice()
    if ctx.cwd is None:
        out = ctx.session.encrypt(paths, progress=ctx.progress)
    else:
        out = ctx.session.encrypt(paths, progress=ctx.progress, base=ctx.cwd)
    stats = ctx.session.caller.stats
    new = stats.duplicates - before
    wall = time.time() - time.monotonic()
    data = {"encrypted": out.encrypted, "failed": out.failed,
            "duplicate_replies": new,
            # each with its rid (to trace it in the nodes' logs), the replying and the accepted
            # node, and when (wall clock, like `started` of the rows; the session's clock is
            # time.monotonic)
            "duplicates": [{"rid": d.rid, "node": d.node, "accepted": d.first,
                            "attempts": d.attempts, "after_ms": round(d.after_s * 1000, 1),
                            "started": round(d.started + wall, 3), "at": round(d.at + wall, 3),
                            "kind": d.kind}
                           for d in (stats.duplicate_log[-new:] if new else [])],
            "accepted_twice": ctx.session.home.accepted_twice() - twice_before}
    lines = []
    if out.encrypted:
        lines.append(render.table(out.encrypted, ["file", "image", "path", "ms", "node"]))
    for f in out.failed:
        lines.append(f"failed: {f['file']}: {f['error']}")
    return Outcome(data, "\n".join(lines), ok=not out.failed)


@command("status", "status", "the cloud's nodes and your connection")
def _status(ctx: Context, args: list[str]) -> Outcome:
    rows = ctx.session.node_status()
    host, port = ctx.session.transport.address
    text = render.status_table(rows) + f"\nyou: {ctx.session.user} at {host}:{port}"
    return Outcome({"nodes": rows, "user": ctx.session.user, "address": f"{host}:{port}"}, text)


@command("users", "users", "online users (the directory of service)")
def _users(ctx: Context, args: list[str]) -> Outcome:
    rows = [{"user": e.user, "address": f"{e.host}:{e.port}"}
            for e in ctx.session.directory(refresh=True)]
    return Outcome({"users": rows}, render.table(rows, ["user", "address"]))


@command("browse", "browse USER", "fetch USER's previews into previews/USER/", min_args=1,
         max_args=1, arg_kinds=("user",))
def _browse(ctx: Context, args: list[str]) -> Outcome:
    rows = ctx.session.sharing.browse(args[0])
    text = render.table(rows, ["image", "path", "bytes"]) if rows else f"{args[0]} shares nothing yet"
    return Outcome({"user": args[0], "previews": rows}, text)


@command("request", "request USER IMAGE [VIEWS] [--days D]",
         "ask USER for IMAGE with VIEWS views (default 1), optionally expiring after D days",
         min_args=2, max_args=5, arg_kinds=("user", "preview", "count"))
def _request(ctx: Context, args: list[str]) -> Outcome:
    days = 0.0
    if "--days" in args:
        i = args.index("--days")
        if i + 1 >= len(args):
            raise CommandError("--days needs a number of days")
        days = _days(args[i + 1])
        args = args[:i] + args[i + 2:]
    if not 2 <= len(args) <= 3:
        raise CommandError("usage: request USER IMAGE [VIEWS] [--days D]")
    views = _int(args[2], "VIEWS") if len(args) > 2 else 1
    row = ctx.session.sharing.request(args[0], args[1], views, days)
    text = f"{row['owner']}/{row['image']}: {_views(row['views_left'])} -> {row['path']}"
    if row.get("expires"):
        text += f" (expires {_when(row['expires'])})"
    return Outcome(row, text)


@command("inbox", "inbox", "images shared with you, views left")
def _inbox(ctx: Context, args: list[str]) -> Outcome:
    rows = ctx.session.sharing.inbox_rows()
    shown = [{**r, "views": "revoked" if r["revoked"] else "expired" if r["expired"] else
              f"{r['views_left']} of {r['views_total']}",
              "expires": _when(r["expires"]) if r["expires"] else "never"} for r in rows]
    return Outcome({"images": rows},
                   render.table(shown, ["owner", "image", "views", "expires", "path"],
                                ["owner", "image", "views left", "expires", "path"]))


@command("view", "view IMAGE", "show IMAGE, using one view (OWNER/IMAGE where names clash)",
         min_args=1, max_args=1, arg_kinds=("received",))
def _view(ctx: Context, args: list[str]) -> Outcome:
    from shell import viewer

    ctx.session.sharing.find_received(args[0])  # a name not in the inbox: said first, as such
    if ctx.view_refusal is not None:  # handed over: the caller's terminal is not ours
        raise CommandError(ctx.view_refusal, code="no_terminal")
    out = ctx.art_out if ctx.art_out is not None else sys.stdout
    if viewer.where(out) is None:  # refused before a view is taken (issue 17)
        stream = "stderr" if ctx.art_out is sys.stderr else "stdout"
        raise CommandError(f"view shows the picture only in a window or on a terminal: {stream} "
                           "is not a terminal and there is no display; run view in a terminal",
                           code="no_terminal")
    data, picture = ctx.session.sharing.view(args[0])
    title = f"{data['owner']}/{data['image']}"
    data["display"] = viewer.show(picture, title, out=out, seconds=ctx.view_seconds)
    if data["shown"] == "default":
        return Outcome(data, f"{title}: {ENDED_TEXT[data['ended']]}; ask for more: "
                             f"more {data['owner']} {data['image']} N")
    return Outcome(data, f"{title}: {_views(data['views_left'])} left")


@command("more", "more USER IMAGE N", "ask the owner for N more views", min_args=3, max_args=3,
         arg_kinds=("user", "received_image", "count"))
def _more(ctx: Context, args: list[str]) -> Outcome:
    out = ctx.session.sharing.more(args[0], args[1], _int(args[2], "N"))
    more = f"{args[2]} more {render.noun(int(args[2]), 'view')}"
    return Outcome(out, f"asked {args[0]} for {more} of {args[1]} ({out['delivered']})")


@command("shared", "shared",
         "images you shared: views granted in total, the borrower's views left as last reported")
def _shared(ctx: Context, args: list[str]) -> Outcome:
    reports = ctx.session.db.reports()
    rows: list[dict[str, Any]] = []
    for g in ctx.session.db.shared():
        left, at = reports.get((g.borrower, g.image), (None, None))
        rows.append({"borrower": g.borrower, "image": g.image, "views": g.views_left,
                     "granted": g.views_granted, "views_total": g.views_left,
                     "revoked": g.views_left == 0, "borrower_views_left": left, "reported": at})
    shown = [{**r, "views_total": "revoked" if r["revoked"] else str(r["views_total"]),
              "borrower_views_left": "-" if r["revoked"] else "?" if r["reported"] is None
              else str(r["borrower_views_left"]),
              "reported": "-" if r["reported"] is None or r["revoked"] else _when(r["reported"])}
             for r in rows]
    return Outcome({"shared": rows}, render.table(
        shown, ["borrower", "image", "views_total", "borrower_views_left", "reported"],
        ["borrower", "image", "granted in total", "views left", "as reported at"]))


@command("grant", "grant USER IMAGE +N|-N|revoke", "change a borrower's access", min_args=3,
         max_args=3, arg_kinds=("borrower", "own_image", "change"))
def _grant(ctx: Context, args: list[str]) -> Outcome:
    borrower, image = args[0], args[1]
    out = ctx.session.sharing.grant(borrower, image, args[2])
    total = out["views"]
    left, at = ctx.session.db.reports().get((borrower, image), (None, None))
    fresh = "borrower_views_left" in out
    out.update(views_total=total, revoked=total == 0, borrower_views_left=left, reported=at)
    change = args[2]  # "+3" -> "+3 views", "-1" -> "-1 view", "revoke" -> "revoked"
    change = "revoked" if change == "revoke" else f"{change} {render.noun(int(change), 'view')}"
    text = f"{borrower}/{image}: {change} ({out['delivered']})"
    if total > 0:
        text += f"; granted {total} in total"
    elif args[2] != "revoke":
        text += "; no views granted any more"
    if total == 0:  # revoked: what the borrower had no longer matters
        pass
    elif fresh:
        text += f"; {borrower} has {_views(left or 0)} left"
    elif at is not None:
        text += f"; {borrower} had {_views(left or 0)} left at {_when(at)} (last report)"
    return Outcome(out, text)


@command("requests", "requests", "requests for more views waiting for you")
def _requests(ctx: Context, args: list[str]) -> Outcome:
    rows = [{"id": r.id, "borrower": r.borrower, "image": r.image, "views": r.views}
            for r in ctx.session.db.requests("pending")]
    return Outcome({"requests": rows}, render.table(rows, ["id", "borrower", "image", "views"]))


@command("approve", "approve ID [N]", "approve a request for more views (N overrides)",
         min_args=1, max_args=2, arg_kinds=("request_id", "count"))
def _approve(ctx: Context, args: list[str]) -> Outcome:
    n = _int(args[1], "N") if len(args) > 1 else None
    out = ctx.session.sharing.answer(_int(args[0], "ID"), approve=True, views=n)
    return Outcome(out, f"approved request {args[0]} ({out['delivered']}); granted {out['views']} "
                        "in total")


@command("deny", "deny ID", "deny a request for more views", min_args=1, max_args=1,
         arg_kinds=("request_id",))
def _deny(ctx: Context, args: list[str]) -> Outcome:
    out = ctx.session.sharing.answer(_int(args[0], "ID"), approve=False)
    return Outcome(out, f"denied request {args[0]} ({out['delivered']})")


def _views(n: int) -> str:
    return render.plural(n, "view")


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise CommandError(f"--days must be a number, not {text!r}") from None
    if not 0 < days <= 36500:
        raise CommandError("--days must be more than 0 and at most 36500")
    return days


def _when(ts: float) -> str:
    import time as _time

    return _time.strftime("%Y-%m-%d %H:%M", _time.localtime(ts))


def _int(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 7:
        raise CommandError(f"{what} must be a whole number from 0 to 1000000, not {text!r}")
    return int(text)


# what `help CMD` says beyond the one line of `help` (tests/test_commands_help.py checks that
# every command has it and that the names it mentions are commands)
DETAILS: dict[str, str] = {
    "encrypt": "Each image is named after its file (made valid; -2, -3 ... when another of your "
               "images has that name). The original is kept in high/ (what you can share), the "
               "sealed copy goes to encrypted/. Globs are expanded (encrypt *.jpg). Up to 3 files "
               "are in the cloud at once; Ctrl-C stops the rest.",
    "status": "One row per node: up or down (the failure token makes nodes fail at random; the "
              "cloud serves while a majority is up), requests served, requests cached, whether "
              "it holds the token, users online, updates kept for offline users, and since "
              "when a node is down.",
    "users": "Who is online now, and the address their peers reach them at. Sharing goes peer "
             "to peer; the cloud keeps the directory and the updates for offline users.",
    "browse": "Asks USER's client (online: see users) for small previews of the images it "
              "shares. Your own name lists yours, what peers see, without asking anyone.",
    "request": "Asks USER's client for IMAGE (a name from browse), sealed for you with VIEWS "
               "views: it lands in received/USER/ and shows in inbox. The owner's client "
               "serves it at once, up to its client.max_views_per_grant views.",
    "inbox": "Each image shared with you: owner, views left of the views granted, expiry, and "
             "whether the owner revoked it or its time ran out.",
    "view": "Shows the hidden picture and uses one view: in a window, or on this terminal until "
            "a key or 10 s. With no views left it shows the cover, says why (used, revoked, expired) "
            "and how to ask for more (more OWNER IMAGE N). A view taken offline counts like any other.",
    "more": "Asks the owner of an image in your inbox for N more views. An offline owner gets "
            "the request through the cloud when it comes online; the answer comes as a notice.",
    "shared": "Each image you shared and with whom: the views granted in total, and the views "
              "left the borrower's client last reported.",
    "grant": "+N adds views, -N takes some back (never below 0), revoke ends the borrower's "
             "access. Delivered at once if the borrower is online, else kept by the cloud and "
             "applied when they next join, in the order you gave them.",
    "requests": "Requests for more views: id, borrower, image, views asked. Answer with "
                "approve ID [N] or deny ID.",
    "approve": "Grants the views asked for (or N instead), delivered as grant delivers.",
    "deny": "Refuses the request; the borrower is told.",
    "help": "help alone lists the commands; help CMD explains one. Tab completes commands, "
            "user names, image names and paths.",
    "quit": "Leaves the directory: peers no longer see you online. Ctrl-D does the same.",
}


@command("help", "help [CMD]", "list commands, or explain one", max_args=1, arg_kinds=("command",))
def _help(ctx: Context, args: list[str]) -> Outcome:
    if args:
        cmd = COMMANDS.get(args[0])
        if cmd is None:
            raise CommandError(f"no command {args[0]!r}; try: help")
        details = DETAILS.get(cmd.name, "")
        text = f"{cmd.usage}\n  {cmd.help}"
        if details:
            text += "\n\n" + textwrap.fill(details, width=78, initial_indent="  ",
                                            subsequent_indent="  ")
        return Outcome({"command": cmd.name, "usage": cmd.usage, "help": cmd.help,
                        "details": details}, text)
    rows = [{"usage": c.usage, "help": c.help} for c in COMMANDS.values()]
    return Outcome({"commands": rows}, render.table(rows, ["usage", "help"], ["command", "what it does"]))


@command("quit", "quit", "leave the directory and exit")
def _quit(ctx: Context, args: list[str]) -> Outcome:
    ctx.quit_requested = True
    return Outcome({"quit": True}, "")


# ---- dispatch -------------------------------------------------------------------------------
__all__ = ["COMMANDS", "CommandError", "Context", "Outcome", "needs_no_cloud", "run_line",
           "split_commands"]

LOCAL_ONLY = frozenset({"help", "quit"})  # commands that never use the session


def needs_no_cloud(text: str) -> bool:
    """True when every command of the `-c` script `text` is one of LOCAL_ONLY: the client can
    run it without joining (`python -m shell --user me -c help` with no cloud running)."""
    try:
        lines = [split_words(line) for line in split_commands(text)]
    except ValueError:
        return False
    words = [w for w in lines if w]
    return bool(words) and all(w[0].text in LOCAL_ONLY for w in words)


_ERROR_CODES: dict[type, str] = {InvalidName: "bad_name", AccessError: "bad_value",
                                 StoreError: "store"}


def _glob_in(cwd: Path | None) -> Callable[[str], list[str]]:
    """glob as the caller's shell would: relative patterns from `cwd` (None: this process's),
    the matches as relative as the pattern."""
    if cwd is None:
        return glob_mod.glob
    return lambda pattern: glob_mod.glob(pattern, root_dir=cwd)


def run_line(ctx: Context, line: str) -> Outcome:
    try:
        words = split_words(line)
    except ValueError as exc:
        return Outcome({"error": f"cannot parse: {exc}", "code": "usage"},
                       f"error: cannot parse: {exc}", ok=False)
    if not words:
        return Outcome({}, "", ok=True)
    name = words[0].text
    cmd = COMMANDS.get(name)
    files = cmd is not None and "file" in cmd.arg_kinds  # globs expand as a shell would
    args = expand(words[1:], _glob_in(ctx.cwd)) if files else [w.text for w in words[1:]]
    try:
        if cmd is None:
            raise CommandError(f"unknown command {name!r}; type 'help' for the list")
        if len(args) < cmd.min_args or (cmd.max_args is not None and len(args) > cmd.max_args):
            raise CommandError(f"usage: {cmd.usage}")
        with ctx.turn:
            return cmd.handler(ctx, args)
    except (CommandError, SessionError, StoreError, AccessError, InvalidName, ValueError) as exc:
        code = getattr(exc, "code", None) or _ERROR_CODES.get(type(exc), "usage")
        return Outcome({"error": str(exc), "code": code}, f"error: {exc}", ok=False)
    except Exception as exc:  # a bug: say so plainly, keep the traceback in the log only
        log.debug("command %r failed", line, exc_info=True)  # the traceback only in debug logs
        return Outcome({"error": f"internal error: {exc}", "code": "internal"},
                       f"error: internal error ({type(exc).__name__}: {exc}); see the log", ok=False)
