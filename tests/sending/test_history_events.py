"""Engagement recorded as history (SPEC §8), end to end: a real worker, broker and SMTP sink.

Each sent message gets a `mail.sent` record (sku: the trigger or campaign, custom1: the messageId),
a hard bounce or the soft bounce that bounces the recipient a `mail.bounced`, the unsubscribe link a
`mail.unsubscribed`; a message sent again adds no second record. `mail.sent` records are published
in bulk with other messages' (streamapp.sending.engagement), tested here on its own too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from msgspec import msgpack

from streamapp.core import clock
from streamapp.core.models import (
    AppendHistory,
    HistoryRecord,
    Recipient,
    RecipientCommand,
    SendMessage,
    decode_batch,
    decode_send,
)
from streamapp.kafka.publisher import CommandPublisher, aiokafka_send, started_producer
from streamapp.kafka.topics import commands_topic
from streamapp.mail.smtp import SmtpOutcome
from streamapp.sending.engagement import EngagementPublisher
from streamapp.sending.pipeline import recipient_effects
from streamapp.settings import Settings
from tests.fixtures import Worker, WorkerPool, client, eventually, get_when
from tests.mail.fixtures import Peers
from tests.sending.fixtures import (
    add_recipients,
    maildir_messages,
    message,
    recipient,
    send,
    settings_of,
    smtp_extra,
    wait_statuses,
    write_templates,
)

HARD, SOFT = "550 5.1.1 no such user", "450 4.2.0 try again later"
TAG = uuid.uuid4().hex[:6]
HARD_ID, SOFT_ID = f"hard-{TAG}", f"soft-{TAG}"


@pytest.fixture(scope="module")
def sending(kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers) -> Iterator[tuple[Worker, Path]]:
    """One sending worker; the sink hard-bounces HARD_ID's address and soft-bounces SOFT_ID's."""
    base = tmp_path_factory.mktemp("events")
    write_templates(base)
    rules = {f"{HARD_ID}@example.com": HARD, f"{SOFT_ID}@example.com": SOFT}
    peer, maildir = peers_module.streamapp_sink(rules)
    pool = WorkerPool(kafka, base)
    try:
        yield pool.create(extra=smtp_extra(peer.port, retry_initial=0.2, retry_max=0.4)), maildir
    finally:
        pool.stop_all()


def history(worker: Worker, original_id: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """The recipient's records of `kind` once there are `count` of them."""
    path = f"/api/v1/databases/members/recipients/{original_id}/history?type={kind}"
    return list(get_when(worker, path, lambda h: len(h["records"]) >= count)["records"])


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


