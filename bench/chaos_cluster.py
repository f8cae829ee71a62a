"""The chaos suite's cluster: a broker and two workers that it kills with -9, and what it saw of them.

`Timeline` records every kill and restart and the windows in which a worker or the broker was
down, so each refused write can be classified by what was down while it was in flight.
`Cluster` does the killing and restarting and notices workers that exit on their own.
`Observer` scrapes each worker's skip counters once a second: a killed worker's counters die
with it, so the highest value seen per worker incarnation is kept, and the logs are scanned too.
"""

from __future__ import annotations

import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from streamapp.devtools import kafka_broker
from tests.fixtures import ROOT, Worker

State = Literal["broker_down", "worker_down", "all_up"]

#: After the broker is back and both workers answer /healthz, its window stays open this long:
#: producers reconnect and refresh metadata, and a write in flight across it is still its doing.
BROKER_GRACE = 5.0
#: How long a (re)started worker may take to answer /healthz 200. A worker replaying changelogs is
#: slow, not failed: Faust replays about 3,500 records/s on a quiet 2-core machine and a few hundred
#: under this load (bench/README.md "Chaos"), and killing it then would only start the replay over.
READY_TIMEOUT = 600.0
START_ATTEMPTS = 3

SKIP_METRICS = {
    "send_records_skipped": "streamapp_send_records_skipped_total",
    "command_records_skipped": "streamapp_command_records_skipped_total",
}
#: The gap warnings of streamapp.sending.engine and agents/recipients.py.
SKIP_LOG = re.compile(r"skipped the agent|skipped on the way in")
_STAMP = re.compile(r"\[?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")
#: What a crashed worker logged about why: Faust's "Crashed reason=", the exception line.
CRASH_LOG = re.compile(r"Crashed reason=|We experienced a crash|^\w*(Error|Exception): ")
ERROR_LOG = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


