"""One partition's segment state (streamapp.segments.partition): builds under writes, reloads, replays.

The stores are dicts with the interface of streamapp.kafka.store (rows by key, in key order); the
partition's code, the tracker and the evaluation are the real ones. Each check compares with a
brute-force evaluation of the definition over the rows.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from streamapp.core.keys import recipient_key
from streamapp.core.models import HistoryRecord, Recipient, encode
from streamapp.segments import partition as partition_module
from streamapp.segments.catalog import SegmentEntry, fingerprint
from streamapp.segments.definition import Catalog, parse_definition
from streamapp.segments.graph import references
from streamapp.segments.partition import PartitionSegments
from streamapp.segments.state import decode_state
from streamapp.tables.segments import built_key

TZ = ZoneInfo("Europe/Stockholm")
T0 = datetime(2027, 6, 15, 9, 0, tzinfo=UTC)
SCHEMA = Catalog({"score": "int", "zip": "string"}, ("purchase", "visit"), {"high", "rich", "fresh"}, False)


class Rows:
    """A table partition as a dict: the reads of streamapp.kafka.store.Store, and its transactions."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def items(self, partition: int, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        for key in sorted(k for k in self.rows if k.startswith(prefix) and (start is None or k >= start)):
            yield key, self.rows[key]

    def transaction(self, partition: int) -> Tx:
        return Tx(self)


class Tx:
    def __init__(self, store: Rows) -> None:
        self.store = store
        self.pending: dict[bytes, bytes | None] = {}
        self.loaded: dict[bytes, bytes | None] = {}

    def prefetch(self, keys: list[bytes]) -> None:
        self.loaded.update({k: self.store.rows.get(k) for k in keys})

    def get(self, key: bytes) -> bytes | None:
        return self.pending[key] if key in self.pending else self.store.rows.get(key)

    def set(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value

    def flush(self) -> None:
        for key, value in self.pending.items():
            if value is None:
                self.store.rows.pop(key, None)
            else:
                self.store.rows[key] = value
        self.pending = {}


def entry(name: str, raw: dict[str, Any]) -> SegmentEntry:
    node = parse_definition(raw, SCHEMA)
    return SegmentEntry("members", name, "api", raw, node, None, 1, 0, fingerprint(node), references(node))


HIGH = entry("high", {"attribute": "score", "op": "gte", "value": 10})
RICH = entry("rich", {"all": [{"segment": "high"}, {"attribute": "zip", "op": "starts_with", "value": "1"}]})
FRESH = entry("fresh", {"history": "visit", "within": "PT5M"})


class World:
    """Recipient rows, history, the segment table, and the agent's step over them."""

    def __init__(self) -> None:
        self.recipients, self.history, self.segments = Rows(), Rows(), Rows()

    def load(self, entries: list[SegmentEntry]) -> PartitionSegments:
        stores = cast(Any, self.segments)
        return asyncio.run(PartitionSegments.load(0, {"members": entries}, stores, TZ))

    def step(self, part: PartitionSegments, writes: dict[str, Recipient | None], now: datetime) -> list[Any]:
        """One event: stage rows, evaluate the recipients it wrote, flush rows and states."""
        rows, hist, states = Tx(self.recipients), Tx(self.history), Tx(self.segments)
        for original_id, row in writes.items():
            rows.set(recipient_key("members", original_id), None if row is None else encode(row))
        changes = part.evaluate(cast(Any, rows), cast(Any, hist), rows.pending, now)
        part.stage(cast(Any, states))
        rows.flush()
        states.flush()
        return changes

    def tick(self, part: PartitionSegments, now: datetime) -> bool:
        rows, hist, states = Tx(self.recipients), Tx(self.history), Tx(self.segments)
        part.advance(cast(Any, rows), cast(Any, hist), now, lambda seconds: None)
        building = part.build_step(cast(Any, self.recipients), cast(Any, self.history), now)
        part.stage(cast(Any, states))
        states.flush()
        return building


def person(original_id: str, score: int, zip: str = "1") -> Recipient:
    return Recipient(originalId=original_id, attributes={"score": score, "zip": zip}, createdAt=T0.isoformat(),
                     updatedAt=T0.isoformat())  # fmt: skip


def expected(world: World, test: Any) -> set[str]:
    from streamapp.core.models import decode_recipient

    return {decode_recipient(v).originalId for v in world.recipients.rows.values() if test(decode_recipient(v))}


def test_a_build_under_writes_misses_and_double_counts_no_recipient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition_module, "BUILD_SLICE", 7)
    world, rng = World(), random.Random(11)
    for i in range(200):
        world.recipients.rows[recipient_key("members", f"r{i:03d}")] = encode(person(f"r{i:03d}", rng.randrange(20)))
    part = world.load([])
    part.redefine("members", [HIGH, RICH])
    assert part.building and part.count("members", "high") is None
    steps = 0
    while world.tick(part, T0):
        steps += 1
        writes: dict[str, Recipient | None] = {}
        for _ in range(5):  # writes between slices: updates, erasures, new recipients, before and after the cursor
            n = rng.randrange(260)
            writes[f"r{n:03d}"] = (
                None if rng.random() < 0.2 else person(f"r{n:03d}", rng.randrange(20), rng.choice("12"))
            )
        world.step(part, writes, T0)
    assert steps > 20
    high = expected(world, lambda r: r.attributes["score"] >= 10)
    rich = expected(world, lambda r: r.attributes["score"] >= 10 and r.attributes["zip"].startswith("1"))
    assert part.count("members", "high") == len(high) and set(part.members("members", "high")) == high
    assert part.count("members", "rich") == len(rich) and set(part.members("members", "rich")) == rich
    reloaded = world.load([HIGH, RICH])  # the stored states say the same, and no rebuild is needed
    assert not reloaded.building
    assert set(reloaded.members("members", "high")) == high and reloaded.count("members", "rich") == len(rich)


