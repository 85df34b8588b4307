"""Tables and JSON from the same data: handlers return dicts, this module formats them."""

from __future__ import annotations

import json
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
