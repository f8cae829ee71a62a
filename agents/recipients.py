"""The recipient-commands agent: decode each event and apply it (streamapp.recipients.apply).

Commands arrive in batches, one Kafka event per partition chunk, and are applied in order, so
writes for one recipient keep the order the API or the import produced them in. A bad event is
logged, counted and skipped: it never stops the agent.

The agent is also the one writer of the partition's segment state (streamapp.segments.engine):
after the commands, it re-evaluates the recipients they wrote (and on a `SegmentTick`, fires the
flips due and feeds a build slice), publishes the membership changes, and flushes the segment
states with the rows, in the same event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from streamapp import metrics
from streamapp.core.models import SegmentTick, decode_batch
from streamapp.kafka.gaps import OffsetTracker
from streamapp.recipients.apply import Chunks, apply_all
from streamapp.runtime import StreamApp

log = logging.getLogger(__name__)


def register(sa: StreamApp) -> None:
    """Attach the agent to the app."""

    offsets = OffsetTracker()
    idempotency = sa.sending.idempotency if sa.sending is not None else None

    async def forget(revoked: list[tuple[str, int]]) -> None:
        offsets.forget(partition for _, partition in revoked)

    sa.kafka.on_revoked(forget)

    @sa.faust.agent(sa.recipient_commands, name="apply-recipient-commands")  # type: ignore[untyped-decorator]
    async def apply_recipient_commands(stream: Any) -> AsyncIterator[None]:
        async for event in stream.events():
            skipped = offsets.seen(event.message.tp, event.message.offset)
            if skipped is not None:  # an alarm: streamapp.kafka.transport keeps records from skipping agents
                log.error("%s: offsets %d..%d skipped the agent", event.message.tp, skipped[0], skipped[1] - 1)
                metrics.COMMAND_RECORDS_SKIPPED.inc(skipped[1] - skipped[0])
            try:
                batch = decode_batch(event.value)
            except msgspec.DecodeError as exc:
                log.error("skipping undecodable command batch at %s: %s", event.message.tp, exc)
                metrics.COMMANDS.labels(outcome="invalid").inc()
                continue
            partition = event.message.partition
            segments = await sa.segments.partition(partition)
            chunks = Chunks.open(sa.recipients, sa.history, sa.batches, partition, idempotency)
            result = apply_all(chunks, batch.commands, event.message.offset)
            ticks = sum(1 for command in batch.commands if isinstance(command, SegmentTick))
            states = await sa.segments.after_event(
                segments, chunks.recipients, chunks.history, chunks.touched(), chunks.replayed, tick=ticks > 0
            )
            await chunks.flush()
            await states.flush()
            metrics.COMMANDS.labels(outcome="applied").inc(len(batch.commands) - ticks - result.skipped)
            metrics.COMMANDS.labels(outcome="failed").inc(result.failed)  # oversize is counted in apply_all
            yield None