class Timeline:
    """Events and down windows, in seconds since the run started; safe to use from any thread."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # to put the sink's delivery times (wall clock) on the timeline
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._down: dict[str, list[list[float]]] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, event: str, **detail: Any) -> None:
        with self._lock:
            self.events.append({"t": round(self.now(), 2), "event": event, **detail})

    def down(self, what: str) -> None:
        with self._lock:
            self._down.setdefault(what, []).append([self.now(), math.inf])

    def up(self, what: str, grace: float = 0.0) -> None:
        with self._lock:
            self._down[what][-1][1] = self.now() + grace

    def state(self, start: float, end: float) -> State:
        """The worst that was down at any moment of [start, end]: the broker, else a worker."""
        with self._lock:
            windows = {what: list(spans) for what, spans in self._down.items()}

        def overlaps(what: str) -> bool:
            return any(s <= end and start <= e for s, e in windows.get(what, []))

        if overlaps("broker"):
            return "broker_down"
        if any(overlaps(what) for what in windows if what != "broker"):
            return "worker_down"
        return "all_up"

    def windows(self) -> dict[str, list[list[float]]]:
        with self._lock:
            return {what: [[round(s, 2), round(e, 2)] for s, e in spans] for what, spans in self._down.items()}


@dataclass
class Incarnations:
    """Where each start of a worker begins in its log, so log lines can be told apart by process."""

    log: Path
    starts: list[int] = field(default_factory=list)

    def begin(self) -> None:
        self.starts.append(self.log.stat().st_size if self.log.exists() else 0)

    @property
    def current(self) -> int:
        return len(self.starts) - 1

    def of_offset(self, offset: int) -> int:
        return max((n for n, start in enumerate(self.starts) if start <= offset), default=0)


class ClusterError(RuntimeError):
    """A worker or the broker could not be brought back: the run cannot go on."""


class Cluster:
    """Two workers of one pool and their broker; kills and restarts them and notices unplanned exits."""

    def __init__(self, workers: list[Worker], broker_url: str, broker_dir: Path, timeline: Timeline) -> None:
        self.workers = workers
        self.broker_url = broker_url
        self.broker_dir = broker_dir
        self.timeline = timeline
        self.incarnations = [Incarnations(w.log) for w in workers]
        self.worker_kills = 0
        self.broker_kills = 0
        self.exits: list[dict[str, Any]] = []
        self._planned: set[int] = set()

    @property
    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def start_all(self) -> None:
        for n, worker in enumerate(self.workers):
            self.incarnations[n].begin()
            worker.start()
        for n, worker in enumerate(self.workers):
            try:
                worker.wait_ready(READY_TIMEOUT)
            except AssertionError as exc:
                raise ClusterError(f"worker{n} did not start: {exc}") from None

    def kill_worker(self, n: int) -> None:
        """kill -9, restart at once; the window closes when both workers are ready again."""
        self._planned.add(n)
        self.timeline.down(f"worker{n}")
        self.workers[n].kill()
        self.worker_kills += 1
        killed_at = self.timeline.now()
        self.timeline.record(f"kill -9 worker{n}")
        try:
            self._restart(n)
            self.wait_all_ready()
        finally:
            self._planned.discard(n)
        self.timeline.up(f"worker{n}")
        self.timeline.record(f"worker{n} ready", down_s=round(self.timeline.now() - killed_at, 2))

    def kill_broker(self) -> None:
        """kill -9 of the broker, restarted on the same port and log dir; workers stay up if they can."""
        pid = kafka_broker.status(self.broker_url, self.broker_dir).pid
        if pid is None:
            raise ClusterError("the broker is not running: nothing to kill")
        self.timeline.down("broker")
        os.kill(pid, signal.SIGKILL)
        self.broker_kills += 1
        killed_at = self.timeline.now()
        self.timeline.record("kill -9 broker", pid=pid)
        self._wait_broker_gone()
        kafka_broker.start(self.broker_url, self.broker_dir, ROOT)
        self.timeline.record("broker ready", down_s=round(self.timeline.now() - killed_at, 2))
        self.supervise()
        self.wait_all_ready()
        self.timeline.up("broker", grace=BROKER_GRACE)
        self.timeline.record("workers ready after broker restart", down_s=round(self.timeline.now() - killed_at, 2))

    def _wait_broker_gone(self, timeout: float = 30.0) -> None:
        """A JVM takes a moment to die after SIGKILL; `start` would take it for the running broker."""
        deadline = time.monotonic() + timeout
        while kafka_broker.status(self.broker_url, self.broker_dir).pid is not None:
            if time.monotonic() > deadline:
                raise ClusterError(f"the broker outlived kill -9 by {timeout:.0f}s")
            time.sleep(0.1)

    def supervise(self) -> None:
        """Restart any worker that exited without being killed, and say so."""
        for n, worker in enumerate(self.workers):
            if n in self._planned or worker.process is None or worker.process.poll() is None:
                continue
            self.timeline.down(f"worker{n}")
            incarnation = self.incarnations[n]
            crash = log_lines(worker.log, CRASH_LOG, incarnation, self.timeline.wall0)
            exit_info = {"worker": n, "t": round(self.timeline.now(), 2), "code": worker.process.returncode,
                         "incarnation": incarnation.current,
                         "crash_lines": [c["line"] for c in crash if c["incarnation"] == incarnation.current][:8],
                         "log_tail": worker.tail(8)}  # fmt: skip
            self.exits.append(exit_info)
            self.timeline.record(f"worker{n} exited on its own", code=worker.process.returncode)
            self._restart(n)
            self.timeline.up(f"worker{n}")

    def _restart(self, n: int) -> None:
        worker = self.workers[n]
        for attempt in range(START_ATTEMPTS):
            self.incarnations[n].begin()
            worker.start()
            try:
                worker.wait_ready(READY_TIMEOUT)
                return
            except AssertionError as exc:
                self.timeline.record(f"worker{n} failed to start", attempt=attempt, error=str(exc)[-400:])
                worker.kill()
        raise ClusterError(f"worker{n} did not come back after {START_ATTEMPTS} starts:\n{worker.tail()}")

    def wait_all_ready(self) -> None:
        """Both workers answer /healthz 200 (recovered, not rebalancing); a crashed one is restarted."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            self.supervise()
            if all(_healthy(w.url) for w in self.workers):
                return
            time.sleep(0.2)
        raise ClusterError(f"the workers were not both ready within {READY_TIMEOUT:.0f}s")

    def is_up(self, n: int) -> bool:
        process = self.workers[n].process
        return n not in self._planned and process is not None and process.poll() is None


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Health(threading.Thread):
    """Probes every worker's /healthz twice a second, as a load balancer's readiness check does."""

    def __init__(self, urls: list[str], interval: float = 0.5) -> None:
        super().__init__(name="chaos-health", daemon=True)
        self.urls = urls
        self.interval = interval
        self.stop = threading.Event()
        self.ready = [True] * len(urls)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.ready = [_healthy(url) for url in self.urls]


