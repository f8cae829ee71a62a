"""Parse and validate a segment definition (SPEC §9) into `nodes`, collecting every error.

A definition arrives as a JSON-like value (JSON body, or a TOML table whose dates may
already be `date`/`datetime` objects). Every problem is reported at once, each with the
JSON Pointer of its place (`/all/3/within`), so an operator fixes a definition in one go
instead of one 422 at a time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from streamapp.durations import format_duration, parse_duration
from streamapp.segments.nodes import (
    AGGREGATES,
    ATTRIBUTE_TYPES,
    BUILTIN_FIELDS,
    ENGAGEMENT_TYPES,
    HISTORY_FIELDS,
    LAST_OPS,
    MAX_DEPTH,
    MAX_LEAVES,
    NUMERIC_AGG_OPS,
    NUMERIC_HISTORY_FIELDS,
    OPS_BY_TYPE,
    PRESENCE_OPS,
    RELATIVE_OPS,
    STATUSES,
    Agg,
    All,
    AnyOf,
    AttributeLeaf,
    Comparison,
    FieldType,
    HistoryLeaf,
    Instant,
    Node,
    Not,
    Op,
    Operand,
    Scalar,
    SegmentLeaf,
    Where,
)

__all__ = ["Catalog", "DefinitionError", "parse_definition", "to_json"]

_KINDS = ("attribute", "history", "segment", "all", "any", "not")
_KEYS = {
    "attribute": frozenset({"attribute", "op", "value"}),
    "history": frozenset({"history", "where", "within", "between", "agg", "field", "op", "value"}),
    "segment": frozenset({"segment"}),
}
_ALL_OPS = frozenset().union(*OPS_BY_TYPE.values())
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TYPE_WORDS = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "an ISO 8601 date-time (e.g. 2026-11-27T08:00:00+01:00)",
    "status": "one of " + ", ".join(STATUSES),
}


class DefinitionError(ValueError):
    """Every problem of a definition, as (JSON Pointer, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '/'}: {message}" for path, message in errors))


@dataclass(frozen=True, slots=True)
class Catalog:
    """What a definition of one database may name.

    `attributes` is the database schema (name -> type); `history_types` the configured
    types (the reserved `mail.*` types are always added); `segments` the names of the
    database's other segments (any container: a set, or an object answering `in`).
    """

    attributes: Mapping[str, str]
    history_types: Collection[str]
    segments: Container[str] = frozenset()
    auto_create_attributes: bool = False

    def __post_init__(self) -> None:
        wrong = sorted(name for name, kind in self.attributes.items() if kind not in ATTRIBUTE_TYPES)
        if wrong:
            raise ValueError(f"attributes with an unknown type: {', '.join(wrong)}")


def parse_definition(raw: object, catalog: Catalog) -> Node:
    """The typed node tree of `raw`, or DefinitionError listing every problem."""
    parser = _Parser(catalog)
    node = parser.node(raw, "", 1)
    if parser.leaves > MAX_LEAVES:
        parser.error("", f"has {parser.leaves} conditions; at most {MAX_LEAVES} are allowed")
    if parser.errors or node is None:
        raise DefinitionError(parser.errors)
    return node


def _pointer(path: str, key: object) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _listing(names: Collection[str], limit: int = 12) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


