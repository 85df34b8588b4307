"""Tables and JSON from the same data: handlers return dicts, this module formats them."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if value is None:
        return "-"
    return str(value)


def table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None
) -> str:
    """Aligned text table; numbers right-aligned. Empty rows -> '(none)'."""
    if not rows:
        return "(none)"
    heads = list(headers or columns)
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    numeric = [
        all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in rows)
        for c in columns
    ]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [fmt(heads), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def noun(n: int, word: str) -> str:
    """`word` as it follows the count `n`: "view" for 1 and -1, "views" otherwise."""
    return word if abs(n) == 1 else f"{word}s"


def plural(n: int, word: str) -> str:
    """`1 view`, `0 views`, `2 views`, `-1 view`: the count and its noun."""
    return f"{n} {noun(n, word)}"


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=False, separators=(", ", ": "))


def progress_line(i: int, n: int, name: str, width: int = 30) -> str:
    """One in-place progress line: `[#####-----] 3/10 name`, the name cut or padded to 30
    characters so that redrawing after a carriage return leaves nothing of a longer line.

    i: items done (0..n); n: total. Caller: shell.interactive (encrypt of several files)."""
    i = max(0, min(i, n))
    filled = width * i // n if n > 0 else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {i}/{n} {name[:30]:<30}"


def transfer_line(done: int, total: int, width: int = 30) -> str:
    """`[#####-----] 1.2/3.4 MB transferred`: bytes moving through the transport right now."""
    done = max(0, min(done, total))
    filled = width * done // total if total > 0 else width
    return (f"[{'#' * filled}{'-' * (width - filled)}] "
            f"{done / 1e6:.1f}/{total / 1e6:.1f} MB transferred")


def status_table(rows: Sequence[dict[str, Any]], pids: bool = False) -> str:
    """The nodes' status (actors.status.query_status rows) as `python -m actors.server status`
    and the client's `status` print it: the token as yes/no (- for a node not up), when a node
    went down (local time), the failure token's holder under the table. `rows` unchanged."""
    shown = []
    for r in rows:
        since = r.get("down_since") or 0.0
        shown.append({**r, "pid": r.get("pid") or "-",
                      "token": "yes" if r["token"] else ("-" if r["state"] != "up" else "no"),
                      "down since": time.strftime("%H:%M:%S", time.localtime(since))
                      if since else "-"})
    columns = ["id", "state", *(["pid"] if pids else []), "served", "cached", "token", "users",
               "pending", "down since"]
    text = table(shown, columns)
    holders = sorted({int(r["token_holder"]) for r in rows if r.get("token_holder")})
    if holders:
        text += f"\nfailure token held by node {', '.join(map(str, holders))}"
    return text
