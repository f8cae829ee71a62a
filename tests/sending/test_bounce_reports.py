"""Bounce reports and complaints that come back after the relay's 250 (SPEC §11), end to end.

Two workers on the real broker and the streamapp SMTP sink; the first runs the return-path listener
(`[bounces] listen`). A report sent to the listener over SMTP, to the VERP address of a message whose
partition the *other* worker may own, reaches the message's ledger row and its recipient through
Kafka: a DSN's permanent failure makes both `bounced` (the next message is suppressed), a delay counts
a soft bounce, an ARF complaint unsubscribes; each is a history event, counted once however often the
report comes. Anything else is counted as junk; an address naming no message is refused at RCPT.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass

import aiosmtplib
import httpx
import pytest

from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.mail.verp import return_path
from tests.fixtures import TOKENS, Worker, WorkerPool, client, eventually, free_port, get_when, metric_value
from tests.mail.fixtures import Peers
from tests.mail.test_bounces import ARF, dsn
from tests.sending.fixtures import add_recipients, recipient, settings_of, smtp_extra, write_templates

pytestmark = pytest.mark.integration

DOMAIN = "bounces.example.com"


@dataclass
class Setup:
    workers: list[Worker]
    listen: int

    @property
    def first(self) -> Worker:
        return self.workers[0]


@pytest.fixture(scope="module")
def setup(kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers) -> Iterator[Setup]:
    """Two workers with one shared key file (their VERP addresses verify on either); the first listens."""
    base = tmp_path_factory.mktemp("reports")
    write_templates(base)
    keys = base / "shared.keys"
    keys.write_text(f"# test keys\n{os.urandom(32).hex()}\n")
    sink, _ = peers_module.streamapp_sink()
    pool = WorkerPool(kafka, base)
    listen = free_port()
    bounces = f'\n[bounces]\ndomain = "{DOMAIN}"\n'
    try:
        for extra in (f'{bounces}listen = "127.0.0.1:{listen}"\n', bounces):
            pool.create(extra=smtp_extra(sink.port) + extra, service=f'secret_file = "{keys}"')
        yield Setup(pool.workers, listen)
    finally:
        pool.stop_all()


def sent_message(worker: Worker, original_id: str) -> str:
    with client(worker) as api:
        answer = api.post("/api/v1/triggers/receipt/messages",
                          json={"originalId": original_id, "properties": {"order": "R1"}})  # fmt: skip
        assert answer.status_code == 202, answer.text
        message_id = str(answer.json()["messageId"])
    get_when(worker, f"/api/v1/messages/{message_id}", lambda m: m["status"] == "sent", timeout=60)
    return message_id


def report(listen: int, to: str, body: bytes) -> None:
    """Send `body` to the listener as an MTA sends a report: from the null sender `<>`."""

    async def send() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listen, timeout=10, start_tls=False) as smtp:
            await smtp.mail("")
            await smtp.rcpt(to)
            await smtp.data(body)

    asyncio.run(send())


def verp(worker: Worker, message_id: str) -> str:
    return return_path("bounce", DOMAIN, message_id, unsubscribe_keys(settings_of(worker)))


def history_types(worker: Worker, original_id: str) -> list[str]:
    with client(worker) as api:
        body = api.get(f"/api/v1/databases/members/recipients/{original_id}/history").json()
    return [str(r["type"]) for r in body["records"]]


def test_a_permanent_failure_report_bounces_the_message_and_its_recipient_once(setup: Setup) -> None:
    worker, listen = setup.first, setup.listen
    ids = [f"rep-hard-{n}" for n in range(8)]  # spread over the partitions of both workers
    add_recipients(worker, ids)
    messages = {i: sent_message(worker, i) for i in ids}
    before = hard_bounces(setup)
    for original_id, message_id in messages.items():
        failure = dsn("failed", "5.1.1", "550 5.1.1 no such user", f"{original_id}@example.com")
        report(listen, verp(worker, message_id), failure)
        report(listen, verp(worker, message_id), failure)  # the MTA tried again: nothing more
    for original_id, message_id in messages.items():
        row = get_when(worker, f"/api/v1/messages/{message_id}", lambda m: m["status"] == "bounced")
        assert "5.1.1" in str(row["reason"])
        eventually(lambda i=original_id: recipient(worker, i)["status"] == "bounced")  # type: ignore[misc]
        eventually(lambda i=original_id: history_types(worker, i).count("mail.bounced") == 1)  # type: ignore[misc]
    eventually(lambda: hard_bounces(setup) - before == len(ids))
    with client(worker) as api:  # the next message to a bounced recipient is suppressed
        answer = api.post(
            "/api/v1/triggers/receipt/messages", json={"originalId": ids[0], "properties": {"order": "2"}}
        )
        path = f"/api/v1/messages/{answer.json()['messageId']}"
    assert get_when(worker, path, lambda m: m["status"] != "queued")["status"] == "suppressed"


def hard_bounces(setup: Setup) -> float:
    """Counted by the worker that applied the report: the owner of the message's partition."""
    return sum(metric_value(w.url, "streamapp_bounces_total", kind="hard", source="dsn") for w in setup.workers)


