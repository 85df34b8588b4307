"""Helpers for the view-limit tests (TD-3, TD-4 in tests/test_view_limits.py).

- `client_env` / `run_shell`: a borrower's shell process with no display (terminal rendering), a
  fresh TMPDIR and a fixed terminal size.
- `received`: the borrower's row of state.db; `files_holding`: files that contain given bytes.
- `Windows`: finds any 32-byte window of an original in other bytes, exactly.
- `HeaderRewriter`: a received sealed PNG with header bits flipped (codec.png pieces: only the
  header rows are recompressed, the rest of the picture is compressed once).
- `offline_borrower`: bob's client holding alice's picture, sealed and signed in this process
  exactly as alice's client would (no cloud: viewing needs no network).
- `serving`: the borrower online in a `--serve` shell process (answering peers) for a block;
  `send_peer`: an access update sent peer to peer from an in-process session (as the owner's
  client does, or an on-path sender holding the owner's token).
- `RaceViewer` (this file run as a script): a client process that opens its session, says "ready",
  waits for a line on stdin, then takes one view, so two of them race on state.db.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

import config
from actors.client.client_session import ClientSession
from actors.client.client_store import ClientHome, ReceivedGrant
from actors.client.keys import ClientKeys
from benchmarks import localcloud
from benchmarks.terminal import run_on_terminal
from codec import png as png_mod
from codec import seal, sharecrypt
from codec.messages import AccessUpdate, Message, Update

WINDOW = 32
_BLOCK = 16


def client_env(tmpdir: Path, columns: int = 60, lines: int = 30) -> dict[str, str]:
    """Environment of a client process: no DISPLAY / WAYLAND_DISPLAY (the viewer renders in the
    terminal), TMPDIR = `tmpdir`, terminal size columns x lines (`run_shell` gives its terminal
    that size)."""
    env = localcloud.env()
    for var in ("DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(var, None)
    env.update(TMPDIR=str(tmpdir), COLUMNS=str(columns), LINES=str(lines))
    return env


def run_shell(
    cloud: localcloud.Cloud,
    user: str,
    home: Path,
    commands: str,
    *,
    env: dict[str, str],
    json_out: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`python -m shell -c COMMANDS` as `user` against `cloud`, in `env`, with the picture's
    stream (stdout, or stderr with JSON) on a terminal that closes each picture with a key."""
    cmd = [
        sys.executable,
        "-m",
        "shell",
        "--user",
        user,
        "--home",
        str(home),
        "--config",
        str(cloud.config),
        "-c",
        commands,
    ]
    if json_out:
        cmd.append("--json")
    return run_on_terminal(  # the picture's stream on a terminal of env's COLUMNS x LINES
        cmd,
        on="stderr" if json_out else "stdout",
        env=env,
        cwd=str(localcloud.REPO),
        timeout=120,
        columns=int(env.get("COLUMNS", "80")),
        lines=int(env.get("LINES", "24")),
    )


def received(home: Path, owner: str, image: str) -> ReceivedGrant:
    """The borrower's state.db row of (owner, image), read in this process."""
    db = ClientHome(home).open_state()
    try:
        rec = db.get_received(owner, image)
    finally:
        db.close()
    assert rec is not None, f"{home} holds no grant of {owner}/{image}"
    return rec


def files_under(*folders: Path) -> list[Path]:
    return sorted(f for d in folders for f in d.rglob("*") if f.is_file())


def files_holding(needle: bytes, *folders: Path) -> list[str]:
    """Files under `folders` whose bytes contain `needle`."""
    return [str(f) for f in files_under(*folders) if needle in f.read_bytes()]


