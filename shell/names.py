"""Names for completion, refreshed in the background so that typing never waits on the network.

`NameSource(session)` keeps one immutable `Names` snapshot and swaps it whole (readers never
lock: the completer reads `source.names` while the refresh threads build the next one), after
litecli's completion refresher. Two daemon threads, both stopped by `stop()`:

- "names-local" rebuilds what lives on this machine: your images (`high/`), images shared with
  you (`state.db` inbox), your borrowers (`shared`), pending requests for more views, previews
  fetched into `previews/<user>/`. Cheap (a few sqlite reads and folder listings); it runs every
  `local_period_s` and at once after `poke()` (the shell pokes after each command and each
  notification).
- "names-directory" asks the cloud for the online users every `period_s` seconds. It may block
  for as long as the session's request deadline when the cloud is down; that only delays the
  user names, never the prompt.
- "names-images" fetches the images of an online user the completer asks about
  (`request USER <Tab>`, issue 17): the user's previews, as `browse USER` fetches them (into
  `previews/USER/`), at most once per `period_s` per user; the names show at the next Tab.

Errors are swallowed (completion must never break the prompt) but counted per step in
`errors` and the last message kept in `last_error`; the toolbar shows the cloud as unreachable
while the latest directory refresh failed.

`sources()` gives the completer one callable per argument kind of the command table
(`shell.commands.Command.arg_kinds`): kind -> f(args) -> candidates, where args are the complete
words before the cursor (command first) and a candidate is a name or (name, meta text).
Callers: shell.interactive (owns the source), shell.completer (reads it), shell.toolbar.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from codec import images
from codec.names import is_valid_name
from shell.render import plural

log = logging.getLogger(__name__)

Candidate = str | tuple[str, str]
Source = Callable[[tuple[str, ...]], Iterable[Candidate]]

DEFAULT_PERIOD_S = 5.0  # directory refresh; each one is a request to the cloud
DEFAULT_LOCAL_PERIOD_S = 2.0
COUNTS = ("1", "2", "5", "10")
CHANGES = (
    ("+1", "one more view"),
    ("+5", "five more views"),
    ("-1", "one view less"),
    ("revoke", "end the borrower's access"),
)


@dataclass(frozen=True)
class Names:
    """One snapshot. Tuples of (name, meta) pairs; `previews` maps an owner to image names."""

    users: tuple[tuple[str, str], ...] = ()  # online users but you: (user, "host:port")
    own: tuple[str, ...] = ()  # images in high/
    received: tuple[tuple[str, str, int], ...] = ()  # (owner, image, views_left)
    shared: tuple[tuple[str, str, int], ...] = ()  # (borrower, image, views_left)
    requests: tuple[tuple[int, str, str, int], ...] = ()  # pending: (id, borrower, image, views)
    previews: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    directory_ok: bool | None = None  # None: not asked yet

    @property
    def waiting(self) -> int:
        """Requests for more views waiting for your answer."""
        return len(self.requests)


# ---- pure: snapshot + typed words -> candidates ----------------------------------------------
def user_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    """Online users; for `more` (which asks an owner, online or not) the owners you hold images of
    come first."""
    out: list[Candidate] = []
    if args[:1] == ("more",):
        owners = sorted({owner for owner, _, _ in names.received})
        out += [(o, "shared images with you") for o in owners]
    out += [(u, addr) for u, addr in names.users]
    return out


def preview_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    """`request USER <image>`: the images of USER (args[1]) whose previews you fetched."""
    user = args[1] if len(args) > 1 else ""
    return [(image, f"preview from {user}") for image in names.previews.get(user, ())]


def received_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    """`view`: OWNER/IMAGE for every image shared with you, and IMAGE alone where no other owner
    shared one of the same name."""
    count: dict[str, int] = {}
    for _, image, _ in names.received:
        count[image] = count.get(image, 0) + 1
    out: list[Candidate] = []
    for owner, image, left in names.received:
        meta = f"{plural(left, 'view')} left"
        out.append((f"{owner}/{image}", meta))
        if count[image] == 1:
            out.append((image, f"from {owner}, {meta}"))
    return out


def received_image_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    """`more OWNER <image>`: the images OWNER (args[1]) shared with you."""
    owner = args[1] if len(args) > 1 else ""
    return [
        (image, f"{plural(left, 'view')} left") for o, image, left in names.received if o == owner
    ]


def borrower_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    """`grant <user>`: the users you shared images with."""
    counts: dict[str, int] = {}
    for borrower, _, _ in names.shared:
        counts[borrower] = counts.get(borrower, 0) + 1
    return [(b, f"{plural(n, 'image')} shared") for b, n in sorted(counts.items())]


def own_image_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    """`grant BORROWER <image>`: the images shared with BORROWER (args[1]); when there are none
    (a borrower not in `shared`), all your images, since `grant` names the problem itself."""
    borrower = args[1] if len(args) > 1 else ""
    given: list[Candidate] = [
        (image, f"{plural(left, 'view')} in total")
        for b, image, left in names.shared
        if b == borrower
    ]
    if given:
        return given
    return [(image, "your image") for image in names.own]


def request_candidates(names: Names, args: tuple[str, ...]) -> list[Candidate]:
    return [(str(i), f"{b} asks {v} more of {image}") for i, b, image, v in names.requests]



def _bind(
    fn: Callable[[Names, tuple[str, ...]], list[Candidate]], get: Callable[[], Names]
) -> Source:
    return lambda args: fn(get(), args)


def sources_for(get: Callable[[], Names]) -> dict[str, Source]:
    """The completer's sources over whatever snapshot `get()` returns at completion time."""
    pure: dict[str, Callable[[Names, tuple[str, ...]], list[Candidate]]] = {
        "user": user_candidates,
        "preview": preview_candidates,
        "received": received_candidates,
        "received_image": received_image_candidates,
        "borrower": borrower_candidates,
        "own_image": own_image_candidates,
        "request_id": request_candidates,
    }
    out: dict[str, Source] = {kind: _bind(fn, get) for kind, fn in pure.items()}
    out["count"] = lambda args: COUNTS
    out["change"] = lambda args: CHANGES
    return out


