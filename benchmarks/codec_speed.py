"""Per-message codec cost: `python -m benchmarks.codec_speed [--repeat N] [--number N] [--json]`.

For each hot message of the node (issue 19: Election, ElectionOk, ElectionBatch of 16, Done,
DoneBatch of 16+16, EncryptRequest with a 4 KB image, EncryptReply with a 22 KB sealed PNG,
PeerHeartbeat) it prints microseconds per construct (the class called with its fields, every
check run), encode (`codec.messages.encode`) and decode (`codec.messages.decode` of that
body): the median of `--repeat` timeit runs of `--number` calls each. Only the public API is
used, so the same file times any checkout: for an A/B against another commit run it from that
checkout with `PYTHONPATH=<that checkout>`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

from codec import messages as m

TOKEN_DIGEST = bytes(range(32))


def _samples() -> dict[str, tuple[type[m.Message], dict[str, Any]]]:
    """name -> (class, keyword fields) of each hot message, deterministic."""
    items = tuple(
        {
            "kind": ("election", "ok", "claim", "coordinator")[i % 4],
            "rid": f"user{i}#{1000 + i}",
            "priority": (i * 7919) % 1_000_000,
            "round": 1000 + i,
            "bind": 0b1110 if i % 4 == 0 else 0,  # an Election of a bound node (nodes 1-3)
        }
        for i in range(16)
    )
    return {
        "Election": (m.Election, {"rid": "alice#1234", "node": 3, "priority": 2**40 + 5,
                                     "round": 1234, "bind": 0b1110}),
        "ElectionOk": (m.ElectionOk, {"rid": "alice#1234", "node": 2, "round": 1234}),
        "ElectionBatch(16)": (m.ElectionBatch, {"node": 3, "items": items}),
        "Done": (m.Done, {"rid": "alice#1234", "node": 3, "acked": True}),
        "DoneBatch(16+16)": (
            m.DoneBatch,
            {
                "node": 3,
                "acked": tuple(f"alice#{i}" for i in range(16)),
                "unacked": tuple(f"bob#{i}" for i in range(100, 116)),
            },
        ),
        "EncryptRequest(4KB)": (
            m.EncryptRequest,
            {
                "rid": "alice#1234",
                "image": "photo0042.png",
                "data": bytes(range(256)) * 16,
                "attempt": 0,
            },
        ),
        "EncryptReply(22KB)": (
            m.EncryptReply,
            {
                "rid": "alice#1234",
                "node": 2,
                "sealed": bytes(range(256)) * 88,
                "seal_ms": 3.25,
                "wait_ms": 0.5,
            },
        ),
        "PeerHeartbeat": (
            m.PeerHeartbeat,
            {
                "node": 2,
                "epoch": 1_767_225_600_123,
                "state": "up",
                "load": 3,
                "token_epoch": 7,
                "token_holder": 1,
                "digest": TOKEN_DIGEST,
            },
        ),
    }


def _builder(cls: type[m.Message], fields: dict[str, Any]) -> Callable[[], m.Message]:
    """A zero-argument call that builds the message (nested ElectionItems built inside it)."""
    if cls is m.ElectionBatch:
        raw = fields["items"]
        return lambda: cls(node=fields["node"], items=tuple(m.ElectionItem(**item) for item in raw))
    return lambda: cls(**fields)


def _us(fn: Callable[[], object], number: int, repeat: int) -> float:
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def measure(number: int, repeat: int) -> list[dict[str, Any]]:
    """One row per hot message: us per construct, encode and decode (medians)."""
    rows = []
    for name, (cls, fields) in _samples().items():
        build = _builder(cls, fields)
        msg = build()
        body = m.encode(msg)
        code = cls.TYPE
        assert m.decode(code, body) == msg

        def encode(msg: m.Message = msg) -> bytes:
            return m.encode(msg)

        def decode(code: int = code, body: bytes = body) -> m.Message:
            return m.decode(code, body)

        rows.append(
            {
                "message": name,
                "bytes": len(body),
                "construct_us": _us(build, number, repeat),
                "encode_us": _us(encode, number, repeat),
                "decode_us": _us(decode, number, repeat),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit runs (median taken)")
    parser.add_argument("--number", type=int, default=2000, help="calls per timeit run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.number, args.repeat)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'message':<22}{'bytes':>7}{'construct us':>14}{'encode us':>11}{'decode us':>11}")
    for r in rows:
        print(
            f"{r['message']:<22}{r['bytes']:>7}{r['construct_us']:>14.2f}"
            f"{r['encode_us']:>11.2f}{r['decode_us']:>11.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
