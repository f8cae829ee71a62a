"""Trigger and campaign benchmark, all through the HTTP API: priority end to end, batch intake.

Needs a Kafka broker (`--broker`, default $STREAMAPP_TEST_BROKER or kafka://127.0.0.1:19092) and
Postfix's `smtp-sink`. Starts one `streamapp worker` subprocess with `[smtp]` pointing at
smtp-sink and prints one JSON object:

- batch_intake: a trigger batch of `--batch-rows` new recipients as NDJSON, POST to 202 (every
  upsert and message acknowledged by Kafka), then until every message is sent;
- campaign: `--campaign` new recipients posted as CSV to /api/v1/campaigns/promo/sends, POST to
  202, then until every message is sent;
- transactional: while that campaign is sending, POST /api/v1/triggers/receipt/messages one at
  a time every 50 ms; latency from just before the POST to the SMTP acceptance (the ledger
  row's updatedAt is taken when the reply arrives); only samples posted while campaign
  messages were still queued count.

Run: `.venv/bin/python bench/triggers.py` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from streamapp.core import clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import sink_and_pool
from tests.fixtures import TOKENS, Worker
from tests.sending.fixtures import ledger, settings_of, smtp_extra, write_templates

#: Batch and campaign rows carry email and attributes: `send` and `recipients:write` (SPEC §4).
SENDER = {"Authorization": f"Bearer {TOKENS['campaigner']}"}


def batch_status(api: httpx.Client, batch_id: str) -> dict[str, Any]:
    while True:
        response = api.get(f"/api/v1/batches/{batch_id}")
        if response.status_code == 200:
            return dict(response.json())
        time.sleep(0.05)


def wait_sent(api: httpx.Client, batch_id: str, total: int) -> None:
    """Polls once a second: counting a large batch is a scan of its ledger rows."""
    while batch_status(api, batch_id)["sent"] < total:
        time.sleep(1.0)


def batch_intake(worker: Worker, rows: int, tag: str) -> dict[str, float]:
    body = "".join(
        json.dumps({"originalId": f"bi{tag}-{i}", "email": f"bi{tag}-{i}@example.com", "properties": {"order": i}})
        + "\n"
        for i in range(rows)
    ).encode()
    with httpx.Client(base_url=worker.url, headers=SENDER, timeout=600) as api:
        started = time.perf_counter()
        response = api.post("/api/v1/triggers/receipt/batches", content=body,
                            headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        accepted = time.perf_counter() - started
        assert response.status_code == 202, response.text
        wait_sent(api, response.json()["batchId"], rows)
        done = time.perf_counter() - started
    return {"rows": rows, "body_mb": round(len(body) / 1e6, 1), "seconds_to_202": round(accepted, 2),
            "rows_per_s_to_202": round(rows / accepted), "seconds_to_all_sent": round(done, 2),
            "sent_per_s": round(rows / done)}  # fmt: skip


def campaign_and_latency(worker: Worker, recipients: int, samples: int, tag: str) -> dict[str, Any]:
    lines = ["originalId,email,firstname,zipcode"]
    lines += [f"c{tag}-{i},c{tag}-{i}@example.com,F{i},{10000 + i % 89999}" for i in range(recipients)]
    body = ("\r\n".join(lines) + "\r\n").encode()
    urgent: list[tuple[str, datetime]] = []
    with httpx.Client(base_url=worker.url, headers=SENDER, timeout=600) as api:
        started = time.perf_counter()
        response = api.post("/api/v1/campaigns/promo/sends", content=body, headers={"Content-Type": "text/csv"})
        accepted = time.perf_counter() - started
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]
        sampler = threading.Thread(target=_sample, args=(worker, samples, tag, urgent))
        sampler.start()
        queued_during: list[int] = []
        while sampler.is_alive():
            queued_during.append(batch_status(api, batch_id)["queued"])
            time.sleep(1.0)
        sampler.join()
        wait_sent(api, batch_id, recipients)
        done = time.perf_counter() - started
    rows = ledger(settings_of(worker))
    waits = sorted(
        (clock.parse_time(rows[m].updatedAt) - posted).total_seconds() * 1000
        for m, posted in urgent
        if m in rows and rows[m].status == "sent"
    )
    return {
        "campaign": {"recipients": recipients, "seconds_to_202": round(accepted, 2),
                     "rows_per_s_to_202": round(recipients / accepted), "seconds_to_all_sent": round(done, 2),
                     "sent_per_s": round(recipients / done)},
        "transactional": {"samples": len(waits), "p50_ms": round(statistics.median(waits), 1),
                          "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1),
                          "max_ms": round(waits[-1], 1),
                          "campaign_queued_when_sampling_ended": queued_during[-1] if queued_during else None},
    }  # fmt: skip


def _sample(worker: Worker, samples: int, tag: str, out: list[tuple[str, datetime]]) -> None:
    with httpx.Client(base_url=worker.url, headers=SENDER, timeout=30) as api:
        for n in range(samples):
            posted = datetime.now(UTC)
            body = {"originalId": f"vip{tag}-{n}", "email": f"vip{tag}-{n}@example.com", "properties": {"order": n}}
            response = api.post("/api/v1/triggers/receipt/messages", json=body)
            assert response.status_code == 202, response.text
            out.append((response.json()["messageId"], posted))
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default=os.environ.get("STREAMAPP_TEST_BROKER", "kafka://127.0.0.1:19092"))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--campaign", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()
    with sink_and_pool(args.broker, "bench-triggers-") as (port, base, pool):
        write_templates(base)
        worker = pool.create(extra=smtp_extra(port, connections=args.connections))
        tag = uuid.uuid4().hex[:6]
        results: dict[str, Any] = {"connections": args.connections}
        results["batch_intake"] = batch_intake(worker, args.batch_rows, tag)
        results.update(campaign_and_latency(worker, args.campaign, args.samples, tag))
        print(json.dumps(results))


if __name__ == "__main__":
    main()
