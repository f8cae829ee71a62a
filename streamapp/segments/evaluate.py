"""Evaluate a segment definition for one recipient, and say when time alone could change it.

A definition is compiled once per time zone into closures (no tree walk or op lookup per
recipient), so a build over a million recipients costs a few function calls each.

Rules (SPEC §9 leaves it open; the oracle test states the same):

- **Missing values.** A value that is absent, null, or not of the attribute's type (say a
  row written before a schema change) is *missing*. A missing value matches only
  `not_exists`; every other op, `ne` and `not_in` included, is false (SQL-like). `not`
  and `any` are plain boolean logic over those leaf results, so `{"not": {eq …}}` is true
  for a missing value. An empty string is a value.
- **Time.** Durations are exact (P1D = 24 h). `within_last D`: t <= now < t + D.
  `more_than_ago D`: t + D <= now. A date stands for its first moment in the service
  zone; an offset-less date-time is in that zone. Compared with a date-time, a date in a
  definition is its whole local day: `eq` means on that day, `after` after it, `lte` on or
  before it, and `between` runs from the first day's start to the last day's end. A history `within D` window holds
  records with now - D < time <= now (a record dated in the future enters when its time
  comes); `between [from, to]` holds from <= time <= to, a date `to` covering its whole day.
- **Anniversaries** are local calendar days: `anniversary_within D` holds when the next
  anniversary (today included) is fewer than ceil(D / 1 day) days away, so P1D means
  today and P7D today and the six days after. A Feb 29 falls on Feb 28 in other years.
- **Aggregates** skip records whose field is missing; `sum` of nothing is 0 (math.fsum,
  so the order of records does not change the result); `min`, `max`, `avg` and `last` of
  nothing are missing, hence false.
- **Strings** compare case-sensitively, by code point.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import partial
from typing import Any, TypeAlias, cast

from streamapp.segments.nodes import (
    RELATIVE_OPS,
    All,
    AnyOf,
    AttributeLeaf,
    Comparison,
    FieldType,
    HistoryLeaf,
    Node,
    Not,
    SegmentLeaf,
    Where,
)
from streamapp.segments.times import (
    ONE_DAY,
    aware,
    local_day,
    next_anniversary,
    parse_day,
    parse_instant,
    shifted,
    start_of_day,
)
from streamapp.segments.view import HistoryRecordView, MemberOf, RecipientView

__all__ = ["Compiled", "compile_definition", "evaluate", "evaluate_with_flip", "next_flip"]

Pred: TypeAlias = Callable[[RecipientView, datetime, MemberOf], bool]
FlipFn: TypeAlias = Callable[[RecipientView, datetime, MemberOf], tuple[bool, datetime | None]]
Check: TypeAlias = Callable[[Any], bool]
Selected: TypeAlias = Iterator[tuple[datetime | None, HistoryRecordView]]


@dataclass(frozen=True, slots=True)
class Compiled:
    """A definition compiled for one time zone.

    `test` and `flip` are the raw closures, for callers that loop over many recipients:
    they take `now` already converted to UTC. `timed` is False when time alone never
    changes the value, so `flip` need not be called.
    """

    test: Pred
    flip: FlipFn
    timed: bool

    def matches(self, view: RecipientView, now: datetime, member_of: MemberOf | None = None) -> bool:
        return self.test(view, _utc(now), member_of or view.member_of)

    def with_flip(
        self, view: RecipientView, now: datetime, member_of: MemberOf | None = None
    ) -> tuple[bool, datetime | None]:
        """(value, next flip): see `next_flip`."""
        moment = _utc(now)
        member = member_of or view.member_of
        return self.flip(view, moment, member) if self.timed else (self.test(view, moment, member), None)


def compile_definition(node: Node, tz: tzinfo) -> Compiled:
    part = _compile(node, tz)
    return Compiled(part.test, part.flip, part.timed)


def evaluate(node: Node, view: RecipientView, now: datetime, tz: tzinfo) -> bool:
    """Whether the recipient matches at `now` (aware); `{"segment": …}` leaves ask `view.member_of`."""
    return _cached(node, tz).matches(view, now)


def next_flip(node: Node, view: RecipientView, now: datetime, tz: tzinfo) -> datetime | None:
    """The earliest moment after `now` at which the value could change with no new event, or None.

    Conservative: the value may turn out unchanged then (evaluate again and ask again), but it
    never changes earlier. A referenced segment's own timing is not included: the tracker
    re-evaluates every segment of a recipient whenever one of them is due.
    """
    return _cached(node, tz).with_flip(view, now)[1]


def evaluate_with_flip(node: Node, view: RecipientView, now: datetime, tz: tzinfo) -> tuple[bool, datetime | None]:
    return _cached(node, tz).with_flip(view, now)


_MICROSECOND = timedelta(microseconds=1)
_CACHE: dict[tuple[int, tzinfo], tuple[Node, Compiled]] = {}


def _cached(node: Node, tz: tzinfo) -> Compiled:
    """Compile once per node object (kept alive in the entry, so its id is not reused)."""
    hit = _CACHE.get((id(node), tz))
    if hit is not None and hit[0] is node:
        return hit[1]
    if len(_CACHE) >= 256:
        _CACHE.clear()
    compiled = compile_definition(node, tz)
    _CACHE[(id(node), tz)] = (node, compiled)
    return compiled


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    return now.astimezone(UTC)


# -- compiling nodes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Part:
    test: Pred
    flip: FlipFn
    timed: bool
    cost: int  # a rough price, so cheap children run first and short-circuit the rest


def _compile(node: Node, tz: tzinfo) -> _Part:
    if isinstance(node, All | AnyOf):
        return _combination(node, tz)
    if isinstance(node, Not):
        return _negation(_compile(node.child, tz))
    if isinstance(node, SegmentLeaf):
        name = node.segment
        return _untimed(lambda view, now, member: member(name), 1)
    if isinstance(node, AttributeLeaf):
        return _attribute(node, tz)
    return _history(node, tz)


def _untimed(test: Pred, cost: int) -> _Part:
    def flip(view: RecipientView, now: datetime, member: MemberOf) -> tuple[bool, datetime | None]:
        return test(view, now, member), None

    return _Part(test, flip, False, cost)


def _negation(child: _Part) -> _Part:
    inner_test, inner_flip = child.test, child.flip

    def test(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        return not inner_test(view, now, member)

    def flip(view: RecipientView, now: datetime, member: MemberOf) -> tuple[bool, datetime | None]:
        value, due = inner_flip(view, now, member)
        return not value, due

    return _Part(test, flip, child.timed, child.cost)


def _combination(node: All | AnyOf, tz: tzinfo) -> _Part:
    parts = sorted((_compile(child, tz) for child in node.children), key=lambda p: p.cost)
    tests = tuple(p.test for p in parts)
    flips = tuple(p.flip if p.timed else None for p in parts)
    cost = sum(p.cost for p in parts)
    timed = any(p.timed for p in parts)
    if isinstance(node, All):
        return _Part(_all_test(tests), _all_flip(tests, flips), timed, cost)
    return _Part(_any_test(tests), _any_flip(tests, flips), timed, cost)


def _all_test(tests: tuple[Pred, ...]) -> Pred:
    def test(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        for child in tests:  # noqa: SIM110 - a plain loop is cheaper than all() over a generator
            if not child(view, now, member):
                return False
        return True

    return test


def _any_test(tests: tuple[Pred, ...]) -> Pred:
    def test(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        for child in tests:  # noqa: SIM110 - a plain loop is cheaper than any() over a generator
            if child(view, now, member):
                return True
        return False

    return test


def _all_flip(tests: tuple[Pred, ...], flips: tuple[FlipFn | None, ...]) -> FlipFn:
    """False as soon as a child is false for good; otherwise the soonest child flip bounds the change."""

    def flip(view: RecipientView, now: datetime, member: MemberOf) -> tuple[bool, datetime | None]:
        value, soonest = True, None
        for child_test, child_flip in zip(tests, flips, strict=True):
            if child_flip is None:
                if not child_test(view, now, member):
                    return False, None
                continue
            child_value, due = child_flip(view, now, member)
            if not child_value:
                if due is None:
                    return False, None
                value = False
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        return value, soonest

    return flip


def _any_flip(tests: tuple[Pred, ...], flips: tuple[FlipFn | None, ...]) -> FlipFn:
    """True as soon as a child is true for good; otherwise the soonest child flip bounds the change."""

    def flip(view: RecipientView, now: datetime, member: MemberOf) -> tuple[bool, datetime | None]:
        value, soonest = False, None
        for child_test, child_flip in zip(tests, flips, strict=True):
            if child_flip is None:
                if child_test(view, now, member):
                    return True, None
                continue
            child_value, due = child_flip(view, now, member)
            if child_value:
                if due is None:
                    return True, None
                value = True
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        return value, soonest

    return flip


# -- values ---------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    kind = type(value)
    return kind is int or kind is float


def _normalizer(kind: FieldType, tz: tzinfo) -> Callable[[Any], Any]:
    """Stored value -> comparable value, or None when missing or of the wrong type."""
    if kind in ("string", "status"):
        return lambda raw: raw if type(raw) is str else None
    if kind in ("int", "float"):
        return lambda raw: raw if _is_number(raw) else None
    if kind == "bool":
        return lambda raw: raw if type(raw) is bool else None
    if kind == "date":
        return parse_day
    return partial(parse_instant, tz=tz)


def _span(value: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """The instants [start, end) a definition's date-time or date stands for: one microsecond, or a whole day."""
    start = aware(value, tz)
    if isinstance(value, datetime):
        end = shifted(start, _MICROSECOND)
    else:
        end = start_of_day(value + ONE_DAY, tz) if value < date.max else None
    return start, end if end is not None else datetime.max.replace(tzinfo=UTC)


