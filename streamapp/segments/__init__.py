"""Segments (SPEC §9): pure rules, no Faust and no I/O.

- `definition`: parse and validate a JSON/TOML definition into typed `nodes`, every error with its path;
- `graph`: referenced segments, cycles, dependency order, fast-path flags;
- `evaluate`: one recipient's membership and the next moment time alone could change it;
- `tracker`: incremental membership of a database's recipients, change events, due-time heap, builds;
- `state`: the few bytes per recipient the agent stores beside the row.
"""

from streamapp.segments.definition import Catalog, DefinitionError, parse_definition, to_json
from streamapp.segments.evaluate import Compiled, compile_definition, evaluate, next_flip
from streamapp.segments.graph import (
    CycleError,
    check_acyclic,
    dependency_order,
    find_cycle,
    is_attribute_only,
    is_time_relative,
    references,
)
from streamapp.segments.nodes import Node
from streamapp.segments.state import SegmentState, SlotTable, decode_state, encode_state
from streamapp.segments.tracker import Build, MembershipChange, SegmentTracker
from streamapp.segments.view import HistoryRecordView, RecipientView

__all__ = [
    "Build",
    "Catalog",
    "Compiled",
    "CycleError",
    "DefinitionError",
    "HistoryRecordView",
    "MembershipChange",
    "Node",
    "RecipientView",
    "SegmentState",
    "SegmentTracker",
    "SlotTable",
    "check_acyclic",
    "compile_definition",
    "decode_state",
    "dependency_order",
    "encode_state",
    "evaluate",
    "find_cycle",
    "is_attribute_only",
    "is_time_relative",
    "next_flip",
    "parse_definition",
    "references",
    "to_json",
]