class Windows:
    """Finds any WINDOW-byte substring of `original` in other bytes, exactly.

    A common run of WINDOW bytes always holds a whole 16-byte block of the original at an offset
    that is a multiple of 16. Every offset of the data whose 16 bytes hash like such a block is
    checked byte for byte and extended both ways to the longest common run."""

    def __init__(self, original: bytes) -> None:
        self.original = original
        self.blocks: dict[bytes, list[int]] = {}
        for k in range(0, len(original) - _BLOCK + 1, _BLOCK):
            self.blocks.setdefault(original[k : k + _BLOCK], []).append(k)
        keys = [_hash(np.frombuffer(b, dtype=np.uint8)[None, :])[0] for b in self.blocks]
        self.hashes = np.unique(np.array(keys, dtype=np.uint64))

    def find(self, data: bytes) -> int | None:
        """Where in `data` a run of at least WINDOW bytes of the original starts, or None."""
        if len(data) < WINDOW:
            return None
        arr = np.frombuffer(data, dtype=np.uint8)
        hashed = _hash(np.lib.stride_tricks.sliding_window_view(arr, _BLOCK))
        for i in np.flatnonzero(np.isin(hashed, self.hashes)):
            for k in self.blocks.get(data[i : i + _BLOCK], ()):
                back, length = self._run(data, int(i), k)
                if length >= WINDOW:
                    return int(i) - back
        return None

    def _run(self, data: bytes, i: int, k: int) -> tuple[int, int]:
        """(bytes before i, length) of the common run around data[i:i+16] == original[k:k+16],
        each side followed at most WINDOW bytes."""
        back = 0
        while (
            back < WINDOW
            and i - back > 0
            and k - back > 0
            and data[i - back - 1] == self.original[k - back - 1]
        ):
            back += 1
        fwd, a, b = 0, i + _BLOCK, k + _BLOCK
        while (
            fwd < WINDOW
            and a + fwd < len(data)
            and b + fwd < len(self.original)
            and data[a + fwd] == self.original[b + fwd]
        ):
            fwd += 1
        return back, back + _BLOCK + fwd

    def files_holding(self, *folders: Path) -> list[str]:
        """Files under `folders` holding a WINDOW-byte run of the original."""
        return [str(f) for f in files_under(*folders) if self.find(f.read_bytes()) is not None]