def _comparator(kind: FieldType, test: Comparison, tz: tzinfo) -> Check:
    """A check on a present, normalized value, for every op that is neither presence nor relative."""
    if kind == "datetime":
        return _instant_comparator(test, tz)
    op, value = test.op, test.value
    if op in ("in", "not_in"):
        members = frozenset(cast(tuple[Any, ...], value))
        return members.__contains__ if op == "in" else lambda x: x not in members
    if op == "between":
        low, high = cast(tuple[Any, Any], value)
        return lambda x: bool(low <= x <= high)
    if op == "contains":
        return lambda x: value in x
    if op == "starts_with":
        return lambda x: x.startswith(value)
    if op == "ends_with":
        return lambda x: x.endswith(value)
    return partial(_FLIPPED[op], value)


def _instant_comparator(test: Comparison, tz: tzinfo) -> Check:
    """Date-time comparisons, where a date value stands for its whole day: `eq` is "on that day",
    `after` "after that day", `between` runs from the first day's start to the last day's end."""
    op, raw = test.op, test.value
    if op == "between":
        low, high = cast(tuple[date, date], raw)
        start, end = _span(low, tz)[0], _span(high, tz)[1]
        return lambda x: bool(start <= x < end)
    if op in ("in", "not_in"):
        spans = tuple(_span(v, tz) for v in cast(tuple[date, ...], raw))
        inside = op == "in"
        return lambda x: any(start <= x < end for start, end in spans) is inside
    start, end = _span(cast(date, raw), tz)
    return _INSTANT_CHECKS[op](start, end)


