"""Helpers of the sending tests: worker configs with [smtp] and templates, recipients, the ledger.

The ledger is read from its changelog topic with a plain consumer: the worker's own record of
each outcome, observed from outside without touching its RocksDB.
"""

from __future__ import annotations

import asyncio
import email
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamapp.core import clock
from streamapp.core.ids import message_id_for
from streamapp.core.keys import partition_for, recipient_key
from streamapp.core.models import MessageState, Priority, SendMessage, decode_state
from streamapp.sending.enqueue import enqueue
from streamapp.sending.ledger import is_bookkeeping
from streamapp.settings import Settings, load_settings
from tests.fixtures import Worker, WorkerPool, client, eventually
from tests.mail.fixtures import Peers

TEMPLATES = {
    "news": ("News for {{ recipient.originalId }}", "<p>Hello {{ recipient.email }}</p>\n"),
    "receipt": ("Receipt {{ properties.order }}", "<p>Order {{ properties.order }}</p>\n"),
    "broken": ("Oops", "<p>{{ properties.missing_variable }}</p>\n"),
    "welcome": (
        "Welcome {{ recipient.attributes.firstname }}",
        "<p>Hi {{ recipient.attributes.firstname }} ({{ recipient.email }}), code {{ properties.code }}</p>\n",
    ),
    "hello": (
        "Hello {{ recipient.attributes.firstname }}",
        "<p>{{ recipient.originalId }} in {{ recipient.attributes.zipcode }}</p>\n",
    ),
}


def write_templates(folder: Path) -> None:
    for name, (subject, body) in TEMPLATES.items():
        target = folder / "templates" / name
        target.mkdir(parents=True, exist_ok=True)
        (target / "subject.txt").write_text(subject)
        (target / "body.html").write_text(body)


def smtp_extra(port: int, connections: int = 4, retry_initial: float = 0.3, retry_max: float = 1.0,
               expiry: float = 86400) -> str:  # fmt: skip
    triggers = "".join(f'\n[[triggers]]\nname = "{n}"\ndatabase = "members"\ntemplate = "{n}"\n' for n in TEMPLATES)
    return f"""
[smtp]
host = "127.0.0.1"
port = {port}
connections = {connections}
sender = "news@example.com"
retry_initial_seconds = {retry_initial}
retry_max_seconds = {retry_max}
expiry_seconds = {expiry}
{triggers}
[[campaigns]]
name = "newsletter"
database = "members"
template = "news"

[[campaigns]]
name = "promo"
database = "members"
template = "hello"
"""


def mail_by_recipient(maildir: Path, wanted: Iterable[str] | None = None) -> dict[str, email.message.Message]:
    """Received mail by To address (the last one wins); only that to `wanted` addresses when given: the
    others' headers are scanned, not parsed (a module's Maildir holds tens of thousands)."""
    if wanted is None:
        return {str(m["To"]): m for m in maildir_messages(maildir)}
    targets = {f"To: {address}".encode() for address in wanted}
    found: dict[str, email.message.Message] = {}
    for path in sorted((maildir / "new").glob("*")):
        data = path.read_bytes()
        head = data[: data.find(b"\r\n\r\n") if b"\r\n\r\n" in data else len(data)]
        if any(line.rstrip() in targets for line in head.splitlines() if line.startswith(b"To: ")):
            message = email.message_from_bytes(data)
            found[str(message["To"])] = message
    return found


def html_of(message: email.message.Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_payload(decode=True).decode())  # type: ignore[union-attr]
    raise AssertionError("no text/html part")


def settings_of(worker: Worker) -> Settings:
    return load_settings(worker.config, environ={})


