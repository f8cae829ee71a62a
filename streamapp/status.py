"""`streamapp status`: the cluster at a glance, for the shell (docs/operations.md, "streamapp status").

Read from the broker (the group's members, the partitions each owns, the lag of every partition:
streamapp.kafka.group and streamapp.kafka.lag) and from each member's own HTTP API (`/healthz`,
`/metrics`: readiness, queue depth and oldest age per priority), plus the newest import reports in
the data dir (`processed/` and `rejected/`, shared by the workers when the drop area is). A worker
that does not answer is shown as such: the command never waits more than a few seconds for one.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from streamapp.core.models import PRIORITIES
from streamapp.imports.report import decode_report
from streamapp.kafka.group import Group, describe_group
from streamapp.kafka.lag import LagReader
from streamapp.kafka.topics import commands_topic, messages_topics
from streamapp.settings import Settings

#: Seconds a worker's API has to answer.
WORKER_TIMEOUT = 3.0
#: Import reports listed.
LAST_IMPORTS = 5


@dataclass
class WorkerStatus:
    url: str | None
    host: str
    partitions: dict[str, list[int]]
    ready: bool | None = None  # None: did not answer
    queue_depth: dict[str, float] = field(default_factory=dict)
    oldest_age_seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ImportLine:
    file: str
    import_: str
    outcome: str
    applied: int
    rejected: int
    finishedAt: str


@dataclass
class Status:
    group: str
    state: str
    workers: list[WorkerStatus]
    lag: dict[str, int]  # topic -> records
    imports: list[ImportLine]


async def gather(settings: Settings) -> Status:
    group = await describe_group(settings)
    topics = [commands_topic(settings), *(messages_topics(settings) if settings.smtp is not None else [])]
    lag_reader = LagReader(settings, settings.service.id, topics)
    await lag_reader.start()
    try:
        lags = await lag_reader.read()
    finally:
        await lag_reader.close()
    per_topic: dict[str, int] = defaultdict(int)
    for lag in lags:
        per_topic[lag.topic] += lag.records
    workers = await _workers(group)
    return Status(group.group_id, group.state, workers, dict(per_topic), last_imports(settings.service.data_dir))


async def _workers(group: Group) -> list[WorkerStatus]:
    timeout = aiohttp.ClientTimeout(total=WORKER_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(_worker(session, m.url, m.host, m.actives) for m in group.members)))


async def _worker(
    session: aiohttp.ClientSession, url: str | None, host: str, partitions: dict[str, list[int]]
) -> WorkerStatus:
    status = WorkerStatus(url, host, partitions)
    if url is None:
        status.error = "no URL in its assignment (joining)"
        return status
    try:
        async with session.get(f"{url}/healthz") as health:
            status.ready = health.status == 200
        async with session.get(f"{url}/metrics") as scrape:
            text = await scrape.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        status.error = f"no answer: {exc or type(exc).__name__}"
        return status
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            priority = sample.labels.get("priority")
            if sample.name == "streamapp_queue_depth" and priority:
                status.queue_depth[priority] = status.queue_depth.get(priority, 0.0) + sample.value
            elif sample.name == "streamapp_oldest_queued_age_seconds" and priority:
                status.oldest_age_seconds[priority] = sample.value
    return status


def last_imports(data_dir: Path, limit: int = LAST_IMPORTS) -> list[ImportLine]:
    """The newest import reports (by finish time) in the data dir's processed/ and rejected/ folders."""
    lines = []
    for folder in ("processed", "rejected"):
        for path in (data_dir / folder).glob("*.report.json"):
            try:
                report = decode_report(path.read_bytes())
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                continue
            lines.append(
                ImportLine(report.file, report.import_, report.outcome, report.applied, report.rejected,
                           report.finishedAt)
            )  # fmt: skip
    return sorted(lines, key=lambda line: line.finishedAt, reverse=True)[:limit]


def render(status: Status) -> str:
    """The status as a few aligned blocks of text."""
    out = [f"group {status.group}: {status.state}, {len(status.workers)} worker(s)", ""]
    for worker in status.workers:
        state = "ready" if worker.ready else "NOT READY" if worker.ready is False else worker.error or "?"
        out.append(f"  {worker.url or worker.host}  {state}")
        for topic, partitions in sorted(worker.partitions.items()):
            out.append(f"    {topic}: {', '.join(map(str, partitions)) or '-'}")
        if worker.queue_depth:
            queues = ", ".join(
                f"{p} {worker.queue_depth.get(p, 0):.0f} (oldest {worker.oldest_age_seconds.get(p, 0):.1f} s)"
                for p in PRIORITIES
            )
            out.append(f"    queued: {queues}")
    out += ["", "lag (records):"]
    out += [f"  {topic}: {records}" for topic, records in sorted(status.lag.items())] or ["  -"]
    out += ["", "last imports:"]
    out += [
        f"  {i.finishedAt}  {i.import_}  {i.file}  {i.outcome}  {i.applied} applied, {i.rejected} rejected"
        for i in status.imports
    ] or ["  -"]
    return "\n".join(out)


def as_json(status: Status) -> str:
    data: dict[str, Any] = asdict(status)
    for line in data["imports"]:
        line["import"] = line.pop("import_")
    return json.dumps(data, indent=2)