class _Parser:
    """One parse: the errors found so far and the number of leaves seen."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.history_types = frozenset(catalog.history_types) | ENGAGEMENT_TYPES
        self.errors: list[tuple[str, str]] = []
        self.leaves = 0

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    # -- nodes ---------------------------------------------------------------------------

    def node(self, raw: object, path: str, depth: int) -> Node | None:
        if not isinstance(raw, Mapping):
            self.error(path, "must be an object with one of: " + ", ".join(_KINDS))
            return None
        kinds = [kind for kind in _KINDS if kind in raw]
        if len(kinds) != 1:
            found = " and ".join(repr(k) for k in kinds)
            why = f"has both {found}" if kinds else "has none of the keys"
            self.error(path, f"{why}; a condition is exactly one of: " + ", ".join(_KINDS))
            return None
        if depth > MAX_DEPTH:
            self.error(path, f"is nested too deep: at most {MAX_DEPTH} levels")
            return None
        kind = kinds[0]
        if kind in ("all", "any"):
            return self.combination(kind, raw, path, depth)
        if kind == "not":
            self.unknown_keys(raw, path, frozenset({"not"}))
            child = self.node(raw["not"], _pointer(path, "not"), depth + 1)
            return Not(child) if child is not None else None
        self.leaves += 1
        self.unknown_keys(raw, path, _KEYS[kind])
        if kind == "attribute":
            return self.attribute(raw, path)
        if kind == "history":
            return self.history(raw, path)
        return self.segment(raw, path)

    def unknown_keys(self, raw: Mapping[Any, Any], path: str, allowed: frozenset[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.error(_pointer(path, key), "unknown key; allowed here: " + ", ".join(sorted(allowed)))

    def combination(self, kind: str, raw: Mapping[Any, Any], path: str, depth: int) -> Node | None:
        self.unknown_keys(raw, path, frozenset({kind}))
        items, here = raw[kind], _pointer(path, kind)
        if not isinstance(items, list | tuple):
            self.error(here, "must be a list of conditions")
            return None
        if not items:
            self.error(here, "must not be empty")
            return None
        children = [self.node(item, _pointer(here, i), depth + 1) for i, item in enumerate(items)]
        if any(child is None for child in children):
            return None
        done = tuple(cast(list[Node], children))
        return All(done) if kind == "all" else AnyOf(done)

    def segment(self, raw: Mapping[Any, Any], path: str) -> Node | None:
        name, here = raw["segment"], _pointer(path, "segment")
        if not isinstance(name, str) or not name:
            self.error(here, "must be the name of a segment")
            return None
        if name not in self.catalog.segments:
            self.error(here, f"unknown segment {name!r} of this database")
            return None
        return SegmentLeaf(name)

    # -- attribute leaves ------------------------------------------------------------------

    def attribute(self, raw: Mapping[Any, Any], path: str) -> Node | None:
        name = raw["attribute"]
        kind = self.attribute_type(name, _pointer(path, "attribute"))
        if kind is None:
            self.op(raw, path, None, "")  # still report a misspelt op
            return None
        test = self.test(raw, path, kind, OPS_BY_TYPE[kind], f"{kind} attribute {name!r}")
        return AttributeLeaf(name, kind, name in BUILTIN_FIELDS, test) if test else None

    def attribute_type(self, name: object, here: str) -> FieldType | None:
        if not isinstance(name, str) or not name:
            self.error(here, "must be the name of an attribute")
            return None
        if name in BUILTIN_FIELDS:
            return BUILTIN_FIELDS[name]
        declared = self.catalog.attributes.get(name)
        if declared is not None:
            return cast(FieldType, declared)
        if self.catalog.auto_create_attributes:
            return "string"
        known = _listing([*BUILTIN_FIELDS, *self.catalog.attributes])
        self.error(here, f"unknown attribute {name!r}; known: {known}")
        return None

    # -- history leaves --------------------------------------------------------------------

    def history(self, raw: Mapping[Any, Any], path: str) -> Node | None:
        errors_before = len(self.errors)
        self.history_type(raw["history"], _pointer(path, "history"))
        where = self.where_list(raw["where"], _pointer(path, "where")) if "where" in raw else ()
        within = self.duration(raw["within"], _pointer(path, "within")) if "within" in raw else None
        between = self.between(raw["between"], _pointer(path, "between")) if "between" in raw else None
        if "within" in raw and "between" in raw:
            self.error(_pointer(path, "between"), "within and between exclude each other; give one of them")
        aggregate = self.aggregate(raw, path)
        if len(self.errors) > errors_before or where is None or aggregate is None:
            return None
        agg, field, test = aggregate
        return HistoryLeaf(raw["history"], where, within, between, agg, field, test)

    def history_type(self, name: object, here: str) -> bool:
        if not isinstance(name, str) or name not in self.history_types:
            self.error(here, f"unknown history type {name!r}; known: {_listing(self.history_types, 40)}")
            return False
        return True

    def where_list(self, raw: object, here: str) -> tuple[Where, ...] | None:
        if not isinstance(raw, list | tuple):
            self.error(here, "must be a list of {field, op, value} tests")
            return None
        found = [self.where(item, _pointer(here, i)) for i, item in enumerate(raw)]
        return tuple(w for w in found if w is not None) if all(found) else None

    def where(self, raw: object, path: str) -> Where | None:
        if not isinstance(raw, Mapping):
            self.error(path, "must be an object {field, op, value}")
            return None
        self.unknown_keys(raw, path, frozenset({"field", "op", "value"}))
        name = raw.get("field")
        kind = HISTORY_FIELDS.get(name) if isinstance(name, str) else None
        if kind is None:
            message = "missing" if "field" not in raw else f"unknown field {name!r}"
            self.error(_pointer(path, "field"), f"{message}; one of sku, price, quantity, total, custom1..custom26")
            self.op(raw, path, None, "")
            return None
        test = self.test(raw, path, kind, OPS_BY_TYPE[kind], f"history field {name!r}")
        return Where(cast(str, name), kind, test) if test else None

    def between(self, raw: object, here: str) -> tuple[Instant, Instant] | None:
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            self.error(here, "must be a list [from, to] of two dates or date-times")
            return None
        low, high = (self.instant(item, _pointer(here, i)) for i, item in enumerate(raw))
        if low is None or high is None:
            return None
        if _later(low, high):
            self.error(here, "from is after to")
            return None
        return (low, high)

    def aggregate(self, raw: Mapping[Any, Any], path: str) -> tuple[Agg | None, str | None, Comparison | None] | None:
        """(agg, field, test), all None for a bare "at least one record"; None when wrong."""
        if "agg" not in raw:
            extra = [key for key in ("field", "op", "value") if key in raw]
            for key in extra:
                message = "without agg a history condition means at least one record; add agg to compare"
                self.error(_pointer(path, key), message)
            return None if extra else (None, None, None)
        agg = raw["agg"]
        if agg not in AGGREGATES:
            self.error(_pointer(path, "agg"), f"unknown aggregate {agg!r}; one of " + ", ".join(AGGREGATES))
            self.op(raw, path, None, "")
            return None
        field_ok, field = self.agg_field(agg, raw, path)
        if agg == "last":
            test = self.test(raw, path, "datetime", LAST_OPS, "agg last")
        else:
            kind: FieldType = "int" if agg == "count" else "float"
            test = self.test(raw, path, kind, NUMERIC_AGG_OPS, f"agg {agg}")
        return (cast(Agg, agg), field, test) if field_ok and test is not None else None

    def agg_field(self, agg: str, raw: Mapping[Any, Any], path: str) -> tuple[bool, str | None]:
        """(ok, field): the numeric field of sum/min/max/avg; none for count and last."""
        here = _pointer(path, "field")
        if agg in ("count", "last"):
            if "field" in raw:
                self.error(here, f"{agg} takes no field")
                return False, None
            return True, None
        field = raw.get("field")
        if isinstance(field, str) and field in NUMERIC_HISTORY_FIELDS:
            return True, field
        what = "missing" if "field" not in raw else f"{field!r} is not a numeric field"
        self.error(here, f"{what}: {agg} needs one of price, quantity, total")
        return False, None

    # -- ops and values --------------------------------------------------------------------

    def op(self, raw: Mapping[Any, Any], path: str, allowed: frozenset[str] | None, what: str) -> Op | None:
        here = _pointer(path, "op")
        if "op" not in raw:
            if allowed is not None:
                self.error(here, "missing")
            return None
        op = raw["op"]
        if not isinstance(op, str) or op not in _ALL_OPS:
            self.error(here, f"unknown op {op!r}; one of " + ", ".join(sorted(_ALL_OPS)))
            return None
        if allowed is not None and op not in allowed:
            self.error(here, f"{op!r} does not apply to {what}; use one of " + ", ".join(sorted(allowed)))
            return None
        return cast(Op, op)

    def test(
        self, raw: Mapping[Any, Any], path: str, kind: FieldType, allowed: frozenset[str], what: str
    ) -> Comparison | None:
        op = self.op(raw, path, allowed, what)
        here = _pointer(path, "value")
        if op is None:
            return None
        if op in PRESENCE_OPS:
            if "value" in raw:
                self.error(here, f"{op} takes no value")
                return None
            return Comparison(op)
        if "value" not in raw:
            self.error(here, f"missing: {op} needs a value")
            return None
        value = self.operand(op, kind, raw["value"], here)
        return None if value is None else Comparison(op, value)

    def operand(self, op: str, kind: FieldType, raw: object, here: str) -> Operand:
        if op in RELATIVE_OPS:
            return self.duration(raw, here)
        if op == "between":
            return self.pair(kind, raw, here)
        if op in ("in", "not_in"):
            if not isinstance(raw, list | tuple) or not raw:
                self.error(here, f"must be a non-empty list of {_TYPE_WORDS[kind]} values")
                return None
            values = [self.scalar(kind, item, _pointer(here, i)) for i, item in enumerate(raw)]
            return tuple(cast(list[Scalar], values)) if all(v is not None for v in values) else None
        return self.scalar(kind, raw, here)

    def pair(self, kind: FieldType, raw: object, here: str) -> Operand:
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            self.error(here, f"must be a list [low, high] of two values, each {_TYPE_WORDS[kind]}")
            return None
        low, high = (self.scalar(kind, item, _pointer(here, i)) for i, item in enumerate(raw))
        if low is None or high is None:
            return None
        if _later(low, high):
            self.error(here, "low is greater than high")
            return None
        return (low, high)

    def duration(self, raw: object, here: str) -> timedelta | None:
        try:
            return parse_duration(raw)
        except ValueError as exc:
            self.error(here, str(exc))
            return None

    def instant(self, raw: object, here: str) -> Instant | None:
        """A window bound: a date (the whole day) or a date-time."""
        value = _as_datetime(raw)
        if value is None:
            self.error(here, "must be a date (YYYY-MM-DD) or an ISO 8601 date-time")
        return value

    def scalar(self, kind: FieldType, raw: object, here: str) -> Scalar | None:
        value: Scalar | None = _SCALARS[kind](raw)
        if value is None:
            self.error(here, f"must be {_TYPE_WORDS[kind]}")
        return value


def _later(low: object, high: object) -> bool:
    """low > high, for values that compare; naive against aware date-times are left alone."""
    if isinstance(low, datetime) != isinstance(high, datetime):
        low, high = _midnight(low), _midnight(high)
    try:
        return bool(low > high)  # type: ignore[operator]
    except TypeError:
        return False


def _midnight(value: object) -> object:
    return datetime(value.year, value.month, value.day) if type(value) is date else value


def _as_string(raw: object) -> str | None:
    return raw if isinstance(raw, str) else None


def _as_status(raw: object) -> str | None:
    return raw if raw in STATUSES else None


def _as_int(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _as_float(raw: object) -> float | None:
    ok = isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw)
    return float(cast(float, raw)) if ok else None


def _as_bool(raw: object) -> bool | None:
    return raw if isinstance(raw, bool) else None


def _as_date(raw: object) -> date | None:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if not isinstance(raw, str) or not _DATE.fullmatch(raw):
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        return None


def _as_datetime(raw: object) -> date | None:
    """A date-time, or a date: compared with date-times a date stands for its whole day."""
    if isinstance(raw, date):
        return raw
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    if _DATE.fullmatch(raw):
        return _as_date(raw)
    try:
        return datetime.fromisoformat(raw.replace(" ", "T", 1))
    except ValueError:
        return None


_SCALARS: dict[str, Any] = {
    "string": _as_string,
    "status": _as_status,
    "int": _as_int,
    "float": _as_float,
    "bool": _as_bool,
    "date": _as_date,
    "datetime": _as_datetime,
}


# -- back to JSON ------------------------------------------------------------------------------


def to_json(node: Node) -> dict[str, Any]:
    """The JSON form of a node tree; parsing it again gives an equal tree."""
    if isinstance(node, All | AnyOf):
        return {"all" if isinstance(node, All) else "any": [to_json(child) for child in node.children]}
    if isinstance(node, Not):
        return {"not": to_json(node.child)}
    if isinstance(node, SegmentLeaf):
        return {"segment": node.segment}
    if isinstance(node, AttributeLeaf):
        return {"attribute": node.attribute, **_test_json(node.test)}
    out: dict[str, Any] = {"history": node.history}
    if node.where:
        out["where"] = [{"field": w.field, **_test_json(w.test)} for w in node.where]
    if node.within is not None:
        out["within"] = format_duration(node.within)
    if node.between is not None:
        out["between"] = [_value_json(v) for v in node.between]
    if node.agg is not None:
        out["agg"] = node.agg
    if node.field is not None:
        out["field"] = node.field
    if node.test is not None:
        out.update(_test_json(node.test))
    return out


def _test_json(test: Comparison) -> dict[str, Any]:
    if test.op in PRESENCE_OPS:
        return {"op": test.op}
    value = test.value
    rendered = [_value_json(v) for v in value] if isinstance(value, tuple) else _value_json(value)
    return {"op": test.op, "value": rendered}


def _value_json(value: object) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, date):
        return value.isoformat()
    return value
