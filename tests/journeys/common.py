"""Shared by the journey tests: a schema, a catalog, the SPEC §10 example, and plain recipient views."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import tests.segments.test_evaluate as segment_views
from streamapp.journeys.definition import JourneyCatalog, parse_journey
from streamapp.journeys.engine import CompiledJourney, Recipient, Versions, compile_journey
from streamapp.journeys.nodes import Journey
from streamapp.settings import DEFAULT_HISTORY_TYPES, DatabaseSettings
from tests.segments.test_evaluate import View as View  # the segment tests' recipient view, re-exported

TZ = ZoneInfo("Europe/Stockholm")
#: A Friday, 13:00 in Stockholm.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MEMBERS = DatabaseSettings(
    "members",
    False,
    {
        "firstname": "string",
        "score": "int",
        "coupon_sent": "bool",
        "birthday": "date",
        "renewal": "datetime",
        "language": "string",
    },
)
#: A database whose recipients carry their own time zone.
ABROAD = DatabaseSettings("abroad", False, {"timezone": "string", "birthday": "date"})
TEMPLATES = frozenset({"welcome", "nudge", "tips", "thanks", "coupon"})
CATALOG = JourneyCatalog(
    {"members": MEMBERS, "abroad": ABROAD},
    DEFAULT_HISTORY_TYPES,
    {"members": {"vip", "churned"}, "abroad": set()},
    TEMPLATES,
    TZ,
)
RECIPIENT = Recipient(b"members/ann", 3)

#: SPEC §10's example, verbatim.
SPEC_EXAMPLE: dict[str, Any] = {
    "database": "members",
    "entry": {"history": "signup"},
    "reentry": {"cooldown": "P30D"},
    "exit": {"history": "return"},
    "goal": {"history": "purchase", "within": "P14D"},
    "quiet_hours": {"from": "21:00", "to": "08:00"},
    "steps": [
        {"id": "hello", "send": {"template": "welcome", "priority": "batch"}},
        {"id": "pause", "wait": "P2D"},
        {"id": "engaged", "if": {"history": "mail.opened", "within": "P2D"}, "then": "tips", "else": "nudge"},
        {"id": "nudge", "send": {"template": "nudge"}, "next": "ask"},
        {"id": "tips", "send": {"template": "tips"}, "next": "ask"},
        {
            "id": "ask",
            "wait_for": {"history": "purchase"},
            "timeout": "P3D",
            "on_event": "thanks",
            "on_timeout": "offer",
        },
        {"id": "offer", "split": [{"weight": 50, "next": "coupon"}, {"weight": 50, "next": "end"}]},
        {"id": "coupon", "update": {"attributes": {"coupon_sent": True}}, "next": "send-coupon"},
        {"id": "send-coupon", "send": {"template": "coupon"}, "next": "end"},
        {"id": "thanks", "send": {"template": "thanks"}},
        {"id": "end", "exit": True},
    ],
}


def example(**changes: Any) -> dict[str, Any]:
    """A deep copy of the SPEC example with top-level keys replaced (None removes one)."""
    raw = copy.deepcopy(SPEC_EXAMPLE)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def journey(raw: Mapping[str, Any], name: str = "j") -> Journey:
    return parse_journey(name, raw, CATALOG)


def versions(raw: Mapping[str, Any], name: str = "j", version: int = 1, zone_attribute: str | None = None) -> Versions:
    return Versions(name, compiled(raw, name, version, zone_attribute))


def compiled(
    raw: Mapping[str, Any], name: str = "j", version: int = 1, zone_attribute: str | None = None
) -> CompiledJourney:
    return compile_journey(journey(raw, name), version, TZ, zone_attribute)


@dataclass
class Record(segment_views.Record):
    """A history record as the segment tests make it, dated by default."""

    time: str = "2026-11-27T12:00:00+00:00"

    def member_of(self, segment: str) -> bool:
        return segment in self.segments
