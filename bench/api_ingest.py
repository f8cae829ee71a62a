"""API ingest benchmark: single upserts/s and batch recipients/s from POST to readable.

Starts a real broker (or uses $STREAMAPP_TEST_BROKER) and one `streamapp worker`,
then prints one JSON object. Run: `.venv/bin/python bench/api_ingest.py`.
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

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import broker_and_pool
from tests.fixtures import TOKENS, applied_commands

HEADERS = {"Authorization": f"Bearer {TOKENS['admin']}"}


async def single_upserts(url: str, total: int, concurrency: int) -> dict[str, float]:
    """`concurrency` keep-alive clients each PUT in a loop; every reply must be 202."""
    latencies: list[float] = []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=HEADERS, connector=connector) as session:

        async def client() -> None:
            for i in counter:
                started = time.perf_counter()
                body = {"email": f"s{i}@example.com", "attributes": {"score": i}}
                async with session.put(f"/api/v1/databases/members/recipients/single-{i}", json=body) as reply:
                    assert reply.status == 202, await reply.text()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": total,
        "concurrency": concurrency,
        "upserts_per_s": round(total / elapsed),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


async def batch_upserts(url: str, batches: int, size: int, concurrency: int) -> dict[str, float]:
    """POST `batches` bodies of `size` recipients; time until the last of every batch is readable."""
    run = uuid.uuid4().hex[:6]
    bodies = [
        json.dumps(
            [
                {
                    "originalId": f"b{run}-{b}-{i}",
                    "email": f"b{b}.{i}@example.com",
                    "attributes": {"firstname": "Ann", "score": i, "zipcode": "11122"},
                }
                for i in range(size)
            ]
        ).encode()
        for b in range(batches)
    ]
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(url, headers={**HEADERS, "Content-Type": "application/json"}) as session:

        async def post(body: bytes) -> None:
            async with semaphore, session.post("/api/v1/databases/members/recipients", data=body) as reply:
                assert reply.status == 202, await reply.text()

        async def readable(b: int) -> None:
            path = f"/api/v1/databases/members/recipients/b{run}-{b}-{size - 1}"
            while True:
                async with session.get(path) as reply:
                    if reply.status == 200:
                        return
                await asyncio.sleep(0.02)

        started = time.perf_counter()
        await asyncio.gather(*(post(body) for body in bodies))
        accepted = time.perf_counter() - started
        await asyncio.gather(*(readable(b) for b in range(batches)))
        elapsed = time.perf_counter() - started
    total = batches * size
    return {
        "recipients": total,
        "batch_size": size,
        "concurrent_posts": concurrency,
        "accepted_per_s": round(total / accepted),
        "readable_per_s": round(total / elapsed),
        "seconds_to_readable": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--singles", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with broker_and_pool("streamapp-bench-") as pool:
        worker = pool.create(partitions=args.partitions)
        single = asyncio.run(single_upserts(worker.url, args.singles, args.concurrency))
        started = time.perf_counter()
        while applied_commands(worker.url) < args.singles:  # let the agent drain the singles first
            time.sleep(0.05)
        single["seconds_until_all_applied_after_last_202"] = round(time.perf_counter() - started, 2)
        batch = asyncio.run(batch_upserts(worker.url, args.batches, args.batch_size, 2))
    print(json.dumps({"benchmark": "api_ingest", "cores": os.cpu_count(), "single": single, "batch": batch}, indent=2))


if __name__ == "__main__":
    main()
