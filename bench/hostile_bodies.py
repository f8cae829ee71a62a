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

Batch bodies (`POST /api/v1/triggers/news/batches`, spooled to disk, read in a thread): `BATCH_BODIES`,
streamed from a generator so the client holds none of them whole, each once: a CSV of one 1 GiB line
of `;`, an NDJSON body of one 100 MB line, and a body trickled at one byte a second. For these,
`worker_rss_mb` is the worker's resident memory before and at its peak (sampled every 20 ms).

Run: `.venv/bin/python bench/hostile_bodies.py` (a few minutes; `--skip` any body, `--no-batches`, `--no-recipients`).
Against code that still parses whole bodies on the loop, `--skip gzip_16mb_inflated`: 8 million
errors kept take GBs.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import broker_and_pool
from tests.fixtures import TOKENS, free_port
from tests.sending.fixtures import smtp_extra, write_templates

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


# -- batch bodies: bounded work per request ------------------------------------------------------

BATCH_PATH = "/api/v1/triggers/news/batches"
GIB = 1 << 30


def _repeat(head: bytes, byte: bytes, count: int, tail: bytes) -> Callable[[], Iterator[bytes]]:
    """A body of `head`, `count` times `byte`, `tail`, made in 1 MiB pieces as it is sent."""

    def pieces() -> Iterator[bytes]:
        yield head
        block, left = byte * (1 << 20), count
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)
        yield tail

    return pieces


def batch_bodies() -> dict[str, tuple[Callable[[], Iterator[bytes]], str]]:
    """Each hostile batch body (a generator of its pieces) and its Content-Type."""
    csv_head = b"originalId;email\n"
    return {
        # 1 GiB of delimiters on one line: without a line bound, a billion fields of 8 bytes each.
        "csv_1gib_line_of_semicolons": (_repeat(csv_head, b";", GIB - 64, b"\nok-1;ok-1@example.com\n"), "text/csv"),
        # one NDJSON line of 100 MB: without a line bound, read whole (and decoded).
        "ndjson_100mb_one_line": (
            _repeat(b'{"originalId": "big", "properties": {"p": "', b"y", 100_000_000, b'"}}\n'),
            "application/x-ndjson",
        ),
    }


class RssPeak(threading.Thread):
    """The worker's resident memory (VmRSS) every 20 ms; `peak` is the highest seen, in MB."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopping = pid, 0.0, threading.Event()

    def rss(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)


def trickle(url: str, seconds: float = 60.0) -> tuple[int | None, float]:
    """POST a 10,000-byte batch body one byte a second; (status, seconds until the answer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"POST {BATCH_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['admin']}\r\n"
        "Content-Type: text/csv\r\nContent-Length: 10000\r\n\r\n".encode()
    )
    sock.settimeout(1.0)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            sock.sendall(b"x")
            try:
                head = sock.recv(4096)
            except TimeoutError:
                continue
            return (int(head.split()[1]) if head else None), round(time.perf_counter() - started, 2)
        return None, round(time.perf_counter() - started, 2)
    finally:
        sock.close()


def run_batches(url: str, pid: int, skip: set[str]) -> dict[str, object]:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKENS['admin']}"}, timeout=1800)
    health = HealthLoop(url)
    health.start()
    results: dict[str, object] = {}
    cases: dict[str, Callable[[], tuple[int | None, object]]] = {
        name: functools.partial(_post_streamed, api, make, ctype) for name, (make, ctype) in batch_bodies().items()
    }
    cases["trickled_1_byte_per_second"] = functools.partial(trickle, url)
    for name, case in cases.items():
        if name in skip:
            continue
        sampler = RssPeak(pid)
        before_rss = sampler.rss()
        sampler.start()
        before = lag_buckets(url)
        health.take()
        started = time.perf_counter()
        status, detail = case()
        elapsed = time.perf_counter() - started
        time.sleep(0.3)
        sampler.stopping.set()
        sampler.join()
        results[name] = {
            "status": status,
            "answer_s": round(elapsed, 2),
            "answer": detail,
            "worker_rss_mb": {"before": round(before_rss, 1), "peak": round(sampler.peak, 1)},
            "loop_lag_s": lag_summary(before, lag_buckets(url)),
            "healthz_s": percentiles(health.take()),
        }
    health.stopping.set()
    api.close()
    return results


def _post_streamed(api: httpx.Client, make: Callable[[], Iterator[bytes]], ctype: str) -> tuple[int, object]:
    response = api.post(BATCH_PATH, content=make(), headers={"Content-Type": ctype})
    body = response.json()
    if response.status_code == 202:
        return 202, {k: body[k] for k in ("accepted", "rejected")} | {"errors": body["errors"][:2]}
    return response.status_code, body.get("error")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], help="a body not to send (repeatable)")
    parser.add_argument("--no-batches", action="store_true", help="only the recipients bodies")
    parser.add_argument("--no-recipients", action="store_true", help="only the batch bodies")
    args = parser.parse_args()
    with broker_and_pool("streamapp-bench-") as pool:
        write_templates(pool.base)  # [smtp] to a port nobody answers: nothing here is ever sent
        worker = pool.create(partitions=8, extra=smtp_extra(free_port()))
        results = {} if args.no_recipients else run(worker.url, args.repeat, set(args.skip))
        if not args.no_batches:
            assert worker.process is not None
            results["batch_bodies"] = run_batches(worker.url, worker.process.pid, set(args.skip))
    print(json.dumps({"benchmark": "hostile_bodies", "cores": os.cpu_count(), **results}, indent=2))


if __name__ == "__main__":
    main()