def test_a_delay_counts_a_soft_bounce_and_a_complaint_unsubscribes(setup: Setup) -> None:
    worker, listen = setup.first, setup.listen
    add_recipients(worker, ["rep-soft", "rep-abuse"])
    soft, abuse = sent_message(worker, "rep-soft"), sent_message(worker, "rep-abuse")
    report(listen, verp(worker, soft), dsn("delayed", "4.4.7", "421 4.4.7 try later", "rep-soft@example.com"))
    report(listen, verp(worker, abuse), ARF)
    eventually(lambda: int(str(recipient(worker, "rep-soft")["softBounces"])) == 1)
    assert recipient(worker, "rep-soft")["status"] == "active"
    eventually(lambda: recipient(worker, "rep-abuse")["status"] == "unsubscribed")
    eventually(lambda: "mail.complained" in history_types(worker, "rep-abuse"))
    with client(worker) as api:
        assert api.get(f"/api/v1/messages/{abuse}").json()["status"] == "sent"  # it was delivered


def test_junk_is_dropped_and_counted_and_a_made_up_address_is_refused(setup: Setup) -> None:
    worker, listen = setup.first, setup.listen
    junk = metric_value(worker.url, "streamapp_bounce_junk_total")
    add_recipients(worker, ["rep-junk"])
    message_id = sent_message(worker, "rep-junk")
    report(listen, verp(worker, message_id), b"Subject: hello\r\n\r\nnot a report\r\n")
    eventually(lambda: metric_value(worker.url, "streamapp_bounce_junk_total") == junk + 1)
    forged = verp(worker, message_id).replace("+", "+0", 1)
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        report(listen, forged, dsn("failed", "5.1.1", "550 no such user", "rep-junk@example.com"))
    assert recipient(worker, "rep-junk")["status"] == "active"


def test_the_generic_webhook_applies_events_once_whatever_way_its_token_comes(setup: Setup) -> None:
    worker = setup.first
    add_recipients(worker, ["hook-hard", "hook-abuse"])
    hard, abuse = sent_message(worker, "hook-hard"), sent_message(worker, "hook-abuse")
    events = {"events": [
        {"id": "e1", "type": "bounce", "kind": "hard", "messageId": hard, "reason": "550 5.1.1 no such user"},
        {"id": "e2", "type": "complaint", "messageId": abuse, "time": "2026-12-01T10:00:00Z"},
        {"id": "e3", "type": "bounce", "email": "someone@example.org"},  # an address alone: ignored for now
        {"id": "e4", "type": "bounce", "messageId": "not-one-of-ours"},
    ]}  # fmt: skip
    token = TOKENS["sender"]
    basic = base64.b64encode(f"provider:{token}".encode()).decode()
    url = f"{worker.url}/api/v1/bounces"
    answers = [
        httpx.post(url, json=events, headers={"Authorization": f"Bearer {token}"}),
        httpx.post(url, json=events, headers={"Authorization": f"Basic {basic}"}),  # the provider retried
        httpx.post(f"{url}?provider=generic&token={token}", json=events),
    ]
    assert [(a.status_code, a.json()) for a in answers] == [(202, {"accepted": 2, "ignored": 2})] * 3
    assert get_when(worker, f"/api/v1/messages/{hard}", lambda m: m["status"] == "bounced")["reason"].startswith("550")
    eventually(lambda: recipient(worker, "hook-hard")["status"] == "bounced")
    eventually(lambda: recipient(worker, "hook-abuse")["status"] == "unsubscribed")
    eventually(lambda: history_types(worker, "hook-abuse").count("mail.complained") == 1)
    webhook = sum(metric_value(w.url, "streamapp_bounces_total", source="webhook") for w in setup.workers)
    assert webhook == 2

    refused = [
        httpx.post(url, json=events),
        httpx.post(f"{url}?token=wrong", json=events),
        httpx.post(url, json=events, headers={"Authorization": f"Bearer {TOKENS['reader']}"}),
        httpx.post(f"{url}?provider=ses&token={token}", json=events),
        httpx.post(f"{url}?token={token}", json={"events": [{"id": "x", "type": "bounce", "time": "yesterday"}]}),
    ]
    assert [r.status_code for r in refused] == [401, 401, 403, 422, 422]
    assert [d["path"] for d in refused[3].json()["details"]] == ["/query/provider"]
    assert [d["path"] for d in refused[4].json()["details"]] == ["/events/0/time"]
