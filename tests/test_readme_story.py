"""The README's "The whole story" section, run as written (issue 16 item 6): the README cannot drift.

The commands are parsed from README.md (`$ ` lines of the section's indented blocks; the lines
under one, up to the next, are what it prints) and run one by one with bash, stdout and stderr on
one pseudo-terminal as at a person's prompt (a picture of `view` is answered with a key and cut
out, as the README leaves it out). Images the test makes stand in for the author's pictures
(beach.jpg 1600x1200, cat.png 120x120, "my cat photo.png") in the folder the commands run in.

What the commands honour to stay off the machine's own cloud and homes: `VEILSHARE_CONFIG` (a
cluster file on free ports, the failure simulation on but never due during the story) and
`XDG_DATA_HOME` (the nodes' data and the client homes under the test's folder). Background jobs
(`... &`) are started and kept as bash keeps jobs (`kill %N` stops job N); the README's pids in a
command (`kill -9 19871`) are replaced by the real pid of the same node, learnt from the `status`
output printed before it. After the cloud is started in the background, the test waits until
every node answers `status` as up and one holds the failure token (a person waits a moment, too).

Normalised, because they truly vary from run to run: ports of addresses; times (`YYYY-MM-DD
HH:MM`); pids; the data root's path; in tables, the `ms` and `node` columns of `encrypt` (timing,
and which node won the election), the `served` and `token` columns of `status` and its
`failure token held by node N` line (the election and the token ring move by timing), and the
`bytes` of previews (they depend on the picture). Table cells are compared, not their padding.
Everything else is compared as written.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.status import query_status
from benchmarks.localcloud import REPO, free_udp_ports, write_config
from benchmarks.terminal import ALT_SCREEN_ON, open_pty

pytestmark = pytest.mark.timeout(420)

README = REPO / "README.md"
SECTION = "## The whole story"
VARYING_COLUMNS = {"ms", "node", "served", "token", "pid", "bytes", "address"}
ALT_SCREEN_OFF = b"\x1b[?1049l"


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def story_steps(text: str) -> list[Step]:
    """The `$ ` commands of the section and the lines each prints."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + 1)
    steps: list[Step] = []
    in_block = False
    for line in text[start:end].splitlines():
        if line.startswith("    "):
            body = line[4:]
            if body.startswith("$ "):
                steps.append(Step(body[2:].strip()))
            elif steps and in_block:
                steps[-1].expected.append(body.rstrip())
            in_block = True
        elif line.strip():
            in_block = False
    return steps


def test_the_story_is_parsed_from_the_readme() -> None:
    steps = story_steps(README.read_text())
    commands = [s.command for s in steps]
    assert commands[0] == "python -m actors.server > cloud.log 2>&1 &"
    assert any(c.startswith("python -m shell --user alice --serve") for c in commands)
    assert commands[-1] == "python -m actors.server stop"
    assert len(steps) >= 15


# ---- normalising ----------------------------------------------------------------------------------
def _is_rule(line: str) -> bool:
    return bool(line.strip()) and set(line.replace(" ", "")) == {"-"}


