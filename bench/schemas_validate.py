"""Validation cost per item: today's checks (streamapp.core.validation) vs the models (streamapp.http.schemas).

`bench/api_ingest.py` must stay within 5% of its figures when the handlers move to the models. It
needs a broker and workers; this isolates the part that changes, on the same bodies it sends
(JSON arrays of 10,000 recipients with three attributes; single PUTs), and converts the
difference into a share of api_ingest's per-recipient budget (`--accepted-per-s`, default: the
figure in bench/README.md).

Each path goes from the body's bytes to the commands a handler publishes (UpsertRecipient,
AppendHistory) or to the 422's details:

- `today`: `msgspec.json.decode` untyped, then `parse_recipient` / `parse_history` per item;
- `model_validate`: `msgspec.json.decode` untyped (as bodies.parse_items does), then
  `validate(items, RecipientBatch)` and the commands;
- `model_decode`: `decode(body, RecipientBatch)` (msgspec's typed decoder, the walk only on
  failure), then the commands.

Bodies: all items valid (what api_ingest sends), one bad item in the middle, every item bad (a
bad item has two bad fields: a 422 with 1,000 details; today's checks go through every item, the
walk stops at the 1,001st error). Only `valid` counts
against api_ingest's budget; the others say what a refused body costs the event loop.
Printed: µs of CPU per item, the fastest of `--rounds` rounds, the rounds of all paths taking turns so
that other load on a shared machine counts alike. Run: `.venv/bin/python bench/schemas_validate.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamapp.core.validation import parse_history, parse_recipient
from streamapp.http.schemas import (
    HistoryBatch,
    RecipientBatch,
    RecipientUpdate,
    batch_upsert,
    checks_for,
    history_append,
    recipient_upsert,
)
from streamapp.http.validate import Check, decode, validate
from streamapp.settings import DEFAULT_HISTORY_TYPES, DatabaseSettings

AT = "2026-11-27T08:00:00.000+00:00"
DB = DatabaseSettings(
    "members",
    False,
    {"firstname": "string", "lastname": "string", "zipcode": "string", "score": "int", "birthday": "date"},
)
TYPES = DEFAULT_HISTORY_TYPES


#: Bodies: every item valid; one bad item in the middle (a typical refused batch); every item bad.
KINDS = ("valid", "one_bad", "invalid")


def _bad(kind: str, i: int, size: int) -> bool:
    return kind == "invalid" or (kind == "one_bad" and i == size // 2)


def recipients(size: int, kind: str) -> bytes:
    """What api_ingest posts (its batch phase); a bad item has a bad e-mail address and a bad score."""
    return msgspec.json.encode(
        [
            {
                "originalId": f"b-{i}",
                "email": f"b.{i}" if _bad(kind, i, size) else f"b.{i}@example.com",
                "attributes": {"firstname": "Ann", "score": str(i) if _bad(kind, i, size) else i, "zipcode": "11122"},
            }
            for i in range(size)
        ]
    )


def history(size: int, kind: str) -> bytes:
    """Purchases; a bad item has a price given as text and a custom field that is not text."""
    return msgspec.json.encode(
        [
            {"originalId": f"h-{i}", "type": "purchase", "time": "2026-11-27 09:00", "sku": "SKU-1",
             "price": "10.5" if _bad(kind, i, size) else 10.5, "quantity": 1,
             "fields": {"custom1": 1 if _bad(kind, i, size) else "x"}}
            for i in range(size)
        ]
    )  # fmt: skip


def today_recipients(body: bytes, zone: Any) -> int:
    items = msgspec.json.decode(body)
    commands, errors = [], []
    for i, item in enumerate(items):
        command, problems = parse_recipient(DB, item, at=AT, zone=zone, path=f"/{i}", allow_status=False)
        if command is None:
            errors += problems
        else:
            commands.append(command)
    return len(errors) or len(commands)


def model_recipients(body: bytes, checks: dict[str, Check], typed: bool) -> int:
    result = decode(body, RecipientBatch, checks=checks) if typed else validate(
        msgspec.json.decode(body), RecipientBatch, checks=checks
    )  # fmt: skip
    if result.value is None:
        return len(result.errors)
    return len([batch_upsert(item, DB.name, AT) for item in result.value])


def today_history(body: bytes, zone: Any) -> int:
    items = msgspec.json.decode(body)
    results = [parse_history(DB, item, types=TYPES, at=AT, zone=zone, path=f"/{i}") for i, item in enumerate(items)]
    return sum(len(errors) or 1 for _, errors in results)


def model_history(body: bytes, checks: dict[str, Check], typed: bool) -> int:
    result = decode(body, HistoryBatch, checks=checks) if typed else validate(
        msgspec.json.decode(body), HistoryBatch, checks=checks
    )  # fmt: skip
    if result.value is None:
        return len(result.errors)
    return len([history_append(item, DB.name, AT, f"/{i}") for i, item in enumerate(result.value)])


def single_bodies(count: int) -> list[bytes]:
    """api_ingest's single PUT bodies."""
    return [msgspec.json.encode({"email": f"s{i}@example.com", "attributes": {"score": i}}) for i in range(count)]


