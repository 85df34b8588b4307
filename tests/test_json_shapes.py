"""Every command's `--json` output has a documented, tested shape (issue 8), on a real cloud.

One scenario (module fixture) runs every command of the table with `-c ... --json` as alice
and bob against 3 real nodes, successes and errors, peer-to-peer and through the cloud, and
`python -m actors.server status --json` with a node up and killed. Each object is checked
against SHAPES (exact keys and JSON types; docs/json.md documents the same shapes and its
examples are checked too) and against the shapes DESIGN.md promises (those keys, more allowed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from imgdata import jpeg_bytes, png_bytes

from actors.client.client_session import ClientSession
from benchmarks.localcloud import REPO, Cloud, env, stop_shell
from shell.commands import COMMANDS, Context, run_line, split_commands

pytestmark = [pytest.mark.cloud, pytest.mark.timeout(180)]

DOCS = REPO / "docs" / "json.md"


# ---- a small shape language ---------------------------------------------------------------------
@dataclass(frozen=True)
class Opt:
    """A key that may be absent."""
    spec: Any


@dataclass(frozen=True)
class OneOf:
    """One of these exact JSON values."""
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Match:
    """A string matching this regex (fully)."""
    regex: str


@dataclass(frozen=True)
class Maybe:
    """JSON null or a value of this spec."""
    spec: Any


@dataclass(frozen=True)
class AnyOf:
    """An object matching one of these shapes."""
    shapes: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Types:
    """A value of one of these exact JSON types (`type(None)` for null)."""
    types: tuple[type, ...]


@dataclass(frozen=True)
class Tuple:
    """A list of exactly these items, in order."""
    specs: tuple[Any, ...]


def problems(value: Any, spec: Any, where: str = "$", extra_ok: bool = False) -> list[str]:
    """What is wrong with `value` against `spec` ([] if nothing). Types are exact JSON types:
    an int is not a float, a bool is not an int. Objects have exactly their keys unless
    `extra_ok` (then the spec's keys must be there, more may be)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        out = [f"{where}: unexpected key {k!r}" for k in value if k not in spec and not extra_ok]
        for key, sub in spec.items():
            optional = isinstance(sub, Opt)
            if key not in value:
                out += [] if optional else [f"{where}: missing key {key!r}"]
                continue
            out += problems(value[key], sub.spec if optional else sub, f"{where}.{key}", extra_ok)
        return out
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [p for i, v in enumerate(value) for p in problems(v, spec[0], f"{where}[{i}]",
                                                                 extra_ok)]
    if isinstance(spec, Types):
        ok = type(value) in spec.types
        return [] if ok else [f"{where}: {value!r} is not one of {spec.types}"]
    if isinstance(spec, Tuple):
        if not isinstance(value, list) or len(value) != len(spec.specs):
            return [f"{where}: expected a list of {len(spec.specs)}, got {value!r}"]
        return [p for i, (v, sub) in enumerate(zip(value, spec.specs))
                for p in problems(v, sub, f"{where}[{i}]", extra_ok)]
    if isinstance(spec, Maybe):
        return [] if value is None else problems(value, spec.spec, where, extra_ok)
    if isinstance(spec, AnyOf):
        found = [problems(value, s, where, extra_ok) for s in spec.shapes]
        return [] if any(not f for f in found) else [f"{where}: matches no variant: {found}"]
    if isinstance(spec, OneOf):
        ok = any(type(value) is type(v) and value == v for v in spec.values)
        return [] if ok else [f"{where}: {value!r} is not one of {spec.values}"]
    if isinstance(spec, Match):
        ok = isinstance(value, str) and re.fullmatch(spec.regex, value) is not None
        return [] if ok else [f"{where}: {value!r} does not match {spec.regex!r}"]
    return [] if type(value) is spec else [f"{where}: {value!r} is not a {spec.__name__}"]


# ---- the shapes (docs/json.md documents exactly these) ------------------------------------------
NAME = Match(r"[A-Za-z0-9._-]{1,64}")
ADDRESS = Match(r"\d{1,3}(\.\d{1,3}){3}:\d{1,5}")
UPDATE_ID = Match(r"[A-Za-z0-9._-]{1,64}#\d+")
DELIVERED = OneOf(("now", "via cloud"))
NODE_UP = {"id": int, "state": OneOf(("up", "down")), "served": int, "cached": int,
           "token": bool, "users": int, "pending": int, "down_since": float,
           "token_holder": int, "majority": bool, "digest": Match(r"[0-9a-f]+"), "pid": int,
           "syncing": bool}
ZERO, NO = OneOf((0,)), OneOf((False,))
NODE_UNREACHABLE = {"id": int, "state": OneOf(("unreachable",)), "served": ZERO, "cached": ZERO,
                    "token": NO, "users": ZERO, "pending": ZERO, "down_since": OneOf((0.0,)),
                    "token_holder": ZERO, "majority": NO, "digest": OneOf(("",)), "pid": ZERO,
                    "syncing": NO}
NODE = AnyOf((NODE_UP, NODE_UNREACHABLE))
VIEW_BASE = {"owner": NAME, "image": NAME, "path": Match(r"received/[^/]+/[^/]+"),
             "views_left": int, "display": Opt(OneOf(("window", "terminal")))}
ANSWER = {"id": UPDATE_ID, "delivered": DELIVERED, "to": NAME,
          "borrower_views_left": Opt(int)}  # the borrower's report, when delivered "now"
REPORT = {"views_total": int, "revoked": bool, "borrower_views_left": Maybe(int),
          "reported": Maybe(float)}

TIME_OR_NULL = Types((float, type(None)))
DASHBOARD_NODE = {"id": int, "state": OneOf(("up", "down", "unreachable", "syncing", "unknown")),
                  "since": float, "pid": int, "majority": bool, "served": int, "cached": int,
                  "users": int, "pending": int, "token": bool, "rate": float, "restarts": int,
                  "address": ADDRESS}
DASHBOARD = {
    "now": float, "window_s": float, "polls": int, "started": float, "last_poll": float,
    "answering": int, "holder": int, "users": int, "nodes": [DASHBOARD_NODE],
    "periods": [{"node": int, "state": OneOf(("down", "unreachable", "syncing", "restarted")),
                 "start": float, "end": TIME_OR_NULL}],
    "token": [{"node": int, "start": float, "end": TIME_OR_NULL}],
    "rates": [{"node": int, "points": [Tuple((float, TIME_OR_NULL))]}],
    "events": [{"t": float, "text": str}],
}

SHAPES: dict[str, Any] = {
    "encrypt": {"encrypted": [{"file": str, "path": Match(r"encrypted/[^/]+\.png"), "ms": float,
                               "node": int, "image": NAME, "started": float}],
                "failed": [{"file": str, "error": str, "code": NAME}],
                "duplicate_replies": int, "accepted_twice": int,
                "duplicates": [{"rid": str, "node": Maybe(int), "accepted": Maybe(int),
                                "attempts": int, "after_ms": float, "started": float,
                                "at": float, "kind": NAME}]},
    "status": {"nodes": [NODE], "user": NAME, "address": ADDRESS},
    "users": {"users": [{"user": NAME, "address": ADDRESS}]},
    "browse": {"user": NAME, "previews": [{"image": NAME, "path": Match(r"previews/[^/]+/[^/]+"),
                                           "bytes": int}]},
    "request": {"owner": NAME, "image": NAME, "views_left": int, "views": int, "views_total": int,
                "expires": float, "path": Match(r"received/[^/]+/[^/]+")},
    "inbox": {"images": [{"owner": NAME, "image": NAME, "views_left": int, "views_total": int,
                          "expires": float, "path": Match(r"received/[^/]+/[^/]+"),
                          "revoked": bool, "expired": bool}]},
    "view": AnyOf(({**VIEW_BASE, "shown": OneOf(("image",)), "width": int, "height": int},
                   {**VIEW_BASE, "shown": OneOf(("default",)),
                    "ended": OneOf(("used", "revoked", "expired")), "hint": str})),
    "more": {"id": UPDATE_ID, "delivered": DELIVERED, "to": NAME},
    "shared": {"shared": [{"borrower": NAME, "image": NAME, "views": int, "granted": int,
                           **REPORT}]},
    "grant": {**ANSWER, "views": int, **REPORT, "borrower_views_left": Maybe(int)},
    "requests": {"requests": [{"id": int, "borrower": NAME, "image": NAME, "views": int}]},
    "approve": {**ANSWER, "views": int},
    "deny": ANSWER,
    "help": AnyOf(({"commands": [{"usage": str, "help": str}]},
                   {"command": str, "usage": str, "help": str, "details": str})),
    "quit": {"quit": OneOf((True,))},
    "error": {"error": str, "code": Match(r"[a-z_]+")},
    "server status": {"nodes": [NODE]},
    "dashboard": DASHBOARD,
}

# DESIGN.md "Shell commands": these keys and types must hold exactly; more fields are allowed.
DESIGN_NODE = {"id": int, "state": OneOf(("up", "down", "unreachable")), "served": int,
               "cached": int, "token": bool, "users": int, "pending": int}
DESIGN: dict[str, dict[str, Any]] = {
    "server status": {"nodes": [DESIGN_NODE]},
    "status": {"nodes": [DESIGN_NODE]},
    "encrypt": {"encrypted": [{"file": str, "path": str, "ms": float, "node": int}],
                "failed": [{"file": str, "error": str}]},
    "users": {"users": [{"user": str, "address": str}]},
    "inbox": {"images": [{"owner": str, "image": str, "views_left": int, "path": str}]},
    "shared": {"shared": [{"borrower": str, "image": str, "views": int}]},
    "requests": {"requests": [{"id": int, "borrower": str, "image": str, "views": int}]},
}


# ---- the scenario -------------------------------------------------------------------------------
OK, FAILED = "ok", "failed"  # FAILED: a result object, but the command did not fully succeed


@dataclass
class Seen:
    command: str  # the first word, or "server status"
    line: str
    obj: dict[str, Any]
    expect: str  # OK, FAILED or the error code expected


@dataclass
class Scenario:
    seen: list[Seen]
    homes: dict[str, Path]
    cloud: Cloud
    stderr: list[tuple[str, str]] = field(default_factory=list)  # (user, stderr) per script

    def of(self, command: str) -> list[dict[str, Any]]:
        return [s.obj for s in self.seen if s.command == command and s.expect in (OK, FAILED)]


def _script(sc: Scenario, user: str, steps: list[tuple[str, str]],
            stop_after: int | None = None) -> None:
    """Run `steps` ((line, expect)) in one `-c` session; every stdout line must be one JSON
    object, one per command run (all of them, or up to `stop_after` included: quit)."""
    text = "; ".join(line for line, _ in steps)
    assert len(split_commands(text)) == len(steps)
    r = sc.cloud.shell(user, sc.homes[user], text)
    assert "Traceback" not in r.stderr, r.stderr
    sc.stderr.append((user, r.stderr))
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    ran = steps[: (stop_after + 1 if stop_after is not None else len(steps))]
    assert len(objs) == len(ran), (r.stdout, r.stderr)
    ok = all(expect == OK for _, expect in ran)
    assert r.returncode == (0 if ok else 1), r.stderr
    for (line, expect), obj in zip(ran, objs):
        assert isinstance(obj, dict)
        if expect not in (OK, FAILED):
            assert obj.get("code") == expect, (line, obj)
        sc.seen.append(Seen(line.split()[0], line, obj, expect))


def _view_into_a_pipe(sc: Scenario, user: str, line: str) -> None:
    """`line` (a view) with stdout and stderr both pipes and no display: refused (issue 17)."""
    environ = {k: v for k, v in env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-m", "shell", "--user", user, "--home",
                        str(sc.homes[user]), "--config", str(sc.cloud.config), "-c", line,
                        "--json"], capture_output=True, text=True, env=environ, cwd=str(REPO),
                       timeout=60, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    (obj,) = [json.loads(out) for out in r.stdout.splitlines()]
    sc.seen.append(Seen("view", line, obj, "no_terminal"))


def _server_status(sc: Scenario) -> None:
    r = subprocess.run([sys.executable, "-m", "actors.server", "status", "--json", "--config",
                        str(sc.cloud.config), "--timeout", "1"], capture_output=True, text=True,
                       env=env(), cwd=str(REPO), timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    sc.seen.append(Seen("server status", "status --json", json.loads(line), OK))


def _dashboard_state(sc: Scenario) -> None:
    """`GET /api/state` of a real dashboard (python -m actors.server dashboard) after 3 polls."""
    proc = subprocess.Popen([sys.executable, "-m", "actors.server", "dashboard", "--port", "0",
                             "--config", str(sc.cloud.config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=str(REPO))
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[4]
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(url + "api/state", timeout=10) as r:
                state = json.loads(r.read())
            if state["polls"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        sc.seen.append(Seen("dashboard", "GET /api/state", state, OK))
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def _serve(sc: Scenario, user: str) -> subprocess.Popen[str]:
    proc = sc.cloud.spawn_shell(user, sc.homes[user], ["--serve"])
    assert proc.stdout is not None
    assert "online" in proc.stdout.readline()
    return proc


def _files(tmp: Path) -> tuple[Path, Path, Path]:
    pic, cat, notes = tmp / "pic.jpg", tmp / "cat.png", tmp / "notes.txt"
    pic.write_bytes(jpeg_bytes(3, 96))
    cat.write_bytes(png_bytes(4, 48))
    notes.write_text("not a picture\n")
    return pic, cat, notes


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("json")
    cloud = Cloud(tmp, 3)
    sc = Scenario([], {"alice": tmp / "alice", "bob": tmp / "bob"}, cloud)
    pic, cat, notes = _files(tmp)
    try:
        cloud.start()
        _server_status(sc)
        _script(sc, "alice", [
            (f"encrypt {pic} {cat} {notes}", FAILED), ("status", OK), ("users", OK),
            ("shared", OK), ("requests", OK), ("help", OK), ("help grant", OK),
            ("bogus", "usage"), ("grant", "usage"), ("browse nobody", "offline"),
            ("request alice a/b.jpg", "bad_name"), ("request alice pic.jpg x", "usage"),
            ("view pic.jpg", "no_such_image"), ("approve 9", "no_request"), ("deny x", "usage"),
            ("help nothing", "usage")])
        alice = _serve(sc, "alice")
        try:
            _script(sc, "bob", [
                ("users", OK), ("browse alice", OK), ("request alice pic.jpg 2 --days 3", OK),
                ("request alice cat.png", OK), ("inbox", OK), ("view pic.jpg", OK),
                ("view cat.png", OK), ("view cat.png", OK), ("more alice pic.jpg 3", OK),
                ("more alice dog.png 1", "no_grant"), ("more alice cat.png 1", OK),
                ("more alice cat.png 2", OK), ("more alice pic.jpg 2000000", "bad_value"),
                ("request alice dog.png", "no_such_image"), ("status", OK), ("quit", OK),
                ("users", OK)], stop_after=15)
        finally:
            stop_shell(alice)
        _script(sc, "alice", [
            ("requests", OK), ("approve 1 2", OK), ("approve 2", OK), ("deny 3", OK),
            ("deny 2", "answered"),
            ("shared", OK), ("grant bob pic.jpg +2", OK), ("grant bob cat.png revoke", OK),
            ("grant bob pic.jpg x", "bad_value"), ("grant carol pic.jpg +1", "no_grant"),
            ("grant bob pic.jpg +0", "bad_value"), ("request alice pic.jpg", "yourself")])
        bob = _serve(sc, "bob")
        try:
            _script(sc, "alice", [("grant bob pic.jpg -1", OK), ("shared", OK)])
        finally:
            stop_shell(bob)
        _script(sc, "bob", [("inbox", OK)])
        _view_into_a_pipe(sc, "bob", "view pic.jpg")
        cloud.kill(3)
        _server_status(sc)
        _dashboard_state(sc)
        _script(sc, "bob", [("status", OK), ("more alice dog.png 1", "no_grant"),  # alice offline
                            ("more alice pic.jpg 1", OK)])  # through the cloud
        _script(sc, "alice", [("requests", OK)])  # the one for pic.jpg, applied at her join
        yield sc
    finally:
        cloud.stop()


# ---- the tests ----------------------------------------------------------------------------------
def test_every_command_of_the_table_has_a_shape_and_ran() -> None:
    assert set(SHAPES) == set(COMMANDS) | {"error", "server status", "dashboard"}


@pytest.mark.parametrize("command", sorted(set(SHAPES) - {"error"}))
def test_shape_of(scenario: Scenario, command: str) -> None:
    objs = scenario.of(command)
    assert objs, f"{command} never succeeded in the scenario"
    for obj in objs:
        assert problems(obj, SHAPES[command]) == [], obj


@pytest.mark.parametrize("command", sorted(DESIGN))
def test_design_shapes_hold(scenario: Scenario, command: str) -> None:
    for obj in scenario.of(command):
        assert problems(obj, DESIGN[command], extra_ok=True) == [], obj


def test_errors_are_error_and_code(scenario: Scenario) -> None:
    errors = [s for s in scenario.seen if s.expect not in (OK, FAILED)]
    assert len(errors) == 19
    for s in errors:
        assert problems(s.obj, SHAPES["error"]) == [], (s.line, s.obj)
        assert s.obj["error"] and s.obj["code"] == s.expect


def test_every_variant_was_seen(scenario: Scenario) -> None:
    """Both view outcomes, both deliveries, both help forms, both node rows: the shapes above
    are what really comes out, not guesses."""
    views = {v["shown"] for v in scenario.of("view")}
    delivered = {o["delivered"] for c in ("more", "grant", "approve", "deny")
                 for o in scenario.of(c)}
    states = {n["state"] for c in ("status", "server status") for o in scenario.of(c)
              for n in o["nodes"]}
    assert views == {"image", "default"}
    assert delivered == {"now", "via cloud"}
    assert len({frozenset(o) for o in scenario.of("help")}) == 2
    assert states == {"up", "unreachable"}
    (enc,) = scenario.of("encrypt")
    assert [f["code"] for f in enc["failed"]] == ["not_an_image"]


def test_the_dashboard_state_follows_the_cloud(scenario: Scenario) -> None:
    """Taken after node 3 was killed: two nodes up, node 3 unreachable since the first poll."""
    (state,) = scenario.of("dashboard")
    assert state["polls"] >= 3 and state["answering"] == 2
    assert [(n["id"], n["state"]) for n in state["nodes"]] == [
        (1, "up"), (2, "up"), (3, "unreachable")]
    assert [n["address"] for n in state["nodes"]] == [
        f"127.0.0.1:{port}" for _, _, port, _ in scenario.cloud.nodes]
    assert [(p["node"], p["state"], p["end"]) for p in state["periods"]] == [
        (3, "unreachable", None)]
    assert [len(r["points"]) for r in state["rates"]] == [state["polls"]] * 3
    assert all(p[1] is None for p in state["rates"][2]["points"])


def test_paths_are_relative_to_the_home_and_exist(scenario: Scenario) -> None:
    homes = {"encrypt": "alice", "browse": "bob", "request": "bob", "inbox": "bob"}
    rows = [(c, r) for c in homes for o in scenario.of(c)
            for r in (o.get("encrypted") or o.get("previews") or o.get("images") or [o])]
    assert len(rows) >= 6
    for command, row in rows:
        assert not row["path"].startswith("/") and ".." not in row["path"]
        assert (scenario.homes[homes[command]] / row["path"]).is_file(), row


def test_values_follow_the_story(scenario: Scenario) -> None:
    req = {o["image"]: o for o in scenario.of("request")}
    assert [(o["views"], o["views_total"], o["views_left"]) for o in req.values()] == [
        (2, 2, 2), (1, 1, 1)]
    assert req["pic.jpg"]["expires"] > 0 and req["cat.png"]["expires"] == 0.0
    assert [(o["image"], o["views_left"]) for o in scenario.of("view")] == [
        ("pic.jpg", 1), ("cat.png", 0), ("cat.png", 0)]
    # the owner's counts: pic.jpg 2 granted + 2 approved, cat.png 1 + 1 (the owner does not see
    # the borrower's views); `more` for dog.png (never shared with bob) left no request, the
    # last `more` (pic.jpg, alice offline) is the one request of her last `requests`
    assert [o["views"] for o in scenario.of("approve")] == [4, 2]
    assert [(r["image"], r["views"]) for o in scenario.of("requests") for r in o["requests"]] == [
        ("pic.jpg", 3), ("cat.png", 1), ("cat.png", 2), ("pic.jpg", 1)]
    # bob: pic.jpg 1 left of 2 -> approved to 4 (3 left) -> +2 (5) -> -1 (4 left of 5);
    # cat.png 0 left of 1 -> approved to 2 (1 left) -> revoked (0 of 0)
    final = scenario.of("inbox")[-1]["images"]
    assert {(r["image"], r["views_left"], r["views_total"]) for r in final} == {
        ("pic.jpg", 4, 5), ("cat.png", 0, 0)}
    assert {r["image"]: r["revoked"] for r in final} == {"pic.jpg": False, "cat.png": True}
    # the owner's words (issue 17): "granted N in total", and bob's views left as his client
    # reported them when he applied the -1 peer to peer (through the cloud nothing is reported)
    grants = [(o["delivered"], o["views_total"], o["revoked"], o["borrower_views_left"])
              for o in scenario.of("grant")]
    assert grants[:2] == [("via cloud", 6, False, 2), ("via cloud", 0, True, 1)]  # at request
    assert grants[2] == ("now", 5, False, 4)
    last = {r["image"]: r for r in scenario.of("shared")[-1]["shared"]}
    assert (last["pic.jpg"]["views_total"], last["pic.jpg"]["borrower_views_left"]) == (5, 4)
    assert last["cat.png"]["revoked"] is True and last["pic.jpg"]["revoked"] is False


def test_more_for_an_image_never_shared_is_refused_online_or_not(scenario: Scenario) -> None:
    """`more` for an image not in the inbox is refused by the borrower's client (no_grant),
    whether the owner is online or not: nothing is sent (before, offline, it went through the
    cloud for the owner's client to drop, and the borrower read "via cloud"). A `more` for a
    shared image with the owner offline goes through the cloud and is a request at her join."""
    refused = [s.obj for s in scenario.seen if s.line == "more alice dog.png 1"]
    assert refused == [{"error": "alice never shared dog.png with you", "code": "no_grant"}] * 2
    (posted,) = [s.obj for s in scenario.seen if s.line == "more alice pic.jpg 1"]
    assert (posted["delivered"], posted["to"]) == ("via cloud", "alice")
    user, stderr = scenario.stderr[-1]
    assert user == "alice" and "dog.png" not in stderr
    (request,) = scenario.seen[-1].obj["requests"]
    assert (request["borrower"], request["image"], request["views"]) == ("bob", "pic.jpg", 1)


def test_docs_document_every_shape_with_checked_examples() -> None:
    sections = _doc_sections(DOCS.read_text())
    assert set(sections) == set(SHAPES)
    for name, examples in sections.items():
        assert examples, f"docs/json.md: section {name!r} has no example"
        for obj in examples:
            spec = SHAPES["error"] if "error" in obj else SHAPES[name]
            assert problems(obj, spec) == [], (name, obj)


def test_docs_error_examples_are_real(scenario: Scenario) -> None:
    """Every error example in docs/json.md is an object the scenario (or the parse-error tests
    below) really printed: message and code."""
    seen = [s.obj for s in scenario.seen if s.expect not in (OK, FAILED)] + [PARSE_ERROR]
    examples = [o for objs in _doc_sections(DOCS.read_text()).values() for o in objs
                if "error" in o]
    assert len(examples) == 17
    for obj in examples:
        assert obj in seen, obj


def _doc_sections(text: str) -> dict[str, list[dict[str, Any]]]:
    """`## \\`name\\` ...` headings -> the JSON objects of their ```json blocks (one a line)."""
    out: dict[str, list[dict[str, Any]]] = {}
    current = None
    for block in re.split(r"^(## `[^`]+`.*)$", text, flags=re.MULTILINE):
        heading = re.fullmatch(r"## `([^`]+)`.*", block)
        if heading:
            current = heading.group(1)
            out[current] = []
        elif current is not None:
            for body in re.findall(r"```json\n(.*?)```", block, re.DOTALL):
                out[current] += [json.loads(line) for line in body.splitlines() if line.strip()]
    return out


def test_unparsable_line_error_has_a_code() -> None:
    out = run_line(Context(cast(ClientSession, None)), "view 'pic.jpg")
    assert problems(out.data, SHAPES["error"]) == [] and not out.ok
    assert out.data == {"error": "cannot parse: No closing quotation", "code": "usage"}


PARSE_ERROR = {"error": "cannot parse the commands: No closing quotation", "code": "usage"}


def test_unparsable_script_gives_one_json_error_and_runs_nothing(scenario: Scenario) -> None:
    r = scenario.cloud.shell("carol", scenario.homes["alice"].parent / "carol", "users; view 'x")
    assert "Traceback" not in r.stderr and r.returncode == 1, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [PARSE_ERROR]


def test_quit_gives_no_text() -> None:
    ctx = Context(cast(ClientSession, None))
    out = run_line(ctx, "quit")
    assert (out.data, out.text, out.ok, ctx.quit_requested) == ({"quit": True}, "", True, True)

