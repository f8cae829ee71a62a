"""Tracking benchmark: open-pixel requests/s and latency while a campaign sends, and what the burst costs it.

Needs a Kafka broker (`--broker`, default $STREAMAPP_TEST_BROKER or kafka://127.0.0.1:19092) and
Postfix's `smtp-sink`. One `streamapp worker` with a tracked campaign template (two links, the pixel);
prints one JSON object:

- setup: `--opened` messages sent first, whose pixel tokens the burst requests (each once: every
  request is a first open, recorded and counted);
- baseline: `--campaign` campaign messages sent alone, enqueue to the last `sent` (messages/s);
- burst: the same campaign size again while `--opened` pixel requests go out at `--concurrency` at a
  time: requests/s, p50/p99/max latency of `GET /t/o/{token}`, the campaign's messages/s beside the
  baseline's, and how long after the last answer the last open was counted in the campaign report.

The load generator (httpx, in this process) shares the machine's cores with the worker.
Run: `.venv/bin/python bench/tracking.py` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import sink_and_pool
from bench.send import sent_total
from streamapp.mail.tracking import TrackedMessage, make_token
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.sending.enqueue import enqueue
from tests.fixtures import TOKENS, Worker
from tests.sending.fixtures import add_recipients, ledger, message, settings_of, smtp_extra, write_templates

TEMPLATE = """<html><body><p>Hello {{ recipient.email }}</p>
<a href="https://shop.example/sale?id=7&amp;src=mail">Sale</a> <a href="https://shop.example/other">Other</a>
</body></html>
"""
EXTRA = """
[tracking]
machine_seconds = 0

[[campaigns]]
name = "tracked"
database = "members"
template = "tracked"
"""


def campaign(worker: Worker, ids: list[str]) -> dict[str, float]:
    """Send the tracked campaign to `ids`; enqueue to the last `sent`."""
    settings = settings_of(worker)
    before = sent_total(worker, "campaign")
    started = time.perf_counter()
    asyncio.run(enqueue(settings, [message(settings, i, "tracked", name="tracked") for i in ids]))
    while sent_total(worker, "campaign") < before + len(ids):
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    return {"messages": len(ids), "seconds": round(seconds, 2), "messages_per_s": round(len(ids) / seconds)}


async def _burst(url: str, paths: list[str], concurrency: int) -> tuple[list[float], float]:
    took: list[float] = []
    queue = list(reversed(paths))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as web:

        async def one() -> None:
            while queue:
                path = queue.pop()
                started = time.perf_counter()
                response = await web.get(path)
                took.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code}")

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        return took, time.perf_counter() - started


def opened(worker: Worker) -> int:
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    for _ in range(100):
        answer = httpx.get(f"{worker.url}/api/v1/campaigns/tracked/report", headers=headers, timeout=30)
        if answer.status_code == 200:
            return int(answer.json()["opened"])
        time.sleep(0.1)
    raise SystemExit(f"report: {answer.status_code} {answer.text}")


def pixel_paths(worker: Worker, message_ids: list[str]) -> list[str]:
    """The pixel of each sent message, signed as the worker signs it (its key file)."""
    settings = settings_of(worker)
    key = unsubscribe_keys(settings).signing
    rows = ledger(settings)
    paths = []
    for message_id in message_ids:
        row = rows[message_id]
        token = make_token(key, "open", TrackedMessage(row.database, row.originalId, message_id, "tracked"))
        paths.append(f"/t/o/{token}")
    return paths


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default=os.environ.get("STREAMAPP_TEST_BROKER", "kafka://127.0.0.1:19092"))
    parser.add_argument("--opened", type=int, default=10_000)
    parser.add_argument("--campaign", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--untracked", action="store_true", help="[tracking] off: the send path without rewriting")
    args = parser.parse_args()
    with sink_and_pool(args.broker, "bench-tracking-") as (port, base, pool):
        write_templates(base)
        folder = base / "templates" / "tracked"
        folder.mkdir(parents=True)
        (folder / "subject.txt").write_text("Offers")
        (folder / "body.html").write_text(TEMPLATE)
        extra = EXTRA.replace("machine_seconds = 0", "machine_seconds = 0\nopens = false\nclicks = false")
        worker = pool.create(extra=smtp_extra(port, connections=8) + (extra if args.untracked else EXTRA))
        tag = uuid.uuid4().hex[:6]
        first = [f"o{tag}-{i}" for i in range(args.opened)]
        ids = [f"c{tag}-{i}" for i in range(args.campaign)]
        add_recipients(worker, [*first, *ids])
        settings = settings_of(worker)
        messages = [message(settings, i, "tracked", name="tracked") for i in first]
        asyncio.run(enqueue(settings, messages))
        while sent_total(worker, "campaign") < len(first):
            time.sleep(0.05)
        paths = pixel_paths(worker, [m.messageId for m in messages])
        results: dict[str, object] = {"setup": {"messages": len(first)}}
        results["baseline"] = campaign(worker, ids)

        during: dict[str, float] = {}
        sender = threading.Thread(target=lambda: during.update(campaign(worker, ids)))
        before = opened(worker)
        sender.start()
        time.sleep(0.5)  # the campaign is sending
        took, seconds = asyncio.run(_burst(worker.url, paths, args.concurrency))
        answered = time.perf_counter()
        while opened(worker) < before + len(paths):
            time.sleep(0.05)
        counted = time.perf_counter() - answered
        sender.join()
        results["burst"] = {
            "requests": len(took),
            "requests_per_s": round(len(took) / seconds),
            "p50_ms": percentile(took, 0.5),
            "p99_ms": percentile(took, 0.99),
            "max_ms": round(max(took) * 1000, 1),
            "counted_after_last_answer_s": round(counted, 2),
            "campaign_messages_per_s": during["messages_per_s"],
            "campaign_ratio_to_baseline": round(during["messages_per_s"] / results["baseline"]["messages_per_s"], 2),  # type: ignore[index]
        }
        print(json.dumps(results))


if __name__ == "__main__":
    main()
