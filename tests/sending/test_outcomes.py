"""Every SMTP reply class end to end: a real worker, a real broker, a real SMTP peer.

The peer is started only after the first message was tried, so that message is deferred
(connection refused) and then delivered by a retry from the ledger.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures import Worker, WorkerPool, client, free_port, metric_value
from tests.mail.fixtures import PeerProcess
from tests.sending.fixtures import (
    add_recipients,
    ledger,
    maildir_ids,
    message,
    recipient,
    send,
    settings_of,
    smtp_extra,
    wait_statuses,
    write_templates,
)

pytestmark = pytest.mark.integration

RULES = {"soft@example.com": "450 4.2.0 try again later", "hard@example.com": "550 5.1.1 no such user"}


def sink_process(port: int, maildir: Path, log: Path) -> PeerProcess:
    command = [sys.executable, "-m", "streamapp.mail.sink", "--port", str(port), "--maildir", str(maildir)]
    for address, reply in RULES.items():
        command += ["--rule", f"{address}={reply}"]
    return PeerProcess(command, port, log)


@pytest.fixture
def setup(kafka: str, tmp_path: Path) -> Iterator[tuple[Worker, PeerProcess, Path]]:
    write_templates(tmp_path)
    port = free_port()
    pool = WorkerPool(kafka, tmp_path)
    peer = sink_process(port, tmp_path / "maildir", tmp_path / "sink.log")
    try:
        yield (
            pool.create(extra=smtp_extra(port, retry_initial=0.3, retry_max=0.6, expiry=8)),
            peer,
            tmp_path / "maildir",
        )
    finally:
        pool.stop_all()
        peer.stop()


def test_reply_classes_and_suppression(setup: tuple[Worker, PeerProcess, Path]) -> None:
    worker, peer, maildir = setup
    settings = settings_of(worker)
    tag = uuid.uuid4().hex[:6]
    ok, late, unsub, gone = (f"{name}-{tag}" for name in ("ok", "late", "unsub", "gone"))
    add_recipients(worker, [ok, late])
    add_recipients(worker, [unsub], status="unsubscribed")
    add_recipients(worker, ["soft", "hard"])  # soft@example.com, hard@example.com: the sink's rules

    # Nothing listens yet: connection refused, deferred.
    [deferred] = send(settings, [message(settings, late, "receipt", "transactional", properties={"order": "A1"})])
    wait_statuses(settings, {deferred: "deferred"})
    peer.start()

    ids = send(
        settings,
        [
            message(settings, ok),
            message(settings, "hard", "receipt", "transactional", properties={"order": "B2"}),
            message(settings, ok, "broken", "transactional"),
            message(settings, gone),
            message(settings, unsub),
            message(settings, unsub, "receipt", "transactional", transactional=True, properties={"order": "C3"}),
            message(settings, "soft", "receipt", "batch", properties={"order": "D4"}),
        ],
    )
    sent, hard, broken, unknown, suppressed, forced, soft = ids
    rows = wait_statuses(
        settings,
        {
            deferred: "sent",
            sent: "sent",
            hard: "failed",
            broken: "failed",
            unknown: "failed",
            suppressed: "suppressed",
            forced: "sent",
        },
    )
    assert rows[deferred].attempts >= 2 and rows[deferred].lastReply and rows[deferred].lastReply.code == 250
    assert rows[hard].lastReply is not None and rows[hard].lastReply.code == 550
    assert "missing_variable" in (rows[broken].reason or "")
    assert rows[unknown].reason == "unknown recipient"
    assert rows[suppressed].reason == "recipient unsubscribed"
    assert maildir_ids(maildir) == {deferred: 1, sent: 1, forced: 1}

    # The hard bounce made the recipient bounced: the next message is suppressed.
    assert recipient(worker, "hard")["status"] == "bounced"
    [after] = send(settings, [message(settings, "hard")])
    assert wait_statuses(settings, {after: "suppressed"})[after].reason == "recipient bounced"

    # 450 on RCPT again and again: deferred with back-off; five soft bounces in a row bounce the
    # recipient, and the message still being retried is then suppressed.
    rows = wait_statuses(settings, {soft: "suppressed"}, timeout=30)
    assert rows[soft].attempts >= 5 and rows[soft].reason == "recipient bounced"
    assert rows[soft].lastReply is not None and rows[soft].lastReply.code == 450
    soft_recipient = recipient(worker, "soft")
    assert soft_recipient["status"] == "bounced" and int(str(soft_recipient["softBounces"])) >= 5
    assert ledger(settings)[sent].command is None  # final rows drop the command

    # The message status route: scope `send`, routed to the partition's owner.
    with client(worker) as api:
        status = api.get(f"/api/v1/messages/{sent}")
        assert status.status_code == 200, status.text
        assert (status.json()["status"], status.json()["messageId"]) == ("sent", sent)
        assert "command" not in status.json()
        assert api.get(f"/api/v1/messages/{sent[:4]}{'0' * 28}").status_code == 404
        assert api.get("/api/v1/messages/not-an-id").status_code == 404
        paths = api.get("/api/v1/openapi.json").json()["paths"]
        assert {"/api/v1/messages/{messageId}", "/u/{token}"} <= set(paths)
    with client(worker, "reader") as api:
        assert api.get(f"/api/v1/messages/{sent}").status_code == 403

    # Metrics of SPEC §7 for sending, with no recipient data in labels.
    text = httpx.get(f"{worker.url}/metrics").text
    for line in (
        'streamapp_messages_total{outcome="sent",priority="campaign"}',
        'streamapp_messages_total{outcome="failed",priority="transactional"}',
        'streamapp_messages_total{outcome="suppressed",priority="campaign"}',
        'streamapp_smtp_replies_total{class="2xx"}',
        'streamapp_smtp_replies_total{class="5xx"}',
        'streamapp_smtp_replies_total{class="connection_error"}',
        'streamapp_send_duration_seconds_count{priority="campaign"}',
        'streamapp_queue_depth{priority="transactional",state="ready"}',
        'streamapp_queue_depth{priority="campaign",state="deferred"}',
        'streamapp_oldest_queued_age_seconds{priority="campaign"}',
        'streamapp_bounces_total{kind="complaint",source="webhook"} 0.0',
    ):
        assert line in text, line
    assert "example.com" not in text
    # One 550 to hard@ (its next message was suppressed), 450 to RCPT for soft@ until it bounced; the
    # refused connections of `late` are no bounce.
    assert metric_value(worker.url, "streamapp_bounces_total", kind="hard", source="smtp") == 1
    assert metric_value(worker.url, "streamapp_bounces_total", kind="soft", source="smtp") == rows[soft].attempts

    # Deferred until expiry: the peer is gone, every attempt is a connection error (no bounce).
    peer.stop()
    [lost] = send(settings, [message(settings, ok)])
    rows = wait_statuses(settings, {lost: "failed"}, timeout=40)
    assert rows[lost].attempts >= 2 and "expired" in (rows[lost].reason or "")
    assert recipient(worker, ok)["status"] == "active"


def test_a_message_arriving_just_before_its_recipient_is_created_is_sent(
    setup: tuple[Worker, PeerProcess, Path],
) -> None:
    """The trigger API creates a recipient and enqueues its message at once, on two topics."""
    worker, peer, maildir = setup
    peer.start()
    settings = settings_of(worker)
    newcomer = f"new-{uuid.uuid4().hex[:6]}"
    add_recipients(worker, [f"warm-{newcomer}"])  # the worker is up and applying commands
    [early] = send(settings, [message(settings, newcomer, "receipt", "transactional", properties={"order": "N1"})])
    time.sleep(0.5)
    with client(worker) as api:
        path = f"/api/v1/databases/members/recipients/{newcomer}"
        assert api.put(path, json={"email": f"{newcomer}@example.com"}).status_code == 202
    assert wait_statuses(settings, {early: "sent"})[early].status == "sent"
    assert maildir_ids(maildir) == {early: 1}