def normalise(lines: list[str], data: str) -> list[str]:
    """Tables as lists of cells with the varying columns blanked; other lines with ports,
    times, pids and the data root replaced."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and _is_rule(lines[i + 1]):
            widths = [len(w) for w in lines[i + 1].split()]
            heads = re.split(r"\s{2,}", lines[i].strip())
            out.append(" | ".join(heads))
            out.append("-" * len(widths))
            varying = {k for k, h in enumerate(heads) if h in VARYING_COLUMNS}
            i += 2
            while i < len(lines) and lines[i].strip() and not _is_table_end(lines[i], len(heads)) \
                    and not (i + 1 < len(lines) and _is_rule(lines[i + 1])):  # the next header
                cells = re.split(r"\s{2,}", lines[i].strip())
                out.append(" | ".join("<v>" if k in varying else _plain(c, data)
                                      for k, c in enumerate(cells)))
                i += 1
            continue
        out.append(_plain(lines[i], data))
        i += 1
    return out


def _is_table_end(line: str, columns: int) -> bool:
    return len(re.split(r"\s{2,}", line.strip())) < max(2, columns - 2)


def _plain(line: str, data: str) -> str:
    line = line.replace(data, "<data>").replace("/root/.local/share", "<data>")
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "<time>", line)
    line = re.sub(r"\(pid \d+\)", "(pid <pid>)", line)
    return re.sub(r"failure token held by node \d+", "failure token held by node <n>", line)


# ---- running ------------------------------------------------------------------------------------
def make_images(folder: Path) -> None:
    rng = np.random.default_rng(16)
    y, x = np.mgrid[0:1200, 0:1600]
    beach = np.stack([(x // 7) % 256, (y // 5) % 256, ((x + y) // 11) % 256], -1)
    Image.fromarray(beach.astype(np.uint8), "RGB").save(folder / "beach.jpg", "JPEG", quality=85)
    for name, side in (("cat.png", 120), ("my cat photo.png", 200)):
        arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(arr, "RGB").save(folder / name, "PNG")


def on_terminal(cmd: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> list[str]:
    """Run `cmd` with bash, stdout and stderr on one terminal; the lines it printed, a picture
    drawn on the alternate screen cut out (a key closes it)."""
    master, slave = open_pty(100, 30)
    proc = subprocess.Popen(["bash", "-c", cmd], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env)
    os.close(slave)
    seen = bytearray()
    pressed = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"{cmd!r} did not end: {bytes(seen)[-300:]!r}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # every writer closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            while seen.count(ALT_SCREEN_ON) > pressed:
                os.write(master, b"q")
                pressed += 1
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = bytes(seen)
    while ALT_SCREEN_ON in text:
        a = text.index(ALT_SCREEN_ON)
        b = text.find(ALT_SCREEN_OFF, a)
        text = text[:a] + (text[b + len(ALT_SCREEN_OFF):] if b >= 0 else b"")
    return text.decode("utf-8", "replace").replace("\r\n", "\n").splitlines()


class Story:
    def __init__(self, tmp: Path) -> None:
        self.cwd = tmp / "pictures"
        self.cwd.mkdir()
        make_images(self.cwd)
        self.data = str(tmp / "xdg")
        ports = free_udp_ports(6)
        cfg = write_config(tmp / "cluster.toml",
                           [(i + 1, "127.0.0.1", ports[2 * i], ports[2 * i + 1]) for i in range(3)],
                           {"failures": {"mean_up_s": 86400.0}})
        self.cfg_path = cfg
        self.env = dict(os.environ, VEILSHARE_CONFIG=str(cfg), XDG_DATA_HOME=self.data,
                        PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
                        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        self.jobs: list[subprocess.Popen[str]] = []
        self.pids: dict[str, str] = {}  # README pid -> the real one

    def run(self, step: Step) -> list[str]:
        cmd = step.command
        for theirs, ours in self.pids.items():
            cmd = re.sub(rf"\b{theirs}\b", ours, cmd)
        if m := re.fullmatch(r"kill %(\d+)", cmd.split("#")[0].strip()):
            job = self.jobs[int(m.group(1)) - 1]
            job.terminate()
            job.wait(timeout=30)
            return []
        if cmd.endswith("&"):
            return self.background(cmd[:-1].strip())
        got = on_terminal(cmd, self.cwd, self.env)
        if "actors.server status" in cmd:
            self.learn_pids(step.expected, got)
        return got

    def background(self, cmd: str) -> list[str]:
        job = subprocess.Popen(["bash", "-c", f"exec {cmd}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=self.cwd, env=self.env, text=True)
        self.jobs.append(job)
        if "actors.server" in cmd:
            self.wait_up()
            return []
        assert job.stdout is not None
        return [job.stdout.readline().rstrip("\n")]  # what it says when it is ready

    def wait_up(self, limit_s: float = 60.0) -> None:
        import config

        cfg = config.load(self.cfg_path)
        end = time.monotonic() + limit_s
        while True:
            rows = query_status(cfg, timeout_s=0.5)
            if all(r["state"] == "up" for r in rows) and any(r["token"] for r in rows):
                return
            assert time.monotonic() < end, f"the cloud did not come up: {rows}"
            time.sleep(0.2)

    def learn_pids(self, expected: list[str], got: list[str]) -> None:
        def pids(lines: list[str]) -> dict[str, str]:
            rows = [line.split() for line in lines[2:] if line[:3].strip().isdigit()]
            return {r[0]: r[2] for r in rows if len(r) > 2 and r[2].isdigit()}

        ours = pids(got)
        for node, theirs in pids(expected).items():
            if node in ours:
                self.pids[theirs] = ours[node]

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "actors.server", "stop"], env=self.env,
                       capture_output=True, timeout=60)
        for job in self.jobs:
            if job.poll() is None:
                job.send_signal(signal.SIGTERM)
                try:
                    job.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    job.kill()
                    job.wait()


def test_the_whole_story_runs_as_written(tmp_path: Path) -> None:
    steps = story_steps(README.read_text())
    story = Story(tmp_path)
    try:
        for step in steps:
            got = story.run(step)
            assert normalise(got, story.data) == normalise(step.expected, story.data), (
                f"$ {step.command}\n--- README\n" + "\n".join(step.expected)
                + "\n--- got\n" + "\n".join(got))
    finally:
        story.stop()
