"""The schedule (streamapp.sending.schedule): due times in memory only when near, released when due.

Pure: a fake clock, and the ledger's due index as a sorted list of the keys streamapp.sending.ledger
writes (`due_key`), read the way Ledger.due_entries reads RocksDB. The ledger's own index is tested
against a real store in tests/sending/test_ledger.py.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime, timedelta

from streamapp.core import clock
from streamapp.core.models import MessageState, Priority
from streamapp.sending.ledger import due_key
from streamapp.sending.schedule import Schedule

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
T0 = NOW.timestamp()


class Index:
    """The due index of some partitions: what the ledger keeps in RocksDB under `~d`."""

    def __init__(self) -> None:
        self.keys: dict[int, list[tuple[bytes, Priority]]] = {}

    def put(self, state: MessageState, partition: int) -> MessageState:
        due = clock.parse_time(state.nextAttemptAt or "").timestamp()
        bisect.insort(self.keys.setdefault(partition, []), (due_key(int(due * 1000), state.messageId), state.priority))
        return state

    def read(self, partition: int, start: bytes, end: bytes, limit: int) -> list[tuple[bytes, Priority]]:
        rows = self.keys.get(partition, [])
        first = bisect.bisect_left(rows, (start, ""))
        return [row for row in rows[first:] if row[0] < end][:limit]


def state(message_id: str, at: datetime, priority: Priority = "batch") -> MessageState:
    return MessageState(messageId=message_id, database="d", originalId="o", priority=priority, status="deferred",
                        createdAt="t", updatedAt="t", nextAttemptAt=clock.iso(at))  # fmt: skip


def test_messages_far_ahead_stay_out_of_memory_and_are_released_when_due() -> None:
    schedule, index = Schedule(horizon=3600), Index()
    schedule.take(0)
    for n in range(10_000):  # "2099": years ahead
        schedule.add(index.put(state(f"far{n:05d}", NOW + timedelta(days=365, seconds=n)), 0), 0)
    schedule.add(index.put(state("soon", NOW + timedelta(seconds=30)), 0), 0)
    assert schedule.window(0, index.read, now=T0) == 1 and len(schedule) == 1
    assert schedule.due(now=T0 + 29.9) == [] and schedule.due(now=T0 + 30) == [(0, "soon")]
    year = T0 + 365 * 86400
    assert schedule.window(0, index.read, now=year - 3601) == 0 and len(schedule) == 0
    loaded = schedule.window(0, index.read, now=year)  # the first hour of them
    assert loaded == 3600 and len(schedule) == 3600  # due before now + horizon
    released = schedule.due(now=year + 10)
    assert released == [(0, f"far{n:05d}") for n in range(11)]


def test_the_memory_bound_holds_and_the_rest_is_loaded_as_messages_are_released() -> None:
    schedule, index = Schedule(horizon=3600, max_in_memory=1000), Index()
    schedule.take(1)
    for n in range(2500):  # all due within the hour: more than memory may hold
        index.put(state(f"m{n:05d}", NOW + timedelta(seconds=1 + n / 1000), "campaign"), 1)
    assert schedule.window(1, index.read, now=T0) == 1000 and len(schedule) == 1000
    assert schedule.window(1, index.read, now=T0) == 0  # full
    released = [m for _, m in schedule.due({"campaign": 600}, now=T0 + 10)]
    assert released == [f"m{n:05d}" for n in range(600)]
    assert schedule.window(1, index.read, now=T0 + 10) == 600
    everything = released + [m for _, m in schedule.due(now=T0 + 10)]
    while schedule.window(1, index.read, now=T0 + 10):
        everything += [m for _, m in schedule.due(now=T0 + 10)]
    assert everything == [f"m{n:05d}" for n in range(2500)] and len(schedule) == 0


def test_an_add_before_the_cursor_goes_to_memory_one_after_it_waits_for_its_window() -> None:
    schedule, index = Schedule(horizon=60), Index()
    schedule.take(0)
    schedule.window(0, index.read, now=T0)  # cursor: T0 + 60 s
    schedule.add(index.put(state("retry", NOW + timedelta(seconds=2)), 0), 0)
    schedule.add(index.put(state("later", NOW + timedelta(seconds=120)), 0), 0)
    assert schedule.counts() == {"batch": 1}
    assert schedule.due(now=T0 + 2) == [(0, "retry")]
    assert schedule.window(0, index.read, now=T0 + 61) == 1
    assert schedule.due(now=T0 + 120) == [(0, "later")]


def test_a_message_deferred_again_past_the_cursor_is_not_released_at_its_old_time() -> None:
    schedule, index = Schedule(horizon=60), Index()
    schedule.take(0)
    schedule.window(0, index.read, now=T0)
    schedule.add(index.put(state("m", NOW + timedelta(seconds=5)), 0), 0)
    schedule.add(state("m", NOW + timedelta(seconds=500)), 0)  # written again, due later
    assert schedule.due(now=T0 + 10) == []


def test_releases_are_due_never_earlier_and_revoked_partitions_are_forgotten() -> None:
    schedule, index = Schedule(), Index()
    for partition in (0, 1, 2):
        schedule.take(partition)
    index.put(state("a", NOW + timedelta(seconds=10)), 0)
    index.put(state("b", NOW + timedelta(seconds=5)), 1)
    index.put(state("c", NOW + timedelta(seconds=1)), 2)
    for partition in (0, 1, 2):
        schedule.window(partition, index.read, now=T0)
    schedule.forget([2])
    assert schedule.loaded == {0, 1} and schedule.window(2, index.read, now=T0) == 0
    assert schedule.due(now=T0 + 4.999) == []
    assert schedule.due(now=T0 + 5) == [(1, "b")]
    assert schedule.due(now=T0 + 60) == [(0, "a")]


def test_only_as_many_are_released_as_the_dispatcher_has_room_for() -> None:
    schedule, index = Schedule(), Index()
    schedule.take(0)
    for n in range(5):
        index.put(state(f"m{n}", NOW, "campaign"), 0)
    schedule.window(0, index.read, now=T0)
    later = T0 + 1
    assert schedule.due({"campaign": 2}, now=later) == [(0, "m0"), (0, "m1")]
    assert schedule.due({"transactional": 10}, now=later) == []
    assert schedule.counts() == {"campaign": 3}
    assert schedule.due(now=later) == [(0, "m2"), (0, "m3"), (0, "m4")]
