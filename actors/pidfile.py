"""The embedded cloud's pid file and port check: one local cloud per data root, stopped by name.

`python -m actors.server` writes `<data root>/cloud.pid` at start (JSON: the supervisor's pid, its
process start time, the config file) and removes it at a clean stop; `stop` reads it and signals
that process only. A pid file is *stale* when its process is gone, or when the pid now belongs
to another program (pids are reused): the process start time and command line must both match.
Callers: actors.server (start, stop, status).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

from config import Config

PID_FILE = "cloud.pid"
MARKER = "actors.server"  # in the command line of every supervisor (python -m actors.server)
START_SLACK_S = 0.05  # psutil's create_time is rounded from clock ticks


@dataclass(frozen=True, slots=True)
class CloudPid:
    """What a pid file says, and what is true of it now."""

    path: Path
    pid: int
    started: float  # the process's create time when the file was written
    config: str
    live: bool  # that very process is running
    problem: str  # why it is stale ("" when live)


def pid_path(data_root: Path) -> Path:
    return data_root / PID_FILE


def _create_time(pid: int) -> float:
    return float(psutil.Process(pid).create_time())


def write(data_root: Path, config_path: str) -> Path:
    """Record this process as the cloud of `data_root` (atomically: temp file and rename)."""
    data_root.mkdir(parents=True, exist_ok=True)
    path = pid_path(data_root)
    tmp = path.with_name(f".{PID_FILE}.{os.getpid()}")
    body = {"pid": os.getpid(), "started": _create_time(os.getpid()), "config": config_path}
    tmp.write_text(json.dumps(body) + "\n")
    os.replace(tmp, path)
    return path


def remove_if_ours(data_root: Path) -> None:
    """Remove the pid file at a clean stop, if it still names this process."""
    path = pid_path(data_root)
    found = read(data_root)
    if found is not None and found.pid == os.getpid():
        path.unlink(missing_ok=True)


def read(data_root: Path) -> CloudPid | None:
    """The pid file of `data_root` and whether its cloud runs; None when there is none."""
    path = pid_path(data_root)
    try:
        raw = json.loads(path.read_text())
        pid, started, cfg = int(raw["pid"]), float(raw["started"]), str(raw.get("config", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return CloudPid(path, 0, 0.0, "", False, f"unreadable ({type(exc).__name__})")
    if pid <= 0:
        return CloudPid(path, pid, started, cfg, False, f"pid {pid} is not a process id")
    return CloudPid(path, pid, started, cfg, *_check(pid, started))


def _check(pid: int, started: float) -> tuple[bool, str]:
    try:
        proc = psutil.Process(pid)
        created, cmdline = float(proc.create_time()), proc.cmdline()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False, f"process {pid} has exited"
    except psutil.NoSuchProcess:
        return False, f"process {pid} is gone"
    except psutil.AccessDenied:
        return True, ""  # another user's process that we may not inspect: not ours to remove
    if abs(created - started) > START_SLACK_S or not any(MARKER in a for a in cmdline):
        return False, f"process {pid} is not that cloud (pid reused by {' '.join(cmdline)[:80]!r})"
    return True, ""


def busy_ports(cfg: Config) -> list[int]:
    """The configured nodes' client and peer UDP ports that cannot be bound now, in order."""
    busy = []
    for node in cfg.nodes:
        for host, port in (node.client_addr, node.peer_addr):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        busy.append(port)
                    else:
                        raise
    return busy
