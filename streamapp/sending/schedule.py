"""Scheduled and deferred messages: kept in the ledger, released by a timer when due.

Why the ledger and not a re-publish to the topic: a re-published copy would be read again at
once (Kafka has no delayed delivery), so it would have to be held in memory or re-published in a
loop; the ledger row already holds the command and `nextAttemptAt`, survives restarts through
the changelog, and moves with its partition.

Only what is due soon is in memory. The ledger keeps a due-time index of its waiting rows
(streamapp.sending.ledger: `~d<due ms><messageId>`, in due order); per partition this schedule
has a cursor into it: every entry before the cursor is in the in-memory heap (or was released),
none after it. `window` moves the cursor on to HORIZON_SECONDS ahead, at most LOAD_BATCH entries a
call and never past MAX_IN_MEMORY entries held, so ten million messages scheduled for 2099 cost no
memory, and a million due at 8:00 enter memory only as fast as they are released. `add` (the
pipeline, after writing a row that waits) puts an entry in memory only when it falls before the
cursor; one after it is read from the index when its window comes. A partition's cursor and
entries are dropped when it is revoked. Only (due time, id) is kept per message in memory; the
command is read back from the ledger at release.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from streamapp.core import clock
from streamapp.core.models import PRIORITIES, MessageState, Priority
from streamapp.sending.ledger import DUE, due_bound, due_key, due_of

#: Due times at most this far ahead are loaded into memory.
HORIZON_SECONDS = 3600.0
#: Index entries read in one `window` call (a few milliseconds of RocksDB reads).
LOAD_BATCH = 5000
#: Entries held in memory at most, over all partitions (about 200 bytes each).
MAX_IN_MEMORY = 200_000

#: Reads up to `limit` (index key, priority) of a partition's due index in [start, end).
ReadIndex = Callable[[int, bytes, bytes, int], list[tuple[bytes, Priority]]]


class Schedule:
    def __init__(self, horizon: float = HORIZON_SECONDS, max_in_memory: int = MAX_IN_MEMORY) -> None:
        self.horizon = horizon
        self.max_in_memory = max_in_memory
        self._heaps: dict[Priority, list[tuple[float, int, str]]] = {p: [] for p in PRIORITIES}
        self._due: dict[str, tuple[float, int, Priority]] = {}  # messageId -> (due, partition, priority)
        self._order = itertools.count()
        #: Per partition taken over: every index entry below the cursor is in memory or released.
        self.cursors: dict[int, bytes] = {}

    @property
    def loaded(self) -> set[int]:
        return set(self.cursors)

    def __len__(self) -> int:
        return len(self._due)

    def add(self, state: MessageState, partition: int) -> None:
        """A row that waits was written: in memory if its index entry is before the partition's cursor and
        memory has room; with memory full, the cursor moves back to it, so a later window reads it (an
        audience send writes its members' rows faster than they are sent)."""
        due = clock.parse_time(state.nextAttemptAt).timestamp() if state.nextAttemptAt else 0.0
        cursor, key = self.cursors.get(partition), due_key(int(due * 1000), state.messageId)
        before = cursor is not None and key < cursor
        if before and (len(self._due) < self.max_in_memory or state.messageId in self._due):
            self._push(due, partition, state.priority, state.messageId)
            return
        self._due.pop(state.messageId, None)  # an older entry in memory is superseded
        if before:
            self.cursors[partition] = key

    def take(self, partition: int) -> None:
        """Start a newly assigned partition: nothing of its index is in memory yet."""
        self.cursors[partition] = DUE

    def window(self, partition: int, read: ReadIndex, now: float | None = None) -> int:
        """Load the partition's index entries due within the horizon, within the bounds; how many."""
        cursor = self.cursors.get(partition)
        if cursor is None:
            return 0
        room = min(LOAD_BATCH, self.max_in_memory - len(self._due))
        if room <= 0:
            return 0
        now = time.time() if now is None else now
        end = due_bound(int((now + self.horizon) * 1000))
        if cursor >= end:
            return 0
        entries = read(partition, cursor, end, room)
        for key, priority in entries:
            due, message_id = due_of(key)
            self._push(due, partition, priority, message_id)
        self.cursors[partition] = entries[-1][0] + b"\x00" if len(entries) == room else end
        return len(entries)

    def _push(self, due: float, partition: int, priority: Priority, message_id: str) -> None:
        self._due[message_id] = (due, partition, priority)
        heapq.heappush(self._heaps[priority], (due, next(self._order), message_id))

    def forget(self, partitions: Iterable[int]) -> None:
        """A revoked partition's messages are the new owner's."""
        gone = set(partitions)
        for partition in gone:
            self.cursors.pop(partition, None)
        for message_id in [m for m, (_, p, _) in self._due.items() if p in gone]:
            del self._due[message_id]
        if gone:
            self._compact()

    def _compact(self) -> None:
        """Drop heap entries that no longer name a message in memory (forgotten, superseded)."""
        for priority, heap in self._heaps.items():
            kept = [e for e in heap if self._due.get(e[2], (None,))[0] == e[0]]
            if len(kept) != len(heap):
                heapq.heapify(kept)
                self._heaps[priority] = kept

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
        """Entries in memory by priority (the ledger's `~w` row counts every waiting message)."""
        return Counter(priority for _, _, priority in self._due.values())
