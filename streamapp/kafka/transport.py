"""Faust's aiokafka transport with the consumer streamapp needs: no record skips an agent.

Five changes to faust-streaming 0.15's consumer (hence the pin):

- **A short fetch long-poll.** Faust hard-codes `fetch_max_wait_ms=1500`. aiokafka re-fetches a
  partition only after its buffered records are consumed, and waits for the in-flight long-poll
  first; once producers go quiet, every catch-up step then stalls up to 1.5 s (measured: two
  1.1 s pauses in a 300,000-row batch upsert). 100 ms bounds that stall at the cost of more idle
  fetch requests.
- **New partitions are held back until they are sought and the rebalance is over.** Faust's
  recovery resumes fetching the stream partitions a worker is assigned *before* it seeks them to
  their committed offsets (`Recovery.on_recovery_completed`), and once the seek is done
  `flow_control.resume()` empties every agent's buffer: the records the fetcher handed over in
  between were dropped there unprocessed, and the consumer had already counted them as read. A
  held-back partition's records stay in aiokafka's buffer, its position unmoved, until released.
- **A commit never passes an offset that was not acknowledged.** Faust's `_new_offset` commits over
  a hole at the committed offset (it tests `min(acked) - committed > 1`, but the committed offset
  is the next one to read) and over the "gaps" it infers from jumps in read offsets, including the
  jump a seek in the middle of a fetched batch fakes. Our source topics are neither compacted nor
  transactional, so every offset between two records holds one: a commit passes only offsets that
  were acknowledged, from where the partition was sought (or the first offset the log still has).
- **Recovery never seeks to a negative offset** (`seekable`), which crashed a worker.
- **Stream and changelog partitions take turns.** aiokafka hands out a call's records from its
  buffered fetches in the order they arrived; a standby replica's changelog traffic kept the
  agents' partitions waiting for over a minute after a rebalance.

docs/architecture.md ("Why no record skips an agent") tells how the skipped records were found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)

FETCH_MAX_WAIT_MS = 100
#: The wait of a fetch while every active partition is held back (aiokafka reads "none" as "all").
HELD_BACK_WAIT = 0.05


class ConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer

    async def seek_wait(self, partitions: Mapping[Any, Any]) -> None:
        """Faust's seek, with every offset one aiokafka accepts (`seekable`)."""
        await super().seek_wait(seekable(partitions))


def seekable(partitions: Mapping[Any, Any]) -> dict[Any, int]:
    """`partitions` with an offset below 0 (or none) replaced by 0: read from the start of the log.

    Faust's recovery seeks each changelog partition to the later of its persisted offset and the
    log's first offset minus one, and turns only -1 into 0. A partition with nothing persisted
    whose first offset the broker did not give (-1, seen right after a broker restart) makes -2,
    aiokafka raises ValueError("Offset must be a positive integer") and the worker crashes in the
    middle of a rebalance (seen twice in eight chaos runs). From 0, the consumer reads whatever the
    log still holds (an offset before its start resets to the earliest), as for -1.
    """
    fixed = {tp: offset if isinstance(offset, int) and offset >= 0 else 0 for tp, offset in partitions.items()}
    if odd := {tp: offset for tp, offset in partitions.items() if fixed[tp] != offset}:
        log.warning("seeking from the start of the log instead of the invalid offsets %s", odd)
    return fixed


