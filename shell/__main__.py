"""`python -m shell --user NAME [--home DIR] [--config F] [-c "CMD; CMD"] [--json]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import config
from actors.client.client_session import ClientSession, SessionError
from actors.client.client_store import default_home
from codec.names import InvalidName
from config import ConfigError
from shell import render
from shell.commands import Context, Outcome, run_line, split_commands


def version() -> str:
    """The installed package's version (its metadata), or "unknown" when run from a checkout
    that was never installed."""
    from importlib import metadata

    try:
        return metadata.version("veilshare")
    except metadata.PackageNotFoundError:
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m shell", description="the Veilshare client")
    p.add_argument("--version", action="version", version=f"veilshare {version()}")
    p.add_argument("--user", required=True, help="your user name ([A-Za-z0-9._-], 1-64)")
    p.add_argument("--home", type=Path, help="client home (default: per user data directory)")
    p.add_argument("--config", type=Path, help="cluster file (default config/cluster.toml)")
    p.add_argument("--port", type=int, default=0, help="UDP port to bind (default: any)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind and register")
    p.add_argument("-c", dest="commands", help='commands without a prompt: "CMD; CMD"')
    p.add_argument("--json", action="store_true", help="one JSON object per command on stdout")
    p.add_argument("--serve", action="store_true", help="stay online answering peers")
    p.add_argument("--auto-approve", action="store_true", help="with --serve: approve more views")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def _emit(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        print(render.as_json(outcome.data), flush=True)
    elif outcome.text:
        stream = sys.stdout if outcome.ok else sys.stderr
        print(outcome.text, file=stream, flush=True)


def run_script(ctx: Context, text: str, as_json: bool) -> int:
    ok = True
    try:
        lines = split_commands(text)
    except ValueError as exc:
        _emit(Outcome({"error": f"cannot parse the commands: {exc}", "code": "usage"},
                      f"error: cannot parse the commands: {exc}", ok=False), as_json)
        return 1
    for line in lines:
        outcome = run_line(ctx, line)
        _emit(outcome, as_json)
        ok = ok and outcome.ok
        if ctx.quit_requested:
            break
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.load(args.config)
        home = args.home or default_home(args.user)
        session = ClientSession(args.user, home, cfg, port=args.port, host=args.host,
                                notify=lambda text: print(text, file=sys.stderr, flush=True))
    except (ConfigError, InvalidName, SessionError) as exc:
        print(f"veilshare: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"veilshare: cannot start the client: {exc}", file=sys.stderr)
        return 2
    ctx = Context(session)
    if args.json:  # stdout carries the JSON: the picture goes to the terminal on stderr
        ctx.art_out = sys.stderr
    session.sharing.auto_approve = args.auto_approve
    try:
        try:
            for notice in session.join():
                print(notice, file=sys.stderr, flush=True)
        except SessionError as exc:
            print(f"veilshare: cannot join the cloud: {exc}", file=sys.stderr)
            return 3
        if args.serve:
            return serve(session, args)
        if args.commands is not None:
            return run_script(ctx, args.commands, args.json)
        from shell.interactive import run_interactive

        return run_interactive(ctx)
    except KeyboardInterrupt:
        return 130
    finally:
        session.close()


def serve(session: ClientSession, args: argparse.Namespace) -> int:
    """--serve: stay online answering peers until SIGTERM or Ctrl-C."""
    import signal
    import threading

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    host, port = session.transport.address
    print(f"{session.user} online at {host}:{port}, serving peers; Ctrl-C stops", flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