def _hash(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of 16 bytes (collisions only cost a byte comparison)."""
    halves = np.ascontiguousarray(rows).view("<u8").reshape(-1, 2)
    hashed: np.ndarray = halves[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ halves[:, 1]
    return hashed


def header_bit(bit: int) -> tuple[int, int]:
    """(sample index, mask) of header bit `bit` (bit 0 = most significant bit of header byte 0):
    codec.seal packs HEADER_BITS = 2 bits per sample, most significant first."""
    return bit // seal.HEADER_BITS, 1 << (seal.HEADER_BITS - 1 - bit % seal.HEADER_BITS)


class HeaderRewriter:
    """A sealed PNG whose header samples can be changed cheaply (see the module docstring)."""

    def __init__(self, sealed: bytes) -> None:
        with Image.open(io.BytesIO(sealed)) as im:
            pixels = np.asarray(im.convert("RGB"))
        self.height, self.width = pixels.shape[:2]
        self.stride = 3 * self.width
        self.head_rows = -(-seal.HEADER_SAMPLES // self.stride)
        self.samples = pixels.reshape(-1)[: self.head_rows * self.stride].copy()
        rest = np.zeros((self.height - self.head_rows, 1 + self.stride), dtype=np.uint8)
        rest[:, 1:] = pixels[self.head_rows :].reshape(-1, self.stride)
        self.rest = png_mod.compress_rows(png_mod.row_slices(rest), 1, up=False)
        self.header = seal.unpack(self.samples, seal.HEADER_BITS, seal.HEADER_BYTES)
        self.grant_at = seal._FIXED.size  # first byte of the grant region in the header
        self.grant_len = int.from_bytes(self.header[self.grant_at - 2 : self.grant_at], "big")

    def _png(self, head_samples: np.ndarray) -> bytes:
        rows = np.zeros((self.head_rows, 1 + self.stride), dtype=np.uint8)
        rows[:, 1:] = head_samples.reshape(self.head_rows, self.stride)
        piece = png_mod.compress_rows([rows], 1, up=True)
        return png_mod.assemble(self.width, self.height, [piece, self.rest])

    def with_bits_flipped(self, bits: Iterable[int]) -> bytes:
        """The PNG with these header bits flipped in its samples (checksums left as they are)."""
        head = self.samples.copy()
        for bit in bits:
            sample, mask = header_bit(bit)
            head[sample] ^= mask
        return self._png(head)

    def with_header(self, header: bytes) -> bytes:
        """The PNG carrying `header` (HEADER_BYTES) in its header samples."""
        fresh = np.zeros(seal.HEADER_SAMPLES, dtype=np.uint8)
        seal.pack(np.frombuffer(header, dtype=np.uint8), seal.HEADER_BITS, fresh)
        head = self.samples.copy()
        head[: seal.HEADER_SAMPLES] = head[: seal.HEADER_SAMPLES] & 0xFC | fresh
        return self._png(head)


@contextmanager
def offline_borrower(
    home: Path, original: bytes, views: int, image: str = "pic.png", seed: int = 11
) -> Iterator[tuple[ClientSession, bytes]]:
    """bob's client (never joined) holding `image` from alice with `views` views: the payload
    encrypted, sealed and signed with alice's keys (drawn from `seed`) as alice's client does.
    Yields (bob's session, the sealed PNG stored in received/alice/)."""
    r = random.Random(seed)
    alice = ClientKeys(r.randbytes(32), r.randbytes(32))
    bob = ClientSession("bob", home, config.load(None))
    try:
        bob.db.pin_peer("alice", alice.sign_public, alice.box_public)
        aad = sharecrypt.payload_aad("alice", "bob", image)
        key, nonce, payload = sharecrypt.encrypt_payload(original, aad=aad, rng=r.randbytes)
        grant = sharecrypt.make_grant(
            alice,
            owner="alice",
            borrower="bob",
            image=image,
            views=views,
            expires=0.0,
            version=1,
            content_key=key,
            nonce=nonce,
            borrower_box_public=bob.keys.box_public,
            rng=r.randbytes,
        )
        png = seal.seal(payload, grant=sharecrypt.sealed_grant(grant))
        bob.grants.accept_image("alice", image, png)
        yield bob, png
    finally:
        bob.close()


@contextmanager
def serving(cloud: localcloud.Cloud, user: str, home: Path) -> Iterator[list[str]]:
    """`user` online for the block in a `python -m shell --serve` process (it joins first,
    applying what the cloud holds for it). Yields a list that holds, after the block, the
    process's stderr lines (its notices: updates applied or refused)."""
    proc = cloud.spawn_shell(user, home, ["--serve"])
    notices: list[str] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "online" in line, (line, proc.stderr.read() if proc.stderr else "")
        yield notices
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
        notices += err.splitlines()


def send_peer(sender: ClientSession, to: str, update: Update) -> Message:
    """`update` sent from `sender`'s session peer to peer to `to` (online) as an AccessUpdate
    carrying `sender`'s token, the update's id as request id (as Sharing._deliver does).
    Returns the reply; raises SessionError on an error reply."""
    entry = sender.lookup(to, refresh=True)
    assert entry is not None, f"{to} is not online"
    tok = sender.require_token()
    return sender.call(
        lambda rid, _a: AccessUpdate(rid=rid, user=sender.user, token=tok, update=update),
        targets=[(entry.host, entry.port)],
        deadline_s=10,
        rid=update.id,
    )


class RaceViewer:
    """A client process (no join: viewing needs no network) that views one image on cue."""

    def __init__(self, user: str, home: Path, config_path: Path, image: str) -> None:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            user,
            str(home),
            str(config_path),
            image,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=localcloud.env(),
            cwd=str(localcloud.REPO),
        )

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", (line, self.proc.stderr.read() if self.proc.stderr else "")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, object]:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        value: dict[str, object] = json.loads(out)
        return value

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _race_main(user: str, home: str, config_path: str, image: str) -> None:
    session = ClientSession(user, Path(home), config.load(config_path))
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        data, _picture = session.sharing.view(image)  # any error: a traceback, exit status 1
        print(json.dumps({"shown": data["shown"], "views_left": data["views_left"]}), flush=True)
    finally:
        session.close()


if __name__ == "__main__":
    _race_main(*sys.argv[1:5])
