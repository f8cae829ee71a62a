"""Parse and validate a journey definition (SPEC §10) into `nodes`, collecting every error.

Like a segment definition, every problem is reported at once with the JSON Pointer of its place
(`/steps/3/timeout`), so an operator fixes the file in one go. Conditions and `where` filters
are segment conditions: `streamapp.segments.definition` parses them, and their errors keep its
paths under the journey's. Attribute values of `update` are checked as an upsert's
(`streamapp.core.validation.check_attributes`), durations by `streamapp.durations`. The step
graph is checked last (`graph.check_steps`): every target exists, every step is reachable, and
no loop runs without a pause.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from streamapp.core.models import PRIORITIES, Priority
from streamapp.core.validation import check_attributes
from streamapp.durations import parse_duration, parse_duration_offset
from streamapp.journeys.graph import check_steps
from streamapp.journeys.nodes import (
    END,
    STEP_KINDS,
    ApiTrigger,
    Branch,
    Exit,
    Goal,
    HistoryTrigger,
    If,
    Journey,
    QuietHours,
    Reentry,
    SegmentTrigger,
    Send,
    Split,
    Step,
    Trigger,
    Update,
    WaitAttribute,
    WaitDuration,
    WaitForEvent,
    WaitUntil,
)
from streamapp.segments.definition import Catalog, DefinitionError, parse_definition
from streamapp.segments.nodes import HistoryLeaf, Node
from streamapp.settings import ATTRIBUTE_TYPES, NAME_RE, AttributeType, DatabaseSettings, DeclaredProperty

__all__ = ["MAX_STEPS", "JourneyCatalog", "JourneyError", "parse_journey"]

#: Steps of one journey: an instance stores its step as an index, a metric label names each.
MAX_STEPS = 200
#: Declared properties, as for a trigger (SPEC §3).
MAX_PROPERTIES = 256
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_TOP_KEYS = frozenset(
    {"database", "description", "entry", "reentry", "exit", "goal", "quiet_hours", "properties", "steps"}
)
_STEP_KEYS: dict[str, frozenset[str]] = {
    "send": frozenset({"id", "send", "next"}),
    "wait": frozenset({"id", "wait", "next"}),
    "wait_for": frozenset({"id", "wait_for", "timeout", "on_event", "on_timeout"}),
    "if": frozenset({"id", "if", "then", "else"}),
    "split": frozenset({"id", "split"}),
    "update": frozenset({"id", "update", "next"}),
    "exit": frozenset({"id", "exit"}),
}
_TRIGGER_KINDS = ("history", "segment", "api")


class JourneyError(ValueError):
    """Every problem of a journey definition, as (JSON Pointer, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '/'}: {message}" for path, message in errors))


@dataclass(frozen=True, slots=True)
class JourneyCatalog:
    """What a journey may name: the databases, history types, the *configured* segments of each
    database (SPEC §10: journeys may use only those), the templates that exist, and the service
    zone (offset-less date-times of `update` values are in it)."""

    databases: Mapping[str, DatabaseSettings]
    history_types: Collection[str]
    segments: Mapping[str, Collection[str]]
    templates: Container[str]
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))


def parse_journey(name: str, raw: object, catalog: JourneyCatalog) -> Journey:
    """The typed journey of `raw` (the decoded JSON file), or JourneyError listing every problem."""
    parser = _Parser(catalog)
    journey = parser.journey(name, raw)
    if parser.errors or journey is None:
        raise JourneyError(parser.errors)
    return journey


def _pointer(path: str, key: object) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


