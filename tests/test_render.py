"""render: aligned tables and JSON from the same data; the progress line."""

from __future__ import annotations

import json
import time
from typing import Any

from shell import render


def test_columns_align_and_numbers_are_right_aligned() -> None:
    rows: list[dict[str, Any]] = [
        {"user": "alice", "views": 2, "ms": 8.14},
        {"user": "bo", "views": 120, "ms": 10.0},
    ]
    assert render.table(rows, ["user", "views", "ms"]).splitlines() == [
        "user   views    ms",
        "-----  -----  ----",
        "alice      2   8.1",
        "bo       120  10.0",
    ]


def test_bools_none_and_headers() -> None:
    rows: list[dict[str, Any]] = [
        {"id": 1, "token": True, "holder": None},
        {"id": 2, "token": False, "holder": 3},
    ]
    assert render.table(
        rows, ["id", "token", "holder"], ["node", "has token", "h"]
    ).splitlines() == [
        "node  has token  h",
        "----  ---------  -",
        "   1  yes        -",
        "   2  no         3",
    ]


def test_a_column_mixing_text_and_numbers_is_left_aligned() -> None:
    rows: list[dict[str, Any]] = [{"v": 10}, {"v": "n/a"}]
    assert render.table(rows, ["v"]).splitlines() == ["v", "---", "10", "n/a"]


def test_bools_are_not_counted_as_numbers() -> None:
    rows: list[dict[str, Any]] = [{"b": True}, {"b": False}]
    assert render.table(rows, ["b"]).splitlines() == ["b", "---", "yes", "no"]


def test_empty_is_none() -> None:
    assert render.table([], ["user", "address"]) == "(none)"


def test_no_trailing_spaces() -> None:
    rows: list[dict[str, Any]] = [{"a": "x", "b": ""}, {"a": "longer", "b": ""}]
    assert all(line == line.rstrip() for line in render.table(rows, ["a", "b"]).splitlines())


def test_json_is_one_line_and_keeps_order() -> None:
    data = {"users": [{"user": "alice", "address": "127.0.0.1:40001"}], "ok": True}
    text = render.as_json(data)
    assert "\n" not in text
    assert json.loads(text) == data
    assert text.index('"users"') < text.index('"ok"')


def test_progress_line_has_a_constant_width_per_total() -> None:
    pad = " " * 25
    assert render.progress_line(0, 4, "a.png", width=8) == "[--------] 0/4 a.png" + pad
    assert render.progress_line(3, 4, "c.png", width=8) == "[######--] 3/4 c.png" + pad
    assert render.progress_line(4, 4, "", width=8) == "[########] 4/4 " + " " * 30
    assert render.progress_line(9, 4, "x", width=4) == "[####] 4/4 x" + " " * 29  # clamped
    assert render.progress_line(0, 0, "", width=4) == "[####] 0/0 " + " " * 30
    assert render.progress_line(1, 2, "n" * 100, width=10) == "[#####-----] 1/2 " + "n" * 30


def test_status_table_says_when_a_node_went_down_and_who_holds_the_token() -> None:
    down_at = time.mktime((2026, 12, 7, 14, 5, 9, 0, 0, -1))  # local time, as printed
    rows = [
        {"id": 1, "state": "up", "pid": 11, "served": 4, "cached": 0, "token": False,
         "users": 2, "pending": 0, "down_since": 0.0, "token_holder": 3},
        {"id": 3, "state": "down", "pid": 0, "served": 0, "cached": 0, "token": True,
         "users": 0, "pending": 0, "down_since": down_at, "token_holder": 3},
        {"id": 2, "state": "unreachable", "pid": 0, "served": 0, "cached": 0, "token": False,
         "users": 0, "pending": 0, "down_since": 0.0, "token_holder": 0},
    ]
    before = [dict(r) for r in rows]
    lines = render.status_table(rows).splitlines()
    assert lines[0].split() == ["id", "state", "served", "cached", "token", "users", "pending",
                                "down", "since"]
    assert lines[2].split() == ["1", "up", "4", "0", "no", "2", "0", "-"]
    assert lines[3].split() == ["3", "down", "0", "0", "yes", "0", "0", "14:05:09"]
    assert lines[4].split() == ["2", "unreachable", "0", "0", "-", "0", "0", "-"]
    assert lines[5] == "failure token held by node 3"
    assert rows == before  # the caller's rows (the JSON) are left as they were
    with_pids = render.status_table(rows, pids=True).splitlines()
    assert with_pids[0].split()[2] == "pid" and with_pids[2].split()[2] == "11"
    assert with_pids[4].split()[2] == "-"