#: For a span [start, end): x < start is `gt(start, x)`, and so on, as C-level partials.
_INSTANT_CHECKS: dict[str, Callable[[datetime, datetime], Check]] = {
    "eq": lambda start, end: lambda x: bool(start <= x < end),
    "ne": lambda start, end: lambda x: not start <= x < end,
    "lt": lambda start, end: partial(operator.gt, start),
    "before": lambda start, end: partial(operator.gt, start),
    "lte": lambda start, end: partial(operator.gt, end),
    "gt": lambda start, end: partial(operator.le, end),
    "after": lambda start, end: partial(operator.le, end),
    "gte": lambda start, end: partial(operator.le, start),
}

#: op(x, v) written as f(v, x), so `partial(f, v)` is a C-level callable.
_FLIPPED: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.gt,
    "lte": operator.ge,
    "gt": operator.lt,
    "gte": operator.le,
    "before": operator.gt,
    "after": operator.lt,
}


# -- clock-relative ops -----------------------------------------------------------------------

RelTest: TypeAlias = Callable[[Any, datetime], bool]
RelFlip: TypeAlias = Callable[[Any, datetime], datetime | None]


def _relative(kind: FieldType, op: str, duration: timedelta, tz: tzinfo) -> tuple[RelTest, RelFlip]:
    """(test, next flip) of a relative op on a present date or date-time value, at `now` in UTC."""
    if op == "anniversary_within":
        return _anniversary(kind, duration, tz)
    instant: Callable[[Any], datetime] = (lambda x: start_of_day(x, tz)) if kind == "date" else (lambda x: x)
    if op == "within_last":

        def within_test(x: Any, now: datetime) -> bool:
            moment = instant(x)
            return moment <= now and now - duration < moment

        def within_flip(x: Any, now: datetime) -> datetime | None:
            moment = instant(x)
            if moment > now:
                return moment
            end = shifted(moment, duration)
            return end if end is not None and end > now else None

        return within_test, within_flip

    def ago_test(x: Any, now: datetime) -> bool:
        return instant(x) <= now - duration

    def ago_flip(x: Any, now: datetime) -> datetime | None:
        end = shifted(instant(x), duration)
        return end if end is not None and end > now else None

    return ago_test, ago_flip


