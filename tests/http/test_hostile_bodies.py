"""Hostile request bodies against a real worker: refused early, cheaply, and the event loop stays free.

SPEC §4: bodies with a Content-Encoding are refused (415); 422s name bad fields up to 1,000; no
request blocks the event loop for more than 100 ms, and every route answers within 1 s. The
worker's own `streamapp_event_loop_lag_seconds` (SPEC §7) is the witness.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures import Worker, client, get_when, metric_value

pytestmark = pytest.mark.integration

RECIPIENTS = "/api/v1/databases/members/recipients"
NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}


def ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"\n".join(json.dumps(row).encode() for row in rows)


def valid_rows(prefix: str, n: int = 10_000, pad: int = 800) -> list[dict[str, object]]:
    """`n` good recipients, ~900 bytes each: 10,000 make a 9 MB body."""
    return [{"originalId": f"{prefix}-{i}", "attributes": {"firstname": "x" * pad, "score": i}} for i in range(n)]


def accepted_rows(worker: Worker) -> float:
    """streamapp_ingest_rows_total{outcome="accepted"} of the members database."""
    return metric_value(worker.url, "streamapp_ingest_rows_total", outcome="accepted", database="members")


@dataclass(frozen=True)
class Lag:
    """The worker's event-loop lag histogram: observations in all, and above 0.1 s and 0.5 s."""

    count: float
    above_100ms: float
    above_500ms: float

    @staticmethod
    def read(worker: Worker) -> Lag:
        text = httpx.get(f"{worker.url}/metrics", timeout=10).text
        buckets: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "streamapp_event_loop_lag_seconds":
                buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
        assert buckets, "streamapp_event_loop_lag_seconds is not exported"
        total = buckets["+Inf"]
        return Lag(total, total - buckets["0.1"], total - buckets["0.5"])

    def __sub__(self, before: Lag) -> Lag:
        return Lag(
            self.count - before.count, self.above_100ms - before.above_100ms, self.above_500ms - before.above_500ms
        )


@dataclass
class HealthLoop:
    """GET /healthz every 20 ms on its own connection, from a thread, while the test sends bodies."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    status = http.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                else:
                    if status != 200:
                        self.failures.append(f"status {status}")
                self.latencies.append(time.perf_counter() - started)
                time.sleep(0.02)


@pytest.fixture
def health(worker: Worker) -> Iterator[HealthLoop]:
    loop = HealthLoop(worker.url)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    yield loop
    loop.stop.set()
    thread.join(15)


# -- each hostile body, refused as SPEC §4 says ---------------------------------------------------


def test_a_gzip_body_is_415_and_nothing_is_applied(worker: Worker) -> None:
    before = accepted_rows(worker)
    rows = [{"originalId": f"gz-{i}"} for i in range(1_000)]
    headers = {**NDJSON, "Content-Encoding": "gzip"}
    with client(worker) as api:
        reply = api.post(RECIPIENTS, content=gzip.compress(ndjson(rows)), headers=headers)
        assert reply.status_code == 415, reply.text
        assert "Content-Encoding" in reply.json()["error"] and reply.headers["Accept-Encoding"] == "identity"
        single = api.put(f"{RECIPIENTS}/gz-single", content=gzip.compress(b"{}"), headers={**JSON, **headers})
        assert single.status_code == 415
        history = api.post("/api/v1/databases/members/history", content=gzip.compress(b"[]"), headers=headers)
        assert history.status_code == 415
        plain = api.put(f"{RECIPIENTS}/gz-plain", content=b"{}", headers={**JSON, "Content-Encoding": "identity"})
        assert plain.status_code == 202
        get_when(worker, f"{RECIPIENTS}/gz-plain")  # written after the refusals, and applied
        assert api.get(f"{RECIPIENTS}/gz-0").status_code == 404
        assert api.get(f"{RECIPIENTS}/gz-single").status_code == 404
    assert accepted_rows(worker) == before + 1


def test_800k_bad_lines_are_a_quick_422_with_1000_details(worker: Worker) -> None:
    with client(worker) as api:
        started = time.perf_counter()
        reply = api.post(RECIPIENTS, content=b"x\n" * 800_000, headers=NDJSON)
        elapsed = time.perf_counter() - started
    assert reply.status_code == 422
    body = reply.json()
    assert len(body["details"]) == 1000 and body["details"][0]["path"] == "line 1"
    assert "reading stopped" in body["error"]
    assert elapsed < 2.0, f"{elapsed:.2f} s (this took 6 s of blocked loop before reading stopped early)"


def test_10001_items_are_413(worker: Worker) -> None:
    with client(worker) as api:
        reply = api.post(RECIPIENTS, content=ndjson([{"originalId": f"m-{i}"} for i in range(10_001)]), headers=NDJSON)
    assert reply.status_code == 413 and "10000" in reply.json()["error"]


def test_a_9_mb_body_of_10000_good_items_is_still_202(worker: Worker) -> None:
    body = ndjson(valid_rows("nine"))
    assert len(body) > 8_500_000
    with client(worker) as api:
        reply = api.post(RECIPIENTS, content=body, headers=NDJSON)
    assert reply.status_code == 202, reply.text[:500]
    assert reply.json() == {"accepted": 10_000}
    assert get_when(worker, f"{RECIPIENTS}/nine-9999")["attributes"]["score"] == 9_999


# -- the event loop while they arrive ---------------------------------------------------------------


def hostile_bodies() -> list[tuple[str, bytes, dict[str, str], int]]:
    objects = b"{}," * 5_000_000 + b"{}"
    return [
        ("gzip bomb", gzip.compress(b"x\n" * 8_000_000), {**NDJSON, "Content-Encoding": "gzip"}, 415),
        ("800k bad lines", b"x\n" * 800_000, NDJSON, 422),
        ("5M empty objects", b"[" + objects + b"]", JSON, 422),  # 1,000 errors come before item 10,001
        ("one line of 5M objects", b"[" + objects + b"]", NDJSON, 422),
        ("one item of 5M objects", b"[[" + objects + b"]]", JSON, 422),
        ("10,001 items", ndjson([{"originalId": f"n-{i}"} for i in range(10_001)]), NDJSON, 413),
    ]


def settled_lag(worker: Worker) -> Lag:
    """The lag histogram once a second passes without a new late wake-up (start-up, earlier tests)."""
    last = Lag.read(worker)
    for _ in range(10):
        time.sleep(1)
        now = Lag.read(worker)
        if now.above_100ms == last.above_100ms:
            return now
        last = now
    return last


def post_all(worker: Worker, bodies: list[tuple[str, bytes, dict[str, str], int]]) -> dict[str, tuple[int, float]]:
    """Each body's status and seconds to answer."""
    answers: dict[str, tuple[int, float]] = {}
    with client(worker) as api:
        for name, body, headers, _ in bodies:
            started = time.perf_counter()
            status = api.post(RECIPIENTS, content=body, headers=headers).status_code
            answers[name] = (status, round(time.perf_counter() - started, 3))
    return answers


