"""Segment evaluation throughput (SPEC §9: building scans >= 100,000 recipients/s per worker, attribute-only).

Pure CPU, one process, no Kafka: recipients are msgspec structs shaped like the stored rows
(`streamapp.core.models.Recipient`/`HistoryRecord`). Prints one JSON object:

- `attribute_only`: the compiled predicate alone, then `SegmentTracker.build` (bookkeeping included);
- `history`: a definition with where/within/sum/last over 20 purchases and 5 opens per recipient,
  evaluated with its next flip, then built with the tracker.

    .venv/bin/python bench/segments_eval.py [--recipients 1000000] [--history-recipients 100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from streamapp.segments.definition import Catalog, parse_definition
from streamapp.segments.evaluate import compile_definition
from streamapp.segments.tracker import SegmentTracker

TZ = ZoneInfo("Europe/Stockholm")
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
SCHEMA = {"firstname": "string", "language": "string", "zipcode": "string", "score": "int", "birthday": "date"}
CATALOG = Catalog(SCHEMA, {"purchase"})

ATTRIBUTE_ONLY = {
    "all": [
        {"attribute": "language", "op": "in", "value": ["sv", "fi"]},
        {"attribute": "score", "op": "gte", "value": 10},
        {"attribute": "status", "op": "eq", "value": "active"},
        {"not": {"attribute": "zipcode", "op": "starts_with", "value": "9"}},
    ]
}
HISTORY = {
    "all": [
        {"attribute": "language", "op": "in", "value": ["sv", "fi", "en"]},
        {
            "history": "purchase",
            "where": [{"field": "sku", "op": "starts_with", "value": "SHOE-"}],
            "within": "P30D",
            "agg": "count",
            "op": "gte",
            "value": 1,
        },
        {"history": "purchase", "within": "P365D", "agg": "sum", "field": "total", "op": "gt", "value": 100},
        {"not": {"history": "mail.opened", "agg": "last", "op": "within_last", "value": "P7D"}},
    ]
}


class Record(msgspec.Struct, kw_only=True):
    id: str
    type: str
    time: str
    sku: str | None = None
    price: float | None = None
    quantity: float | None = None
    total: float | None = None
    fields: dict[str, str] = msgspec.field(default_factory=dict)


class Row(msgspec.Struct, kw_only=True):
    originalId: str
    email: str | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
    status: str = "active"
    createdAt: str
    updatedAt: str
    records: dict[str, list[Record]] = msgspec.field(default_factory=dict)

    def history(self, type: str) -> Sequence[Record]:
        return self.records.get(type, ())

    def member_of(self, segment: str) -> bool:
        return False


def make_rows(count: int, with_history: bool, seed: int = 7) -> list[Row]:
    rng = random.Random(seed)
    languages = ["sv", "fi", "en", "de", "no"]
    rows = []
    for i in range(count):
        attributes = {
            "firstname": f"Name{i % 977}",
            "language": rng.choice(languages),
            "zipcode": f"{rng.randrange(10000, 99999)}",
            "score": rng.randrange(0, 30),
            "birthday": f"19{rng.randrange(50, 99)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        }
        records = _records(rng, i) if with_history else {}
        stamp = "2026-01-01T00:00:00+00:00"
        rows.append(
            Row(
                originalId=f"r{i}",
                email=f"r{i}@example.com",
                attributes=attributes,
                createdAt=stamp,
                updatedAt=stamp,
                records=records,
            )
        )
    return rows


def _records(rng: random.Random, i: int) -> dict[str, list[Record]]:
    def stamp(days: float) -> str:
        return (NOW - timedelta(days=days)).isoformat()

    purchases = sorted(rng.uniform(0, 400) for _ in range(20))
    opens = sorted(rng.uniform(0, 60) for _ in range(5))
    return {
        "purchase": [
            Record(
                id=f"{i}-{n}",
                type="purchase",
                time=stamp(age),
                sku=rng.choice(["SHOE-1", "HAT-2", "SHOE-9"]),
                total=rng.uniform(5, 50),
            )
            for n, age in enumerate(purchases)
        ],
        "mail.opened": [Record(id=f"{i}-o{n}", type="mail.opened", time=stamp(age)) for n, age in enumerate(opens)],
    }


def rate(count: int, seconds: float) -> int:
    return round(count / seconds)


def measure_predicate(raw: dict[str, Any], rows: list[Row], with_flip: bool) -> tuple[int, int]:
    compiled = compile_definition(parse_definition(raw, CATALOG), TZ)
    member = rows[0].member_of
    started = time.perf_counter()
    matched = 0
    if with_flip:
        for row in rows:
            matched += compiled.flip(row, NOW, member)[0]
    else:
        test = compiled.test
        for row in rows:
            matched += test(row, NOW, member)
    return rate(len(rows), time.perf_counter() - started), matched


def measure_build(raw: dict[str, Any], rows: list[Row]) -> tuple[int, int]:
    tracker = SegmentTracker({"s": parse_definition(raw, CATALOG)}, TZ)
    started = time.perf_counter()
    count = tracker.build("s", ((row.originalId, row) for row in rows), NOW)
    return rate(len(rows), time.perf_counter() - started), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--history-recipients", type=int, default=100_000)
    args = parser.parse_args()
    gc.freeze()  # the rows live for the whole run: keep the collector from rescanning them
    rows = make_rows(args.recipients, with_history=False)
    gc.freeze()
    predicate, matched = measure_predicate(ATTRIBUTE_ONLY, rows, with_flip=False)
    build, count = measure_build(ATTRIBUTE_ONLY, rows)
    assert count == matched
    result: dict[str, Any] = {
        "attribute_only": {"recipients": len(rows), "members": count, "evaluate_per_s": predicate, "build_per_s": build}
    }
    del rows
    rows = make_rows(args.history_recipients, with_history=True)
    gc.freeze()
    predicate, matched = measure_predicate(HISTORY, rows, with_flip=False)
    flipped, _ = measure_predicate(HISTORY, rows, with_flip=True)
    build, count = measure_build(HISTORY, rows)
    assert count == matched
    result["history"] = {
        "recipients": len(rows),
        "records_per_recipient": 25,
        "members": count,
        "evaluate_per_s": predicate,
        "evaluate_with_flip_per_s": flipped,
        "build_per_s": build,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
