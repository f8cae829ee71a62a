"""A collecting validator driven by msgspec types: every bad field of a body, not only the first.

A 422 must name every bad field, up to 1,000 (SPEC §4), but msgspec stops at the first error and
its maintainer declines to change that (msgspec#721). So a value is first converted by msgspec
itself: a valid body costs what msgspec costs, and msgspec alone decides what is valid. Only when
that fails is the value walked along the type's `msgspec.inspect` description, collecting every
error with its JSON-pointer path (`/3/attributes/score`); an array's Structs are converted one by
one first, so a body with one bad item costs little more than a good one. Where the walk finds
nothing (a rule it does not know), msgspec's own message is reported: a body is never rejected
unexplained. At the 1,001st error the walk stops (`Checked.truncated`): a hostile body costs the
walk to its cap, not to its millionth error.

What JSON Schema cannot say, or the configuration decides, is a named check on the field,
`Meta(extra={"check": NAME})`, bound at call time (`checks=`) to a function
`(value, path) -> (value to keep, errors)`. It runs on the converted value of a valid body, and in
the walk on any value of the field's kind (an object for `attributes`) whose other parts may be
bad, so it must take any JSON value of that kind.

Messages can be worded per field: `Meta(extra={"messages": {"pattern": "must not be blank"}})`
(keys: type, enum, min_length, max_length, pattern, gt, ge, lt, le, multiple_of, range, length).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import decimal
import functools
import operator
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, NamedTuple, TypeVar, overload

import msgspec
import msgspec.inspect as mi

from streamapp.core.validation import FieldError

T = TypeVar("T")

#: Errors listed in one answer (SPEC §4). The walk stops at one more, so that a hostile body costs at
#: most the walk to its 1,001st error, not to its millionth.
MAX_ERRORS = 1000

#: `(value, JSON-pointer path) -> (value to keep, errors)`: a check of a field that depends on the configuration.
Check = Callable[[Any, str], tuple[Any, list[FieldError]]]

_NO_MESSAGES: Mapping[str, str] = {}
_NO_CHECKS: Mapping[str, Check] = {}


class Checked(NamedTuple, Generic[T]):
    """The typed value, or None and the errors: at most the cap, `truncated` when there were more."""

    value: T | None
    errors: list[FieldError]
    truncated: bool = False


# -- entry points ------------------------------------------------------------------------------


@overload
def validate(
    value: Any, type_: type[T], *, checks: Mapping[str, Check] = ..., path: str = ..., limit: int = ...
) -> Checked[T]: ...


@overload
def validate(
    value: Any, type_: Any, *, checks: Mapping[str, Check] = ..., path: str = ..., limit: int = ...
) -> Checked[Any]: ...


def validate(
    value: Any, type_: Any, *, checks: Mapping[str, Check] = _NO_CHECKS, path: str = "", limit: int = MAX_ERRORS
) -> Checked[Any]:
    """`value` (JSON decoded without a type) as `type_`, or every error of it up to `limit`."""
    plan = _plan(type_)
    _require_checks(plan, checks)
    try:
        result = msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        return _failed(plan, value, checks, path, limit, exc)
    return _checked(plan, result, checks, path, limit)


@overload
def decode(
    data: bytes, type_: type[T], *, checks: Mapping[str, Check] = ..., path: str = ..., limit: int = ...
) -> Checked[T]: ...


@overload
def decode(
    data: bytes, type_: Any, *, checks: Mapping[str, Check] = ..., path: str = ..., limit: int = ...
) -> Checked[Any]: ...


def decode(
    data: bytes, type_: Any, *, checks: Mapping[str, Check] = _NO_CHECKS, path: str = "", limit: int = MAX_ERRORS
) -> Checked[Any]:
    """JSON bytes as `type_`: msgspec's typed decoder first (the cheapest path), the walk on failure."""
    plan = _plan(type_)
    _require_checks(plan, checks)
    try:
        return _checked(plan, _decoder(type_).decode(data), checks, path, limit)
    except msgspec.ValidationError as exc:
        first = exc
    except (msgspec.DecodeError, RecursionError) as exc:
        return _malformed(exc, path)
    try:  # the typed decoder stopped at the first error: the rest may still be malformed
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        return _malformed(exc, path)
    return _failed(plan, value, checks, path, limit, first)