def test_hostile_bodies_leave_the_event_loop_free(worker: Worker, health: HealthLoop) -> None:
    """No lag observation above 0.5 s, at most three above 0.1 s; /healthz always answers within 1 s.

    Parsed whole on the loop, as before, each of these bodies held it for 1 to 6 s (the gzip one
    for far longer): at least one observation above 0.5 s each, so none above 0.5 s is the sharp
    check. Above 0.1 s, three are allowed for what a loaded 2-core machine does by itself: the
    broker, this test and the worker share two cores, and a worker starved of CPU wakes its probe
    late although nothing blocks its loop (the control body of bench/hostile_bodies.py shows this).
    What the parsing itself takes per turn of the loop is bounded in CPU time by test_bodies.py.
    """
    bodies = hostile_bodies()
    post_all(worker, [("warm-up", b'{"originalId": 1}\n[]', NDJSON, 422)])
    before = settled_lag(worker)
    answers = post_all(worker, bodies)
    time.sleep(0.5)  # the probe's last wake-ups
    lag = Lag.read(worker) - before
    print(f"{lag}; answers {answers}; slowest /healthz {max(health.latencies):.3f} s")
    assert {name: status for name, (status, _) in answers.items()} == {name: want for name, *_, want in bodies}
    assert lag.count > 0, "the lag probe does not run"
    assert lag.above_500ms == 0, f"{lag}; answers: {answers}"
    assert lag.above_100ms <= 3, f"{lag}; answers: {answers}"
    assert not health.failures and health.latencies, health.failures[:5]
    assert max(health.latencies) < 1.0, f"slowest /healthz {max(health.latencies):.3f} s"


def test_health_answers_while_a_9_mb_body_is_ingested(worker: Worker, health: HealthLoop) -> None:
    """The good body's parse runs in the same steps; publishing its 10,000 commands is not bounded here."""
    before = settled_lag(worker)
    answers = post_all(worker, [("9 MB of good items", ndjson(valid_rows("lag")), NDJSON, 202)])
    lag = Lag.read(worker) - before
    print(f"{lag}; answers {answers}; slowest /healthz {max(health.latencies):.3f} s")
    assert answers["9 MB of good items"][0] == 202
    assert lag.above_500ms == 0, f"{lag}; answers: {answers}"
    assert not health.failures and max(health.latencies) < 1.0, (health.failures[:5], max(health.latencies))
