"""Declarative field specs: how each field of a message or nested record is checked and carried.

A record is a frozen, slotted dataclass deriving from `Record` and decorated with `@record` (or
`codec.messages.register`). Each field's annotation names its spec:

    rid: Annotated[str, RequestIdText()]
    views: Annotated[int, Int(1, 1_000_000)]
    update: Update                      # a nested record: Nested(Update) implied
    ok: bool                            # Bool() implied

`Record.__post_init__` runs every spec's `check` (strict types: `type(v) is int`, so True is not 1;
lists become tuples; ints become floats in float fields), raising DecodeError(reason, field).
It does so through the quick paths of codec.quick (each spec's `quick_expr` / `quick`, one
generated function per class) and falls back to the `check`s, for the reason, on any refusal.
`to_map` / `from_map` turn a record into a plain CBOR-ready dict and back; `from_map` demands the
exact key set, except that a field declared with a default (added to a message after it shipped,
so that an older sender still decodes) may be absent and takes its default. `max_items(cls)` is the most CBOR data items a valid body of `cls` can hold; the
decoder refuses bodies with more before building any Python object.
Callers: codec.messages (the catalog), its tests.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, TypeVar, cast, get_args, get_origin, get_type_hints

from codec.errors import DecodeError
from codec.names import (
    RECENT_REQUEST_IDS,
    InvalidName,
    is_request_id,
    is_valid_name,
    name_problem,
    parse_request_id,
)
from codec.quick import Quick, Refused, compile_record, predicate_check, quick_from_map

R = TypeVar("R", bound="Record")


_KINDS: dict[type, str] = {dict: "map", list: "array", tuple: "array", str: "text", bytes: "bytes"}


def kind_of(v: object) -> str:
    """A short, safe description of a value's type for error messages."""
    return _KINDS.get(type(v), type(v).__name__)


def _show_int(v: int) -> str:
    return str(v) if v.bit_length() <= 96 else f"a {v.bit_length()}-bit int"


class Spec(ABC):
    """How one field is validated (`check`), read from CBOR (`from_wire`) and written (`to_wire`).

    The quick paths (codec.quick) for the hot path: `quick()` and `quick_wire()` give the same
    checks as one plain function of the value: it returns exactly what `check` (or `check` after
    `from_wire`) returns for a valid value, and raises Refused or DecodeError for any other,
    without a reason worth showing; the caller then runs `check` / `from_wire` for the reason.
    `quick_expr` is the check inlined: an expression true only for a valid value that `check`
    returns unchanged. NORMALISES: `check` may return another object than it was given (a float
    for an int, a tuple for a list).
    """

    NORMALISES: ClassVar[bool] = False

    @abstractmethod
    def check(self, v: object, path: str) -> object:
        """Return v (possibly normalised) or raise DecodeError(reason, path)."""

    def from_wire(self, v: object, path: str) -> object:
        """Turn a decoded CBOR value into the field's value (before `check`)."""
        return v

    def to_wire(self, v: Any) -> object:
        """Turn the field's value into a CBOR-ready value."""
        return v

    def max_items(self) -> int:
        """Most CBOR data items the field's value takes on the wire."""
        return 1

    def quick(self) -> Quick:
        """`check` as a plain function (see the class docstring). By default: `quick_expr` made a
        function, or else `check` itself."""
        passing = predicate_check(self)
        if passing is not None:
            return passing
        check = self.check

        def quick(v: object) -> object:
            return check(v, "")

        return quick

    def quick_wire(self) -> Quick:
        """`check(from_wire(v))` as a plain function; `from_wire` is the identity by default."""
        return self.quick()

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        """A Python expression over the variable `v`, true only when `check` accepts v and returns
        it unchanged (also after `from_wire`); `const(x)` names a constant it uses. None: no
        such expression (the quick functions are used)."""
        return None


@dataclasses.dataclass(frozen=True)
class Int(Spec):
    """An int in lo..hi inclusive; bool refused."""

    lo: int
    hi: int

    def check(self, v: object, path: str) -> object:
        if type(v) is not int:
            raise DecodeError(f"expected int, got {kind_of(v)}", path)
        if not self.lo <= v <= self.hi:
            raise DecodeError(f"{_show_int(v)} outside {self.lo}..{self.hi}", path)
        return v

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        return f"type({v}) is int and {const(self.lo)} <= {v} <= {const(self.hi)}"