def _malformed(exc: Exception, path: str) -> Checked[Any]:
    return Checked(None, [FieldError(path or "/", f"malformed JSON: {exc}")])


def explain(
    value: Any, type_: Any, *, checks: Mapping[str, Check] = _NO_CHECKS, path: str = "", limit: int = MAX_ERRORS
) -> list[FieldError]:
    """The errors the walk alone finds (no msgspec conversion): empty exactly when `value` is valid."""
    plan = _plan(type_)
    _require_checks(plan, checks)
    errors = _Errors(limit)
    _walk_root(plan, value, path, _Context(errors, checks))
    return errors.items


def required_checks(type_: Any) -> frozenset[str]:
    """The check names the type's fields use (`checks` must bind each of them)."""
    return _plan(type_).check_names


# -- plans: what is known of a type once --------------------------------------------------------


#: Runs the checks of a converted value: `(value, path, checks, errors) -> value with what they keep`.
_Applier = Callable[[Any, str, Mapping[str, Check], list[FieldError]], Any]


@dataclass(frozen=True)
class _Plan:
    info: mi.Type
    #: The checks of a converted value, compiled (None: the type has none).
    apply: _Applier | None
    check_names: frozenset[str]


@functools.cache
def _plan(type_: Any) -> _Plan:
    info = mi.type_info(type_)
    names: set[str] = set()
    return _Plan(info, _compile(info, names), frozenset(names))


@functools.cache
def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_)


def _require_checks(plan: _Plan, checks: Mapping[str, Check]) -> None:
    if plan.check_names and not checks.keys() >= plan.check_names:
        missing = plan.check_names - checks.keys()
        raise LookupError(f"no check bound for {', '.join(sorted(missing))}")


def _compile(node: mi.Type, names: set[str]) -> _Applier | None:
    """The checks under `node`, as one function (checks under unions only below `X | None` or Structs)."""
    if isinstance(node, mi.Metadata):
        check = (node.extra or {}).get("check")
        inner = _compile(node.type, names)
        if check is not None:
            names.add(check)
            return _check_applier(check, inner)
        return inner
    if isinstance(node, mi.StructType):
        found = [(f.name, f"/{_escape(f.encode_name)}", a) for f in node.fields if (a := _compile(f.type, names))]
        return _struct_applier(tuple(found)) if found else None
    if isinstance(node, mi.CollectionType):
        inner = _compile(node.item_type, names)
        return _items_applier(inner) if inner else None
    if isinstance(node, mi.DictType | mi.FrozenDictType):
        if _compile(node.key_type, set()) is not None:
            raise TypeError("checks on dictionary keys are not supported")
        inner = _compile(node.value_type, names)
        return _values_applier(inner) if inner else None
    if isinstance(node, mi.UnionType):
        return _union_applier(node, names)
    return None


def _check_applier(name: str, inner: _Applier | None) -> _Applier:
    def apply(value: Any, path: str, checks: Mapping[str, Check], errors: list[FieldError]) -> Any:
        if inner is not None:
            value = inner(value, path, checks, errors)
        kept, problems = checks[name](value, path)
        if problems:
            errors += problems
        return kept

    return apply


def _struct_applier(fields: tuple[tuple[str, str, _Applier], ...]) -> _Applier:
    def apply(value: Any, path: str, checks: Mapping[str, Check], errors: list[FieldError]) -> Any:
        for attribute, segment, inner in fields:
            current = getattr(value, attribute)
            if current is not msgspec.UNSET:
                setattr(value, attribute, inner(current, path + segment, checks, errors))
        return value

    return apply


def _items_applier(inner: _Applier) -> _Applier:
    def apply(value: Any, path: str, checks: Mapping[str, Check], errors: list[FieldError]) -> Any:
        if type(value) is list:  # converted just now: ours to change
            for index, item in enumerate(value):
                value[index] = inner(item, f"{path}/{index}", checks, errors)
            return value
        return type(value)(inner(item, f"{path}/{index}", checks, errors) for index, item in enumerate(value))

    return apply


