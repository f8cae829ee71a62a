"""One-click unsubscribe end to end: the link comes from a message the SMTP peer actually received.

The link points at the worker's own HTTP server (service.public_url); the worker publishes the
unsubscribe to the real broker, applies it and suppresses the next campaign message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from streamapp.core.keys import partition_for, recipient_key
from streamapp.mail.unsubscribe import make_token
from streamapp.settings import Settings
from tests.fixtures import Worker, WorkerPool, client, eventually
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


def _page_without_its_path(link: str) -> str:
    """The confirmation page, but for the form's action (the link's own path)."""
    page = httpx.get(link, timeout=10)
    assert page.status_code == 200
    return page.text.replace(httpx.URL(link).path, "")


def _same_partition(settings: Settings, original_id: str) -> str:
    """Another originalId on the partition of `original_id`: once it is applied, so is what came before."""
    partitions = settings.service.partitions
    wanted = partition_for(recipient_key("members", original_id), partitions)
    return next(
        c for i in range(10_000) if partition_for(recipient_key("members", c := f"probe-{i}"), partitions) == wanted
    )


def test_a_link_of_an_erased_recipient_brings_nothing_back_and_answers_the_same(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    settings = settings_of(worker)
    ann, bo = f"ann-{uuid.uuid4().hex[:6]}", f"bo-{uuid.uuid4().hex[:6]}"
    add_recipients(worker, [ann, bo])
    sent = send(settings, [message(settings, ann), message(settings, bo)])
    wait_statuses(settings, dict.fromkeys(sent, "sent"))
    links = {m["To"]: m["List-Unsubscribe"].strip("<>") for m in maildir_messages(maildir)}
    with client(worker) as api:
        assert api.delete(f"/api/v1/databases/members/recipients/{ann}").status_code == 202
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/{ann}").status_code == 404)

        pages = [httpx.post(links[f"{who}@example.com"], data={"List-Unsubscribe": "One-Click"}, timeout=10)
                 for who in (ann, bo)]  # fmt: skip
        assert [p.status_code for p in pages] == [200, 200] and pages[0].text == pages[1].text  # no oracle
        confirm = [_page_without_its_path(links[f"{who}@example.com"]) for who in (ann, bo)]
        assert confirm[0] == confirm[1]

        probe = _same_partition(settings, ann)  # published after the unsubscribe, to its partition
        assert api.put(f"/api/v1/databases/members/recipients/{probe}", json={}).status_code == 202
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/{probe}").status_code == 200)
        assert api.get(f"/api/v1/databases/members/recipients/{ann}").status_code == 404  # still erased
    eventually(lambda: recipient(worker, bo)["status"] == "unsubscribed")


def test_a_link_works_for_90_days_then_is_404(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    bo = f"bo-{uuid.uuid4().hex[:6]}"
    add_recipients(worker, [bo])
    key = (worker.data_dir / "unsubscribe.key").read_bytes()  # this loopback worker's own key (no secret_file)
    now = datetime.now(UTC)
    base = settings_of(worker).service.public_url

    def link(age: timedelta) -> str:
        return f"{base}/u/{make_token(key, 'members', bo, 'm-1', issued_at=now - age)}"

    assert httpx.get(link(timedelta(days=89)), timeout=10).status_code == 200
    expired = link(timedelta(days=91))
    assert httpx.get(expired, timeout=10).status_code == 404
    answer = httpx.post(expired, data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert answer.status_code == 404  # like a forged link (the middleware gives errors the API's JSON shape)
    probe = _same_partition(settings_of(worker), bo)
    with client(worker) as api:
        assert api.put(f"/api/v1/databases/members/recipients/{probe}", json={}).status_code == 202
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/{probe}").status_code == 200)
    assert recipient(worker, bo)["status"] == "active"  # the expired link changed nothing
