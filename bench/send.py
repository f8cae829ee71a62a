"""Sending benchmark: raw SMTP ceiling, streamapp campaign throughput, transactional latency under load.

Needs a Kafka broker (`--broker`, default $STREAMAPP_TEST_BROKER or kafka://127.0.0.1:19092) and
Postfix's `smtp-sink`. Starts one `streamapp worker` subprocess with `[smtp]` pointing at
smtp-sink (`connections` connections) and prints one JSON object:

- raw: aiosmtplib over `connections` persistent connections, one pre-built message (bench/smtp_raw.py)
- campaign: 50,000 campaign messages, first enqueue to the last recorded `sent` (the worker's
  streamapp_messages_total, polled every 20 ms), and campaign/raw
- transactional: enqueue -> SMTP acceptance (the ledger row's updatedAt is taken when the SMTP
  reply arrives) of messages sent one at a time while 100,000 campaign messages are queued

Run: `.venv/bin/python bench/send.py` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

from streamapp.core import clock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaProducer

from bench.harness import sink_and_pool
from bench.smtp_raw import message as raw_message
from bench.smtp_raw import raw
from streamapp.core.models import SendMessage
from streamapp.kafka.topics import bootstrap_servers
from streamapp.mail.dkim import generate_key
from streamapp.sending.enqueue import enqueue, enqueue_with
from streamapp.settings import Settings
from tests.fixtures import Worker
from tests.sending.fixtures import add_recipients, ledger, message, settings_of, smtp_extra, write_templates


def sent_total(worker: Worker, priority: str) -> float:
    text = httpx.get(f"{worker.url}/metrics", timeout=10).text
    prefix = f'streamapp_messages_total{{outcome="sent",priority="{priority}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


def campaign_run(worker: Worker, ids: list[str]) -> dict[str, float]:
    settings = settings_of(worker)
    before = sent_total(worker, "campaign")
    messages = [message(settings, i) for i in ids]
    started = time.perf_counter()
    asyncio.run(enqueue(settings, messages))
    enqueued = time.perf_counter() - started
    while sent_total(worker, "campaign") < before + len(ids):
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    return {"messages": len(ids), "enqueue_seconds": round(enqueued, 3), "seconds": round(seconds, 3),
            "messages_per_s": round(len(ids) / seconds)}  # fmt: skip


async def _send_one_by_one(settings: Settings, vip: str, samples: int) -> list[SendMessage]:
    """One long-lived producer; each message stamped (enqueuedAt) right before it is sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings), acks="all", linger_ms=0)
    await producer.start()
    sent = []
    try:
        for _ in range(samples):
            m = message(settings, vip, "receipt", "transactional", properties={"order": "B1"})
            await enqueue_with(producer, settings, [m])
            sent.append(m)
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return sent


def latency_run(worker: Worker, campaign_ids: list[str], vip: str, samples: int) -> dict[str, float]:
    settings = settings_of(worker)
    asyncio.run(enqueue(settings, [message(settings, i) for i in campaign_ids]))
    urgent = asyncio.run(_send_one_by_one(settings, vip, samples))
    campaign_left = len(campaign_ids) - (sent_total(worker, "campaign") % len(campaign_ids))
    deadline = time.monotonic() + 120
    while True:
        rows = ledger(settings)
        if all(m.messageId in rows and rows[m.messageId].status == "sent" for m in urgent):
            break
        if time.monotonic() > deadline:
            raise SystemExit("transactional messages not all sent within 120 s")
        time.sleep(0.5)
    waits = sorted(
        (clock.parse_time(rows[m.messageId].updatedAt) - clock.parse_time(m.enqueuedAt)).total_seconds() * 1000
        for m in urgent
    )
    return {"samples": samples, "p50_ms": round(statistics.median(waits), 1),
            "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 1), "max_ms": round(waits[-1], 1),
            "campaign_still_queued_after_last_sample": int(campaign_left)}  # fmt: skip


def dkim_tables(base: Path, algorithms: str | None) -> str:
    """`[[dkim]]` keys for the sender's domain (example.com), written under `base`."""
    chosen = {"rsa": ["rsa"], "ed25519": ["ed25519"], "both": ["rsa", "ed25519"]}.get(algorithms or "", [])
    keys = [generate_key("example.com", f"bench{a[0]}", a, out_dir=base) for a in chosen]  # type: ignore[arg-type]
    return "".join(f'\n[[dkim]]\ndomain = "example.com"\nselector = "bench{a[0]}"\nprivate_key = "{k.key_path}"\n'
                   for a, k in zip(chosen, keys, strict=True))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default=os.environ.get("STREAMAPP_TEST_BROKER", "kafka://127.0.0.1:19092"))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--campaign", type=int, default=50_000)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--no-pipelining", action="store_true", help="[smtp] pipelining = false (aiosmtplib alone)")
    parser.add_argument("--dkim", choices=("rsa", "ed25519", "both"), help="sign every message with [[dkim]] keys")
    args = parser.parse_args()
    with sink_and_pool(args.broker, "bench-send-") as (port, base, pool):
        results: dict[str, object] = {"connections": args.connections, "pipelining": not args.no_pipelining,
                                      "dkim": args.dkim}  # fmt: skip
        results["raw"] = asyncio.run(raw(port, args.connections, 20_000, raw_message()))
        write_templates(base)
        extra = smtp_extra(port, connections=args.connections)
        if args.no_pipelining:
            extra = extra.replace("[smtp]\n", "[smtp]\npipelining = false\n", 1)
        extra += dkim_tables(base, args.dkim)
        worker = pool.create(extra=extra)
        tag = uuid.uuid4().hex[:6]
        ids = [f"b{tag}-{i}" for i in range(max(args.campaign, args.queued))]
        add_recipients(worker, [*ids, f"vip-{tag}"])
        campaign = campaign_run(worker, ids[: args.campaign])
        raw_rate = results["raw"]["messages_per_s"]  # type: ignore[index]
        results["campaign"] = campaign | {"ratio_to_raw": round(campaign["messages_per_s"] / raw_rate, 3)}
        results["transactional"] = latency_run(worker, ids[: args.queued], f"vip-{tag}", args.samples)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
