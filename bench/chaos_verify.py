"""The chaos suite's verifier: was every acknowledged write applied, every accepted message sent?

Read from outside the workers, the way an auditor would:

- recipients from their changelog topic (every row the agent wrote, what a recovering worker
  restores), and a seeded sample of them again through the API, which must agree;
- deliveries from the SMTP sink's Maildir, counted per `X-Streamapp-Message-Id`; a single
  message is known by the id its 202 gave, a campaign row by its batch id and recipient (the
  batch id is inside each of its messages' ids; the rest of the id is the product's business);
- file reports from every worker's `processed/` and `rejected/`.

It waits until everything is there, or until nothing has moved for `idle` seconds (no new
delivery, changelog record or report: on a busy machine the backlog drains slowly, but it
drains), at most `settle_max`. Then it diagnoses what is missing: where a lost write's command
sits in the commands topic (partition, offset) and whether the group committed past it, and a
lost message's ledger row and topic offset; `why` says which of these it is.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.chaos_load import CAMPAIGN, MESSAGE, Ledgers, file_firstname
from streamapp.core.models import UpsertRecipient, decode_batch, decode_recipient, decode_send, decode_state
from tests.fixtures import TOKENS

T = TypeVar("T")
LISTED = 25
DIAGNOSED = 5000
API_SAMPLE = 1000
_SKIP_RANGE = re.compile(r"topic='?([\w.-]+)'?, partition=(\d+)\).*offsets (\d+)\.\.(\d+)")


@dataclass(frozen=True)
class Target:
    """Where the run's data lives."""

    bootstrap: str
    service_id: str
    partitions: int
    maildir: Path
    data_dirs: list[Path]
    urls: list[str]
    worker_logs: list[Path]
    seed: int
    wall0: float  # wall-clock time of timeline second 0

    def topic(self, suffix: str) -> str:
        return f"{self.service_id}-{suffix}"

    def tps(self, suffix: str) -> list[TopicPartition]:
        return [TopicPartition(self.topic(suffix), p) for p in range(self.partitions)]


