"""A recipient's segment state as stored beside its row: memberships and next due time, a few bytes.

Memberships are a bitmask over the database's segment *slots* (`SlotTable`, which the caller
stores once per database), so a row costs one bit per segment, not a name. A slot freed by a
removed segment may be given to a new one; `layout` (the table's version when the state was
written) tells a restore which bits predate their slot's current owner and must be dropped.
Encoded as a MessagePack array: `[b"\\x05", 3, 1764590400000000]` is 14 bytes; a recipient
in no segment with nothing due is 5 bytes.
"""

from __future__ import annotations

import msgspec

__all__ = ["SegmentState", "SlotTable", "decode_state", "encode_state", "mask_from_bytes", "mask_to_bytes"]


class SegmentState(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """`members`: little-endian bitmask over slots; `layout`: the SlotTable version it was written
    under; `due`: next flip in microseconds since the epoch, 0 for none."""

    members: bytes = b""
    layout: int = 0
    due: int = 0


class SlotTable(msgspec.Struct, frozen=True):
    """Segment name -> (slot, version the slot was given at); `version` grows with every new segment."""

    version: int = 0
    slots: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SegmentState)


def encode_state(state: SegmentState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> SegmentState:
    return _decoder.decode(data)


def mask_to_bytes(mask: int) -> bytes:
    return mask.to_bytes((mask.bit_length() + 7) // 8, "little")


def mask_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "little")