def _anniversary(kind: FieldType, duration: timedelta, tz: tzinfo) -> tuple[RelTest, RelFlip]:
    days = -(-duration // ONE_DAY)  # ceil: a partial day counts as a day
    day_of: Callable[[Any], date] = (lambda x: x) if kind == "date" else (lambda x: local_day(x, tz))

    def days_until(x: Any, now: datetime) -> tuple[date, int] | None:
        today = local_day(now, tz)
        upcoming = next_anniversary(day_of(x), today)
        return None if upcoming is None else (upcoming, (upcoming - today).days)

    def test(x: Any, now: datetime) -> bool:
        found = days_until(x, now)
        return found is not None and found[1] < days

    def flip(x: Any, now: datetime) -> datetime | None:
        found = days_until(x, now)
        if found is None:
            return None
        upcoming, ahead = found
        try:
            turn = upcoming + ONE_DAY if ahead < days else upcoming - timedelta(days=days - 1)
        except OverflowError:
            return None
        moment = start_of_day(turn, tz)
        return moment if moment > now else start_of_day(local_day(now, tz) + ONE_DAY, tz)

    return test, flip


# -- attribute leaves -------------------------------------------------------------------------


def _attribute(leaf: AttributeLeaf, tz: tzinfo) -> _Part:
    read = _reader(leaf, tz)
    op = leaf.test.op
    if op == "exists":
        return _untimed(lambda view, now, member: read(view) is not None, 1)
    if op == "not_exists":
        return _untimed(lambda view, now, member: read(view) is None, 1)
    if op in RELATIVE_OPS:
        return _relative_attribute(leaf, read, tz)
    check = _comparator(leaf.type, leaf.test, tz)
    if not leaf.builtin and leaf.type in ("string", "int", "float", "bool"):
        return _untimed(_fast_attribute(leaf.attribute, leaf.type, check), 1)

    def test(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        value = read(view)
        return value is not None and check(value)

    return _untimed(test, 2 if leaf.type in ("date", "datetime") else 1)


def _fast_attribute(name: str, kind: FieldType, check: Check) -> Pred:
    """Reading and type-checking inline: the common attribute-only build runs mostly here."""
    if kind == "string":

        def test_string(view: RecipientView, now: datetime, member: MemberOf) -> bool:
            value = view.attributes.get(name)
            return type(value) is str and check(value)

        return test_string
    if kind == "bool":

        def test_bool(view: RecipientView, now: datetime, member: MemberOf) -> bool:
            value = view.attributes.get(name)
            return type(value) is bool and check(value)

        return test_bool

    def test_number(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        value = view.attributes.get(name)
        found = type(value)
        return (found is int or found is float) and check(value)

    return test_number


def _reader(leaf: AttributeLeaf, tz: tzinfo) -> Callable[[RecipientView], Any]:
    normalize = _normalizer(leaf.type, tz)
    name = leaf.attribute
    if leaf.builtin:
        get = operator.attrgetter(name)
        return lambda view: normalize(get(view))
    return lambda view: normalize(view.attributes.get(name))


def _relative_attribute(leaf: AttributeLeaf, read: Callable[[RecipientView], Any], tz: tzinfo) -> _Part:
    rel_test, rel_flip = _relative(leaf.type, leaf.test.op, cast(timedelta, leaf.test.value), tz)

    def test(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        value = read(view)
        return value is not None and rel_test(value, now)

    def flip(view: RecipientView, now: datetime, member: MemberOf) -> tuple[bool, datetime | None]:
        value = read(view)
        if value is None:
            return False, None
        return rel_test(value, now), rel_flip(value, now)

    return _Part(test, flip, True, 2)


# -- history leaves ---------------------------------------------------------------------------


def _history(leaf: HistoryLeaf, tz: tzinfo) -> _Part:
    keep = _where_all(leaf.where)
    select = _selector(leaf, keep, tz)
    decide = _aggregate(leaf, tz)
    kind = leaf.history

    def test(view: RecipientView, now: datetime, member: MemberOf) -> bool:
        return decide(select(view.history(kind), now), now)

    relative_last = leaf.agg == "last" and leaf.test is not None and leaf.test.op in RELATIVE_OPS
    timed = leaf.within is not None or relative_last
    if not timed:
        return _untimed(test, 10)
    window_due = _window_due(leaf, keep, tz)
    last_due = _last_due(leaf, select, tz) if relative_last else None

    def flip(view: RecipientView, now: datetime, member: MemberOf) -> tuple[bool, datetime | None]:
        records = view.history(kind)
        value = decide(select(records, now), now)
        dues = [window_due(records, now) if window_due else None, last_due(records, now) if last_due else None]
        found = [due for due in dues if due is not None and due > now]
        return value, min(found) if found else None

    return _Part(test, flip, True, 10)


def _where_all(where: tuple[Where, ...]) -> Callable[[HistoryRecordView], bool] | None:
    checks = tuple(_where(w) for w in where)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def keep(record: HistoryRecordView) -> bool:
        for check in checks:  # noqa: SIM110 - a plain loop is cheaper than all() over a generator
            if not check(record):
                return False
        return True

    return keep


def _where(where: Where) -> Callable[[HistoryRecordView], bool]:
    get = _field_getter(where.field)
    normalize = _normalizer(where.type, UTC)
    if where.test.op in ("exists", "not_exists"):
        present = where.test.op == "exists"
        return lambda record: (normalize(get(record)) is not None) is present
    check = _comparator(where.type, where.test, UTC)

    def keep(record: HistoryRecordView) -> bool:
        value = normalize(get(record))
        return value is not None and check(value)

    return keep


def _field_getter(name: str) -> Callable[[HistoryRecordView], Any]:
    if not name.startswith("custom"):
        return operator.attrgetter(name)

    def get(record: HistoryRecordView) -> Any:
        return record.fields.get(name)

    return get


def _selector(
    leaf: HistoryLeaf, keep: Callable[[HistoryRecordView], bool] | None, tz: tzinfo
) -> Callable[[Sequence[HistoryRecordView], datetime], Selected]:
    """The records a leaf aggregates, newest first, with their times (None when no window or last needs them)."""
    if leaf.within is not None:
        return _within_selector(leaf.within, keep, tz)
    if leaf.between is not None:
        low, high = _span(leaf.between[0], tz)[0], _span(leaf.between[1], tz)[1]
        return _range_selector(low, high, keep, tz)
    timed = leaf.agg == "last"

    def select(records: Sequence[HistoryRecordView], now: datetime) -> Selected:
        for record in records:
            if keep is not None and not keep(record):
                continue
            if not timed:
                yield None, record
                continue
            moment = parse_instant(record.time, tz)
            if moment is not None:
                yield moment, record

    return select


def _within_selector(
    duration: timedelta, keep: Callable[[HistoryRecordView], bool] | None, tz: tzinfo
) -> Callable[[Sequence[HistoryRecordView], datetime], Selected]:
    def select(records: Sequence[HistoryRecordView], now: datetime) -> Selected:
        start = now - duration
        for record in records:
            moment = parse_instant(record.time, tz)
            if moment is None or moment > now:
                continue
            if moment <= start:
                return
            if keep is None or keep(record):
                yield moment, record

    return select


def _range_selector(
    low: datetime, high: datetime, keep: Callable[[HistoryRecordView], bool] | None, tz: tzinfo
) -> Callable[[Sequence[HistoryRecordView], datetime], Selected]:
    """Records with low <= time < high (high is already exclusive)."""

    def select(records: Sequence[HistoryRecordView], now: datetime) -> Selected:
        for record in records:
            moment = parse_instant(record.time, tz)
            if moment is None or moment >= high:
                continue
            if moment < low:
                return
            if keep is None or keep(record):
                yield moment, record

    return select


def _aggregate(leaf: HistoryLeaf, tz: tzinfo) -> Callable[[Selected, datetime], bool]:
    """Selected records -> the leaf's value."""
    if leaf.agg is None or leaf.test is None:
        return lambda selected, now: next(selected, None) is not None
    if leaf.agg == "last":
        return _last_check(leaf.test, tz)
    check = _comparator("int" if leaf.agg == "count" else "float", leaf.test, tz)
    if leaf.agg == "count":
        return lambda selected, now: check(sum(1 for _ in selected))
    field = operator.attrgetter(cast(str, leaf.field))
    reduce = _REDUCERS[leaf.agg]

    def decide(selected: Selected, now: datetime) -> bool:
        values = [value for _, record in selected if _is_number(value := field(record))]
        result = reduce(values)
        return result is not None and check(result)

    return decide


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


_REDUCERS: dict[str, Callable[[list[float]], float | None]] = {
    "sum": math.fsum,
    "min": lambda values: min(values) if values else None,
    "max": lambda values: max(values) if values else None,
    "avg": _mean,
}


def _last_check(test: Comparison, tz: tzinfo) -> Callable[[Selected, datetime], bool]:
    if test.op in RELATIVE_OPS:
        rel_test = _relative("datetime", test.op, cast(timedelta, test.value), tz)[0]

        def decide_relative(selected: Selected, now: datetime) -> bool:
            newest = next(selected, None)
            return newest is not None and rel_test(newest[0], now)

        return decide_relative
    check = _comparator("datetime", test, tz)

    def decide(selected: Selected, now: datetime) -> bool:
        newest = next(selected, None)
        return newest is not None and check(newest[0])

    return decide


def _window_due(
    leaf: HistoryLeaf, keep: Callable[[HistoryRecordView], bool] | None, tz: tzinfo
) -> Callable[[Sequence[HistoryRecordView], datetime], datetime | None] | None:
    """When the set of records in a `within` window next changes in a way that matters."""
    duration = leaf.within
    if duration is None:
        return None

    def due(records: Sequence[HistoryRecordView], now: datetime) -> datetime | None:
        future, newest, oldest = _scan(records, now, duration, keep, tz)
        if leaf.agg is None:  # at least one: true until the newest leaves, false until one enters
            return shifted(newest, duration) if newest is not None else future
        if leaf.agg == "last":  # the newest leaving or a newer one entering changes "last"
            return _first(newest, duration, future)
        return _first(oldest, duration, future)  # any record leaving or entering changes the aggregate

    return due


def _first(inside: datetime | None, duration: timedelta, future: datetime | None) -> datetime | None:
    """The sooner of `inside` leaving the window and `future` entering it."""
    leaving = shifted(inside, duration) if inside is not None else None
    if leaving is None or (future is not None and future < leaving):
        return future
    return leaving


def _scan(
    records: Sequence[HistoryRecordView],
    now: datetime,
    duration: timedelta,
    keep: Callable[[HistoryRecordView], bool] | None,
    tz: tzinfo,
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """(soonest future match, newest and oldest match inside the window)."""
    start = now - duration
    future = newest = oldest = None
    for record in records:
        moment = parse_instant(record.time, tz)
        if moment is None:
            continue
        if moment <= start:
            break
        if keep is not None and not keep(record):
            continue
        if moment > now:
            future = moment  # newest first: the last future one seen is the soonest
        else:
            if newest is None:
                newest = moment
            oldest = moment
    return future, newest, oldest


def _last_due(
    leaf: HistoryLeaf, select: Callable[[Sequence[HistoryRecordView], datetime], Selected], tz: tzinfo
) -> Callable[[Sequence[HistoryRecordView], datetime], datetime | None]:
    """When the relative op on the newest selected record's time next changes."""
    test = cast(Comparison, leaf.test)
    rel_flip = _relative("datetime", test.op, cast(timedelta, test.value), tz)[1]

    def due(records: Sequence[HistoryRecordView], now: datetime) -> datetime | None:
        newest = next(select(records, now), None)
        return None if newest is None else rel_flip(newest[0], now)

    return due