class TopicTail:
    """A topic read from its beginning, step by step: each `catch_up` reads up to the current end."""

    def __init__(self, bootstrap: str, tps: list[TopicPartition]) -> None:
        self.bootstrap = bootstrap
        self.tps = tps

    async def start(self) -> None:
        """Made in the running loop (aiokafka binds its consumer to it)."""
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)

    async def catch_up(self, handle: Callable[[Any], None]) -> int:
        """Hand every record up to the current end to `handle`; returns how many there were."""
        ends = await self.consumer.end_offsets(self.tps)
        count = 0
        while [tp for tp in self.tps if await self.consumer.position(tp) < ends[tp]]:
            for records in (await self.consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                count += len(records)
                for record in records:
                    handle(record)
        return count

    async def stop(self) -> None:
        await self.consumer.stop()


@dataclass
class Row:
    email: str | None
    firstname: Any
    score: Any
    applied_at: float  # when the agent wrote it (the changelog record's time), in timeline seconds


class Recipients:
    """The latest row of every recipient, from the recipients changelog."""

    def __init__(self, target: Target) -> None:
        self.tail = TopicTail(target.bootstrap, target.tps("recipients-changelog"))
        self.wall0 = target.wall0
        self.rows: dict[str, Row] = {}

    def handle(self, record: Any) -> None:
        key = record.key.decode().partition("/")[2]
        if record.value is None:
            self.rows.pop(key, None)
            return
        r = decoded(decode_recipient, record.value)
        if r is None:
            return
        applied_at = record.timestamp / 1000 - self.wall0
        self.rows[key] = Row(r.email, r.attributes.get("firstname"), r.attributes.get("score"), applied_at)


class Maildir:
    """Deliveries by message id, read incrementally from the sink's Maildir (new/ only grows)."""

    def __init__(self, path: Path) -> None:
        self.new = path / "new"
        self.seen: set[str] = set()
        self.deliveries: dict[str, list[float]] = {}
        self.recipient: dict[str, str] = {}
        #: What each delivery proves: its message id, and "<batch id>/<originalId>" for a batch row.
        self.delivered: set[str] = set()

    def scan(self) -> None:
        if not self.new.is_dir():
            return
        for path in self.new.iterdir():
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            message_id, to = _headers(path)
            if message_id:
                self.deliveries.setdefault(message_id, []).append(_delivered_at(path.name))
                self.recipient[message_id] = to
                self.delivered |= {message_id, batch_row(message_id[4:28], to.partition("@")[0])}


def _headers(path: Path) -> tuple[str, str]:
    message_id = to = ""
    with path.open("rb") as f:
        for line in f:
            if line.startswith(b"X-Streamapp-Message-Id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
            elif line.startswith(b"To:"):
                to = line.split(b":", 1)[1].strip().decode()
            elif line in (b"\r\n", b"\n"):
                break
    return message_id, to


def _delivered_at(name: str) -> float:
    """Maildir names start with `<seconds>.M<microseconds>`."""
    match = re.match(r"(\d+)\.M(\d+)", name)
    return int(match.group(1)) + int(match.group(2)) / 1e6 if match else 0.0


def batch_row(batch_id: str, original_id: str) -> str:
    """How a campaign row's delivery is known: the batch, then the recipient."""
    return f"{batch_id}/{original_id}"


@dataclass
class Findings:
    lost_writes: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    #: message id (single) or batch_row() (campaign) -> route
    expected_messages: dict[str, str] = field(default_factory=dict)
    lost_messages: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        files_done = all(f["reports"] == 1 and f["rows_missing"] == 0 for f in self.files)
        return not self.lost_writes and not self.lost_messages and files_done


class Verifier:
    def __init__(self, target: Target, ledgers: Ledgers) -> None:
        self.target = target
        self.ledgers = ledgers
        self.recipients = Recipients(target)
        self.maildir = Maildir(target.maildir)
        self.records = 0
        self.settle_end = ""

    def run(self, idle: float, settle_max: float) -> dict[str, Any]:
        return asyncio.run(self._run(idle, settle_max))

    async def _run(self, idle: float, settle_max: float) -> dict[str, Any]:
        started = time.monotonic()
        await self.recipients.tail.start()
        try:
            findings = await self._settle(idle, settle_max)
        finally:
            await self.recipients.tail.stop()
        waited = time.monotonic() - started
        report = await self._report(findings)
        report["settle_s"] = round(waited, 1)
        report["settle_end"] = self.settle_end  # complete | idle (nothing moved for `idle` s) | max
        return report

    async def _settle(self, idle: float, settle_max: float) -> Findings:
        """Check every 2 s until complete, or until no progress for `idle` s (or `settle_max` in all)."""
        deadline = time.monotonic() + settle_max
        progress: tuple[int, ...] = ()
        moved = time.monotonic()
        while True:
            self.records += await self.recipients.tail.catch_up(self.recipients.handle)
            self.maildir.scan()
            findings = self._check()
            now = (self.records, len(self.maildir.seen), sum(f["reports"] for f in findings.files))
            if now != progress:
                progress, moved = now, time.monotonic()
            if findings.complete or time.monotonic() > min(deadline, moved + idle):
                self.settle_end = "complete" if findings.complete else "idle" if time.monotonic() < deadline else "max"
                return findings
            await asyncio.sleep(2.0)

    def _check(self) -> Findings:
        findings = Findings(lost_writes=self._lost_writes(), files=self._files())
        findings.expected_messages = self._expected_messages()
        findings.lost_messages = sorted(set(findings.expected_messages) - self.maildir.delivered)
        return findings

    # -- writes ------------------------------------------------------------------------------

    def _lost_writes(self) -> list[dict[str, Any]]:
        versions, lost = self.ledgers.versions, []
        for key, state in versions.keys.items():
            if state.accepted == 0:
                continue
            row = self.recipients.rows.get(key)
            found = row.score if row else None
            if found == state.accepted or found in state.unacked:
                continue
            at, worker = state.accepted_at or (None, None)
            lost.append({"route": versions.route[key], "key": key, "expected": state.accepted, "found": found,
                         "kind": "missing" if row is None else "stale", "accepted_at": at,
                         "accepted_by": worker, "unacked_after": state.unacked[:5]})  # fmt: skip
        return lost

    # -- files -------------------------------------------------------------------------------

    def _files(self) -> list[dict[str, Any]]:
        return [self._file(f.name, f.prefix, f.rows) for f in self.ledgers.files]

    def _file(self, name: str, prefix: str, rows: int) -> dict[str, Any]:
        reports = [p for d in self.target.data_dirs for o in ("processed", "rejected")
                   if (p := d / o / f"{name}.report.json").exists()]  # fmt: skip
        detail: dict[str, Any] = {"name": name, "reports": len(reports), "report_paths": [str(p) for p in reports]}
        if len(reports) == 1:
            report = json.loads(reports[0].read_text())
            detail |= {k: report.get(k) for k in ("outcome", "rowsRead", "applied", "rejected", "reason")}
        missing = [i for i in range(rows) if not self._file_row_ok(f"{prefix}{i}", i)]
        detail |= {
            "rows": rows,
            "rows_missing": len(missing),
            "rows_missing_first": [f"{prefix}{i}" for i in missing[:10]],
        }
        return detail

    def _file_row_ok(self, key: str, i: int) -> bool:
        row = self.recipients.rows.get(key)
        return row is not None and (row.email, row.firstname, row.score) == (f"{key}@example.com", file_firstname(i),
                                                                             i % 1000)  # fmt: skip

    # -- messages ----------------------------------------------------------------------------

    def _expected_messages(self) -> dict[str, str]:
        expected = dict.fromkeys(self.ledgers.messages.values(), MESSAGE)
        for campaign in self.ledgers.campaigns:
            if campaign.batch_id is not None:
                expected |= {batch_row(campaign.batch_id, original_id): CAMPAIGN for original_id in campaign.rows}
        return expected

    def _route_of(self, message_id: str, expected: dict[str, str]) -> str | None:
        to = self.maildir.recipient.get(message_id, "")
        return expected.get(message_id) or expected.get(batch_row(message_id[4:28], to.partition("@")[0]))

    def duplicates(self, expected: dict[str, str]) -> tuple[int, list[dict[str, Any]], int]:
        """Extra deliveries of one message id, and extra message ids delivered to one transactional
        recipient (each has its own idempotency key, so a second id is a second mail)."""
        twice = {m: times for m, times in self.maildir.deliveries.items() if len(times) > 1}
        wall0 = self.target.wall0
        extra = [{"messageId": m, "route": self._route_of(m, expected), "deliveries": len(times),
                  "delivered_at": [round(t - wall0, 2) for t in sorted(times)]}
                 for m, times in twice.items()]  # fmt: skip
        addresses = {f"{r}@example.com" for r in self.ledgers.message_recipients.values()}
        ids_per_address = Counter(to for to in self.maildir.recipient.values() if to in addresses)
        return sum(len(t) - 1 for t in twice.values()), extra, sum(n - 1 for n in ids_per_address.values())

    def _delivered_late(self, findings: Findings, diagnosis: dict[str, Any]) -> int:
        """Deliveries that arrived while the losses were being located are not losses: drop them."""
        self.maildir.scan()
        still = [m for m in findings.lost_messages if m not in self.maildir.delivered]
        late = len(findings.lost_messages) - len(still)
        findings.lost_messages = still
        diagnosis["lost_messages"] = [
            m for m in diagnosis["lost_messages"] if m["message"] not in self.maildir.delivered
        ]
        return late

    # -- lags ------------------------------------------------------------------------------

    def _lags(self) -> dict[str, Any]:
        """How long after its 202 a write reached the table and a message the sink (seconds): on a
        busy machine these, not losses, are what makes a run slow."""
        apply: dict[str, list[float]] = {}
        for key, state in self.ledgers.versions.keys.items():
            row = self.recipients.rows.get(key)
            if state.accepted_at and row is not None and row.score == state.accepted:
                apply.setdefault(self.ledgers.versions.route[key], []).append(row.applied_at - state.accepted_at[0])
        files = {}
        for f in self.ledgers.files:
            times = [r.applied_at for i in range(f.rows) if (r := self.recipients.rows.get(f"{f.prefix}{i}"))]
            files[f.name] = round(max(times) - f.dropped_at, 1) if times else None
        return {"apply_s": {route: _spread(v) for route, v in apply.items()}, "file_all_rows_s": files,
                "delivery_s": {route: _spread(v) for route, v in self._delivery_lags().items()}}  # fmt: skip

    def _delivery_lags(self) -> dict[str, list[float]]:
        first = {m: min(t) - self.target.wall0 for m, t in self.maildir.deliveries.items()}
        lags: dict[str, list[float]] = {MESSAGE: [first[m] - t for m, t in self.ledgers.message_accepted_at.items()
                                                  if m in first]}  # fmt: skip
        posted = {c.batch_id: c.posted_at for c in self.ledgers.campaigns if c.batch_id}
        for m, at in first.items():
            if (t := posted.get(m[4:28])) is not None:
                lags.setdefault(CAMPAIGN, []).append(at - t)
        return lags

    # -- the report --------------------------------------------------------------------------

    async def _report(self, findings: Findings) -> dict[str, Any]:
        expected = findings.expected_messages
        duplicates, extra, second_ids = self.duplicates(expected)
        unaccepted = [m for m in self.maildir.deliveries if self._route_of(m, expected) is None]
        diagnosis = await self._diagnose(findings)
        late = self._delivered_late(findings, diagnosis)
        return {
            "writes_checked": sum(1 for s in self.ledgers.versions.keys.values() if s.accepted),
            "writes_lost": len(findings.lost_writes),
            "lost_writes": diagnosis["lost_writes"],
            "lost_writes_by_route": dict(Counter(w["route"] for w in findings.lost_writes)),
            "files": findings.files,
            "rows_imported": sum(int(f.get("applied") or 0) for f in findings.files),
            "messages": {
                "accepted": len(expected),
                "accepted_by_route": dict(Counter(expected.values())),
                "delivered": len(set(expected) & self.maildir.delivered),
                "deliveries": sum(len(t) for t in self.maildir.deliveries.values()),
                "lost": len(findings.lost_messages),
                "delivered_while_diagnosing": late,
                "duplicates": duplicates,
                "second_ids_for_one_key": second_ids,
                "idempotency_mismatches": self.ledgers.mismatched_ids[:LISTED],
                "given_up": len(self.ledgers.given_up),
                "transactional_due": self.ledgers.messages_due,
                "transactional_posted": len(self.ledgers.messages_posted),
                "unaccepted_delivered": len(unaccepted),
                "campaigns": [
                    {"batchId": c.batch_id, "rows": len(c.rows), "posted_at": round(c.posted_at, 2)}
                    for c in self.ledgers.campaigns
                ],
            },
            "lost_messages": diagnosis["lost_messages"],
            "lost_writes_why": diagnosis["lost_writes_why"],
            "lost_messages_why": diagnosis["lost_messages_why"],
            "lags": self._lags(),
            "duplicate_messages": extra[:LISTED],
            "api_check": await self._api_check(findings),
        }

    async def _diagnose(self, findings: Findings) -> dict[str, Any]:
        """Locate every loss (up to DIAGNOSED); list LISTED per route and count the reasons of all."""
        lost_writes = findings.lost_writes[:DIAGNOSED]
        lost_messages = [{"message": m, "route": findings.expected_messages[m]}
                         for m in findings.lost_messages[:DIAGNOSED]]  # fmt: skip
        if lost_writes or lost_messages:
            committed = await self._committed()
            skips = self._skip_ranges()
            await self._locate_commands(lost_writes, committed, skips)
            await self._locate_messages(lost_messages, committed, skips)
        return {"lost_writes": _per_route(lost_writes), "lost_messages": _per_route(lost_messages),
                "lost_writes_why": dict(Counter(w["why"] for w in lost_writes)),
                "lost_messages_why": dict(Counter(m["why"] for m in lost_messages))}  # fmt: skip

    async def _committed(self) -> dict[tuple[str, int], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.target.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.target.service_id)
        finally:
            await admin.close()
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}

    def _skip_ranges(self) -> list[tuple[str, int, int, int, str]]:
        """(topic, partition, first, last, worker log) of every gap the workers logged."""
        ranges = []
        for log in self.target.worker_logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in text.splitlines():
                if "skipped" in line and (match := _SKIP_RANGE.search(line)):
                    ranges.append((match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4)),
                                   log.name))  # fmt: skip
        return ranges

    async def _locate_commands(self, lost: list[dict[str, Any]], committed: dict[tuple[str, int], int],
                               skips: list[tuple[str, int, int, int, str]]) -> None:  # fmt: skip
        """Where each lost write's command is in the commands topic, if it is there at all."""
        wanted = {w["key"]: w for w in lost}
        for w in lost:
            w["in_topic"] = []

        def handle(record: Any) -> None:
            batch = decoded(decode_batch, record.value)
            for index, command in enumerate(batch.commands if batch else []):
                if isinstance(command, UpsertRecipient) and command.originalId in wanted:
                    w = wanted[command.originalId]
                    score = command.attributes.get("score") if isinstance(command.attributes, dict) else None
                    if score == w["expected"]:
                        w["in_topic"].append(_place(record, committed, skips) | {"index": index})

        if lost:
            await _read_all(self.target.bootstrap, self.target.tps("recipient-commands"), handle)
        for w in lost:
            w["why"] = _why_write(w["in_topic"])

    async def _locate_messages(self, lost: list[dict[str, Any]], committed: dict[tuple[str, int], int],
                               skips: list[tuple[str, int, int, int, str]]) -> None:  # fmt: skip
        """Each lost message's place on its priority topic (which names its id) and its ledger row."""
        wanted = {m["message"]: m for m in lost}
        if not wanted:
            return
        ids: dict[str, dict[str, Any]] = {}

        def on_topic(record: Any) -> None:
            if record.value is None:
                return
            send = decoded(decode_send, record.value)
            if send is None:
                return
            m = wanted.get(send.messageId) or wanted.get(batch_row(send.batchId or "", send.originalId))
            if m is not None:
                m.setdefault("in_topic", []).append(_place(record, committed, skips) | {"messageId": send.messageId})
                ids[send.messageId] = m
                row = self.recipients.rows.get(send.originalId)
                m["recipient_applied_at"] = round(row.applied_at, 2) if row else None
                m["accepted_at"] = self.ledgers.message_accepted_at.get(send.messageId)

        def ledger_row(record: Any) -> None:
            m = ids.get(record.key.decode())
            if m is not None and record.value is not None:
                state = decoded(decode_state, record.value)
                if state is None:
                    return
                m["ledger"] = {"status": state.status, "attempts": state.attempts, "reason": state.reason,
                               "updatedAt": state.updatedAt}  # fmt: skip

        for suffix in ("messages-transactional", "messages-campaign"):
            await _read_all(self.target.bootstrap, self.target.tps(suffix), on_topic)
        await _read_all(self.target.bootstrap, self.target.tps("messages-changelog"), ledger_row)
        for m in wanted.values():
            m["why"] = _why_message(m.get("ledger"), m.get("in_topic", []))

    async def _api_check(self, findings: Findings) -> dict[str, Any]:
        """A seeded sample of rows (and every lost one) read through the API must match the changelog."""
        keys = sorted(self.ledgers.versions.keys)
        files = [f"{f.prefix}{i}" for f in self.ledgers.files for i in range(0, f.rows, max(1, f.rows // 200))]
        sample = random.Random(self.target.seed).sample(keys, min(API_SAMPLE, len(keys))) + files
        sample += [w["key"] for w in findings.lost_writes[:LISTED]]
        mismatches, unreadable = [], 0
        headers = {"Authorization": f"Bearer {TOKENS['reader']}"}
        async with httpx.AsyncClient(headers=headers, timeout=10) as api:
            for n, key in enumerate(sample):
                body = await _get_recipient(api, self.target.urls[n % len(self.target.urls)], key)
                if body is None:
                    unreadable += 1
                    continue
                row = self.recipients.rows.get(key)
                api_value = (body.get("email"), body.get("attributes", {}).get("score"))
                if row is None or api_value != (row.email, row.score):
                    stored = (row.email, row.score) if row else None
                    mismatches.append({"key": key, "api": api_value, "changelog": stored})
        return {"sampled": len(sample), "unreadable": unreadable, "mismatches": len(mismatches),
                "mismatches_first": mismatches[:LISTED]}  # fmt: skip


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"n": len(ordered), "p50": round(ordered[len(ordered) // 2], 2), "p99": round(p99, 2),
            "max": round(ordered[-1], 2)}  # fmt: skip


async def _get_recipient(api: httpx.AsyncClient, url: str, key: str) -> dict[str, Any] | None:
    """The recipient as the API shows it; None for 404 or when no worker answers within 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            response = await api.get(f"{url}/api/v1/databases/members/recipients/{key}")
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if response.status_code == 200:
            return dict(response.json())
        if response.status_code == 404:
            return {}
        await asyncio.sleep(0.5)
    return None


def _per_route(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first LISTED items of each route."""
    kept: Counter[str] = Counter()
    listed = []
    for item in items:
        kept[item["route"]] += 1
        if kept[item["route"]] <= LISTED:
            listed.append(item)
    return listed


def _why_write(places: list[dict[str, Any]]) -> str:
    if not places:
        return "its command is not in the commands topic: lost before Kafka although answered 202"
    if any(_committed_past(p) for p in places):
        return "the group committed past its command, which was never applied: skipped by the agent"
    return "its command is in the topic, not yet consumed (at or after the committed offset)"


def _why_message(ledger: dict[str, Any] | None, places: list[dict[str, Any]]) -> str:
    if ledger is not None:
        status = ledger["status"]
        if status == "sent":
            return "the ledger says sent, but the sink has no delivery of it"
        return f"ledger {status} after {ledger['attempts']} attempt(s): {ledger['reason']}"
    if not places:
        return "not on its priority topic although answered 202"
    if any(_committed_past(p) for p in places):
        return "the group committed past it without a ledger row: skipped by the send agent"
    return "not processed yet: at or after the committed offset"


def _committed_past(place: dict[str, Any]) -> bool:
    return place["committed"] is not None and place["committed"] > place["offset"]


def _place(record: Any, committed: dict[tuple[str, int], int],
           skips: Iterable[tuple[str, int, int, int, str]]) -> dict[str, Any]:  # fmt: skip
    """A record's partition and offset, the group's committed offset there, and a logged gap over it."""
    tp = (record.topic, record.partition)
    gap = [f"{log}: {first}..{last}" for topic, p, first, last, log in skips
           if topic == record.topic and p == record.partition and first <= record.offset <= last]  # fmt: skip
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset,
            "committed": committed.get(tp), "logged_gap": gap}  # fmt: skip


def decoded(decode: Callable[[bytes], T], data: bytes) -> T | None:
    """A record in a shape this verifier does not know (another row type, a newer field) is not its
    business: None instead of a crash."""
    try:
        return decode(data)
    except msgspec.MsgspecError:
        return None


async def _read_all(bootstrap: str, tps: list[TopicPartition], handle: Callable[[Any], None]) -> None:
    tail = TopicTail(bootstrap, tps)
    await tail.start()
    try:
        await tail.catch_up(handle)
    finally:
        await tail.stop()