@dataclasses.dataclass(frozen=True)
class Float(Spec):
    """A finite float in lo..hi inclusive; an int is accepted and stored as float; bool refused."""

    lo: float
    hi: float
    NORMALISES: ClassVar[bool] = True

    def check(self, v: object, path: str) -> object:
        if type(v) is int:
            if not self.lo <= v <= self.hi:
                raise DecodeError(f"{_show_int(v)} outside {self.lo}..{self.hi}", path)
            return float(v)
        if type(v) is not float:
            raise DecodeError(f"expected float, got {kind_of(v)}", path)
        if not math.isfinite(v) or not self.lo <= v <= self.hi:
            raise DecodeError(f"{v!r} outside {self.lo}..{self.hi}", path)
        return v

    def quick(self) -> Quick:
        lo, hi, isfinite = self.lo, self.hi, math.isfinite

        def quick(v: Any) -> object:
            if type(v) is float and isfinite(v) and lo <= v <= hi:
                return v
            if type(v) is int and lo <= v <= hi:
                return float(v)
            raise Refused

        return quick

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        lo, hi, isfinite = const(self.lo), const(self.hi), const(math.isfinite)
        return f"type({v}) is float and {isfinite}({v}) and {lo} <= {v} <= {hi}"


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
    """True or False; ints refused."""

    def check(self, v: object, path: str) -> object:
        if type(v) is not bool:
            raise DecodeError(f"expected bool, got {kind_of(v)}", path)
        return v

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        return f"type({v}) is bool"


@dataclasses.dataclass(frozen=True)
class Bytes(Spec):
    """A byte string of min_len..max_len bytes (max_len None: bounded only by the body limit)."""

    max_len: int | None
    min_len: int = 0

    def check(self, v: object, path: str) -> object:
        if type(v) is not bytes:
            raise DecodeError(f"expected bytes, got {kind_of(v)}", path)
        if len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            want = (
                f"{self.min_len}..{self.max_len}"
                if self.max_len is not None
                else f">= {self.min_len}"
            )
            raise DecodeError(f"{len(v)} bytes, expected {want}", path)
        return v

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        lo, hi = const(self.min_len), const(self.max_len if self.max_len is not None else math.inf)
        return f"type({v}) is bytes and {lo} <= len({v}) <= {hi}"


def _text(v: object, path: str, max_len: int) -> str:
    """Common text checks: a str, at most max_len characters, valid Unicode (no lone surrogates)."""
    if type(v) is not str:
        raise DecodeError(f"expected text, got {kind_of(v)}", path)
    if len(v) > max_len:
        raise DecodeError(f"{len(v)} characters, limit {max_len}", path)
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("text is not valid Unicode", path) from None
    return v


@dataclasses.dataclass(frozen=True)
class Text(Spec):
    """Text of min_len..max_len characters, optionally matching `pattern` in full."""

    max_len: int
    min_len: int = 0
    pattern: str | None = None

    def check(self, v: object, path: str) -> object:
        s = _text(v, path, self.max_len)
        if len(s) < self.min_len:
            raise DecodeError(f"{len(s)} characters, at least {self.min_len} needed", path)
        if self.pattern is not None and re.fullmatch(self.pattern, s) is None:
            raise DecodeError(f"does not match {self.pattern}", path)
        return s


@dataclasses.dataclass(frozen=True)
class OneOf(Spec):
    """One of a fixed set of strings."""

    choices: tuple[str, ...]

    def check(self, v: object, path: str) -> object:
        if type(v) is not str or v not in self.choices:
            shown = repr(v[:40]) if type(v) is str else kind_of(v)
            raise DecodeError(f"{shown} is not one of {', '.join(self.choices)}", path)
        return v

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        return f"type({v}) is str and {v} in {const(frozenset(self.choices))}"


@dataclasses.dataclass(frozen=True)
class NameText(Spec):
    """A user or image name (codec.names rule)."""

    def check(self, v: object, path: str) -> object:
        problem = name_problem(v)
        if problem is not None:
            raise DecodeError(f"invalid name: {problem}", path)
        return v

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        return f"{const(is_valid_name)}({v})"