class Consumer(driver.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer, holding back unsought partitions and committing only acknowledged offsets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Stream partitions sought to their committed offsets since the last assignment.
        self._sought: set[Any] = set()
        #: The first offset of each stream partition handed to Faust since its seek.
        self._first: dict[Any, int] = {}
        #: Whether the next fetch serves stream partitions before changelog ones (they take turns).
        self._streams_turn = False
        super().__init__(*args, **kwargs)

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # -- holding back partitions until they are sought ----------------------------------------

    def _released(self, tp: Any) -> bool:
        return bool(self._is_changelog_tp(tp) or (tp in self._sought and not self.app.rebalancing))

    async def _getmany(self, active_partitions: set[Any] | None, timeout: float) -> Any:  # noqa: ASYNC109 (Faust's)
        """Records of released partitions, streams and changelogs served first in turn; note the first
        offset of each stream partition since its seek."""
        if active_partitions is None:  # a client-only app
            return await super()._getmany(None, timeout)
        released = {tp for tp in active_partitions if self._released(tp)}
        if not released:
            await asyncio.sleep(min(timeout, HELD_BACK_WAIT))
            return {}
        records = await self._in_turn(released, timeout)
        for tp, batch in records.items():
            if batch and not self._is_changelog_tp(tp):
                self._first.setdefault(tp, batch[0].offset)
        return records

    async def _in_turn(self, released: set[Any], timeout: float) -> Any:  # noqa: ASYNC109 (Faust's)
        """What aiokafka holds for one group (stream or changelog partitions, in turn), else for all.

        aiokafka hands out at most `broker_max_poll_records` records a call, from its buffered fetches
        in the order they arrived. A standby replica's changelog fetches (up to 4 MB a partition)
        filled every call for a minute after a rebalance while the agents' partitions waited.
        """
        self._streams_turn = not self._streams_turn
        streams = {tp for tp in released if not self._is_changelog_tp(tp)}
        first = streams if self._streams_turn else released - streams
        if first and first != released:
            records = await super()._getmany(first, 0)  # only what was fetched already: no wait
            if records:
                return records
        return await super()._getmany(released, timeout)

    async def perform_seek(self) -> None:
        """Seek every assigned partition to its committed offset (as Faust does); the stream partitions are
        released once the rebalance is over.

        A seek that a rebalance overtook (Faust also seeks from its fetch loop while a rebalance
        stops the flow) read the offsets of the old assignment: its bookkeeping is dropped.
        """
        generation = self.app.consumer_generation_id
        committed = await self.seek_to_committed()
        if self.app.consumer_generation_id != generation:
            log.info("a seek begun before a rebalance ended after it; the next one counts")
            return
        self._read_offset.update({tp: o if o is not None and o >= 0 else None for tp, o in committed.items()})
        self._committed_offset.update({tp: o or None for tp, o in committed.items() if o is not None})
        self._sought.update(tp for tp in committed if not self._is_changelog_tp(tp))

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        self._forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        self._forget(list(self._sought | set(self._first)))  # a new generation: each partition is sought again
        await super().on_partitions_assigned(assigned, generation_id)

    def _forget(self, tps: Iterable[Any]) -> None:
        for tp in tps:
            self._sought.discard(tp)
            self._first.pop(tp, None)

    # -- committing only acknowledged offsets --------------------------------------------------

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit: the end of the run of acknowledged offsets from where `tp` stands, or None."""
        acked = self._acked[tp]
        start = self._start(tp)
        if not acked or start is None:
            return None
        done: set[int] = self._acked_index[tp]
        offset = start
        while offset in done:
            offset += 1
        self._gap.pop(tp, None)  # inferred from read offsets: never an offset without a record here
        done.difference_update(o for o in acked if o < offset)
        acked[:] = [o for o in acked if o >= offset]
        return offset if offset > start else None

    def _start(self, tp: Any) -> int | None:
        """Where `tp` stands: its committed offset, or the first offset read since the seek if later.

        The first offset read is later only when the log no longer holds the committed one
        (retention); None until the partition was sought or read.
        """
        committed: int | None = self._committed_offset[tp]
        first = self._first.get(tp)
        if committed is None or first is None:
            return first if committed is None else committed
        return max(committed, first)


class Transport(driver.Transport):  # type: ignore[misc]
    Consumer = Consumer


def install(app: Any) -> None:
    """Use this transport for the app's consumer."""
    app.transport = Transport(app.conf.broker_consumer, app)