def _values_applier(inner: _Applier) -> _Applier:
    def apply(value: Any, path: str, checks: Mapping[str, Check], errors: list[FieldError]) -> Any:
        kept = {key: inner(item, pointer(path, key), checks, errors) for key, item in value.items()}
        return kept if type(value) is dict else type(value)(kept)

    return apply


def _union_applier(node: mi.UnionType, names: set[str]) -> _Applier | None:
    members = [(t, _compile(t, names)) for t in node.types if not isinstance(t, mi.NoneType)]
    checked = [(t, a) for t, a in members if a is not None]
    if not checked:
        return None
    if len(members) == 1:
        only = checked[0][1]
        return lambda value, path, checks, errors: value if value is None else only(value, path, checks, errors)
    if not all(isinstance(_unwrap(t), mi.StructType) for t, _ in checked):
        raise TypeError("checks inside a union are supported only in `X | None` and unions of Structs")
    by_class = tuple((getattr(_unwrap(t), "cls", object), a) for t, a in checked)

    def apply(value: Any, path: str, checks: Mapping[str, Check], errors: list[FieldError]) -> Any:
        for cls, inner in by_class:
            if isinstance(value, cls):
                return inner(value, path, checks, errors)
        return value

    return apply


# -- the fast path: a converted value, then its checks -------------------------------------------


def _checked(plan: _Plan, result: Any, checks: Mapping[str, Check], path: str, limit: int) -> Checked[Any]:
    if plan.apply is None:
        return Checked(result, [])
    errors = _CappedList(limit)
    with contextlib.suppress(_Full):
        result = plan.apply(result, path, checks, errors)
    if errors:
        listed = [e if e.path else FieldError("/", e.message) for e in errors[:limit]]
        return Checked(None, listed, len(errors) > limit)
    return Checked(result, [])


