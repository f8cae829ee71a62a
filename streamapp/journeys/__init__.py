"""Journeys (SPEC §10): pure rules, no Faust and no I/O (but `config`, which reads the definition files).

- `definition`: parse and validate a journey's JSON into typed `nodes`, every error with its path;
- `graph`: the step graph: reachability, no loop without a pause;
- `config`: `[[journeys]]` read and checked at start-up and by `streamapp check-config`;
- `engine`: one input (entry, event, segment change, timer) for one instance: new state and actions;
- `times`: quiet hours, local times of day, date attributes; `ids`: instance and message ids, splits;
- `state`: the few dozen bytes an instance keeps beside its recipient.
"""

from streamapp.journeys.actions import (
    Action,
    Ended,
    Entered,
    GoalReached,
    Refused,
    SendMail,
    StepDone,
    UpdateAttributes,
)
from streamapp.journeys.definition import JourneyCatalog, JourneyError, parse_journey
from streamapp.journeys.engine import CompiledJourney, Recipient, Result, Versions, advance, compile_journey
from streamapp.journeys.inputs import ApiEntry, HistoryEvent, Input, SegmentEvent, Timer
from streamapp.journeys.nodes import Journey
from streamapp.journeys.state import InstanceState, decode_state, encode_state

__all__ = [
    "Action",
    "ApiEntry",
    "CompiledJourney",
    "Ended",
    "Entered",
    "GoalReached",
    "HistoryEvent",
    "Input",
    "InstanceState",
    "Journey",
    "JourneyCatalog",
    "JourneyError",
    "Recipient",
    "Refused",
    "Result",
    "SegmentEvent",
    "SendMail",
    "StepDone",
    "Timer",
    "UpdateAttributes",
    "Versions",
    "advance",
    "compile_journey",
    "decode_state",
    "encode_state",
    "parse_journey",
]