def today_single(bodies: list[bytes], zone: Any) -> int:
    done = 0
    for body in bodies:
        command, _ = parse_recipient(DB, msgspec.json.decode(body), at=AT, zone=zone, original_id="single-1")
        done += command is not None
    return done


def model_single(bodies: list[bytes], checks: dict[str, Check], typed: bool) -> int:
    done = 0
    for body in bodies:
        result = decode(body, RecipientUpdate, checks=checks) if typed else validate(
            msgspec.json.decode(body), RecipientUpdate, checks=checks
        )  # fmt: skip
        if result.value is not None:
            recipient_upsert(result.value, DB.name, "single-1", AT)
            done += 1
    return done


def fastest(runs: dict[str, Callable[[], int]], rounds: int, items: int) -> dict[str, float]:
    """µs per item of each run, the fastest of `rounds` (the runs take turns). CPU time of this process,
    not wall time: on the 2 shared cores, other processes' load would otherwise be most of the figure."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - started)
    return {name: round(seconds / items * 1e6, 3) for name, seconds in best.items()}


def compare(runs: dict[str, Callable[[], int]], rounds: int, items: int, budget_us: float) -> dict[str, Any]:
    per_item = fastest(runs, rounds, items)
    today = per_item["today"]
    out: dict[str, Any] = {"us_per_item": per_item}
    out["ratio_to_today"] = {k: round(v / today, 3) for k, v in per_item.items() if k != "today"}
    out["delta_share_of_api_ingest_budget"] = {
        k: f"{(v - today) / budget_us:+.1%}" for k, v in per_item.items() if k != "today"
    }
    return out


def batch_runs(body: bytes, records: bytes, checks: dict[str, Check], zone: Any) -> dict[str, dict[str, Any]]:
    """The three paths over one recipients body and one history body."""
    return {
        "recipients": {
            "today": lambda: today_recipients(body, zone),
            "model_validate": lambda: model_recipients(body, checks, False),
            "model_decode": lambda: model_recipients(body, checks, True),
        },
        "history": {
            "today": lambda: today_history(records, zone),
            "model_validate": lambda: model_history(records, checks, False),
            "model_decode": lambda: model_history(records, checks, True),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--accepted-per-s", type=float, default=132_160, help="api_ingest batch accepted_per_s")
    parser.add_argument("--upserts-per-s", type=float, default=5_838, help="api_ingest single upserts_per_s")
    args = parser.parse_args()
    zone = ZoneInfo("Europe/Stockholm")
    checks = checks_for(DB, TYPES, zone)
    batch_budget, single_budget = 1e6 / args.accepted_per_s, 1e6 / args.upserts_per_s
    report: dict[str, Any] = {"items": args.items, "rounds": args.rounds}
    report["budget_us"] = {"per_batch_recipient": round(batch_budget, 2), "per_single_put": round(single_budget, 1)}
    for kind in KINDS:
        body, records = recipients(args.items, kind), history(args.items, kind)
        if kind != "invalid":  # as many commands, or details
            assert model_recipients(body, checks, True) == today_recipients(body, zone)
        for name, runs in batch_runs(body, records, checks, zone).items():
            report[f"{name}_{kind}"] = compare(runs, args.rounds, args.items, batch_budget)
    singles = single_bodies(args.singles)
    report["single_put"] = compare({
        "today": lambda: today_single(singles, zone),
        "model_validate": lambda: model_single(singles, checks, False),
        "model_decode": lambda: model_single(singles, checks, True),
    }, args.rounds, args.singles, single_budget)  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
