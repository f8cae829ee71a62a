"""One-click unsubscribe end to end: the link comes from a message the SMTP peer actually received.

The link points at the worker's own HTTP server (service.public_url); the worker publishes the
unsubscribe to the real broker, applies it and suppresses the next campaign message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures import Worker, WorkerPool, eventually
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

pytestmark = pytest.mark.integration


@pytest.fixture
def sending(kafka: str, tmp_path: Path, peers: Peers) -> Iterator[tuple[Worker, Path]]:
    write_templates(tmp_path)
    peer, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    try:
        yield pool.create(extra=smtp_extra(peer.port)), maildir
    finally:
        pool.stop_all()


def _click(link: str) -> tuple[int, str, int, str, int]:
    """On the worker's own HTTP server: GET the page, POST a forged link, POST the one-click."""
    page = httpx.get(link, timeout=10)
    forged_link = link[:-3] + ("A" if link[-3] != "A" else "B") + link[-2:]
    forged = httpx.post(forged_link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
    click = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10, follow_redirects=False)
    return page.status_code, page.text, forged.status_code, click.text, click.status_code


def test_one_click_unsubscribe_from_a_received_message(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    settings = settings_of(worker)
    ann, bo = f"ann-{uuid.uuid4().hex[:6]}", f"bo-{uuid.uuid4().hex[:6]}"
    add_recipients(worker, [ann, bo])
    first = send(settings, [message(settings, ann), message(settings, bo)])
    wait_statuses(settings, dict.fromkeys(first, "sent"))

    [received] = [m for m in maildir_messages(maildir) if m["To"] == f"{ann}@example.com"]
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = received["List-Unsubscribe"].strip("<>")
    assert link.startswith(settings.service.public_url + "/u/")
    page_status, page, forged_status, done, click_status = _click(link)
    assert page_status == 200 and 'method="post"' in page
    assert forged_status == 404
    assert click_status == 200 and "Unsubscribed" in done

    eventually(lambda: recipient(worker, ann)["status"] == "unsubscribed")
    assert recipient(worker, bo)["status"] == "active"  # the forged link changed nothing
    later = send(settings, [message(settings, ann), message(settings, bo)])
    rows = wait_statuses(settings, {later[0]: "suppressed", later[1]: "sent"})
    assert rows[later[0]].reason == "recipient unsubscribed"
