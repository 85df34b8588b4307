"""Quick paths of record checking: one generated function per record class and direction.

Every field of a record is checked when it is built (`Record.__post_init__`) and when it is read
from a decoded map (`from_map`). The step-by-step checks (codec.fields: `Spec.check`,
`from_map`) say which field is wrong and why, and cost a few method calls per field. Here, per
record class, two functions are generated (as dataclasses generates `__init__`), each at its
first use:

- `post_init(rec)`: each field's check inlined as one expression (`Spec.quick_expr`, e.g.
  `type(v) is int and 0 <= v <= 255`), or its `Spec.quick()` function;
- `from_map(raw)`: the same over a decoded map whose keys are exactly the fields, the record
  built without running the checks a second time (its slots set directly).

The rule that keeps them honest: a quick path only ever *accepts*. For a value it does not find
plainly valid it raises Refused (or DecodeError), and the caller runs the step-by-step checks,
which accept or raise the reason exactly as they always did. So the quick paths must accept
only what the steps accept, with the same result (tests/test_codec_fastpath.py checks both ways
on random inputs, and that a quick path which skipped a check would be caught).
Callers: codec.fields (Record, record, from_map).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from codec.errors import DecodeError

Quick = Callable[[Any], Any]


class Refused(Exception):
    """A quick check's "not plainly valid": its caller runs the step-by-step check for the reason."""


class QuickSpec(Protocol):
    """What this module needs of a codec.fields.Spec."""

    @property
    def NORMALISES(self) -> bool: ...  # a class constant of Spec

    def quick(self) -> Quick: ...

    def quick_wire(self) -> Quick: ...

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None: ...


_FROM_MAP: dict[type, Callable[[dict[Any, Any]], Any]] = {}


def quick_from_map(cls: type, raw: dict[Any, Any]) -> Any:
    """The record of `cls` a valid decoded map gives; raises Refused (or DecodeError) otherwise,
    also for a class that has no quick path (declared with its own __post_init__)."""
    build = _FROM_MAP.get(cls)
    if build is None:
        raise Refused
    return build(raw)


class _Source:
    """Generated source text and the constants it names."""

    def __init__(self) -> None:
        self.env: dict[str, object] = {"Refused": Refused, "DecodeError": DecodeError}
        self.lines: list[str] = []

    def const(self, value: object) -> str:
        name = f"_k{len(self.env)}"
        self.env[name] = value
        return name

    def function(self, name: str) -> Callable[..., Any]:
        exec("\n".join(self.lines), self.env)  # noqa: S102 (our own generated text)
        return self.env[name]  # type: ignore[return-value]


def predicate_check(spec: QuickSpec) -> Quick | None:
    """`spec.quick_expr` as a quick function (returns v when true, else raises Refused), or None
    when the spec has no expression."""
    src = _Source()
    expr = spec.quick_expr("v", src.const)
    if expr is None:
        return None
    src.lines += ["def quick(v):", f"    if {expr}:", "        return v", "    raise Refused"]
    return src.function("quick")


def _post_init(cls: type, specs: dict[str, QuickSpec], steps: Callable[[Any], None]) -> Quick:
    src = _Source()
    late: list[str] = []
    # a subclass that is not declared itself gets the steps (which refuse it, as before)
    src.lines += ["def post_init(self):", f"    if type(self) is not {src.const(cls)}:",
                  "        return _steps(self)", "    try:"]  # fmt: skip
    for name, spec in specs.items():
        expr = spec.quick_expr("v", src.const)
        quick = src.const(spec.quick())
        src.lines.append(f"        v = self.{name}")
        if spec.NORMALISES:
            src.lines.append(f"        w_{name} = v if ({expr}) else {quick}(v)" if expr else
                             f"        w_{name} = {quick}(v)")  # fmt: skip
            late += [f"    if w_{name} is not self.{name}:",
                     f"        _set(self, {name!r}, w_{name})"]  # fmt: skip
        elif expr:
            src.lines.append(f"        if not ({expr}): {quick}(v)")
        else:
            src.lines.append(f"        {quick}(v)")
    src.lines += ["    except (Refused, DecodeError):", "        _steps(self)", "        return"]
    src.lines += late or ["    return"]
    src.env.update(_set=object.__setattr__, _steps=steps)
    return src.function("post_init")


def _from_map(
    cls: type,
    specs: dict[str, QuickSpec],
    defaults: dict[str, object],
) -> Callable[[dict[Any, Any]], Any]:
    src = _Source()
    names = tuple(specs)
    required = frozenset(n for n in names if n not in defaults)
    src.lines += [
        "def from_map(raw):",
        "    keys = raw.keys()",
        f"    if keys != {src.const(frozenset(names))}:",
        f"        if not (keys <= {src.const(frozenset(names))} and {src.const(required)} <= keys):",
        "            raise Refused",
        f"        raw = {{**{src.const(defaults)}, **raw}}",
        f"    rec = _new({src.const(cls)})",
    ]  # fmt: skip
    for name, spec in specs.items():
        put = src.const(cls.__dict__[name].__set__)
        expr = spec.quick_expr("v", src.const)
        quick = src.const(spec.quick_wire())
        src.lines.append(f"    v = raw[{name!r}]")
        src.lines.append(f"    {put}(rec, v if ({expr}) else {quick}(v))" if expr else
                         f"    {put}(rec, {quick}(v))")  # fmt: skip
    src.lines.append("    return rec")
    src.env["_new"] = object.__new__
    return src.function("from_map")


def compile_record(
    cls: type, specs: dict[str, QuickSpec], steps: Callable[[Any], None]
) -> Quick | None:
    """Generate the quick paths of a declared record class; return its `post_init` (None when the
    class declares its own __post_init__: it keeps the step-by-step path, both ways)."""
    if "__post_init__" in cls.__dict__:
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if any(f.default_factory is not dataclasses.MISSING for f in fields.values()):
        return None
    if any(type(cls.__dict__.get(n)).__name__ != "member_descriptor" for n in specs):
        return None
    defaults = {n: f.default for n, f in fields.items() if f.default is not dataclasses.MISSING}

    # generated at the first use, not at import: a process uses a few of the ~40 message types,
    # and generating them all cost every node and client start ~25 ms. Two threads may both
    # generate one at first: the same function, either kept.
    def from_map_first(raw: dict[Any, Any]) -> Any:
        build = _FROM_MAP[cls] = _from_map(cls, specs, defaults)
        return build(raw)

    def post_init_first(rec: Any) -> Any:
        if type(rec) is not cls:  # an undeclared subclass: the steps (which refuse it)
            return steps(rec)
        post_init = _post_init(cls, specs, steps)
        cls.__post_init__ = post_init
        return post_init(rec)

    _FROM_MAP[cls] = from_map_first
    return post_init_first