class Observer(threading.Thread):
    """Scrapes the skip counters of every live worker once a second; keeps the maximum per incarnation."""

    def __init__(self, cluster: Cluster, interval: float = 1.0) -> None:
        super().__init__(name="chaos-observer", daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.stop = threading.Event()
        self.seen: dict[tuple[int, int], dict[str, float]] = {}
        self.scrapes = 0

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.scrape_all()

    def scrape_all(self) -> None:
        for n, worker in enumerate(self.cluster.workers):
            incarnation = self.cluster.incarnations[n].current
            if not self.cluster.is_up(n):
                continue
            values = _scrape(worker.url)
            if values is None or incarnation != self.cluster.incarnations[n].current:
                continue
            self.scrapes += 1
            best = self.seen.setdefault((n, incarnation), dict.fromkeys(SKIP_METRICS, 0.0))
            for name, value in values.items():
                best[name] = max(best[name], value)

    def counters(self) -> dict[str, dict[str, Any]]:
        """Per worker: the skip counters summed over its incarnations, and the gap lines of its log."""
        report: dict[str, dict[str, Any]] = {}
        for n, worker in enumerate(self.cluster.workers):
            totals = dict.fromkeys(SKIP_METRICS, 0)
            for (w, _), values in self.seen.items():
                if w == n:
                    for name, value in values.items():
                        totals[name] += int(value)
            wall0 = self.cluster.timeline.wall0
            lines = log_lines(worker.log, SKIP_LOG, self.cluster.incarnations[n], wall0)
            errors = log_lines(worker.log, ERROR_LOG, self.cluster.incarnations[n], wall0)
            report[f"worker{n}"] = {
                **totals, "incarnations": len(self.cluster.incarnations[n].starts),
                "gap_log_lines": lines[:20], "gap_log_count": len(lines),
                "error_log_count": len(errors), "error_log_first": _distinct(errors, 5),
            }  # fmt: skip
        return report


def _scrape(url: str) -> dict[str, float] | None:
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    values: dict[str, float] = {}
    for name, metric in SKIP_METRICS.items():
        match = re.search(rf"^{metric} (\S+)$", text, re.M)
        values[name] = float(match.group(1)) if match else 0.0
    return values


def log_lines(log: Path, pattern: re.Pattern[str], incarnations: Incarnations, wall0: float) -> list[dict[str, Any]]:
    """Lines of a worker log matching `pattern`, with the incarnation that wrote each and when
    (timeline seconds, from the line's local timestamp)."""
    found: list[dict[str, Any]] = []
    if not log.exists():
        return found
    offset = 0
    with log.open("rb") as f:
        for raw in f:
            line = raw.decode(errors="replace").rstrip()
            if pattern.search(line):
                found.append({"incarnation": incarnations.of_offset(offset), "t": _line_time(line, wall0),
                              "line": line[:400]})  # fmt: skip
            offset += len(raw)
    return found


def _line_time(line: str, wall0: float) -> float | None:
    match = _STAMP.match(line)
    if match is None:
        return None
    stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000
    return round(stamp - wall0, 2)


def _distinct(lines: list[dict[str, Any]], limit: int) -> list[str]:
    """The first `limit` different error lines, without their timestamps."""
    seen: dict[str, None] = {}
    for entry in lines:
        seen.setdefault(re.sub(r"^\[[^\]]*\]\s*", "", entry["line"])[:300], None)
        if len(seen) >= limit:
            break
    return list(seen)
