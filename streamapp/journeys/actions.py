"""What the engine asks for: the caller carries these out after it has stored the new state.

Every send's `message_id` is derived from the journey, the recipient, the instance and the step
sequence (`ids.message_id`), so a send repeated after a crash has the id of the first and the
send ledger refuses the copy. `seq` numbers the steps an instance has started: a step run is
identified by (instance, seq), whatever loops the journey makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from streamapp.core.models import Priority

__all__ = [
    "Action",
    "EndReason",
    "Ended",
    "Entered",
    "GoalReached",
    "Refused",
    "SendMail",
    "StepDone",
    "UpdateAttributes",
]

#: Why an instance ended: its last or `exit` step, the `exit` event, the goal with `"exit": true`,
#: a date wait on a recipient without that date, or a version no longer known.
EndReason = Literal["completed", "exited", "goal", "no-date", "version"]


@dataclass(frozen=True, slots=True)
class Entered:
    instance_id: str
    run: int


@dataclass(frozen=True, slots=True)
class Refused:
    """An API entry that cannot start an instance (409): already in it, or re-entry forbids it."""

    reason: str


@dataclass(frozen=True, slots=True)
class SendMail:
    step: str
    seq: int
    template: str
    priority: Priority
    track: bool
    message_id: str
    #: The message's `source` (SPEC §3): `journey:<name>/<step>`.
    source: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpdateAttributes:
    step: str
    seq: int
    attributes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StepDone:
    """A step finished with `outcome` (`sent`, `waited`, `event`, `timeout`, `then`, `else`,
    `branch-<n>`, `updated`, `exit`, `no-date`): `streamapp_journey_steps_total`'s labels."""

    step: str
    seq: int
    outcome: str


@dataclass(frozen=True, slots=True)
class GoalReached:
    instance_id: str


@dataclass(frozen=True, slots=True)
class Ended:
    instance_id: str
    reason: EndReason
    #: The step the instance was at, None when it ended past the last step.
    step: str | None = None


Action: TypeAlias = Entered | Refused | SendMail | UpdateAttributes | StepDone | GoalReached | Ended
