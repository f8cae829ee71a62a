"""Scheduled and deferred messages: kept in the ledger, released by a timer when due.

Why the ledger and not a re-publish to the topic: a re-published copy would be read again at
once (Kafka has no delayed delivery), so it would have to be held in memory or re-published in a
loop; the ledger row already holds the command and `nextAttemptAt`, survives restarts through
the changelog, and moves with its partition. Each worker keeps an in-memory heap of the due
times of its own partitions: filled by one scan of a partition's ledger when the partition is
assigned (after table recovery) and by the pipeline as it schedules or defers, emptied of a
partition's entries when it is revoked. A message is released when its time has come, never
earlier, and only as fast as the dispatcher takes it: a campaign of a million rows scheduled
for 8:00 is not put in memory at once. Only (due time, partition, id) is kept per message
(about 200 bytes); the command is read back from the ledger at release.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from streamapp.core import clock
from streamapp.core.models import PRIORITIES, MessageState, Priority


class Schedule:
    def __init__(self) -> None:
        self._heaps: dict[Priority, list[tuple[float, int, str]]] = {p: [] for p in PRIORITIES}
        self._due: dict[str, tuple[float, int, Priority]] = {}  # messageId -> (due, partition, priority)
        self._order = itertools.count()
        self.loaded: set[int] = set()

    def add(self, state: MessageState, partition: int) -> None:
        due = clock.parse_time(state.nextAttemptAt).timestamp() if state.nextAttemptAt else time.time()
        self._due[state.messageId] = (due, partition, state.priority)
        heapq.heappush(self._heaps[state.priority], (due, next(self._order), state.messageId))

    def load(self, partition: int, states: Iterable[MessageState]) -> int:
        """Take over a newly assigned partition's scheduled and deferred messages."""
        count = 0
        for state in states:
            self.add(state, partition)
            count += 1
        self.loaded.add(partition)
        return count

    def forget(self, partitions: Iterable[int]) -> None:
        """A revoked partition's messages are the new owner's."""
        gone = set(partitions)
        self.loaded -= gone
        for message_id in [m for m, (_, p, _) in self._due.items() if p in gone]:
            del self._due[message_id]

    def due(self, room: Mapping[Priority, int] | None = None, now: float | None = None) -> list[tuple[int, str]]:
        """Remove and return (partition, messageId) of messages whose time has come, at most
        `room[priority]` of each priority (all when `room` is None)."""
        now = time.time() if now is None else now
        released = []
        for priority, heap in self._heaps.items():
            left = None if room is None else room.get(priority, 0)
            while heap and heap[0][0] <= now and (left is None or left > 0):
                due, _, message_id = heapq.heappop(heap)
                entry = self._due.get(message_id)
                if entry is not None and entry[0] == due:  # else superseded or forgotten
                    del self._due[message_id]
                    released.append((entry[1], message_id))
                    left = None if left is None else left - 1
        return released

    def counts(self) -> Counter[Priority]:
        return Counter(priority for _, _, priority in self._due.values())
