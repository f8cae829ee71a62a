"""The typed, immutable form of a segment definition (SPEC §9), and the grammar's vocabulary.

`definition.parse_definition` builds these from JSON or TOML; `evaluate.compile_definition`
turns them into closures. Values inside are already typed: dates are `date`, date-times
`datetime` (naive when written without an offset: the service time zone applies at
evaluation; a date written where a date-time is compared stays a `date`, meaning its whole
day), durations `timedelta`, lists tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, TypeAlias

from streamapp import settings

AttributeType = Literal["string", "int", "float", "bool", "date", "datetime"]
#: `status` is a string restricted to STATUSES; it is a type of its own so only its ops apply.
FieldType = Literal["string", "int", "float", "bool", "date", "datetime", "status"]
Op = Literal[
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "between",
    "in",
    "not_in",
    "contains",
    "starts_with",
    "ends_with",
    "exists",
    "not_exists",
    "before",
    "after",
    "within_last",
    "more_than_ago",
    "anniversary_within",
]
Agg = Literal["count", "sum", "min", "max", "avg", "last"]

ATTRIBUTE_TYPES: frozenset[str] = frozenset({"string", "int", "float", "bool", "date", "datetime"})
STATUSES: tuple[str, ...] = ("active", "inactive", "unsubscribed", "bounced")
BUILTIN_FIELDS: dict[str, FieldType] = {
    "email": "string",
    "status": "status",
    "createdAt": "datetime",
    "updatedAt": "datetime",
}
ENGAGEMENT_TYPES: frozenset[str] = frozenset(settings.ENGAGEMENT_TYPES)
#: History fields a `where` may test, and their types (numbers are floats).
HISTORY_FIELDS: dict[str, FieldType] = {
    "sku": "string",
    "price": "float",
    "quantity": "float",
    "total": "float",
    **{f"custom{i}": "string" for i in range(1, 27)},
}
NUMERIC_HISTORY_FIELDS: frozenset[str] = frozenset({"price", "quantity", "total"})

EQUALITY_OPS: frozenset[str] = frozenset({"eq", "ne", "in", "not_in"})
ORDER_OPS: frozenset[str] = frozenset({"lt", "lte", "gt", "gte", "between"})
STRING_OPS: frozenset[str] = frozenset({"contains", "starts_with", "ends_with"})
PRESENCE_OPS: frozenset[str] = frozenset({"exists", "not_exists"})
#: Ops whose value is a duration and whose result moves with the clock.
RELATIVE_OPS: frozenset[str] = frozenset({"within_last", "more_than_ago", "anniversary_within"})
TIME_OPS: frozenset[str] = frozenset({"before", "after"}) | RELATIVE_OPS
OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": EQUALITY_OPS | ORDER_OPS | STRING_OPS | PRESENCE_OPS,
    "int": EQUALITY_OPS | ORDER_OPS | PRESENCE_OPS,
    "float": EQUALITY_OPS | ORDER_OPS | PRESENCE_OPS,
    "bool": EQUALITY_OPS | PRESENCE_OPS,
    "date": EQUALITY_OPS | ORDER_OPS | PRESENCE_OPS | TIME_OPS,
    "datetime": EQUALITY_OPS | ORDER_OPS | PRESENCE_OPS | TIME_OPS,
    "status": EQUALITY_OPS | PRESENCE_OPS,
}
AGGREGATES: tuple[str, ...] = ("count", "sum", "min", "max", "avg", "last")
NUMERIC_AGG_OPS: frozenset[str] = EQUALITY_OPS | ORDER_OPS
LAST_OPS: frozenset[str] = frozenset({"before", "after", "between", "within_last", "more_than_ago"})

MAX_DEPTH = 6
MAX_LEAVES = 64

Instant: TypeAlias = date | datetime  # a datetime is also a date: check datetime first
Scalar: TypeAlias = str | int | float | bool | date | datetime | timedelta
Operand: TypeAlias = Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """One comparison `op value`; `value` is a pair for between, a tuple for in/not_in, None for (not_)exists."""

    op: Op
    value: Operand = None


@dataclass(frozen=True, slots=True)
class AttributeLeaf:
    """A test of a recipient field; `builtin` for email, status, createdAt and updatedAt."""

    attribute: str
    type: FieldType
    builtin: bool
    test: Comparison


@dataclass(frozen=True, slots=True)
class Where:
    """A test of one field of a history record."""

    field: str
    type: FieldType
    test: Comparison


@dataclass(frozen=True, slots=True)
class HistoryLeaf:
    """Records of one type, filtered by `where` and a window, aggregated and compared.

    `agg is None` means at least one record (then `field` and `test` are None).
    `between` holds the window's bounds as written: a date `to` covers that whole day.
    """

    history: str
    where: tuple[Where, ...] = ()
    within: timedelta | None = None
    between: tuple[Instant, Instant] | None = None
    agg: Agg | None = None
    field: str | None = None
    test: Comparison | None = None


@dataclass(frozen=True, slots=True)
class SegmentLeaf:
    """Membership of another segment of the same database."""

    segment: str


@dataclass(frozen=True, slots=True)
class All:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Leaf: TypeAlias = AttributeLeaf | HistoryLeaf | SegmentLeaf
Node: TypeAlias = AttributeLeaf | HistoryLeaf | SegmentLeaf | All | AnyOf | Not