@pytest.mark.integration
def test_each_sent_message_is_recorded_with_its_trigger_or_campaign(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    ann, bo, cy = unique("ann"), unique("bo"), unique("cy")
    add_recipients(worker, [ann, bo, cy])
    with client(worker) as api:
        single = api.post("/api/v1/triggers/welcome/messages", json={"originalId": ann, "properties": {"code": "C"}})
        batch = api.post("/api/v1/triggers/hello/batches", json=[{"originalId": bo}])
        campaign = api.post("/api/v1/campaigns/newsletter/sends", json=[{"originalId": cy}])
        assert [r.status_code for r in (single, batch, campaign)] == [202, 202, 202]
    sent = {ann: ("welcome", single.json()["messageId"])}
    for who, name, answer in ((bo, "hello", batch), (cy, "newsletter", campaign)):
        status = get_when(worker, f"/api/v1/batches/{answer.json()['batchId']}", lambda b: b["sent"] == 1)
        assert status["total"] == 1
        sent[who] = (name, _message_of(maildir, who))
    for who, (name, message_id) in sent.items():
        [record] = history(worker, who, "mail.sent")
        assert (record["sku"], record["fields"], record["id"]) == (
            name,
            {"custom1": message_id},
            f"mail.sent:{message_id}",
        )
        assert record["time"] >= "2026"  # when it was accepted (UTC ISO 8601)


def _message_of(maildir: Path, original_id: str) -> str:
    """The id of the one message the sink received for the recipient (its X-Streamapp-Message-Id)."""
    [mail] = [m for m in maildir_messages(maildir) if m["To"] == f"{original_id}@example.com"]
    return str(mail["X-Streamapp-Message-Id"])


@pytest.mark.integration
def test_bounces_are_recorded_as_mail_bounced(sending: tuple[Worker, Path]) -> None:
    """A hard bounce at once; soft bounces on the fifth in a row, which bounces the recipient."""
    worker, _ = sending
    settings = settings_of(worker)
    add_recipients(worker, [HARD_ID, SOFT_ID])
    hard, soft = (message(settings, who, name="promo") for who in (HARD_ID, SOFT_ID))
    send(settings, [hard, soft])
    wait_statuses(settings, {hard.messageId: "failed"})
    eventually(lambda: recipient(worker, SOFT_ID)["status"] == "bounced", timeout=60)
    for who, bounced in ((HARD_ID, hard), (SOFT_ID, soft)):
        [record] = history(worker, who, "mail.bounced")
        assert (record["sku"], record["fields"]) == ("promo", {"custom1": bounced.messageId})
        assert history(worker, who, "mail.sent", count=0) == []


@pytest.mark.integration
def test_the_unsubscribe_link_is_recorded_once_with_the_messages_campaign(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    settings = settings_of(worker)
    dee = unique("dee")
    add_recipients(worker, [dee])
    [sent] = send(settings, [message(settings, dee, name="newsletter")])
    history(worker, dee, "mail.sent")  # the link's record takes its sku from this one
    [mail] = [m for m in maildir_messages(maildir) if m["To"] == f"{dee}@example.com"]
    link = mail["List-Unsubscribe"].strip("<>")
    for _ in range(2):  # the page's button and a provider's one-click: one record
        assert httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code == 200
    eventually(lambda: recipient(worker, dee)["status"] == "unsubscribed")
    _probe(worker, dee)
    [record] = history(worker, dee, "mail.unsubscribed")
    assert (record["sku"], record["fields"]) == ("newsletter", {"custom1": sent})


@pytest.mark.integration
def test_a_message_sent_again_adds_no_second_record(sending: tuple[Worker, Path]) -> None:
    """After a crash between SMTP and the ledger a message is sent again and its record published again
    (at another time); a message read twice is skipped by the ledger. Either way: one record."""
    worker, _ = sending
    settings = settings_of(worker)
    eve = unique("eve")
    add_recipients(worker, [eve])
    again = message(settings, eve, name="newsletter")
    send(settings, [again])
    [first] = history(worker, eve, "mail.sent")
    replayed = _effects(again, clock.now_iso())  # what the pipeline publishes when it sends it again
    asyncio.run(_publish(settings, replayed))
    send(settings, [again])  # read again: the ledger says sent
    _probe(worker, eve)
    assert history(worker, eve, "mail.sent") == [first]


@pytest.mark.integration
def test_an_erased_recipients_link_leaves_no_history(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    settings = settings_of(worker)
    fay = unique("fay")
    add_recipients(worker, [fay])
    [sent] = send(settings, [message(settings, fay, name="newsletter")])
    wait_statuses(settings, {sent: "sent"})
    [mail] = [m for m in maildir_messages(maildir) if m["To"] == f"{fay}@example.com"]
    with client(worker) as api:
        assert api.delete(f"/api/v1/databases/members/recipients/{fay}").status_code == 202
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/{fay}").status_code == 404)
    assert httpx.post(mail["List-Unsubscribe"].strip("<>"), data={"List-Unsubscribe": "One-Click"}).status_code == 200
    _probe(worker, fay, create=False)
    with client(worker) as api:
        records = api.get(f"/api/v1/databases/members/recipients/{fay}/history").json()["records"]
    assert [r["type"] for r in records] == ["purchase"]  # the probe only: no mail.unsubscribed


def _effects(command: SendMessage, at: str) -> list[RecipientCommand]:
    reply = SmtpOutcome("sent", 250, "2.0.0 ok", "2xx")
    now = clock.now_iso()
    return recipient_effects(command, reply, Recipient(originalId=command.originalId, createdAt=now, updatedAt=now), at)


async def _publish(settings: Settings, commands: list[RecipientCommand]) -> None:
    async with started_producer(settings) as producer:
        publisher = CommandPublisher(aiokafka_send(producer), commands_topic(settings), settings.service.partitions)
        await publisher.publish(commands)


def _probe(worker: Worker, original_id: str, create: bool = True) -> None:
    """A client's history record after what was published for the recipient: once it is there, so is the rest
    (commands of one recipient apply in order)."""
    marker = HistoryRecord(id=uuid.uuid4().hex, type="purchase", time=clock.now_iso(), sku="probe")
    asyncio.run(_publish(settings_of(worker), [AppendHistory(database="members", originalId=original_id,
                                                             records=[marker])]))  # fmt: skip
    history(worker, original_id, "purchase")


# -- bulk: the records of messages sent within the linger go out in one publish, then their events are acked --


class Event:
    def __init__(self) -> None:
        self.acked = 0

    def ack(self) -> None:
        self.acked += 1


async def test_records_go_out_together_and_each_event_is_acked_once_they_are_in_kafka() -> None:
    published: list[list[str]] = []
    gate = asyncio.Event()

    async def publish(commands: list[Any]) -> None:
        published.append(list(commands))
        await gate.wait()  # Kafka's acks

    bulk = EngagementPublisher(publish, linger=0.05, max_records=5)
    events = [Event() for _ in range(4)]
    bulk.add(["a"], events[0])  # type: ignore[list-item]
    bulk.add(["b.1", "b.2"], events[1])  # type: ignore[list-item]
    await asyncio.sleep(0.01)
    assert published == []  # lingering for more
    await asyncio.sleep(0.06)
    assert published == [["a", "b.1", "b.2"]] and [e.acked for e in events[:2]] == [0, 0]  # not before the acks
    bulk.add(["c"] * 3, events[2])  # type: ignore[list-item]
    bulk.add(["d"] * 2, events[3])  # type: ignore[list-item]  # 5 records: out at once
    await asyncio.sleep(0)
    assert published[1:] == [["c", "c", "c", "d", "d"]]
    gate.set()
    await asyncio.sleep(0.01)
    assert [e.acked for e in events] == [1, 1, 1, 1]


async def test_a_failed_publish_is_retried_and_acks_nothing_meanwhile() -> None:
    calls: list[list[str]] = []

    async def publish(commands: list[Any]) -> None:
        calls.append(list(commands))
        if len(calls) == 1:
            raise ConnectionError("broker gone")

    bulk = EngagementPublisher(publish, linger=0.01, retry=0.05)
    event = Event()
    bulk.add(["a"], event)  # type: ignore[list-item]
    await asyncio.sleep(0.03)
    assert len(calls) == 1 and event.acked == 0
    await asyncio.sleep(0.1)
    assert calls == [["a"], ["a"]] and event.acked == 1


def test_sent_and_bounced_outcomes_record_engagement() -> None:
    now = clock.now_iso()
    base = Recipient(originalId="r", createdAt=now, updatedAt=now)
    command = SendMessage(messageId="m-1", database="members", originalId="r", priority="campaign",
                          template="news", name="newsletter", enqueuedAt=now)  # fmt: skip
    kinds = {
        "sent": SmtpOutcome("sent", 250, "ok", "2xx"),
        "hard": SmtpOutcome("failed", 550, "no such user", "5xx", recipient_fault=True, stage="rcpt"),
        "soft": SmtpOutcome("deferred", 450, "later", "4xx", stage="rcpt"),
        "lost": SmtpOutcome("deferred", None, "connection lost", "connection_error"),
    }
    types = {
        name: [c.records[0].type for c in recipient_effects(command, reply, base, now) if isinstance(c, AppendHistory)]
        for name, reply in kinds.items()
    }
    assert types == {"sent": ["mail.sent"], "hard": ["mail.bounced"], "soft": [], "lost": []}
    fourth = Recipient(originalId="r", softBounces=4, createdAt=now, updatedAt=now)
    fifth = recipient_effects(command, kinds["soft"], fourth, now)
    assert [type(c).__name__ for c in fifth] == ["SoftBounce", "AppendHistory"]


def test_messages_and_appends_written_before_the_fields_still_decode() -> None:
    """Records on topics and in the ledger from before `SendMessage.name` and `AppendHistory.ifExists`."""
    old = {"messageId": "m-1", "database": "members", "originalId": "r", "priority": "campaign",
           "template": "news", "enqueuedAt": "2026-11-01T00:00:00.000+00:00"}  # fmt: skip
    assert decode_send(msgpack.encode(old)).name is None
    append = {"type": "history", "database": "members", "originalId": "r", "records": []}
    [command] = decode_batch(msgpack.encode({"commands": [append]})).commands
    assert isinstance(command, AppendHistory) and command.ifExists is False
