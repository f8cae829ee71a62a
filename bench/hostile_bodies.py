"""Hostile request bodies: time to answer each, and what they do to the worker's event loop.

Starts a real broker (or uses $STREAMAPP_TEST_BROKER) and one `streamapp worker`, then POSTs each
body of `BODIES` to `POST /api/v1/databases/members/recipients` `--repeat` times while a second
client GETs /healthz every 20 ms. Prints one JSON object; per body:

- `answer_s`: time to the answer (median and max over the repeats) and its status;
- `loop_lag_s`: the worker's `streamapp_event_loop_lag_seconds` over those requests: p50 and
  p99 interpolated in the buckets as Prometheus' histogram_quantile does, and `max_le`, the
  upper bound of the highest bucket reached (null when the worker does not export the metric);
- `healthz_s`: p50, p99 and max of the /healthz answers meanwhile (the outside view of the same).

`control_15mb_unread` is 15 MB that the worker receives and discards without parsing (415 from
the header): what moving the bytes costs on this machine, to read the other large bodies against.

Run: `.venv/bin/python bench/hostile_bodies.py` (about a minute). Against code that still parses
whole bodies on the loop, `--skip gzip_16mb_inflated`: 8 million errors kept take GBs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import broker_and_pool
from tests.fixtures import TOKENS

URL_PATH = "/api/v1/databases/members/recipients"
NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}
Buckets = dict[float, float]


def ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"\n".join(json.dumps(row).encode() for row in rows)


def bodies() -> dict[str, tuple[bytes, dict[str, str]]]:
    """Each hostile body (and one large good one) with its headers."""
    objects = b"{}," * 5_000_000 + b"{}"
    good: list[dict[str, object]] = [
        {"originalId": f"good-{i}", "attributes": {"firstname": "x" * 800, "score": i}} for i in range(10_000)
    ]
    return {
        # the control: 15 MB received and thrown away unparsed (415 from the header): what transport costs
        "control_15mb_unread": (b"[" + objects + b"]", {**JSON, "Content-Encoding": "gzip"}),
        "gzip_16mb_inflated": (gzip.compress(b"x\n" * 8_000_000), {**NDJSON, "Content-Encoding": "gzip"}),
        "ndjson_800k_bad_lines": (b"x\n" * 800_000, NDJSON),
        "array_5m_empty_objects": (b"[" + objects + b"]", JSON),
        "ndjson_one_line_5m_objects": (b"[" + objects + b"]", NDJSON),
        "array_one_item_5m_objects": (b"[[" + objects + b"]]", JSON),
        "ndjson_10001_items": (ndjson([{"originalId": f"over-{i}"} for i in range(10_001)]), NDJSON),
        "ndjson_9mb_10000_good_items": (ndjson(good), NDJSON),
    }


def lag_buckets(url: str) -> Buckets | None:
    """The worker's cumulative lag buckets by upper bound, None if it does not export them."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        if family.name == "streamapp_event_loop_lag_seconds":
            return {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}
    return None


def quantile(q: float, buckets: Buckets) -> float | None:
    """histogram_quantile: linear interpolation inside the bucket holding rank q·count."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, buckets[bound]
    return lower


def lag_summary(before: Buckets | None, after: Buckets | None) -> dict[str, float | None] | None:
    if before is None or after is None:
        return None
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    return {
        "observations": delta[float("inf")],
        "p50": _round(quantile(0.5, delta)),
        "p99": _round(quantile(0.99, delta)),
        "max_le": highest_bucket(delta),
    }


def highest_bucket(buckets: Buckets) -> float | None:
    """Upper bound of the highest bucket holding an observation: the max is at most this."""
    highest, below = None, 0.0
    for bound in sorted(buckets):
        if buckets[bound] > below:
            highest = bound
        below = buckets[bound]
    return highest


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class HealthLoop(threading.Thread):
    """GET /healthz every 20 ms; `take()` returns and clears the latencies so far."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.latencies, self.stopping = url, list[float](), threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stopping.is_set():
                started = time.perf_counter()
                http.get("/healthz")
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    def take(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return sorted(taken)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(statistics.median(values), 4),
        "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 4),
        "max": round(values[-1], 4),
    }


def run(url: str, repeat: int, skip: set[str]) -> dict[str, object]:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKENS['admin']}"}, timeout=120)
    health = HealthLoop(url)
    health.start()
    results: dict[str, object] = {}
    time.sleep(2)
    before = lag_buckets(url)
    health.take()
    time.sleep(3)
    results["idle"] = {"loop_lag_s": lag_summary(before, lag_buckets(url)), "healthz_s": percentiles(health.take())}
    for name, (body, headers) in bodies().items():
        if name in skip:
            continue
        before = lag_buckets(url)
        health.take()
        times, statuses = [], set()
        for _ in range(repeat):
            started = time.perf_counter()
            statuses.add(api.post(URL_PATH, content=body, headers=headers).status_code)
            times.append(time.perf_counter() - started)
        time.sleep(0.3)  # the probe's next wake-up
        results[name] = {
            "bytes": len(body),
            "status": sorted(statuses),
            "answer_s": {"median": round(statistics.median(times), 4), "max": round(max(times), 4)},
            "loop_lag_s": lag_summary(before, lag_buckets(url)),
            "healthz_s": percentiles(health.take()),
        }
    health.stopping.set()
    api.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], help="a body not to send (repeatable)")
    args = parser.parse_args()
    with broker_and_pool("streamapp-bench-") as pool:
        worker = pool.create(partitions=8)
        results = run(worker.url, args.repeat, set(args.skip))
    print(json.dumps({"benchmark": "hostile_bodies", "cores": os.cpu_count(), **results}, indent=2))


if __name__ == "__main__":
    main()