class _CappedList(list[FieldError]):
    """The errors of the checks of a converted value: past the cap, the checks stop (as the walk does)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __iadd__(self, more: Iterable[FieldError]) -> _CappedList:  # type: ignore[override,misc]
        self.extend(more)
        if len(self) > self.limit:
            raise _Full
        return self


def _failed(
    plan: _Plan, value: Any, checks: Mapping[str, Check], path: str, limit: int, exc: msgspec.ValidationError
) -> Checked[Any]:
    errors = _Errors(limit)
    _walk_root(plan, value, path, _Context(errors, checks))
    if not errors.count:  # a rule the walk does not know: msgspec's own words
        errors.add(*_from_msgspec(str(exc), path))
    return Checked(None, errors.items, errors.count > len(errors.items))


# -- the walk: every error of a decoded value ----------------------------------------------------

#: Memos by node identity (inspect nodes are not hashable; plans are cached for good, so nodes live on).
_FIELD_APPLIERS: dict[int, _Applier | None] = {}
_REBUILT: dict[int, Any] = {}
_FIELDS: dict[int, dict[str, tuple[mi.Field, str]]] = {}
_NODE_APPLIERS: dict[int, Any] = {}
_UNKNOWN: Any = object()
_MEMBERS: dict[tuple[int, type], list[mi.Type]] = {}
M = TypeVar("M")


def _by_id(memo: dict[int, M], node: Any, make: Callable[[], M]) -> M:
    key = id(node)
    if key not in memo:
        memo[key] = make()
    return memo[key]


class _Full(Exception):
    """The cap is reached and one more error found: the walk stops."""


class _Errors:
    """Errors up to the cap; the one after it ends the walk (`stop`), or is only counted (a trial walk)."""

    __slots__ = ("count", "items", "limit", "stop")

    def __init__(self, limit: int, stop: bool = True) -> None:
        self.limit = limit
        self.stop = stop
        self.items: list[FieldError] = []
        self.count = 0

    def add(self, path: str, message: str) -> None:
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(FieldError(path or "/", message))
        elif self.stop:
            raise _Full


@dataclass(frozen=True)
class _Context:
    errors: _Errors
    checks: Mapping[str, Check]
    #: Walking a dictionary key: generated messages say that they are about the name.
    naming: bool = False


def _walk_root(plan: _Plan, value: Any, path: str, ctx: _Context) -> None:
    try:
        _walk(plan.info, value, path, ctx)
    except _Full:
        pass
    except RecursionError:
        ctx.errors.add(path, "nested too deeply")


def _walk(node: mi.Type, value: Any, path: str, ctx: _Context, messages: Mapping[str, str] = _NO_MESSAGES) -> bool:
    """Record every error of `value` as `node`; True when there was none."""
    walker = _WALKERS.get(type(node))
    if walker is None:
        raise TypeError(f"{type(node).__name__} is not supported by the collecting validator")
    return walker(node, value, path, ctx, messages)


def _fail(ctx: _Context, path: str, messages: Mapping[str, str], rule: str, message: str) -> bool:
    worded = messages.get(rule)
    if worded is None:
        worded = f"name {message}" if ctx.naming else message
    ctx.errors.add(path, worded)
    return False


def _walk_metadata(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    """Constraints, then the field's check. The check also runs when only parts of the value are bad
    (another attribute may be bad too), not when the value itself is (of another kind, too long); what
    it says about a place already named is dropped."""
    extra = node.extra or {}
    first = len(ctx.errors.items)
    ok = _walk(node.type, value, path, ctx, extra.get("messages", messages))
    check = extra.get("check")
    if check is None or not (ok or _accepts_kind(node.type, value)):
        return ok
    named = {error.path for error in ctx.errors.items[first:]}
    if (path or "/") in named:
        return False
    _, problems = ctx.checks[check](value, path)
    for problem in problems:
        if problem.path not in named:
            ctx.errors.add(problem.path, problem.message)
    return ok and not problems


def _walk_any(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    return True


def _walk_none(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    return value is None or _fail(ctx, path, messages, "type", "must be null")


def _walk_bool(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    return isinstance(value, bool) or _fail(ctx, path, messages, "type", "must be true or false")


def _walk_int(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return _fail(ctx, path, messages, "type", "must be an integer")
    return _bounds(node, value, path, ctx, messages)


def _walk_float(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _fail(ctx, path, messages, "type", "must be a number")
    try:
        number = float(value)
    except OverflowError:
        return _fail(ctx, path, messages, "range", "is out of range")
    return _bounds(node, number, path, ctx, messages)


_BOUNDS: tuple[tuple[str, Callable[[float, float], bool], str], ...] = (
    ("gt", operator.gt, "must be greater than {}"),
    ("ge", operator.ge, "must be at least {}"),
    ("lt", operator.lt, "must be less than {}"),
    ("le", operator.le, "must be at most {}"),
    ("multiple_of", lambda value, bound: value % bound == 0, "must be a multiple of {}"),
)


def _bounds(node: Any, value: float, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    for rule, holds, text in _BOUNDS:
        bound = getattr(node, rule)
        if bound is not None and not holds(value, bound):
            return _fail(ctx, path, messages, rule, text.format(bound))
    return True


def _walk_str(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if not isinstance(value, str):
        return _fail(ctx, path, messages, "type", "must be a string")
    if node.min_length is not None and len(value) < node.min_length:
        text = "must not be empty" if node.min_length == 1 else f"must be at least {node.min_length} characters"
        return _fail(ctx, path, messages, "min_length", text)
    if node.max_length is not None and len(value) > node.max_length:
        return _fail(ctx, path, messages, "max_length", f"must be at most {node.max_length} characters")
    if node.pattern is not None and not _regex(node.pattern).search(value):
        return _fail(ctx, path, messages, "pattern", f"must match the pattern {node.pattern}")
    return True


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _walk_literal(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if any(type(value) is type(allowed) and value == allowed for allowed in node.values):
        return True
    return _fail(ctx, path, messages, "enum", f"must be one of {', '.join(map(str, node.values))}")


def _walk_enum(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    values = [member.value for member in node.cls]
    if any(type(value) is type(allowed) and value == allowed for allowed in values):
        return True
    return _fail(ctx, path, messages, "enum", f"must be one of {', '.join(map(str, values))}")


_LEAF_TYPES: dict[type, tuple[type, str]] = {
    mi.DateTimeType: (datetime.datetime, "must be an RFC 3339 date-time"),
    mi.DateType: (datetime.date, "must be a date (YYYY-MM-DD)"),
    mi.TimeType: (datetime.time, "must be a time (HH:MM:SS)"),
    mi.TimeDeltaType: (datetime.timedelta, "must be a duration"),
    mi.UUIDType: (uuid.UUID, "must be a UUID"),
    mi.DecimalType: (decimal.Decimal, "must be a decimal number"),
    mi.BytesType: (bytes, "must be base64-encoded bytes"),
    mi.ByteArrayType: (bytearray, "must be base64-encoded bytes"),
}


def _walk_leaf(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    """Types parsed from strings (dates, UUIDs...): msgspec parses them, the walk words the error."""
    try:
        msgspec.convert(value, _rebuild(node))
    except msgspec.ValidationError:
        return _fail(ctx, path, messages, "type", _LEAF_TYPES[type(node)][1])
    return True


def _rebuild(node: Any) -> Any:
    """The Python type a leaf node describes, with its constraints (tz, lengths)."""
    return _by_id(_REBUILT, node, lambda: _python_type(node))


def _python_type(node: Any) -> Any:
    constraints = {name: getattr(node, name) for name in node.__struct_fields__ if getattr(node, name) is not None}
    python_type = _LEAF_TYPES[type(node)][0]
    return Annotated[python_type, msgspec.Meta(**constraints)] if constraints else python_type


def _walk_collection(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if not isinstance(value, list):
        return _fail(ctx, path, messages, "type", "must be an array")
    if node.min_length is not None and len(value) < node.min_length:
        return _fail(ctx, path, messages, "min_length", f"must have at least {node.min_length} items")
    if node.max_length is not None and len(value) > node.max_length:
        return _fail(ctx, path, messages, "max_length", f"must have at most {node.max_length} items")
    ok = convert_first = True
    for index, item in enumerate(value):
        good = _walk_item(node.item_type, item, f"{path}/{index}", ctx, convert_first)
        convert_first, ok = good, ok and good  # after a bad item, the next is likely bad too: walk it at once
    if ok and isinstance(node, mi.SetType | mi.FrozenSetType):
        return _hashable_items(value, path, ctx, messages)
    return ok


def _walk_item(node: mi.Type, item: Any, path: str, ctx: _Context, convert_first: bool) -> bool:
    """An item of an array: a Struct is converted by msgspec first (most items of a refused body are
    good ones, and msgspec takes them at C speed), and walked only when that fails."""
    if not convert_first or not isinstance(node, mi.StructType):
        return _walk(node, item, path, ctx)
    try:
        converted = msgspec.convert(item, node.cls)
    except msgspec.ValidationError:
        return _walk(node, item, path, ctx)
    apply = _NODE_APPLIERS.get(id(node), _UNKNOWN)
    if apply is _UNKNOWN:
        apply = _NODE_APPLIERS[id(node)] = _compile(node, set())
    if apply is None:
        return True
    problems: list[FieldError] = []
    apply(converted, path, ctx.checks, problems)
    for problem in problems:
        ctx.errors.add(problem.path, problem.message)
    return not problems


def _hashable_items(value: list[Any], path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    try:
        set(value)
    except TypeError:
        return _fail(ctx, path, messages, "type", "must be an array of distinct values")
    return True


def _walk_tuple(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if not isinstance(value, list):
        return _fail(ctx, path, messages, "type", "must be an array")
    if len(value) != len(node.item_types):
        return _fail(ctx, path, messages, "length", f"must have exactly {len(node.item_types)} items")
    ok = True
    for index, (item_type, item) in enumerate(zip(node.item_types, value, strict=True)):
        ok = _walk(item_type, item, f"{path}/{index}", ctx) and ok
    return ok


def _walk_dict(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if not isinstance(value, dict):
        return _fail(ctx, path, messages, "type", "must be an object")
    if node.min_length is not None and len(value) < node.min_length:
        return _fail(ctx, path, messages, "min_length", f"must have at least {node.min_length} properties")
    if node.max_length is not None and len(value) > node.max_length:
        return _fail(ctx, path, messages, "max_length", f"must have at most {node.max_length} properties")
    ok = True
    any_key = _is_any_string(node.key_type)
    for key, item in value.items():
        where = f"{path}/{_escape(str(key))}"
        key_ok = any_key or _walk_key(node.key_type, key, where, ctx)
        ok = _walk(node.value_type, item, where, ctx) and key_ok and ok
    return ok


def _is_any_string(node: mi.Type) -> bool:
    """A key type every JSON key satisfies (a string without constraints)."""
    return isinstance(node, mi.StrType) and node.min_length is None and node.max_length is None and not node.pattern


def _walk_key(node: mi.Type, key: Any, path: str, ctx: _Context) -> bool:
    """A key is checked like a value, at the path it names; its errors say that they are about the name."""
    return _walk(node, key, path, _Context(ctx.errors, ctx.checks, naming=True))


def _walk_struct(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    if node.array_like:
        raise TypeError(f"array_like Struct {node.cls.__name__} is not supported by the collecting validator")
    if not isinstance(value, dict):
        return _fail(ctx, path, messages, "type", "must be a JSON object" if path in ("", "/") else "must be an object")
    ok = _walk_tag(node, value, path, ctx)
    fields = _fields_by_key(node)
    for key, item in value.items():
        known = fields.get(key)
        if known is not None:
            ok = _walk(known[0].type, item, path + known[1], ctx) and ok
        elif node.forbid_unknown_fields and key != node.tag_field:
            ok = _fail(ctx, f"{path}/{_escape(str(key))}", _NO_MESSAGES, "unknown", "unknown field")
    return _walk_missing(node.fields, value, path, ctx) and ok


def _walk_tag(node: Any, value: dict[str, Any], path: str, ctx: _Context) -> bool:
    if node.tag_field is None or node.tag_field not in value or value[node.tag_field] == node.tag:
        return True
    return _fail(ctx, f"{path}/{_escape(node.tag_field)}", _NO_MESSAGES, "enum", f"must be {node.tag}")


def _fields_by_key(node: Any) -> dict[str, tuple[mi.Field, str]]:
    """Fields by JSON key, with the path segment each adds."""
    found: dict[str, tuple[mi.Field, str]] = _by_id(
        _FIELDS, node, lambda: {f.encode_name: (f, f"/{_escape(f.encode_name)}") for f in node.fields}
    )
    return found


def _walk_missing(fields: tuple[mi.Field, ...], value: dict[str, Any], path: str, ctx: _Context) -> bool:
    """Required fields that are absent; a checked field that is absent has its default checked (as the
    fast path checks the converted value, which holds the default)."""
    ok = True
    for f in fields:
        if f.encode_name in value:
            continue
        where = f"{path}/{_escape(f.encode_name)}"
        if f.required:
            ok = _fail(ctx, where, _NO_MESSAGES, "required", "is required")
            continue
        apply = _default_applier(f)
        default = _default(f)
        if apply is not None and default is not msgspec.UNSET:
            problems: list[FieldError] = []
            apply(default, where, ctx.checks, problems)
            for problem in problems:
                ctx.errors.add(problem.path, problem.message)
            ok = ok and not problems
    return ok


def _default_applier(f: mi.Field) -> _Applier | None:
    return _by_id(_FIELD_APPLIERS, f, lambda: _compile(f.type, set()))


def _default(f: mi.Field) -> Any:
    """The value a missing field gets; UNSET when it stays unset (inspect shows an UNSET default as none)."""
    if f.default is not msgspec.NODEFAULT:
        return copy.deepcopy(f.default)  # checks may change what they are given; never msgspec's own default
    if f.default_factory is not msgspec.NODEFAULT:
        return f.default_factory()
    return msgspec.UNSET


def _walk_fields(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    """TypedDict and dataclass: fields by name, other keys ignored (as msgspec does)."""
    if not isinstance(value, dict):
        return _fail(ctx, path, messages, "type", "must be an object")
    ok = True
    for f in node.fields:
        if f.encode_name in value:
            ok = _walk(f.type, value[f.encode_name], f"{path}/{_escape(f.encode_name)}", ctx) and ok
    return _walk_missing(node.fields, value, path, ctx) and ok


def _walk_union(node: Any, value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    members = _members_for(node, value)
    if not members:
        return _fail(ctx, path, messages, "type", f"must be {_describe(node)}")
    if len(members) > 1 and _is_tagged(members, value):
        return _walk_tagged(members, value, path, ctx, messages)
    if len(members) == 1:
        return _walk(members[0], value, path, ctx, messages)
    return _walk_first_fitting(members, value, path, ctx, messages)


def _members_for(node: mi.UnionType, value: Any) -> list[mi.Type]:
    """The members msgspec may pick for this kind of value (decided by its Python type alone, so kept)."""
    key = (id(node), type(value))
    found = _MEMBERS.get(key)
    if found is None:
        found = _MEMBERS[key] = _pick_members(node, value)
    return found


def _pick_members(node: mi.UnionType, value: Any) -> list[mi.Type]:
    """An integer goes to an int (or Literal, Enum) before a float, as in msgspec."""
    members = [t for t in node.types if _accepts_kind(t, value)]
    if isinstance(value, int) and not isinstance(value, bool):
        for preferred in (_INT_LIKE, (mi.FloatType,)):
            exact = [t for t in members if isinstance(_unwrap(t), preferred)]
            if exact:
                return exact
    return members


def _is_tagged(members: list[mi.Type], value: Any) -> bool:
    structs = [_unwrap(t) for t in members]
    return isinstance(value, dict) and all(isinstance(t, mi.StructType) and t.tag_field for t in structs)


def _walk_tagged(members: list[mi.Type], value: Any, path: str, ctx: _Context, messages: Mapping[str, str]) -> bool:
    """A union of tagged Structs: the tag names the member."""
    by_tag = {getattr(_unwrap(t), "tag", None): t for t in members}
    tag_field = str(getattr(_unwrap(members[0]), "tag_field", ""))
    where = f"{path}/{_escape(tag_field)}"
    if tag_field not in value:
        return _fail(ctx, where, _NO_MESSAGES, "required", "is required")
    tag = value[tag_field]
    member = by_tag.get(tag) if isinstance(tag, str | int) and not isinstance(tag, bool) else None
    if member is None:
        return _fail(ctx, where, _NO_MESSAGES, "enum", f"must be one of {', '.join(map(str, by_tag))}")
    return _walk(member, value, path, ctx, messages)


def _walk_first_fitting(
    members: list[mi.Type], value: Any, path: str, ctx: _Context, messages: Mapping[str, str]
) -> bool:
    """Several members take this kind of value: valid if one fits, else the errors of the closest."""
    best: _Errors | None = None
    for member in members:
        errors = _Errors(ctx.errors.limit, stop=False)  # a trial: it may not end the walk
        if _walk(member, value, path, _Context(errors, ctx.checks, ctx.naming), messages):
            return True
        if best is None or errors.count < best.count:
            best = errors
    assert best is not None
    for error in best.items:
        ctx.errors.add(error.path, error.message)
    return False


def _unwrap(node: mi.Type) -> mi.Type:
    while isinstance(node, mi.Metadata):
        node = node.type
    return node


_STRING_LIKE = (
    mi.StrType, mi.DateTimeType, mi.DateType, mi.TimeType, mi.TimeDeltaType, mi.UUIDType, mi.DecimalType,
    mi.BytesType, mi.ByteArrayType,
)  # fmt: skip
_INT_LIKE = (mi.IntType, mi.LiteralType, mi.EnumType)
_OBJECT_LIKE = (mi.DictType, mi.FrozenDictType, mi.StructType, mi.TypedDictType, mi.DataclassType)


def _accepts_kind(node: mi.Type, value: Any) -> bool:
    """Whether `node` takes values of the JSON kind of `value` (msgspec picks a union member by kind)."""
    node = _unwrap(node)
    if isinstance(node, mi.AnyType):
        return True
    if isinstance(node, mi.LiteralType | mi.EnumType):
        allowed = node.values if isinstance(node, mi.LiteralType) else tuple(m.value for m in node.cls)
        return any(type(a) is type(value) for a in allowed)
    if value is None:
        return isinstance(node, mi.NoneType)
    if isinstance(value, bool):
        return isinstance(node, mi.BoolType)
    if isinstance(value, int):
        return isinstance(node, mi.IntType | mi.FloatType | mi.DecimalType)
    if isinstance(value, float):
        return isinstance(node, mi.FloatType | mi.DecimalType)
    if isinstance(value, str):
        return isinstance(node, _STRING_LIKE)
    if isinstance(value, list):
        return isinstance(node, mi.CollectionType | mi.TupleType)
    return isinstance(value, dict) and isinstance(node, _OBJECT_LIKE)


def _describe(node: mi.Type) -> str:
    """What a value of `node` is, in the words of a message ("a string or null")."""
    node = _unwrap(node)
    if isinstance(node, mi.UnionType):
        return " or ".join(dict.fromkeys(_describe(t) for t in node.types))
    if isinstance(node, mi.LiteralType):
        return f"one of {', '.join(map(str, node.values))}"
    names = {
        mi.NoneType: "null", mi.BoolType: "true or false", mi.IntType: "an integer", mi.FloatType: "a number",
        mi.StrType: "a string", mi.TupleType: "an array",
    }  # fmt: skip
    for kind, name in names.items():
        if isinstance(node, kind):
            return name
    if isinstance(node, mi.CollectionType):
        return "an array"
    if isinstance(node, _OBJECT_LIKE):
        return "an object"
    if type(node) in _LEAF_TYPES:
        return _LEAF_TYPES[type(node)][1].removeprefix("must be ")
    return "a valid value"


_WALKERS: dict[type, Callable[[Any, Any, str, _Context, Mapping[str, str]], bool]] = {
    mi.Metadata: _walk_metadata,
    mi.AnyType: _walk_any,
    mi.NoneType: _walk_none,
    mi.BoolType: _walk_bool,
    mi.IntType: _walk_int,
    mi.FloatType: _walk_float,
    mi.StrType: _walk_str,
    mi.LiteralType: _walk_literal,
    mi.EnumType: _walk_enum,
    mi.ListType: _walk_collection,
    mi.SetType: _walk_collection,
    mi.FrozenSetType: _walk_collection,
    mi.VarTupleType: _walk_collection,
    mi.TupleType: _walk_tuple,
    mi.DictType: _walk_dict,
    mi.FrozenDictType: _walk_dict,
    mi.StructType: _walk_struct,
    mi.TypedDictType: _walk_fields,
    mi.DataclassType: _walk_fields,
    mi.UnionType: _walk_union,
    **dict.fromkeys(_LEAF_TYPES, _walk_leaf),
}


# -- paths ---------------------------------------------------------------------------------------


def pointer(base: str, key: str | int) -> str:
    """`base` and one more JSON-pointer segment: `pointer("/attributes", "a/b")` is `/attributes/a~1b`."""
    return f"{base}/{_escape(str(key))}"


def _escape(key: str) -> str:
    """One JSON-pointer segment (RFC 6901): `~` is `~0`, `/` is `~1`."""
    return key.replace("~", "~0").replace("/", "~1") if "~" in key or "/" in key else key


_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")
_MSGSPEC_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]")


def _from_msgspec(message: str, path: str) -> tuple[str, str]:
    """msgspec's `Expected ... - at `$.a[3]`` as (JSON pointer, message); `[...]` (a key) ends the path."""
    found = _MSGSPEC_PATH.search(message)
    if found is None:
        return path, message
    pointer = path
    for match in _MSGSPEC_SEGMENT.finditer(found.group(1)[1:]):
        if match.group(0) == "[...]":
            break
        pointer += f"/{_escape(match.group(1) or match.group(2))}"
    return pointer, message[: found.start()]
