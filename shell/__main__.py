"""`python -m shell --user NAME [--home DIR] [--config F] [-c "CMD; CMD"] [--json]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import cast

try:  # a Ctrl-C while the client still loads ends it as one later would: status 130, no traceback
    import config
    from actors.client import local_socket
    from actors.client.client_session import ClientSession, SessionError
    from actors.client.client_store import default_home
    from actors.client.errors import HandoffError
    from codec.names import InvalidName
    from config import ConfigError
    from shell import handoff, script
    from shell.commands import Context, needs_no_cloud
except KeyboardInterrupt:
    raise SystemExit(130) from None


def version() -> str:
    """The installed package's version (its metadata), or "unknown" when run from a checkout
    that was never installed."""
    from importlib import metadata

    try:
        return metadata.version("veilshare")
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`: the metadata is read only when asked (importlib.metadata and the email
    package it loads cost ~30 ms of every start otherwise)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"veilshare {version()}")
        parser.exit()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m shell", description="the Veilshare client")
    p.add_argument("--version", action=_VersionAction, help="show the version and exit")
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


def _print(stream: str, text: str) -> None:
    print(text, file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)


def run_script(ctx: Context, text: str, as_json: bool) -> int:
    return script.run_script(ctx, text, as_json, _print)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.load(args.config)
        if args.commands is not None and not args.serve and needs_no_cloud(args.commands):
            # help needs no cloud: a new user's first command works before the cloud runs
            return run_script(Context(cast(ClientSession, None)), args.commands, args.json)
        home = args.home or default_home(args.user)
        status = _hand_over(home, args)
        if status is not None:
            return status
        session = ClientSession(args.user, home, cfg, port=args.port, host=args.host,
                                notify=lambda text: print(text, file=sys.stderr, flush=True))
    except (ConfigError, InvalidName, SessionError, HandoffError) as exc:
        print(f"veilshare: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"veilshare: cannot start the client: {exc}", file=sys.stderr)
        return 2
    ctx = Context(session)
    if args.json:  # stdout carries the JSON: the picture goes to the terminal on stderr
        ctx.art_out = sys.stderr
    session.sharing.auto_approve = args.auto_approve
    server: handoff.HandoffServer | None = None
    listener: local_socket.Listener | None = None
    try:
        try:  # claim the home first: a second process of it finds this one from now on
            if args.serve or args.commands is None:
                listener = local_socket.listen(home)
        except HandoffError as exc:
            print(f"veilshare: {exc}", file=sys.stderr)
            return 3 if exc.code == "busy" else 2
        try:
            for notice in session.join():
                print(notice, file=sys.stderr, flush=True)
        except SessionError as exc:
            print(f"veilshare: cannot join the cloud: {exc}", file=sys.stderr)
            return 3
        if listener is not None:  # online from now on: commands of our other processes come here
            server = _serve_handoff(listener, ctx)
            listener = None
        if args.serve:
            return serve(session, args)
        if args.commands is not None:
            return run_script(ctx, args.commands, args.json)
        from shell.interactive import run_interactive

        return run_interactive(ctx)
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
        if listener is not None:
            listener.close()
        session.close()


def _hand_over(home: Path, args: argparse.Namespace) -> int | None:
    """The exit status when a client of this home already runs (the commands handed to it, or
    refused for --serve and the prompt); None when none does. Raises HandoffError (not private)."""
    if args.commands is not None and not args.serve:
        try:
            return handoff.forward(home, args.user, args.commands, args.json)
        except KeyboardInterrupt:
            return 130
    probe = local_socket.connect(home)
    if probe is None:
        return None
    probe.close()
    what = "--serve" if args.serve else "the interactive client"
    print(f"veilshare: {args.user}'s client is already running from {home}; {what} needs it "
          f"stopped first (run commands next to it with -c: they are handed to it)",
          file=sys.stderr)
    return 3


def _serve_handoff(listener: local_socket.Listener, ctx: Context) -> handoff.HandoffServer:
    session = ctx.session
    refusal = handoff.view_refusal(session.user, os.getpid())

    def make_ctx(cwd: Path) -> Context:
        return Context(session, cwd=cwd, view_refusal=refusal, turn=ctx.turn)

    return handoff.HandoffServer(listener, session.user, make_ctx, session.cancel).start()


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