# ---- reading the session ---------------------------------------------------------------------
def images_of_previews(folder: Path, preview_name: Callable[[str], str]) -> tuple[str, ...]:
    """Image names behind the preview files in `folder` (previews/<user>/).

    A preview file is named `preview_name(image)` (codec.images: "pic.png" -> "pic.png.jpg",
    "pic.jpg" -> "pic.jpg"). The inverse tried first is the file name without its last
    extension when what is left still has one ("pic.png.jpg" -> "pic.png"), then the file name
    itself ("pic.jpg"); the first that maps back to the file is kept. Files that match neither
    (a name cut to 64 characters, a stray file) are skipped."""
    found: set[str] = set()
    for path in folder.iterdir():
        fname = path.name
        if not path.is_file() or not is_valid_name(fname):
            continue
        stripped = fname.rsplit(".", 1)[0]
        candidates = [stripped, fname] if "." in stripped else [fname]
        for candidate in candidates:
            if is_valid_name(candidate) and preview_name(candidate) == fname:
                found.add(candidate)
                break
    return tuple(sorted(found))


class NameSource:
    """Background-refreshed names of one client session (see the module docstring)."""

    def __init__(
        self,
        session: Any,
        *,
        period_s: float = DEFAULT_PERIOD_S,
        local_period_s: float = DEFAULT_LOCAL_PERIOD_S,
        preview_name: Callable[[str], str] | None = None,
    ) -> None:
        self._session = session
        self._period_s = period_s
        self._local_period_s = local_period_s
        self._preview_name = preview_name or images.preview_name
        self.names = Names()
        self.errors: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self._learned: dict[str, set[str]] = {}  # owner -> images seen in `browse` outcomes
        self._wanted: list[str] = []  # users whose images the completer asked about
        self._fetched_at: dict[str, float] = {}  # user -> when their images were last asked
        self._want = threading.Event()
        self._clock = time.monotonic
        self._lock = threading.Lock()  # writers only: refresh steps and learn()
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start both refresh threads (daemons); the first passes run at once."""
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._local_loop, name="names-local", daemon=True),
            threading.Thread(target=self._directory_loop, name="names-directory", daemon=True),
            threading.Thread(target=self._images_loop, name="names-images", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Ask the threads to end and wait up to `timeout_s` each. A directory query in flight
        is not interrupted: its daemon thread ends when the query does."""
        self._stop.set()
        self._poke.set()
        self._want.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def poke(self) -> None:
        """Refresh the local names now (after a command or a notification)."""
        self._poke.set()

    def in_refresh_thread(self) -> bool:
        """True when called from one of this source's threads (the shell keeps their retry
        notices off the screen)."""
        return threading.current_thread() in self._threads

    def sources(self) -> dict[str, Source]:
        out = sources_for(lambda: self.names)
        previews = out["preview"]

        def preview(args: tuple[str, ...]) -> Iterable[Candidate]:
            if len(args) > 1:
                self.want_images(args[1])
            return previews(args)

        out["preview"] = preview
        return out

    def want_images(self, user: str) -> None:
        """Fetch `user`'s image names in the background (an online user other than you, not
        asked within `period_s`). Never blocks: completion calls it."""
        online = {u for u, _ in self.names.users}
        with self._lock:
            last = self._fetched_at.get(user)
            if user not in online or user in self._wanted or (
                last is not None and self._clock() - last < self._period_s
            ):
                return
            self._fetched_at[user] = self._clock()
            self._wanted.append(user)
        self._want.set()

    def learn(self, data: Mapping[str, Any]) -> None:
        """Remember image names from a command's data (`browse`: {"user", "previews": [...]})."""
        user, rows = data.get("user"), data.get("previews")
        if not isinstance(user, str) or not isinstance(rows, list):
            return
        images = {
            r["image"] for r in rows if isinstance(r, dict) and isinstance(r.get("image"), str)
        }
        with self._lock:
            self._learned.setdefault(user, set()).update(images)
            merged = dict(self.names.previews)
            merged[user] = tuple(sorted(set(merged.get(user, ())) | images))
            self.names = replace(self.names, previews=merged)

    # ---- refresh passes (also called directly by tests) -----------------------------------------
    def refresh_local(self) -> Names:
        s = self._session
        new: dict[str, Any] = {}
        steps: dict[str, Callable[[], Any]] = {
            "own": lambda: tuple(s.sharing.owner.shareable()),
            "received": lambda: tuple((g.owner, g.image, g.views_left) for g in s.db.inbox()),
            "shared": lambda: tuple((g.borrower, g.image, g.views_left) for g in s.db.shared()),
            "requests": lambda: tuple(
                (r.id, r.borrower, r.image, r.views) for r in s.db.requests("pending")
            ),
            "previews": self._read_previews,
        }
        for step, fn in steps.items():
            value = self._guard(step, fn)
            if value is not None:
                new[step] = value
        with self._lock:
            self.names = replace(self.names, **new)
            return self.names

    def refresh_directory(self) -> Names:
        s = self._session
        if getattr(s, "token", None) is None:  # not joined: asking would only fail
            return self.names
        entries = self._guard("directory", lambda: s.directory(refresh=True))
        with self._lock:
            if entries is None:
                self.names = replace(self.names, directory_ok=False)
            else:
                users = tuple((e.user, f"{e.host}:{e.port}") for e in entries if e.user != s.user)
                self.names = replace(self.names, users=users, directory_ok=True)
            return self.names

    def _read_previews(self) -> dict[str, tuple[str, ...]]:
        root = Path(self._session.home.root) / "previews"
        out: dict[str, set[str]] = {}
        for folder in root.iterdir():
            if folder.is_dir() and is_valid_name(folder.name):
                out[folder.name] = set(images_of_previews(folder, self._preview_name))
        with self._lock:
            for user, images in self._learned.items():
                out.setdefault(user, set()).update(images)
        return {user: tuple(sorted(images)) for user, images in out.items() if images}

    def _guard(self, step: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - completion never breaks the prompt; counted
            with self._lock:
                self.errors[step] = self.errors.get(step, 0) + 1
                self.last_error[step] = str(exc) or type(exc).__name__
            log.debug("refreshing %s failed: %s", step, exc)
            return None

    def _local_loop(self) -> None:
        while not self._stop.is_set():
            self._poke.clear()
            self.refresh_local()
            self._poke.wait(self._local_period_s)

    def fetch_images(self, user: str) -> None:
        """One fetch of `user`'s images (the "names-images" thread; tests call it directly)."""
        rows = self._guard("images", lambda: self._session.sharing.browse(user))
        if rows is not None:
            self.learn({"user": user, "previews": rows})

    def _images_loop(self) -> None:
        while not self._stop.is_set():
            self._want.wait()
            self._want.clear()
            while not self._stop.is_set():
                with self._lock:
                    if not self._wanted:
                        break
                    user = self._wanted[0]
                self.fetch_images(user)
                with self._lock:
                    self._wanted.remove(user)

    def _directory_loop(self) -> None:
        while not self._stop.is_set():
            self.refresh_directory()
            self._stop.wait(self._period_s)
