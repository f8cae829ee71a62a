"""One recipient's instance of one journey, as stored beside the recipient: a few dozen bytes.

The state outlives its instance: an ended one (`ended` set) still holds its entry time and run
number, which re-entry rules (`never`, `cooldown`) and a goal counted after the last step need,
and the highest input position applied, which makes replays no-ops. Encoded as a MessagePack
array (times in microseconds since the epoch); the SPEC example's instance waiting at its
`wait_for` step is 27 bytes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamapp.journeys.actions import EndReason

__all__ = ["END_REASONS", "InstanceState", "decode_state", "encode_state"]

#: Stored as its index + 1 (0: still running), so the array stays short.
END_REASONS: tuple[EndReason, ...] = ("completed", "exited", "goal", "no-date", "version")


class InstanceState(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """`version`: the journey version the instance runs on; `run`: instance number, from 1; `step`: the
    current step's index (-1 once ended); `seq`: steps started; `entered`/`due`: microseconds since the
    epoch (`due` 0: waiting for nothing timed); `ended`: 0, or END_REASONS index + 1; `goal`: the
    conversion was counted; `position`: highest input position applied (-1: none); `properties`: those
    of an API entry, for the templates."""

    version: int
    run: int
    step: int
    seq: int = 0
    entered: int = 0
    due: int = 0
    ended: int = 0
    goal: bool = False
    position: int = -1
    properties: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.ended == 0

    @property
    def end_reason(self) -> EndReason | None:
        return END_REASONS[self.ended - 1] if self.ended else None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(InstanceState)


def encode_state(state: InstanceState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> InstanceState:
    """The state of `data`; msgspec.ValidationError or DecodeError if it is not one."""
    return _decoder.decode(data)
