"""Ids and draws derived from a journey, a recipient and an instance: the same on every worker, every replay.

A send's message id has the ledger's shape (`streamapp.core.ids`: 4 digits of partition, 12 hex
digits of milliseconds, 16 hex digits), so `GET /api/v1/messages/{id}` finds its partition from
the id. Its time part is the instance's entry, not the send's: a send run again after a crash, at
another moment, must get the same id for the ledger to refuse the copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["instance_id", "message_id", "split_draw"]

_UNIT = float(1 << 64)


def _digest(*parts: bytes | str | int, size: int = 8) -> bytes:
    data = b"\0".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return hashlib.blake2b(data, digest_size=size).digest()


def instance_id(journey: str, recipient: bytes, run: int) -> str:
    """20 hex digits naming instance `run` of `journey` for the recipient key."""
    return _digest(b"instance", journey, recipient, run, size=10).hex()


def message_id(journey: str, recipient: bytes, partition: int, run: int, entered_ms: int, step: str, seq: int) -> str:
    """The id of the message step `step`, started as the instance's `seq`-th step, sends."""
    derived = _digest(b"message", journey, recipient, run, step, seq).hex()
    return f"{partition:04d}{entered_ms & 0xFFFFFFFFFFFF:012x}{derived}"


def split_draw(journey: str, step: str, recipient: bytes, weights: Sequence[float]) -> int:
    """The branch a recipient takes: deterministic per recipient, journey and step, proportional to `weights`."""
    point = int.from_bytes(_digest(b"split", journey, step, recipient), "big") / _UNIT * sum(weights)
    total = 0.0
    for index, weight in enumerate(weights):
        total += weight
        if point < total:
            return index
    return len(weights) - 1