@dataclasses.dataclass(frozen=True)
class RequestIdText(Spec):
    """A request id "<user>#<n>" (codec.names rule)."""

    def check(self, v: object, path: str) -> object:
        try:
            parse_request_id(v)
        except InvalidName as e:
            raise DecodeError(f"invalid request id: {e.reason}", path) from None
        return v

    def quick_expr(self, v: str, const: Callable[[object], str]) -> str | None:
        seen, valid = const(RECENT_REQUEST_IDS), const(is_request_id)
        return f"type({v}) is str and ({v} in {seen} or {valid}({v}))"


@dataclasses.dataclass(frozen=True)
class IpText(Spec):
    """An IPv4 or IPv6 address literal (no host names)."""

    def check(self, v: object, path: str) -> object:
        s = _text(v, path, 64)
        try:
            ipaddress.ip_address(s)
        except ValueError:
            raise DecodeError(f"{s!r} is not an IP address literal", path) from None
        return s


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclasses.dataclass(frozen=True)
class Nested(Spec):
    """A nested record of class `cls`, carried as a map."""

    cls: type[Record]

    def check(self, v: object, path: str) -> object:
        if type(v) is not self.cls:
            raise DecodeError(f"expected {self.cls.__name__}, got {kind_of(v)}", path)
        return v

    def from_wire(self, v: object, path: str) -> object:
        if type(v) is not dict:
            raise DecodeError(f"expected map, got {kind_of(v)}", path)
        return from_map(self.cls, v, path)

    def to_wire(self, v: Any) -> object:
        return to_map(v)

    def max_items(self) -> int:
        return 1 + sum(1 + spec.max_items() for spec in fields_of(self.cls).values())

    def quick(self) -> Quick:
        cls = self.cls

        def quick(v: object) -> object:
            if type(v) is cls:
                return v
            raise Refused

        return quick

    def quick_wire(self) -> Quick:
        cls = self.cls

        def quick_wire(v: object) -> object:
            if type(v) is dict:
                return quick_from_map(cls, v)
            raise Refused

        return quick_wire


@dataclasses.dataclass(frozen=True)
class Items(Spec):
    """A list of at most max_len items, each checked with `item`; stored as a tuple."""

    item: Spec
    max_len: int
    NORMALISES: ClassVar[bool] = True

    def _length(self, v: object, path: str) -> list[Any] | tuple[Any, ...]:
        if type(v) is not list and type(v) is not tuple:
            raise DecodeError(f"expected array, got {kind_of(v)}", path)
        if len(v) > self.max_len:
            raise DecodeError(f"{len(v)} items, limit {self.max_len}", path)
        return v

    def check(self, v: object, path: str) -> object:
        items = self._length(v, path)
        return tuple(self.item.check(x, f"{path}[{i}]") for i, x in enumerate(items))

    def from_wire(self, v: object, path: str) -> object:
        items = self._length(v, path)
        return tuple(self.item.from_wire(x, f"{path}[{i}]") for i, x in enumerate(items))

    def to_wire(self, v: Any) -> object:
        return [self.item.to_wire(x) for x in v]

    def max_items(self) -> int:
        return 1 + self.max_len * self.item.max_items()

    def quick(self) -> Quick:
        return self._quick(self.item.quick())

    def quick_wire(self) -> Quick:
        return self._quick(self.item.quick_wire())

    def _quick(self, item: Quick) -> Quick:
        limit = self.max_len

        def quick(v: Any) -> object:
            if (type(v) is list or type(v) is tuple) and len(v) <= limit:
                return tuple(map(item, v))
            raise Refused

        return quick


class Record:
    """Base of messages and nested records: validates every field when built.

    `record` gives each declared class a generated `__post_init__` (codec.quick: every field's
    quick check first; if one refuses, the step-by-step checks below, which raise the
    DecodeError naming the field). This one serves a class declaring its own __post_init__."""

    __slots__ = ()

    def __post_init__(self) -> None:
        _check_steps(self)


