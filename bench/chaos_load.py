"""The chaos suite's load: single and batch upserts, single transactional messages, campaigns, files.

Every request goes through a `Gateway` that acts like a load balancer with health checks: a
worker that refuses connections is skipped, so a refusal counted here is always an HTTP answer
from a live worker. Each reply is one of

- accepted (202): Kafka acknowledged it, so the verifier expects it applied or sent;
- refused (5xx): classified by what was down while it was in flight (`Timeline.state`);
- unknown: the connection broke after the request was sent (the worker was killed mid-request);
- rejected (4xx): a bug of the driver, reported as such.

Writes to one key come from one thread, one after the other, and carry an increasing version
(`attributes.score`), so "its last value" is well defined: the version of the last 202, or a
later version whose outcome was unknown or refused (it may have reached Kafka anyway).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from bench.chaos_cluster import Timeline
from tests.fixtures import TOKENS

Outcome = Literal["accepted", "refused", "unknown", "rejected"]
#: Which workers the readiness checks last saw ready.
Ready = Callable[[], list[bool]]

SINGLE = "PUT /api/v1/databases/{db}/recipients/{originalId}"
BATCH = "POST /api/v1/databases/{db}/recipients"
MESSAGE = "POST /api/v1/triggers/{trigger}/messages"
CAMPAIGN = "POST /api/v1/campaigns/{campaign}/sends"
ROUTES = (SINGLE, BATCH, MESSAGE, CAMPAIGN)

#: How long a request waits for a worker that accepts connections (both may be restarting).
CONNECT_DEADLINE = 90.0
#: How long one transactional message is retried (same idempotency key) before it is given up.
MESSAGE_DEADLINE = 120.0
DETAILS_KEPT = 100
REFUSED = {"broker_down": "refused_broker_down", "worker_down": "refused_with_worker_down",
           "all_up": "refused_all_up"}  # fmt: skip


@dataclass
class Reply:
    outcome: Outcome
    status: int | None
    body: Any
    worker: int | None
    start: float
    end: float
    error: str = ""


class Gateway:
    """One client's way to the workers, as through a load balancer with readiness checks: round
    robin over the workers whose /healthz said ready, the others only when none is (failing open),
    and a worker that refuses the connection is skipped."""

    def __init__(
        self, urls: list[str], timeline: Timeline, token: str, ready: Ready, abort: threading.Event,
        timeout: float = 60.0,
    ) -> None:  # fmt: skip
        self.urls = urls
        self.timeline = timeline
        self.ready = ready
        self.abort = abort
        self.client = httpx.Client(headers={"Authorization": f"Bearer {TOKENS[token]}"}, timeout=timeout)
        self._next = 0

    def send(self, method: str, path: str, **kwargs: Any) -> Reply:
        start = self.timeline.now()
        deadline = time.monotonic() + CONNECT_DEADLINE
        while time.monotonic() < deadline and not self.abort.is_set():
            for n in self._candidates():
                try:
                    response = self.client.request(method, f"{self.urls[n]}{path}", **kwargs)
                except httpx.ConnectError:
                    continue
                except httpx.HTTPError as exc:  # sent, then the connection broke or timed out
                    return Reply("unknown", None, None, n, start, self.timeline.now(), repr(exc)[:200])
                return _reply(response, n, start, self.timeline.now())
            time.sleep(0.05)
        return Reply("unknown", None, None, None, start, self.timeline.now(), "no worker accepts connections")

    def _candidates(self) -> list[int]:
        self._next += 1
        order = [(self._next + i) % len(self.urls) for i in range(len(self.urls))]
        ready = self.ready()
        return [n for n in order if ready[n]] + [n for n in order if not ready[n]]

    def close(self) -> None:
        self.client.close()


def _reply(response: httpx.Response, worker: int, start: float, end: float) -> Reply:
    try:
        body = response.json()
    except ValueError:
        body = response.text[:200]
    code = response.status_code
    outcome: Outcome = "accepted" if code == 202 else "refused" if code >= 500 else "rejected"
    return Reply(outcome, code, body, worker, start, end)


class WriteLog:
    """Counts of every route's outcomes, refusals by what was down, and a few of each kind in detail."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self._lock = threading.Lock()
        self.counts: dict[str, Counter[str]] = {route: Counter() for route in ROUTES}
        self.reasons: Counter[tuple[str, str, str]] = Counter()
        self.details: list[dict[str, Any]] = []

    def record(self, route: str, reply: Reply, what: str) -> None:
        kind: str = reply.outcome
        if kind == "refused":
            kind = REFUSED[self.timeline.state(reply.start, reply.end)]
        with self._lock:
            self.counts[route]["attempted"] += 1
            self.counts[route][kind] += 1
            if kind != "accepted":
                self.reasons[route, kind, _reason(reply)] += 1
            if kind not in ("accepted", "refused_broker_down") and len(self.details) < DETAILS_KEPT:
                self.details.append({"route": route, "kind": kind, "what": what, "status": reply.status,
                                     "worker": reply.worker, "t": [round(reply.start, 2), round(reply.end, 2)],
                                     "answer": str(reply.body or reply.error)[:300]})  # fmt: skip

    def totals(self, kind: str) -> int:
        return sum(c[kind] for c in self.counts.values())

    def reason_counts(self) -> list[dict[str, Any]]:
        """Every non-202 outcome by route, kind and the answer's `error` (or the client's error)."""
        return [{"route": route, "kind": kind, "reason": reason, "count": count}
                for (route, kind, reason), count in self.reasons.most_common()]  # fmt: skip