def test_pending_flips_are_reloaded_from_the_stored_states() -> None:
    world = World()
    world.recipients.rows[recipient_key("members", "v")] = encode(person("v", 1))
    visit = HistoryRecord(id="h1", type="visit", time=T0.isoformat())
    world.history.rows[recipient_key("members", "v")] = encode([visit])
    part = world.load([FRESH])
    while world.tick(part, T0):
        pass
    world.step(part, {"v": person("v", 2)}, T0 + timedelta(seconds=1))
    assert part.segments_of("members", "v") == ["fresh"]
    state = decode_state(world.segments.rows[recipient_key("members", "v")])
    assert state.due and part.next_due() == T0 + timedelta(minutes=5)
    again = world.load([FRESH])  # another worker takes the partition over
    assert again.next_due() == T0 + timedelta(minutes=5) and again.segments_of("members", "v") == ["fresh"]
    world.tick(again, T0 + timedelta(minutes=4, seconds=59))
    assert again.segments_of("members", "v") == ["fresh"]  # not early
    world.tick(again, T0 + timedelta(minutes=5))
    assert again.segments_of("members", "v") == [] and again.next_due() is None
    assert recipient_key("members", "v") not in world.segments.rows


def test_a_changed_definition_is_rebuilt_when_the_partition_is_loaded() -> None:
    world = World()
    world.recipients.rows[recipient_key("members", "a")] = encode(person("a", 12))
    part = world.load([HIGH])
    while world.tick(part, T0):
        pass
    assert part.count("members", "high") == 1 and world.segments.rows[built_key("members")]
    stricter = entry("high", {"attribute": "score", "op": "gte", "value": 15})
    again = world.load([stricter])
    assert again.building and again.count("members", "high") is None
    while world.tick(again, T0):
        pass
    assert again.count("members", "high") == 0


def test_a_replayed_recipient_writes_its_state_again() -> None:
    """A worker killed between its RocksDB write and the changelog's ack kept the state only on its
    disk; the replayed command writes it again, though nothing changed."""
    world = World()
    part = world.load([HIGH])
    while world.tick(part, T0):
        pass
    world.step(part, {"a": person("a", 12)}, T0)
    key = recipient_key("members", "a")
    stored = world.segments.rows[key]
    states = Tx(world.segments)
    part.stage(cast(Any, states), [key, recipient_key("members", "nobody")])
    assert states.pending == {key: stored, recipient_key("members", "nobody"): None}
