"""Segment builds over a real RocksDB partition (SPEC §9: >= 100,000 recipients/s per worker, attribute-only).

The code is the agent's: `PartitionSegments.build_step` slices (BUILD_SLICE recipients each, as one
tick each) over rows stored like the worker stores them (rocksdict, raw bytes, MessagePack rows in
key order), then the bytes of state it wrote, and how long loading the partition back takes (what
a worker does for each partition it is given after a rebalance or a kill -9). No Kafka: the tick
round trips of a live worker (one produce and fetch per slice) come on top. Prints one JSON object:

- `build_attribute_only`: recipients/s for a definition of four attribute leaves;
- `build_history`: recipients/s for a within-30-days purchase count over 5 records per recipient;
- `state_bytes`: stored state per member row and per recipient per segment (8 segments defined);
- `load`: seconds and states/s to reload the partition's memberships and due times.

    .venv/bin/python bench/segments.py [--recipients 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from rocksdict import Options, Rdict, WriteBatch

from streamapp.core.keys import recipient_key
from streamapp.core.models import HistoryRecord, Recipient, encode
from streamapp.segments.catalog import SegmentEntry, fingerprint
from streamapp.segments.definition import Catalog, parse_definition
from streamapp.segments.graph import references
from streamapp.segments.partition import PartitionSegments

TZ = ZoneInfo("Europe/Stockholm")
NOW = datetime.now(UTC)
SCHEMA = Catalog({"language": "string", "score": "int", "zipcode": "string", "vip": "bool"}, ("purchase",), set())
ATTRIBUTE_ONLY = {
    "all": [
        {"attribute": "language", "op": "in", "value": ["sv", "fi"]},
        {"attribute": "score", "op": "gte", "value": 10},
        {"attribute": "status", "op": "eq", "value": "active"},
        {"attribute": "zipcode", "op": "starts_with", "value": "1"},
    ]
}
HISTORY = {"history": "purchase", "within": "P30D", "agg": "count", "op": "gte", "value": 2}


class RocksStore:
    """The reads of streamapp.kafka.store.Store over one rocksdict partition."""

    def __init__(self, path: Path) -> None:
        self.db = Rdict(str(path), Options(raw_mode=True))

    def get(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def items(self, partition: int, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=prefix if start is None else max(prefix, start)):
            if not key.startswith(prefix):
                break
            yield key, value

    def transaction(self, partition: int) -> Reads:
        return Reads(self)

    def write(self, rows: dict[bytes, bytes | None]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in rows.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch)


class Reads:
    """The reads and staged writes of a PartitionTransaction."""

    def __init__(self, store: RocksStore) -> None:
        self.store = store
        self.pending: dict[bytes, bytes | None] = {}
        self.loaded: dict[bytes, bytes | None] = {}

    def prefetch(self, keys: list[bytes]) -> None:
        self.loaded.update(zip(keys, self.store.db[keys], strict=True))

    def get(self, key: bytes) -> bytes | None:
        return self.pending[key] if key in self.pending else self.store.db.get(key)

    def set(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value


def entry(name: str, raw: dict[str, Any]) -> SegmentEntry:
    node = parse_definition(raw, SCHEMA)
    return SegmentEntry("members", name, "api", raw, node, None, 1, 0, fingerprint(node), references(node))


def fill(recipients: RocksStore, history: RocksStore, count: int) -> None:
    rng = random.Random(7)
    at = NOW.isoformat()
    for start in range(0, count, 50_000):
        rows: dict[bytes, bytes | None] = {}
        records: dict[bytes, bytes | None] = {}
        for i in range(start, min(start + 50_000, count)):
            original_id = f"id-{i:09d}"
            key = recipient_key("members", original_id)
            attributes = {"language": rng.choice(["sv", "fi", "en", "de"]), "score": rng.randrange(20),
                          "zipcode": f"{rng.randrange(100000):05d}", "vip": rng.random() < 0.1}  # fmt: skip
            rows[key] = encode(Recipient(originalId=original_id, attributes=attributes, createdAt=at, updatedAt=at))
            days = sorted(rng.randrange(60) for _ in range(5))
            purchases = [HistoryRecord(id=f"{i}-{n}", type="purchase", time=(NOW - timedelta(days=d)).isoformat(),
                                       sku="SKU-1", total=10.0) for n, d in enumerate(days)]  # fmt: skip
            records[key] = encode(purchases)
        recipients.write(rows)
        history.write(records)


def build(
    part: PartitionSegments, stores: tuple[RocksStore, RocksStore, RocksStore], entries: list[SegmentEntry]
) -> float:
    """Seconds to build `entries` (one tick after another), their states written as the agent does."""
    recipients, history, segments = stores
    gc.collect()
    started = time.perf_counter()
    part.redefine("members", entries)
    building = True
    while building:
        building = part.build_step(cast(Any, recipients), cast(Any, history), NOW)
        staged = Reads(segments)
        part.stage(cast(Any, staged))
        segments.write(staged.pending)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="segments-bench-"))
    try:
        stores = (RocksStore(base / "recipients"), RocksStore(base / "history"), RocksStore(base / "segments"))
        started = time.perf_counter()
        fill(stores[0], stores[1], args.recipients)
        filled = time.perf_counter() - started
        part = asyncio.run(PartitionSegments.load(0, {"members": []}, cast(Any, stores[2]), TZ))
        attribute = entry("a0", ATTRIBUTE_ONLY)
        attribute_seconds = build(part, stores, [attribute])
        history = entry("h0", HISTORY)
        history_seconds = build(part, stores, [attribute, history])
        extra = [entry(f"a{i}", {**ATTRIBUTE_ONLY, "all": [*ATTRIBUTE_ONLY["all"][:3], {"attribute": "zipcode",
                 "op": "starts_with", "value": str(i)}]}) for i in range(1, 7)]  # fmt: skip
        build(part, stores, [attribute, history, *extra])
        states = [(k, v) for k, v in stores[2].items(0, b"members/")]
        members = sum(part.count("members", e.name) or 0 for e in [attribute, history, *extra])
        gc.collect()
        started = time.perf_counter()
        loaded = asyncio.run(
            PartitionSegments.load(0, {"members": [attribute, history, *extra]}, cast(Any, stores[2]), TZ)
        )
        load_seconds = time.perf_counter() - started
        assert not loaded.building and loaded.count("members", "a0") == part.count("members", "a0")
        value_bytes = sum(len(v) for _, v in states)
        print(json.dumps({
            "recipients": args.recipients,
            "fill_seconds": round(filled, 1),
            "build_attribute_only": {"seconds": round(attribute_seconds, 2),
                                     "recipients_per_s": round(args.recipients / attribute_seconds),
                                     "members": part.count("members", "a0")},
            "build_history": {"seconds": round(history_seconds, 2),
                              "recipients_per_s": round(args.recipients / history_seconds),
                              "members": part.count("members", "h0")},
            "state_bytes": {"segments": 8, "state_rows": len(states), "memberships": members,
                            "value_bytes_per_row": round(value_bytes / max(1, len(states)), 2),
                            "value_bytes_per_membership": round(value_bytes / max(1, members), 2),
                            "value_bytes_per_recipient_per_segment": round(value_bytes / args.recipients / 8, 3)},
            "load": {"seconds": round(load_seconds, 2), "states_per_s": round(len(states) / load_seconds)},
        }, indent=2))  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
