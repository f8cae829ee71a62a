"""History apply benchmark: the agent's bulk path (recipients/apply.py) over in-memory tables.

What a history import or a history batch costs the agent, without Kafka or RocksDB (whose cost per
write does not depend on the retention rule): `apply_all` over events of 1,000 appends, as the
publisher chunks them, timed per scenario. Prints one JSON object, records applied per second:

- `new`: 100,000 records for 10,000 recipients with no history yet (10 per recipient);
- `full`: 20,000 records, 2 per event per recipient, onto 1,000 recipients whose history already
  holds 1,000 purchases (every append trims);
- `one_recipient`: 10,000 records of one recipient in 10 events (coalesced into one append each);
- `mixed`: 20,000 records of 5 types (one an engagement type, when the code knows them) onto the
  histories `full` left.

Run: `.venv/bin/python bench/history_apply.py [--repeat N]` (best of N, default 3).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamapp import settings
from streamapp.core.keys import recipient_key
from streamapp.core.models import AppendHistory, Command, HistoryRecord, encode
from streamapp.kafka.memory import MemoryTransaction
from streamapp.recipients.apply import Chunks, apply_all

EVENT = 1000


def chunks(history: MemoryTransaction | None = None) -> Chunks:
    return Chunks(MemoryTransaction(), history or MemoryTransaction(), MemoryTransaction())  # type: ignore[arg-type]


def record(n: int, kind: str = "purchase") -> HistoryRecord:
    second, minute = n % 60, (n // 60) % 60
    hour, day = (n // 3600) % 24, 1 + (n // 86400) % 28
    return HistoryRecord(
        id=f"r{n}", type=kind, time=f"2026-11-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}+00:00",
        sku=f"SKU-{n % 97}", price=9.5, quantity=1.0, total=9.5, fields={"custom2": "web"},
    )  # fmt: skip


def appends(pairs: list[tuple[str, HistoryRecord]]) -> list[list[Command]]:
    commands: list[Command] = [AppendHistory(database="members", originalId=r, records=[h]) for r, h in pairs]
    return [commands[i : i + EVENT] for i in range(0, len(commands), EVENT)]


def run(c: Chunks, events: list[list[Command]]) -> float:
    started = time.perf_counter()
    for offset, event in enumerate(events):
        assert apply_all(c, event, offset).skipped == 0
    return time.perf_counter() - started


def engagement_type() -> str:
    """`mail.sent` where the code knows engagement types (its own limit); before them, another plain type."""
    return "mail.sent" if "mail.sent" in getattr(settings, "ENGAGEMENT_TYPES", ()) else "download"


def scenarios() -> dict[str, float]:
    rates: dict[str, float] = {}
    new = [(f"n{i % 10_000}", record(i)) for i in range(100_000)]
    rates["new"] = len(new) / run(chunks(), appends(new))

    history = MemoryTransaction()
    for r in range(1000):  # written directly: 1,000 purchases each, newest first
        records = [record(r * 1000 + i) for i in range(1000)]
        history.set(recipient_key("members", f"f{r}"), encode(sorted(records, key=lambda h: h.time, reverse=True)))
    full = [(f"f{(i // 2) % 1000}", record(2_000_000 + i)) for i in range(20_000)]
    rates["full"] = len(full) / run(chunks(history), appends(full))

    one = [("solo", record(i)) for i in range(10_000)]
    rates["one_recipient"] = len(one) / run(chunks(), appends(one))

    kinds = ("purchase", "visit", "cart", "login", engagement_type())
    mixed = [(f"f{(i // 2) % 1000}", record(3_000_000 + i, kinds[i % 5])) for i in range(20_000)]
    rates["mixed"] = len(mixed) / run(chunks(history), appends(mixed))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [scenarios() for _ in range(args.repeat)]
    best = {name: round(max(r[name] for r in runs)) for name in runs[0]}
    print(json.dumps({"records_per_s": best, "repeat": args.repeat}))


if __name__ == "__main__":
    main()
