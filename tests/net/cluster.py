"""A cluster file naming the namespace hosts' addresses, for the real programs run by `Net`.

Callers: `hosts.Net.cluster_toml` (the integrator writes it to a file and passes it to
`veilshare-server` and the shell running inside the hosts)."""

from __future__ import annotations

import json
import secrets
import tomllib
from typing import Any

from config import DEFAULT_PATH


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for the text we write
    raise TypeError(f"cannot write {type(v).__name__} to TOML here: {v!r}")


def _table(header: str, body: dict[str, Any]) -> list[str]:
    return [header, *(f"{k} = {_value(v)}" for k, v in body.items()), ""]


def cluster_toml(node_addrs: dict[int, str], base_text: str | None = None,
                 sections: dict[str, dict[str, Any]] | None = None,
                 secret: str | None = None) -> str:
    """`base_text` (default: config/cluster.toml) with node `id`'s host set to
    `node_addrs[id]` and a fresh 32-byte secret (the sample secret is refused off loopback),
    or `secret` when given (per-node files of one cloud must share it). `sections` overrides
    knobs: {"failures": {"max_down_s": 2.0}} (a missing table is added). Ports and every other
    knob are kept. Raises KeyError for a node id with no address."""
    raw = tomllib.loads(base_text if base_text is not None else DEFAULT_PATH.read_text("utf-8"))
    for name, values in (sections or {}).items():
        raw[name] = {**raw.get(name, {}), **values}
    lines: list[str] = []
    for key, val in raw.items():
        if key == "nodes":
            for entry in val:
                lines += _table("[[nodes]]", {**entry, "host": node_addrs[entry["id"]]})
        elif key == "cluster":
            lines += _table("[cluster]", {**val, "secret": secret or secrets.token_hex(32)})
        else:
            lines += _table(f"[{key}]", val)
    return "\n".join(lines)