def _check_steps(rec: Record) -> None:
    """Run every field's `check` in declaration order: the first bad field raises its reason."""
    for name, spec in fields_of(type(rec)).items():
        value = getattr(rec, name)
        checked = spec.check(value, name)
        if checked is not value:
            object.__setattr__(rec, name, checked)


_FIELDS: dict[type[Record], dict[str, Spec]] = {}
_OPTIONAL: dict[type[Record], frozenset[str]] = {}


def _spec_from_hint(hint: object, where: str) -> Spec:
    if get_origin(hint) is Annotated:
        specs = [x for x in get_args(hint)[1:] if isinstance(x, Spec)]
        if len(specs) != 1:
            raise TypeError(f"{where}: expected exactly one field spec, found {len(specs)}")
        return specs[0]
    if hint is bool:
        return Bool()
    if isinstance(hint, type) and issubclass(hint, Record):
        return Nested(hint)
    raise TypeError(f"{where}: annotate with Annotated[..., <Spec>] ({hint!r})")


def record(cls: type[R]) -> type[R]:
    """Class decorator: read the field specs of a frozen, slotted Record dataclass."""
    params = getattr(cls, "__dataclass_params__", None)
    if not issubclass(cls, Record) or params is None or not params.frozen:
        raise TypeError(f"{cls.__name__}: must be a frozen dataclass deriving from Record")
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: must be declared with slots=True")
    hints = get_type_hints(cls, include_extras=True)
    _FIELDS[cls] = {
        f.name: _spec_from_hint(hints[f.name], f"{cls.__name__}.{f.name}")
        for f in dataclasses.fields(cast(Any, cls))
    }
    _OPTIONAL[cls] = frozenset(
        f.name for f in dataclasses.fields(cast(Any, cls))
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    )
    post_init = compile_record(cls, cast(Any, _FIELDS[cls]), _check_steps)
    if post_init is not None:
        cls.__post_init__ = post_init  # type: ignore[method-assign,assignment]
    return cls


def fields_of(cls: type[Record]) -> dict[str, Spec]:
    """The field specs of a declared record class, in declaration order."""
    try:
        return _FIELDS[cls]
    except KeyError:
        raise TypeError(f"{cls.__name__} is not a declared record (use @record)") from None


def optional_fields(cls: type[Record]) -> frozenset[str]:
    """Fields of a declared record that may be absent on the wire (declared with a default)."""
    fields_of(cls)
    return _OPTIONAL[cls]


def max_items(cls: type[Record]) -> int:
    """Most CBOR data items (map keys included) a valid encoding of `cls` contains."""
    return Nested(cls).max_items()


def to_map(rec: Record) -> dict[str, object]:
    """The record as a CBOR-ready dict of field name -> value (nested records as dicts)."""
    return {name: spec.to_wire(getattr(rec, name)) for name, spec in fields_of(type(rec)).items()}


def from_map(cls: type[R], raw: Mapping[object, object], path: str = "") -> R:
    """Build `cls` from a decoded map: exact key set (fields with a default may be absent), every
    field checked; DecodeError names it.

    The quick way first (each field's `quick_wire` once, the record built without running the
    checks again); if it refuses anything, the step by step way, which gives the reason."""
    if type(raw) is dict:
        try:
            return cast(R, quick_from_map(cls, raw))
        except (Refused, DecodeError):
            pass
    return _from_map_steps(cls, raw, path)


def _from_map_steps(cls: type[R], raw: Mapping[object, object], path: str) -> R:
    """from_map one rule at a time: the first rule broken raises DecodeError naming the field."""
    specs = fields_of(cls)
    optional = _OPTIONAL[cls]
    for key in raw:
        if type(key) is not str or key not in specs:
            shown = key if type(key) is str else repr(key)
            raise DecodeError("unexpected key", _join(path, shown[:80]))
    values: dict[str, object] = {}
    for name, spec in specs.items():
        if name not in raw:
            if name in optional:
                continue
            raise DecodeError("missing key", _join(path, name))
        values[name] = spec.from_wire(raw[name], _join(path, name))
    try:
        return cls(**values)
    except DecodeError as e:
        if not path:
            raise
        raise DecodeError(e.reason, _join(path, e.field) if e.field else path) from None
