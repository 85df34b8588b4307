"""Completion: `expected` (pure), the completer over a names snapshot (Document-based), a real
PromptSession driven through a pipe input and a dummy output, and NameSource's refresh."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit import PromptSession
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from shell_fakes import Entry, FakeSession, wait_for

from actors.client.client_session import SessionError
from codec import images
from shell.commands import COMMANDS
from shell.completer import ShellCompleter, expected, options
from shell.names import Names, NameSource, images_of_previews, sources_for
from shell.words import split_words

SNAP = Names(
    users=(("alice", "127.0.0.1:40002"), ("albert", "127.0.0.1:40003"), ("bob", "10.0.0.2:9")),
    own=("cat.png", "dog.jpg", "pic.jpg"),
    received=(
        ("alice", "pic.jpg", 2),
        ("alice", "sea.png", 0),
        ("carol", "pic.jpg", 1),
        ("carol", "tree.png", 5),
    ),
    shared=(("bob", "pic.jpg", 3), ("bob", "cat.png", 1), ("dan", "dog.jpg", 0)),
    requests=((4, "bob", "pic.jpg", 3), (7, "dan", "dog.jpg", 1)),
    previews={"alice": ("pic.jpg", "portrait.png", "sea.png"), "bob": ("boat.jpg",)},
)


def complete(text: str, snap: Names = SNAP) -> list[Completion]:
    completer = ShellCompleter(sources_for(lambda: snap))
    return list(completer.get_completions(Document(text, len(text)), CompleteEvent()))


def offered(text: str, snap: Names = SNAP) -> list[str]:
    """What the menu shows (a completion inserts it with a space after it: see below)."""
    return [c.display_text for c in complete(text, snap)]


# ---- expected(): pure ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "word", "args"),
    [
        ("", "command", "", ()),
        ("enc", "command", "enc", ()),
        ("encrypt ", "file", "", ("encrypt",)),
        ("encrypt a.png ./b", "file", "./b", ("encrypt", "a.png")),
        ("browse a", "user", "a", ("browse",)),
        ("request alice ", "preview", "", ("request", "alice")),
        ("request alice pic.jpg ", "count", "", ("request", "alice", "pic.jpg")),
        ("request alice pic.jpg 2 ", "none", "", ("request", "alice", "pic.jpg", "2")),
        ("view ", "received", "", ("view",)),
        ("more carol t", "received_image", "t", ("more", "carol")),
        ("grant ", "borrower", "", ("grant",)),
        ("grant bob ", "own_image", "", ("grant", "bob")),
        ("grant bob pic.jpg -", "change", "-", ("grant", "bob", "pic.jpg")),
        ("approve ", "request_id", "", ("approve",)),
        ("help e", "command", "e", ("help",)),
        ("users ", "none", "", ("users",)),
        ("frobnicate x", "none", "x", ("frobnicate",)),
        ("request --days 3 alice ", "preview", "", ("request", "alice")),
        ("request alice pic.jpg --days ", "option_value", "", ("request", "alice", "pic.jpg")),
        ("request alice pic.jpg --d", "option", "--d", ("request", "alice", "pic.jpg")),
        ("grant bob pic.jpg --", "change", "--", ("grant", "bob", "pic.jpg")),  # grant has none
        ('encrypt "my dir/a', "file", "my dir/a", ("encrypt",)),
        ("encrypt 'a b' 'c ", "file", "c ", ("encrypt", "a b")),
    ],
)
def test_expected_kinds(text: str, kind: str, word: str, args: tuple[str, ...]) -> None:
    exp = expected(text)
    assert (exp.kind, exp.word, exp.args) == (kind, word, args)


def test_every_arg_kind_of_the_table_has_a_source() -> None:
    kinds = {k for c in COMMANDS.values() for k in c.arg_kinds} - {"file", "command"}
    assert kinds <= set(sources_for(lambda: SNAP))


# ---- the completer over a snapshot (Document, no terminal) ---------------------------------
def test_partial_command() -> None:
    assert offered("enc") == ["encrypt"]
    assert offered("re") == ["request", "requests"]
    assert offered("") == sorted(COMMANDS)


def test_command_completions_carry_the_help_as_meta() -> None:
    (c,) = complete("enc")
    assert c.display_meta_text == COMMANDS["encrypt"].help
    assert c.start_position == -3


@pytest.mark.parametrize("cmd", ["browse", "request", "more", "grant"])
def test_user_names_after_commands_taking_a_user(cmd: str) -> None:
    names = offered(f"{cmd} ")
    if cmd == "grant":  # grant: your borrowers
        assert names == ["bob", "dan"]
    elif cmd == "more":  # more: the owners who shared with you, then who is online
        assert names == ["alice", "carol", "albert", "bob"]
    else:
        assert names == ["alice", "albert", "bob"]


def test_user_prefix_and_meta() -> None:
    comps = complete("browse al")
    assert [c.text for c in comps] == ["alice ", "albert "]
    assert comps[0].display_meta_text == "127.0.0.1:40002"
    assert comps[0].start_position == -2


def test_preview_images_of_the_user_typed_before() -> None:
    assert offered("request alice ") == ["pic.jpg", "portrait.png", "sea.png"]
    assert offered("request alice p") == ["pic.jpg", "portrait.png"]
    assert offered("request bob ") == ["boat.jpg"]
    assert offered("request zed ") == []


def test_view_offers_received_images_owner_qualified_where_names_clash() -> None:
    assert offered("view ") == [
        "alice/pic.jpg",
        "alice/sea.png",
        "sea.png",
        "carol/pic.jpg",
        "carol/tree.png",
        "tree.png",
    ]
    assert offered("view t") == ["tree.png"]
    assert offered("view carol/") == ["carol/pic.jpg", "carol/tree.png"]
    (c,) = complete("view tr")
    assert c.display_meta_text == "from carol, 5 views left"


def test_more_offers_the_owners_images() -> None:
    assert offered("more carol ") == ["pic.jpg", "tree.png"]


def test_grant_offers_the_images_shared_with_that_borrower() -> None:
    assert offered("grant bob ") == ["pic.jpg", "cat.png"]
    assert offered("grant erin ") == ["cat.png", "dog.jpg", "pic.jpg"]  # none given: your images


def test_grant_change_words() -> None:
    assert set(offered("grant bob pic.jpg ")) >= {"+1", "-1", "revoke"}
    assert offered("grant bob pic.jpg r") == ["revoke"]
    assert offered("grant bob pic.jpg revoke ") == []


def test_request_ids_for_approve_and_deny() -> None:
    assert offered("approve ") == ["4", "7"]
    (c,) = complete("deny 7")
    assert c.display_meta_text == "dan asks 1 more of dog.jpg"


def test_options_from_the_usage_line() -> None:
    assert options("request USER IMAGE [VIEWS] [--days D]") == {"--days": "D"}
    assert options("x [--all] [--n N]") == {"--all": "", "--n": "N"}
    assert options("grant USER IMAGE +N|-N|revoke") == {}
    (c,) = complete("request alice pic.jpg --")
    assert (c.text, c.display_meta_text) == ("--days ", "--days D")
    assert offered("request alice pic.jpg --days ") == []


def test_help_completes_command_names() -> None:
    assert offered("help gr") == ["grant"]


def test_file_paths_after_encrypt(tmp_path: Path) -> None:
    (tmp_path / "beach.png").write_bytes(b"x")
    (tmp_path / "bird.jpg").write_bytes(b"x")
    (tmp_path / "cat.png").write_bytes(b"x")
    base = f"{tmp_path}/b"
    assert sorted(offered(f"encrypt {base}")) == ["beach.png", "bird.jpg"]
    assert offered(f"encrypt {tmp_path}/cat.png {base}i") == ["bird.jpg"]
    (c,) = complete(f"encrypt {base}i")
    assert (c.text, c.start_position) == (f"{tmp_path}/bird.jpg ", -len(base) - 1)


# ---- what a completion inserts (issue 17) -------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "inserted"),
    [("enc", "encrypt "), ("help gr", "grant "), ("browse ali", "alice "),
     ("request alice po", "portrait.png "), ("view carol/t", "carol/tree.png "),
     ("grant bob pic.jpg re", "revoke "), ("approve 7", "7 "),
     ("request alice pic.jpg --d", "--days ")],
)
def test_a_completed_command_or_name_ends_with_a_space(text: str, inserted: str) -> None:
    (c,) = complete(text)
    assert c.text == inserted and c.display_text == inserted.rstrip()
    assert c.start_position == -len(text.split(" ")[-1])


def test_paths_with_spaces_or_glob_characters_are_quoted(tmp_path: Path) -> None:
    (tmp_path / "my cat photo.png").write_bytes(b"x")
    (tmp_path / "star*.jpg").write_bytes(b"x")
    (tmp_path / "holiday shots").mkdir()
    (tmp_path / "holiday shots" / "sea.webp").write_bytes(b"x")
    (c,) = complete(f"encrypt {tmp_path}/my")
    assert c.text == f"'{tmp_path}/my cat photo.png' " and c.display_text == "my cat photo.png"
    assert c.start_position == -len(f"{tmp_path}/my")
    (c,) = complete(f'encrypt "{tmp_path}/my c')  # an open quote: the whole word is replaced
    assert c.text == f"'{tmp_path}/my cat photo.png' "
    assert c.start_position == -len(f'"{tmp_path}/my c')
    (c,) = complete(f"encrypt {tmp_path}/st")
    assert c.text == f"'{tmp_path}/star*.jpg' "  # quoted: it names that file, not a glob
    (c,) = complete(f"encrypt {tmp_path}/hol")
    assert c.text == f"'{tmp_path}/holiday shots/'" and c.display_text == "holiday shots/"
    line = f"encrypt {c.text}se"  # typing on after the folder: its files, quoted whole
    (c,) = complete(line)
    assert c.text == f"'{tmp_path}/holiday shots/sea.webp' "
    assert c.start_position == -len(f"'{tmp_path}/holiday shots/'se")
    words = split_words(line[: len(line) + c.start_position] + c.text)
    assert [w.text for w in words] == ["encrypt", f"{tmp_path}/holiday shots/sea.webp"]
    assert words[1].pattern is None


def test_encrypt_offers_folders_and_image_files_only(tmp_path: Path) -> None:
    for name in ("a.png", "b.JPG", "c.jpeg", "d.gif", "e.webp", "notes.txt", "f.pdf",
                 ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir").mkdir()
    assert sorted(offered(f"encrypt {tmp_path}/")) == [
        "a.png", "b.JPG", "c.jpeg", "d.gif", "dir/", "e.webp"]
    assert offered(f"encrypt {tmp_path}/.h") == [".hidden.png"]  # a typed dot: hidden ones too


def test_names_a_command_would_refuse_are_not_offered() -> None:
    snap = Names(
        users=(("alice", "a"), ("bad name", "b"), (".x", "c"), ("x" * 65, "d")),
        own=("ok.png", "my cat.png"),
        received=(("carol", "ok.png", 1), ("carol", "sp ace.png", 1), ("bad owner", "z.png", 1)),
        shared=(("bob", "ok.png", 1), ("bob", "caf\u00e9.png", 1)),
        previews={"alice": ("pic.jpg", "../etc.png", "a b.png")},
    )
    assert offered("browse ", snap) == ["alice"]
    assert offered("request alice ", snap) == ["pic.jpg"]
    assert offered("view ", snap) == ["carol/ok.png", "ok.png", "z.png"]  # z.png alone is fine
    assert offered("grant ", snap) == ["bob"]
    assert offered("grant bob ", snap) == ["ok.png"]
    assert offered("grant erin ", snap) == ["ok.png"]
    assert offered("more carol ", snap) == ["ok.png"]


def test_a_failing_source_offers_nothing_and_does_not_raise() -> None:
    def broken(args: tuple[str, ...]) -> list[str]:
        raise RuntimeError("boom")

    completer = ShellCompleter({"user": broken})
    doc = Document("browse a", 8)
    assert list(completer.get_completions(doc, CompleteEvent())) == []


def test_duplicates_are_offered_once() -> None:
    snap = Names(users=(("alice", "a"),), received=(("alice", "x.png", 1),))
    assert offered("more ", snap) == ["alice"]


# ---- a real PromptSession over a pipe input and a dummy output -----------------------------
def prompt_with_tab(text: str, snap: Names = SNAP) -> tuple[str, list[str]]:
    """Type `text`, press Tab, wait for the completer's answer, press Enter.
    Returns (accepted line, the candidates the menu offered)."""
    seen: list[str] = []
    with create_pipe_input() as inp:
        session: PromptSession[str] = PromptSession(
            input=inp,
            output=DummyOutput(),
            completer=ShellCompleter(sources_for(lambda: snap)),
            complete_while_typing=False,
        )

        def answered(buf: Buffer) -> bool:
            return buf.text.startswith(text) and (
                buf.complete_state is not None or buf.text != text
            )

        def feed() -> None:
            inp.send_text(text + "\t")
            wait_for(lambda: session.app.is_running and answered(session.app.current_buffer))
            state = session.app.current_buffer.complete_state
            if state is not None:
                seen.extend(c.display_text for c in state.completions)
            inp.send_text("\r")

        feeder = threading.Thread(target=feed)
        feeder.start()
        line = session.prompt("> ")
        feeder.join()
    return line, seen


def test_prompt_tab_completes_a_partial_command() -> None:
    assert prompt_with_tab("enc") == ("encrypt ", [])  # the next word does not glue on


def test_prompt_tab_offers_user_names() -> None:
    assert prompt_with_tab("browse al") == ("browse al", ["alice", "albert"])
    assert prompt_with_tab("request b") == ("request bob ", [])


def test_prompt_tab_offers_image_names() -> None:
    assert prompt_with_tab("request alice p") == ("request alice p", ["pic.jpg", "portrait.png"])
    assert prompt_with_tab("view tr") == ("view tree.png ", [])
    assert prompt_with_tab("grant bob pic.jpg re") == ("grant bob pic.jpg revoke ", [])


# ---- NameSource: reading the session ------------------------------------------------------
@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSession]:
    s = FakeSession(tmp_path / "home")
    yield s
    s.close()


def test_refresh_local_reads_home_and_state_db(fake: FakeSession) -> None:
    fake.add_own("b.png", "a.jpg")
    fake.add_received("carol", "tree.png", 5)
    fake.add_given("bob", "a.jpg", 2)
    fake.db.add_request("bob#3", "bob", "a.jpg", 4)
    fake.add_preview_file("alice", "pic.png.jpg")
    fake.add_preview_file("alice", "sea.jpg")
    src = NameSource(fake)  # the real naming rule
    names = src.refresh_local()
    assert names.own == ("a.jpg", "b.png")
    assert names.received == (("carol", "tree.png", 5),)
    assert names.shared == (("bob", "a.jpg", 2),)
    assert names.requests == ((1, "bob", "a.jpg", 4),)
    assert names.waiting == 1
    assert dict(names.previews) == {"alice": ("pic.png", "sea.jpg")}
    assert src.errors == {}


def test_refresh_directory_leaves_you_out_and_counts_errors(fake: FakeSession) -> None:
    fake.users = [
        Entry("me", "127.0.0.1", 1),
        Entry("bob", "127.0.0.1", 2),
        Entry("alice", "10.0.0.1", 3),
    ]
    src = NameSource(fake)
    names = src.refresh_directory()
    assert names.users == (("alice", "10.0.0.1:3"), ("bob", "127.0.0.1:2"))
    assert names.directory_ok is True
    fake.directory_error = SessionError("unreachable", "no node of the cloud answered")
    names = src.refresh_directory()
    assert names.users == (("alice", "10.0.0.1:3"), ("bob", "127.0.0.1:2"))  # kept
    assert names.directory_ok is False
    assert src.errors == {"directory": 1}
    assert src.last_error["directory"] == "no node of the cloud answered"


def test_not_joined_does_not_ask_the_cloud(fake: FakeSession) -> None:
    fake.token = None
    NameSource(fake).refresh_directory()
    assert fake.directory_calls == 0


def test_previews_map_back_to_image_names(tmp_path: Path) -> None:
    for fname in ("a.png.jpg", "b.jpg", "c.JPEG", "notes.jpg", ".tmp-x.part", "x" * 70):
        (tmp_path / fname[:64]).write_bytes(b"x")
    (tmp_path / "sub.jpg").mkdir()
    # codec.images.preview_name: "a.png" -> "a.png.jpg", "b.jpg" -> "b.jpg"
    assert images_of_previews(tmp_path, images.preview_name) == (
        "a.png",
        "b.jpg",
        "c.JPEG",
        "notes.jpg",
    )
    assert images_of_previews(tmp_path, lambda image: image) == (
        "a.png.jpg",
        "b.jpg",
        "c.JPEG",
        "notes.jpg",
        "x" * 64,
    )


def test_browse_outcomes_are_learned(fake: FakeSession) -> None:
    src = NameSource(fake)
    src.learn({"user": "alice", "previews": [{"image": "pic.jpg", "path": "p", "bytes": 3}]})
    src.learn({"users": []})  # other commands' data: ignored
    assert dict(src.names.previews) == {"alice": ("pic.jpg",)}
    assert dict(src.refresh_local().previews) == {"alice": ("pic.jpg",)}  # survives a refresh


def test_a_failing_step_is_counted_and_the_others_still_refresh(fake: FakeSession) -> None:
    fake.add_received("carol", "tree.png", 5)

    def broken() -> list[str]:
        raise OSError("disk gone")

    fake.sharing.owner.shareable = broken
    src = NameSource(fake)
    names = src.refresh_local()
    assert names.received == (("carol", "tree.png", 5),)
    assert src.errors == {"own": 1}


def test_background_threads_refresh_and_stop(fake: FakeSession) -> None:
    fake.users = [Entry("bob", "127.0.0.1", 2)]
    inside: list[bool] = []
    src = NameSource(fake, period_s=60, local_period_s=60)
    fake.directory_hook = lambda: inside.append(src.in_refresh_thread())
    src.start()
    try:
        wait_for(lambda: src.names.users == (("bob", "127.0.0.1:2"),))
        fake.add_received("carol", "tree.png", 5)
        src.poke()
        wait_for(lambda: src.names.received == (("carol", "tree.png", 5),))
    finally:
        src.stop()
    assert inside[0] is True and src.in_refresh_thread() is False
    assert all(not t.is_alive() for t in src._threads)
    assert fake.directory_calls == 1  # period 60 s: one query, no busy loop


def test_request_user_offers_that_users_images_fetched_in_the_background(
    fake: FakeSession,
) -> None:
    """Issue 17: `request alice <Tab>` before any `browse alice`: the first Tab asks for alice's
    images in the background (as `browse alice` would), the next Tab offers them."""
    fake.users = [Entry("alice", "127.0.0.1", 2)]
    asked: list[str] = []

    def browse(user: str) -> list[dict[str, object]]:
        asked.append(user)
        return [{"image": "pic.jpg", "path": "previews/alice/pic.jpg", "bytes": 9},
                {"image": "sea.png", "path": "previews/alice/sea.png.jpg", "bytes": 9}]

    fake.sharing.browse = browse  # type: ignore[attr-defined]
    src = NameSource(fake, period_s=60, local_period_s=60)
    completer = ShellCompleter(src.sources())

    def tab(text: str) -> list[str]:
        doc = Document(text, len(text))
        return [c.display_text for c in completer.get_completions(doc, CompleteEvent())]

    src.start()
    try:
        wait_for(lambda: src.names.users == (("alice", "127.0.0.1:2"),))
        assert tab("request alice ") == []  # not known yet: asked for in the background
        wait_for(lambda: "alice" in src.names.previews)
        assert tab("request alice ") == ["pic.jpg", "sea.png"]
        assert tab("request alice s") == ["sea.png"]
        assert tab("request carol ") == []  # not online: nobody is asked
    finally:
        src.stop()
    assert asked == ["alice"]  # once per period, however many Tabs


def test_a_failing_image_fetch_is_counted(fake: FakeSession) -> None:
    def browse(user: str) -> list[dict[str, object]]:
        raise SessionError("offline", f"{user} is not online")

    fake.sharing.browse = browse  # type: ignore[attr-defined]
    src = NameSource(fake)
    src.fetch_images("alice")
    assert src.errors == {"images": 1} and src.last_error["images"] == "alice is not online"
    assert dict(src.names.previews) == {}