def add_recipients(worker: Worker, ids: list[str], **fields: object) -> None:
    """Create recipients `<id>@example.com` through the API and wait until every partition applied them."""
    rows = [{"originalId": i, "email": f"{i}@example.com", **fields} for i in ids]
    with client(worker) as api:
        if "status" in fields:  # only single upserts may set a status
            for row in rows:
                path = f"/api/v1/databases/members/recipients/{row.pop('originalId')}"
                assert api.put(path, json=row).status_code == 202
        for start in range(0, len(rows) if "status" not in fields else 0, 10_000):
            response = api.post("/api/v1/databases/members/recipients", json=rows[start : start + 10_000])
            assert response.status_code == 202, response.text
        partitions = settings_of(worker).service.partitions
        last = {partition_for(recipient_key("members", i), partitions): i for i in ids}
        for i in last.values():
            path = f"/api/v1/databases/members/recipients/{i}"
            eventually(lambda path=path: api.get(path).status_code == 200)  # type: ignore[misc]


def recipient(worker: Worker, original_id: str) -> dict[str, object]:
    with client(worker) as api:
        response = api.get(f"/api/v1/databases/members/recipients/{original_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def message(
    settings: Settings, original_id: str, template: str = "news", priority: Priority = "campaign", **fields: object
) -> SendMessage:
    return SendMessage(
        messageId=message_id_for("members", original_id, settings.service.partitions),
        database="members",
        originalId=original_id,
        priority=priority,
        template=template,
        enqueuedAt=clock.now_iso(),
        **fields,  # type: ignore[arg-type]
    )


def send(settings: Settings, messages: list[SendMessage]) -> list[str]:
    asyncio.run(enqueue(settings, messages))
    return [m.messageId for m in messages]


async def _read_ledger(settings: Settings) -> dict[str, MessageState]:
    topic = f"{settings.service.id}-messages-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.service.broker.removeprefix("kafka://"))
    await consumer.start()
    states: dict[str, MessageState] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return states
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.value is not None and not is_bookkeeping(record.key):
                        states[record.key.decode()] = decode_state(record.value)
    finally:
        await consumer.stop()
    return states


def ledger(settings: Settings) -> dict[str, MessageState]:
    """The latest ledger row of every message, from the changelog."""
    return asyncio.run(_read_ledger(settings))


def wait_statuses(
    settings: Settings, wanted: dict[str, str | Iterable[str]], timeout: float = 60
) -> dict[str, MessageState]:
    """Wait until each message id has (one of) the wanted status(es); returns the ledger."""
    sets = {k: {v} if isinstance(v, str) else set(v) for k, v in wanted.items()}

    def check() -> dict[str, MessageState] | None:
        rows = ledger(settings)
        missing = {
            k: (rows[k].status if k in rows else None)
            for k, v in sets.items()
            if k not in rows or rows[k].status not in v
        }
        assert not missing, f"not there yet: {dict(list(missing.items())[:5])}"
        return rows

    return eventually(check, timeout=timeout, interval=0.3)  # type: ignore[no-any-return]


def maildir_messages(maildir: Path) -> list[email.message.Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in sorted((maildir / "new").glob("*"))]


def maildir_ids(maildir: Path) -> Counter[str]:
    """How often each streamapp message id was delivered (its X-Streamapp-Message-Id header)."""
    return header_counts(maildir, b"X-Streamapp-Message-Id:")


def header_counts(maildir: Path, header: bytes) -> Counter[str]:
    """How many delivered messages carry each value of `header` (read up to the blank line only)."""
    counts: Counter[str] = Counter()
    for path in (maildir / "new").glob("*"):
        with path.open("rb") as f:
            for line in f:
                if line.startswith(header):
                    counts[line.split(b":", 1)[1].strip().decode()] += 1
                    break
                if line in (b"\r\n", b"\n"):
                    break
    return counts


def wait_for(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def sending(kafka: str, tmp_path: Path, peers: Peers) -> Iterator[tuple[WorkerPool, Worker, Path]]:
    """A pool with one sending worker (2 SMTP connections to a streamapp sink) and the sink's Maildir."""
    write_templates(tmp_path)
    peer, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    try:
        yield pool, pool.create(extra=smtp_extra(peer.port, connections=2)), maildir
    finally:
        pool.stop_all()
