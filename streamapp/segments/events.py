"""Membership changes as events (SPEC §9 "Membership changes are events"), for the journeys of SPEC §10.

One record per recipient and segment entered or left, on `<service id>-segment-changes`, keyed by
the recipient key (`database/originalId`) in the recipient's partition, so a consumer of that
partition sees a recipient's changes in the order they happened, beside the recipient's own state.

Delivery is at-least-once: the agent awaits the acknowledgement of an event's changes before it
writes the segment state that records them, so a crash in between re-evaluates, finds the change
again and publishes it again (with a later `at`); a consumer treats "entered" of a segment it
already saw entered as a repeat.
"""

from __future__ import annotations

import msgspec

__all__ = ["SegmentChange", "decode_change", "encode_change"]


class SegmentChange(msgspec.Struct, kw_only=True, frozen=True):
    """A recipient entered (`entered`) or left a segment at `at` (UTC ISO 8601)."""

    database: str
    originalId: str
    segment: str
    entered: bool
    at: str


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SegmentChange)


def encode_change(change: SegmentChange) -> bytes:
    return _encoder.encode(change)


def decode_change(data: bytes) -> SegmentChange:
    return _decoder.decode(data)
