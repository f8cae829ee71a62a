"""Cancelling a batch (SPEC §4 `POST /api/v1/batches/{batchId}/cancel`): a durable marker in each ledger
partition, then the batch's waiting rows there become `failed` (reason `cancelled`).

Why a marker per ledger partition: a batch's messages live on every partition (each on its recipient's),
and each partition's owner decides alone what it sends. The marker `~x<batchId>` is a bookkeeping row of
the ledger (streamapp.sending.ledger), so it is in the same changelog as the rows it stops: it survives a
restart and moves with its partition. The owner writes it, and the cancel is answered only once every
partition's changelog acknowledged it. From then on nothing more of the batch is sent:

- the pipeline asks `cancelled` before it records a message (a message still unread in Kafka, or queued
  in memory, or released by the schedule, is recorded `failed` instead of `scheduled` or sent), and again
  right before SMTP (one that waited for its recipient);
- the sweep rewrites the batch's `scheduled` and `deferred` rows as `failed` at once (their status then
  says so before their time comes); a row the sweep missed (the worker died meanwhile) is caught by the
  pipeline when the schedule releases it, and the new owner resumes the sweep (`resume`).

A message whose SMTP transaction had begun when the marker was written may still be sent: at most one
per sender task of the partition's owner (docs/sending.md). A row already `sent` stays sent. Each row is
rewritten with Ledger.put, so the batch's counters move from `scheduled` to `failed` in the same write
and keep summing to its total.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from streamapp.core import clock
from streamapp.core.ids import batch_prefix
from streamapp.core.models import MessageState, encode
from streamapp.sending.ledger import Ledger

log = logging.getLogger(__name__)

#: Key prefix of the markers (a ledger bookkeeping row: `~`, which sorts after every message id).
CANCELLED = b"~x"
REASON = "cancelled"
#: Rows read, and rewritten concurrently (one group commit), per step of a sweep.
SWEEP_SLICE = 500


class CancelMarker(msgspec.Struct, omit_defaults=True):
    """A batch was cancelled in this partition at `at`; `swept`: its waiting rows were all rewritten."""

    at: str
    swept: bool = False


_marker = msgspec.msgpack.Decoder(CancelMarker)


def marker_key(batch_id: str) -> bytes:
    return CANCELLED + batch_id.encode()


def cancelled_state(state: MessageState, at: str) -> MessageState:
    """The row of a waiting message once its batch is cancelled: final, without its command."""
    return msgspec.structs.replace(state, status="failed", reason=REASON, updatedAt=at, nextAttemptAt=None,
                                   command=None)  # fmt: skip


class BatchCancels:
    """The cancel markers and sweeps of the partitions this worker's send engine owns.

    `owns(partition)` says whether the partition is still this worker's (a sweep stops when it moved);
    `spawn` runs a background coroutine (the engine's `add_future`).
    """

    def __init__(
        self, ledger: Ledger, owns: Callable[[int], bool], spawn: Callable[[Coroutine[Any, Any, None]], Any]
    ) -> None:
        self.ledger = ledger
        self.owns = owns
        self.spawn = spawn
        self._sweeping: set[tuple[int, str]] = set()

    def cancelled(self, partition: int, batch_id: str | None) -> bool:
        """Whether the batch is cancelled in `partition` (one RocksDB read; False for a message of no batch)."""
        return batch_id is not None and self.ledger.store.get(partition, marker_key(batch_id)) is not None

    def marker(self, partition: int, batch_id: str) -> CancelMarker | None:
        raw = self.ledger.store.get(partition, marker_key(batch_id))
        return _marker.decode(raw) if raw is not None else None

    async def cancel(self, partition: int, batch_id: str) -> CancelMarker:
        """Write the marker (once: a second cancel finds it) and return once the changelog has it; the sweep
        of the waiting rows goes on in the background."""
        await self.ledger.prepare(partition)  # a rebuild of old bookkeeping would drop a marker written before it
        marker = self.marker(partition, batch_id)
        if marker is None:
            marker = CancelMarker(at=clock.now_iso())
            await self.ledger.writer.write(partition, {marker_key(batch_id): encode(marker)})
            log.info("batch %s cancelled in partition %d", batch_id, partition)
        if not marker.swept:
            self._start(partition, batch_id)
        return marker

    def resume(self, partition: int) -> None:
        """A partition taken over: finish the sweeps its previous owner left (markers not yet `swept`)."""
        for key, raw in self.ledger.store.items(partition, CANCELLED):
            if not _marker.decode(raw).swept:
                self._start(partition, key[len(CANCELLED) :].decode())

    def _start(self, partition: int, batch_id: str) -> None:
        if (partition, batch_id) not in self._sweeping:
            self._sweeping.add((partition, batch_id))
            self.spawn(self._sweep_logged(partition, batch_id))

    async def _sweep_logged(self, partition: int, batch_id: str) -> None:
        try:
            swept = await self.sweep(partition, batch_id)
            log.info("batch %s: %d waiting message(s) of partition %d cancelled", batch_id, swept, partition)
        except Exception:
            log.exception("sweep of cancelled batch %s in partition %d stopped", batch_id, partition)
        finally:
            self._sweeping.discard((partition, batch_id))

    async def sweep(self, partition: int, batch_id: str) -> int:
        """Rewrite the batch's waiting rows of `partition` as cancelled, a slice at a time (the loop stays
        free); mark the marker `swept` at the end. Stops, unmarked, when the partition moved."""
        prefix, start, swept = batch_prefix(partition, batch_id), None, 0
        while self.owns(partition):
            rows = self.ledger.store.items(partition, prefix, start=start)
            keys = [key for key, _ in itertools.islice(rows, SWEEP_SLICE)]
            if not keys:
                marker = self.marker(partition, batch_id)
                if marker is not None and self.owns(partition):
                    done = msgspec.structs.replace(marker, swept=True)
                    await self.ledger.writer.write(partition, {marker_key(batch_id): encode(done)})
                return swept
            results = await asyncio.gather(*(self._fail_if_waiting(partition, key.decode()) for key in keys))
            swept += sum(results)
            start = keys[-1] + b"\x00"
        return swept

    async def _fail_if_waiting(self, partition: int, message_id: str) -> bool:
        """Read and rewrite with no pause in between (Ledger.put writes RocksDB before its first await), so a
        row the pipeline recorded `sent` meanwhile is never overwritten."""
        state = self.ledger.get(partition, message_id)
        if state is None or not state.waiting():
            return False
        await self.ledger.put(partition, cancelled_state(state, clock.now_iso()))
        return True