class _Parser:
    """One parse: the errors found so far, and the database the journey is about."""

    def __init__(self, catalog: JourneyCatalog) -> None:
        self.catalog = catalog
        self.errors: list[tuple[str, str]] = []
        self.db: DatabaseSettings | None = None
        self.conditions = Catalog({}, ())

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def unknown_keys(self, raw: Mapping[Any, Any], path: str, allowed: Collection[str]) -> None:
        for key in raw:
            if key not in allowed:
                self.error(_pointer(path, key), "unknown key; allowed here: " + ", ".join(sorted(allowed)))

    # -- the journey -----------------------------------------------------------------------

    def journey(self, name: str, raw: object) -> Journey | None:
        if not isinstance(raw, Mapping):
            self.error("", "a journey must be a JSON object with database, entry and steps")
            return None
        self.unknown_keys(raw, "", _TOP_KEYS)
        if "description" in raw and not isinstance(raw["description"], str):
            self.error("/description", "must be a string")
        if not self.database(raw.get("database"), "database" in raw):
            return None
        entries = self.entries(raw.get("entry"), "entry" in raw)
        reentry = self.reentry(raw["reentry"]) if "reentry" in raw else Reentry()
        exit_ = self.trigger(raw["exit"], "/exit") if "exit" in raw else None
        goal = self.goal(raw["goal"]) if "goal" in raw else None
        quiet = self.quiet_hours(raw["quiet_hours"]) if "quiet_hours" in raw else None
        properties = self.properties(raw, entries)
        steps = self.steps(raw.get("steps"), "steps" in raw)
        if self.errors or entries is None or steps is None or self.db is None:
            return None
        journey = Journey(name, self.db.name, entries, steps, reentry, exit_, goal, quiet, properties)
        self.errors.extend(check_steps(journey.steps))
        return journey

    def database(self, value: object, present: bool) -> bool:
        if not present:
            self.error("/database", "missing: the database whose recipients take this journey")
            return False
        if not isinstance(value, str) or value not in self.catalog.databases:
            known = ", ".join(sorted(self.catalog.databases)) or "none"
            self.error("/database", f"unknown database {value!r} (defined: {known})")
            return False
        db = self.catalog.databases[value]
        self.db = db
        segments = self.catalog.segments.get(value, ())
        self.conditions = Catalog(
            db.attributes, self.catalog.history_types, frozenset(segments), db.auto_create_attributes
        )
        return True

    def entries(self, raw: object, present: bool) -> tuple[Trigger, ...] | None:
        if not present:
            self.error("/entry", 'missing: how recipients enter, e.g. {"history": "signup"}')
            return None
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            self.error("/entry", "must not be an empty list")
            return None
        paths = [_pointer("/entry", i) for i in range(len(items))] if isinstance(raw, list) else ["/entry"]
        found = [self.trigger(item, path, allow_api=True) for item, path in zip(items, paths, strict=True)]
        apis = [path for path, entry in zip(paths, found, strict=True) if isinstance(entry, ApiTrigger)]
        for path in apis[1:]:
            self.error(path, "a journey has at most one api entry")
        if any(entry is None for entry in found):
            return None
        return tuple(cast(list[Trigger], found))

    def reentry(self, raw: object) -> Reentry:
        if raw in ("never", "after_exit"):
            return Reentry(cast(Any, raw))
        if isinstance(raw, Mapping) and "cooldown" in raw:
            self.unknown_keys(raw, "/reentry", ("cooldown",))
            cooldown = self.duration(raw["cooldown"], "/reentry/cooldown")
            return Reentry("cooldown", cooldown or timedelta(0))
        self.error("/reentry", 'must be "never", "after_exit" or {"cooldown": DURATION}')
        return Reentry()

    def goal(self, raw: object) -> Goal | None:
        if not isinstance(raw, Mapping):
            self.error("/goal", 'must be an object such as {"history": "purchase", "within": "P14D"}')
            return None
        trigger = self.trigger(raw, "/goal", extra=("within", "exit"))
        if "within" not in raw:
            self.error("/goal/within", "missing: the window after entry in which the goal counts")
            within = None
        else:
            within = self.duration(raw["within"], "/goal/within")
        ends = raw.get("exit", False)
        if not isinstance(ends, bool):
            self.error("/goal/exit", "must be true or false")
        if trigger is None or within is None:
            return None
        return Goal(trigger, within, ends is True)

    def quiet_hours(self, raw: object) -> QuietHours | None:
        if not isinstance(raw, Mapping):
            self.error("/quiet_hours", 'must be an object {"from": "HH:MM", "to": "HH:MM"}')
            return None
        self.unknown_keys(raw, "/quiet_hours", ("from", "to"))
        start = self.clock(raw.get("from"), "/quiet_hours/from", "from" in raw)
        end = self.clock(raw.get("to"), "/quiet_hours/to", "to" in raw)
        if start is None or end is None:
            return None
        if start == end:
            self.error("/quiet_hours", "from and to are equal: the window would be empty")
            return None
        return QuietHours(start, end)

    def properties(
        self, raw: Mapping[Any, Any], entries: tuple[Trigger, ...] | None
    ) -> dict[str, DeclaredProperty] | None:
        """`{"code": "string", "amount": "float?"}`: declared as a trigger declares them (SPEC §2)."""
        if "properties" not in raw:
            return None
        declared, here = raw["properties"], "/properties"
        if entries is not None and not any(isinstance(entry, ApiTrigger) for entry in entries):
            self.error(here, 'only an {"api": true} entry carries properties')
        if not isinstance(declared, Mapping):
            self.error(here, 'must be an object such as {"code": "string", "amount": "float?"}')
            return None
        if len(declared) > MAX_PROPERTIES:
            self.error(here, f"at most {MAX_PROPERTIES} properties, not {len(declared)}")
        found: dict[str, DeclaredProperty] = {}
        for name, kind in declared.items():
            where = _pointer(here, name)
            if not isinstance(name, str) or not name.isidentifier():
                self.error(where, "a property name must be an identifier (letters, digits, _)")
            elif not isinstance(kind, str) or kind.rstrip("?") not in ATTRIBUTE_TYPES or kind.count("?") > 1:
                types = ", ".join(ATTRIBUTE_TYPES)
                self.error(where, f"expected one of {types}, optionally ending in '?', got {kind!r}")
            else:
                found[name] = DeclaredProperty(cast(AttributeType, kind.rstrip("?")), not kind.endswith("?"))
        return found

    # -- entries, exits, goals, events -----------------------------------------------------

    def trigger(
        self, raw: object, path: str, *, allow_api: bool = False, extra: Collection[str] = ()
    ) -> Trigger | None:
        kinds = _TRIGGER_KINDS if allow_api else _TRIGGER_KINDS[:2]
        if not isinstance(raw, Mapping):
            self.error(path, "must be an object with one of: " + ", ".join(kinds))
            return None
        found = [kind for kind in kinds if kind in raw]
        if len(found) != 1:
            why = "has both " + " and ".join(found) if found else "has none of the keys"
            self.error(path, f"{why}; it is exactly one of: " + ", ".join(kinds))
            if "api" in raw and not allow_api:
                self.error(_pointer(path, "api"), "only an entry can be an api call")
            return None
        kind = found[0]
        if kind == "history":
            self.unknown_keys(raw, path, ("history", "where", *extra))
            return self.history_trigger(raw, path)
        if kind == "segment":
            self.unknown_keys(raw, path, ("segment", "on", *extra))
            return self.segment_trigger(raw, path)
        self.unknown_keys(raw, path, ("api", *extra))
        if raw["api"] is not True:
            self.error(_pointer(path, "api"), "must be true")
            return None
        return ApiTrigger()

    def history_trigger(self, raw: Mapping[Any, Any], path: str) -> HistoryTrigger | None:
        """A history type and `where`, parsed as the segment condition `{"history", "where"}`."""
        condition = {key: raw[key] for key in ("history", "where") if key in raw}
        node = self.condition(condition, path)
        if not isinstance(node, HistoryLeaf):
            return None
        return HistoryTrigger(node.history, node)

    def segment_trigger(self, raw: Mapping[Any, Any], path: str) -> SegmentTrigger | None:
        name, on = raw["segment"], raw.get("on")
        known = self.catalog.segments.get(self.db.name if self.db else "", ())
        ok = True
        if not isinstance(name, str) or name not in known:
            listed = ", ".join(sorted(known)) or "none"
            self.error(
                _pointer(path, "segment"), f"unknown segment {name!r}; journeys use configured segments ({listed})"
            )
            ok = False
        if on not in ("enter", "exit"):
            what = "missing" if "on" not in raw else f"{on!r} is neither"
            self.error(_pointer(path, "on"), f'{what}: "enter" or "exit"')
            ok = False
        return SegmentTrigger(cast(str, name), on == "enter") if ok else None

    def condition(self, raw: object, path: str) -> Node | None:
        try:
            return parse_definition(raw, self.conditions)
        except DefinitionError as exc:
            self.errors.extend((path + pointer, message) for pointer, message in exc.errors)
            return None

    # -- steps -----------------------------------------------------------------------------

    def steps(self, raw: object, present: bool) -> tuple[Step, ...] | None:
        if not present or not isinstance(raw, list) or not raw:
            self.error("/steps", "missing" if not present else "must be a non-empty list of steps")
            return None
        if len(raw) > MAX_STEPS:
            self.error("/steps", f"has {len(raw)} steps; at most {MAX_STEPS} are allowed")
            return None
        index = self.step_ids(raw)
        parsed = [self.step(item, i, index, len(raw)) for i, item in enumerate(raw)]
        if any(step is None for step in parsed):
            return None
        return tuple(cast(list[Step], parsed))

    def step_ids(self, raw: list[Any]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, item in enumerate(raw):
            here = f"/steps/{i}/id"
            step_id = item.get("id") if isinstance(item, Mapping) else None
            if not isinstance(item, Mapping):
                continue  # reported by step()
            if "id" not in item:
                self.error(here, "missing: every step has an id")
            elif not isinstance(step_id, str) or not NAME_RE.match(step_id):
                self.error(here, "must match [A-Za-z0-9_-]{1,64}")
            elif step_id in index:
                self.error(here, f"duplicate id {step_id!r} (first at /steps/{index[step_id]})")
            else:
                index[step_id] = i
        return index

    def step(self, raw: object, i: int, index: Mapping[str, int], count: int) -> Step | None:
        path = f"/steps/{i}"
        if not isinstance(raw, Mapping):
            self.error(path, "must be an object with an id and one of: " + ", ".join(STEP_KINDS))
            return None
        kinds = [kind for kind in STEP_KINDS if kind in raw]
        if len(kinds) != 1:
            why = "has both " + " and ".join(kinds) if kinds else "has no step kind"
            self.error(path, f"{why}; a step is exactly one of: " + ", ".join(STEP_KINDS))
            return None
        kind = kinds[0]
        self.unknown_keys(raw, path, _STEP_KEYS[kind])
        following = i + 1 if i + 1 < count else END
        targets = _Targets(self, raw, path, index, following)
        action = _STEP_PARSERS[kind](self, raw[kind], _pointer(path, kind), raw, targets)
        step_id = raw.get("id")
        if action is None or not isinstance(step_id, str) or targets.failed:
            return None
        return Step(step_id, action)

    def send(self, raw: object, here: str, step: Mapping[str, Any], to: _Targets) -> Send | None:
        if not isinstance(raw, Mapping):
            self.error(here, 'must be an object such as {"template": "welcome"}')
            return None
        self.unknown_keys(raw, here, ("template", "priority", "track"))
        template, priority, track = raw.get("template"), raw.get("priority", "campaign"), raw.get("track", True)
        ok = True
        if not isinstance(template, str) or not NAME_RE.match(template):
            self.error(_pointer(here, "template"), "missing" if "template" not in raw else "must be a template name")
            ok = False
        elif template not in self.catalog.templates:
            needs = f"needs {template}/subject.txt and body.html in the templates folder"
            self.error(_pointer(here, "template"), f"template {template!r} does not exist ({needs})")
            ok = False
        if priority not in PRIORITIES:
            self.error(_pointer(here, "priority"), f"unknown priority {priority!r}; one of " + ", ".join(PRIORITIES))
            ok = False
        if not isinstance(track, bool):
            self.error(_pointer(here, "track"), "must be true or false")
            ok = False
        if not ok:
            return None
        return Send(cast(str, template), cast(Priority, priority), track, to.get("next"))

    def wait(
        self, raw: object, here: str, step: Mapping[str, Any], to: _Targets
    ) -> WaitDuration | WaitUntil | WaitAttribute | None:
        if isinstance(raw, str):
            duration = self.duration(raw, here)
            return WaitDuration(duration, to.get("next")) if duration is not None else None
        if isinstance(raw, Mapping) and "until" in raw:
            self.unknown_keys(raw, here, ("until",))
            at = self.clock(raw["until"], _pointer(here, "until"), True)
            return WaitUntil(at, to.get("next")) if at is not None else None
        if isinstance(raw, Mapping) and "attribute" in raw:
            self.unknown_keys(raw, here, ("attribute", "offset"))
            return self.wait_attribute(raw, here, to)
        self.error(here, 'must be a duration ("P2D"), {"until": "HH:MM"} or {"attribute": NAME, "offset"?: "-P1D"}')
        return None

    def wait_attribute(self, raw: Mapping[Any, Any], here: str, to: _Targets) -> WaitAttribute | None:
        name = raw["attribute"]
        declared = self.db.attributes if self.db else {}
        kind = declared.get(name) if isinstance(name, str) else None
        offset: timedelta | None = timedelta(0)
        if "offset" in raw:
            try:
                offset = parse_duration_offset(raw["offset"])
            except ValueError as exc:
                self.error(_pointer(here, "offset"), str(exc))
                offset = None
        if kind not in ("date", "datetime"):
            dates = sorted(n for n, k in declared.items() if k in ("date", "datetime"))
            what = f"attribute {name!r} is {kind}" if kind else f"unknown attribute {name!r}"
            listed = ", ".join(dates) or "the database declares none"
            self.error(_pointer(here, "attribute"), f"{what}; a wait needs a date or datetime attribute ({listed})")
            return None
        if offset is None:
            return None
        return WaitAttribute(cast(str, name), cast(Any, kind), offset, to.get("next"))

    def wait_for(self, raw: object, here: str, step: Mapping[str, Any], to: _Targets) -> WaitForEvent | None:
        if isinstance(raw, Mapping) and "timeout" in raw:
            self.error(_pointer(here, "timeout"), 'timeout belongs to the step: {"id", "wait_for", "timeout", ...}')
            raw = {key: value for key, value in raw.items() if key != "timeout"}
        trigger = self.trigger(raw, here)
        path = here.rsplit("/", 1)[0]
        if "timeout" not in step:
            self.error(_pointer(path, "timeout"), "missing: how long to wait for the event")
            timeout = None
        else:
            timeout = self.duration(step["timeout"], _pointer(path, "timeout"))
        on_event, on_timeout = to.get("on_event"), to.get("on_timeout")
        if trigger is None or timeout is None:
            return None
        return WaitForEvent(cast(HistoryTrigger | SegmentTrigger, trigger), timeout, on_event, on_timeout)

    def if_(self, raw: object, here: str, step: Mapping[str, Any], to: _Targets) -> If | None:
        condition = self.condition(raw, here)
        then, otherwise = to.get("then"), to.get("else")
        return If(condition, then, otherwise) if condition is not None else None

    def split(self, raw: object, here: str, step: Mapping[str, Any], to: _Targets) -> Split | None:
        if not isinstance(raw, list) or not raw:
            self.error(here, 'must be a non-empty list of {"weight": N, "next": STEP}')
            return None
        branches = [self.branch(item, _pointer(here, i), to) for i, item in enumerate(raw)]
        if any(branch is None for branch in branches):
            return None
        return Split(tuple(cast(list[Branch], branches)))

    def branch(self, raw: object, here: str, to: _Targets) -> Branch | None:
        if not isinstance(raw, Mapping):
            self.error(here, 'must be an object {"weight": N, "next": STEP}')
            return None
        self.unknown_keys(raw, here, ("weight", "next"))
        weight = raw.get("weight")
        ok = isinstance(weight, int | float) and not isinstance(weight, bool) and math.isfinite(weight) and weight > 0
        if not ok:
            self.error(_pointer(here, "weight"), "missing" if "weight" not in raw else "must be a number above 0")
        if "next" not in raw:
            self.error(_pointer(here, "next"), "missing: the step this branch leads to")
            return None
        target = to.resolve(raw["next"], _pointer(here, "next"))
        return Branch(float(cast(float, weight)), target) if ok and target is not None else None

    def update(self, raw: object, here: str, step: Mapping[str, Any], to: _Targets) -> Update | None:
        if not isinstance(raw, Mapping) or "attributes" not in raw:
            self.error(here, 'must be an object {"attributes": {NAME: VALUE, ...}}')
            return None
        self.unknown_keys(raw, here, ("attributes",))
        where = _pointer(here, "attributes")
        values = raw["attributes"]
        if isinstance(values, Mapping) and not values:
            self.error(where, "must name at least one attribute")
            return None
        assert self.db is not None
        given = dict(values) if isinstance(values, Mapping) else values
        coerced, problems = check_attributes(self.db, given, where, self.catalog.zone)
        self.errors.extend((problem.path, problem.message) for problem in problems)
        return None if problems else Update(tuple(coerced.items()), to.get("next"))

    def exit(self, raw: object, here: str, step: Mapping[str, Any], to: _Targets) -> Exit | None:
        if raw is not True:
            self.error(here, "must be true")
            return None
        return Exit()

    # -- values ----------------------------------------------------------------------------

    def duration(self, raw: object, here: str) -> timedelta | None:
        try:
            return parse_duration(raw)
        except ValueError as exc:
            self.error(here, str(exc))
            return None

    def clock(self, raw: object, here: str, present: bool) -> time | None:
        match = _CLOCK.fullmatch(raw) if isinstance(raw, str) else None
        if match is None:
            why = f"{raw!r} is not a local time HH:MM (00:00 to 23:59)" if present else "missing: a local time HH:MM"
            self.error(here, why)
            return None
        return time(int(match.group(1)), int(match.group(2)))


class _Targets:
    """The step names one step leads to, resolved to indexes; a missing key means the following step."""

    def __init__(self, parser: _Parser, raw: Mapping[str, Any], path: str, index: Mapping[str, int], following: int):
        self.parser, self.raw, self.path, self.index, self.following = parser, raw, path, index, following
        self.failed = False

    def get(self, key: str) -> int:
        if key not in self.raw:
            return self.following
        target = self.resolve(self.raw[key], _pointer(self.path, key))
        return END if target is None else target

    def resolve(self, name: object, here: str) -> int | None:
        if isinstance(name, str) and name in self.index:
            return self.index[name]
        self.failed = True
        known = ", ".join(sorted(self.index)) or "none"
        self.parser.error(here, f"names no step: {name!r} (steps: {known})")
        return None


_STEP_PARSERS: dict[str, Any] = {
    "send": _Parser.send,
    "wait": _Parser.wait,
    "wait_for": _Parser.wait_for,
    "if": _Parser.if_,
    "split": _Parser.split,
    "update": _Parser.update,
    "exit": _Parser.exit,
}