def _reason(reply: Reply) -> str:
    if isinstance(reply.body, dict) and "error" in reply.body:
        return str(reply.body["error"])[:120]
    return (reply.error or str(reply.body))[:120]


@dataclass
class KeyState:
    """One key's writes: the last version acknowledged and the later ones of unknown fate."""

    accepted: int = 0
    accepted_at: tuple[float, int | None] | None = None
    unacked: list[int] = field(default_factory=list)


class Versions:
    """The expected last value of every key written by the upsert routes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.keys: dict[str, KeyState] = {}
        self.route: dict[str, str] = {}

    def settle(self, route: str, keys: list[str], version: int, reply: Reply) -> None:
        with self._lock:
            for key in keys:
                state = self.keys.setdefault(key, KeyState())
                self.route.setdefault(key, route)
                if reply.outcome == "accepted":
                    state.accepted, state.accepted_at, state.unacked = version, (reply.end, reply.worker), []
                else:
                    state.unacked.append(version)


@dataclass
class Campaign:
    rows: list[str]
    batch_id: str | None = None
    posted_at: float = 0.0


@dataclass
class DroppedFile:
    name: str
    rows: int
    prefix: str
    dropped_at: float


@dataclass
class Ledgers:
    """Everything the load did that the verifier checks."""

    writes: WriteLog
    versions: Versions = field(default_factory=Versions)
    #: idempotency key -> message id of the first 202; and keys answered with another id later.
    messages: dict[str, str] = field(default_factory=dict)
    message_recipients: dict[str, str] = field(default_factory=dict)
    #: message id -> when its first 202 came (timeline seconds)
    message_accepted_at: dict[str, float] = field(default_factory=dict)
    mismatched_ids: list[dict[str, Any]] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    #: Transactional messages due (one per tick) and those actually posted: a tick whose message
    #: waits for a free client (others are held by slow answers) may still be queued at the end.
    messages_due: int = 0
    messages_posted: list[int] = field(default_factory=list)  # appended by many threads: no lock needed
    campaigns: list[Campaign] = field(default_factory=list)
    files: list[DroppedFile] = field(default_factory=list)


@dataclass(frozen=True)
class LoadPlan:
    seed: int
    single_threads: int = 4
    single_keys: int = 500
    single_rate: float = 10.0  # PUT/s per thread
    batch_keys: int = 5000
    batch_rows: int = 1000
    batch_every: float = 1.0
    message_every: float = 0.1
    file_rows: int = 200_000
    campaign_rows: int = 20_000
    #: When (seconds since the start) each campaign is posted and each file dropped.
    campaign_at: tuple[float, ...] = (1.0,)
    file_at: tuple[float, ...] = (8.0,)


class Load:
    """Runs every generator in its own thread until `stop()`; the ledgers say what was accepted."""

    def __init__(self, plan: LoadPlan, urls: list[str], ready: Ready, timeline: Timeline, drop_dir: Path) -> None:
        self.plan = plan
        self.urls = urls
        self.ready = ready
        self.timeline = timeline
        self.drop_dir = drop_dir
        self.ledgers = Ledgers(WriteLog(timeline))
        self.stopping = threading.Event()
        #: The run failed: even requests being retried give up.
        self.aborted = threading.Event()
        self.threads: list[threading.Thread] = []
        #: Set once the first campaign was answered and the first file dropped: the first kill
        #: waits for it, so that it meets both in flight rather than a half-posted campaign.
        self.first_bulk = threading.Event()
        self._first_campaign = threading.Event()

    def start(self) -> None:
        targets: list[tuple[str, Callable[[], None]]] = [
            *((f"single{n}", lambda n=n: self._singles(n)) for n in range(self.plan.single_threads)),
            ("batches", self._batches),
            ("messages", self._messages),
            ("campaigns", self._campaigns),
            ("files", self._files),
        ]
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"chaos-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = MESSAGE_DEADLINE + 30) -> list[str]:
        """Stop generating; wait for requests in flight (timeout 0: abort, retries too). Returns
        the threads still running."""
        self.stopping.set()
        if timeout == 0:
            self.aborted.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]

    def _pace(self, every: float, started: float, n: int) -> bool:
        """Sleep until the n-th tick; False once stopping."""
        return not self.stopping.wait(max(0.0, started + n * every - time.monotonic()))

    # -- upserts ---------------------------------------------------------------------------

    def _singles(self, thread: int) -> None:
        plan, gateway = self.plan, Gateway(self.urls, self.timeline, "admin", self.ready, self.aborted)
        keys = [f"s{thread}-{j}" for j in range(plan.single_keys // plan.single_threads)]
        started, n = time.monotonic(), 0
        while self._pace(1 / plan.single_rate, started, n):
            key, version = keys[n % len(keys)], n // len(keys) + 1  # each round over the keys: one version up
            n += 1
            body = {"email": f"{key}@example.com", "attributes": {"score": version, "firstname": "single"}}
            reply = gateway.send("PUT", f"/api/v1/databases/members/recipients/{key}", json=body)
            self.ledgers.writes.record(SINGLE, reply, key)
            self.ledgers.versions.settle(SINGLE, [key], version, reply)
        gateway.close()

    def _batches(self) -> None:
        plan, gateway = self.plan, Gateway(self.urls, self.timeline, "admin", self.ready, self.aborted)
        rng = random.Random(self.plan.seed ^ 0xBA7C)
        started, n = time.monotonic(), 0
        while self._pace(plan.batch_every, started, n):
            n += 1
            keys = [f"b-{j}" for j in sorted(rng.sample(range(plan.batch_keys), plan.batch_rows))]
            rows = [{"originalId": k, "email": f"{k}@example.com", "attributes": {"score": n}} for k in keys]
            reply = gateway.send("POST", "/api/v1/databases/members/recipients", json=rows)
            self.ledgers.writes.record(BATCH, reply, f"batch {n} ({len(keys)} rows)")
            self.ledgers.versions.settle(BATCH, keys, n, reply)
        gateway.close()

    # -- transactional messages --------------------------------------------------------------

    def _messages(self) -> None:
        local = threading.local()

        def one(n: int) -> None:
            if not hasattr(local, "gateway"):  # one client per pool thread
                local.gateway = Gateway(self.urls, self.timeline, "sender", self.ready, self.aborted)
            self._one_message(local.gateway, n)

        with ThreadPoolExecutor(64, thread_name_prefix="chaos-message") as pool:
            started, n = time.monotonic(), 0
            while self._pace(self.plan.message_every, started, n):
                pool.submit(one, n)
                n += 1
                self.ledgers.messages_due = n
            pool.shutdown(wait=True, cancel_futures=True)  # messages not yet begun are never posted

    def _one_message(self, gateway: Gateway, n: int) -> None:
        """POST one message, retried with the same idempotency key until a 202 (a client's duty)."""
        key, original_id = f"chaos-{n}", f"t-{n}"
        self.ledgers.messages_posted.append(n)
        body = {"originalId": original_id, "email": f"{original_id}@example.com", "properties": {"order": n},
                "idempotencyKey": key}  # fmt: skip
        deadline = time.monotonic() + MESSAGE_DEADLINE
        while time.monotonic() < deadline and not self.aborted.is_set():
            reply = gateway.send("POST", "/api/v1/triggers/receipt/messages", json=body)
            self.ledgers.writes.record(MESSAGE, reply, key)
            if reply.outcome == "accepted":
                self._accepted_message(key, original_id, str(reply.body["messageId"]), reply)
                return
            if reply.outcome == "rejected":
                break
            time.sleep(1.0)  # Retry-After: 1
        self.ledgers.given_up.append(key)

    def _accepted_message(self, key: str, original_id: str, message_id: str, reply: Reply) -> None:
        known = self.ledgers.messages.setdefault(key, message_id)
        self.ledgers.message_recipients[key] = original_id
        self.ledgers.message_accepted_at.setdefault(message_id, reply.end)
        if known != message_id:
            self.ledgers.mismatched_ids.append({"key": key, "first": known, "then": message_id,
                                                "t": round(reply.end, 2)})  # fmt: skip

    # -- campaigns and files -----------------------------------------------------------------

    def _campaigns(self) -> None:
        gateway = Gateway(self.urls, self.timeline, "admin", self.ready, self.aborted, timeout=300)
        for n, at in enumerate(self.plan.campaign_at):
            if self.stopping.wait(max(0.0, at - self.timeline.now())):
                break
            self._campaign(gateway, n)
            self._first_campaign.set()
        gateway.close()

    def _files(self) -> None:
        for n, at in enumerate(self.plan.file_at):
            if n == 0:
                self._first_campaign.wait(MESSAGE_DEADLINE)
            elif self.stopping.wait(max(0.0, at - self.timeline.now())):
                break
            self._drop_file(n)
            self.first_bulk.set()

    def _campaign(self, gateway: Gateway, n: int) -> None:
        """POST the campaign once. Not retried: a send has no idempotency key, so a retry after a
        broken connection or a 503 (both may come after some rows were published) would mail those
        recipients twice under a new batch; such a campaign's deliveries count as unaccepted."""
        rows = [f"c{n}-{i}" for i in range(self.plan.campaign_rows)]
        lines = ["originalId,email,firstname,zipcode", *(f"{r},{r}@example.com,C{n},{i % 90000 + 10000}"
                                                        for i, r in enumerate(rows))]  # fmt: skip
        body = ("\r\n".join(lines) + "\r\n").encode()
        reply = gateway.send("POST", "/api/v1/campaigns/promo/sends", content=body,
                             headers={"Content-Type": "text/csv"})  # fmt: skip
        self.ledgers.writes.record(CAMPAIGN, reply, f"campaign {n}")
        accepted = reply.outcome == "accepted"
        self.ledgers.campaigns.append(Campaign(rows, str(reply.body["batchId"]) if accepted else None, reply.end))
        self.timeline.record(
            f"campaign {n}: {reply.outcome}", rows=len(rows), seconds=round(reply.end - reply.start, 2)
        )

    def _drop_file(self, n: int) -> None:
        """Write the file beside the watched folder and rename it in: complete at once."""
        name, prefix = f"chaos-{self.plan.seed}-{n}.csv", f"f{n}-"
        folder = self.drop_dir / "members" / "chaos"
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{name}.writing"
        staging.write_bytes(file_body(prefix, self.plan.file_rows))
        os.replace(staging, folder / name)
        self.ledgers.files.append(DroppedFile(name, self.plan.file_rows, prefix, self.timeline.now()))
        self.timeline.record(f"dropped {name}", rows=self.plan.file_rows)


def file_body(prefix: str, rows: int) -> bytes:
    lines = ["CustomerNo;Email;FirstName;Score"]
    lines += [f"{prefix}{i};{prefix}{i}@example.com;{file_firstname(i)};{i % 1000}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def file_firstname(i: int) -> str:
    return f"Name{i % 97}"


IMPORT = """
[[imports]]
name = "chaos"
database = "members"
watch = "members/chaos"
settle_seconds = 0.3
identity = "CustomerNo"
[imports.columns]
Email = "email"
FirstName = "firstname"
Score = "score"
"""


def summary(ledgers: Ledgers) -> dict[str, Any]:
    """Outcome counts by route, for the report."""
    return {route: dict(counts) for route, counts in ledgers.writes.counts.items()} | {
        "refused_broker_down": ledgers.writes.totals("refused_broker_down"),
        "refused_with_worker_down": ledgers.writes.totals("refused_with_worker_down"),
        "refused_all_up": ledgers.writes.totals("refused_all_up"),
        "unknown": ledgers.writes.totals("unknown"),
        "rejected": ledgers.writes.totals("rejected"),
    }
