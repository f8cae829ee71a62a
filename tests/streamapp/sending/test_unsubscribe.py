"""One-click unsubscribe end to end: the link comes from a message the SMTP peer actually received.

The routes run in this process (the lead registers them in the worker's server), publishing to
the real broker; the worker applies the command and suppresses the next campaign message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from streamapp.publisher import CommandPublisher, aiokafka_send
from streamapp.sending.unsubscribe_routes import UnsubscribeRoutes
from streamapp.settings import Settings
from streamapp.topics import bootstrap_servers, commands_topic
from tests.fixtures import Worker, WorkerPool, eventually
from tests.streamapp.mail.fixtures import Peers
from tests.streamapp.sending.fixtures import (
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


async def _click(settings: Settings, secret: bytes, path: str) -> tuple[int, str, int, str, int]:
    """GET the page, GET a forged link, POST the one-click: (status, body) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings), acks="all")
    await producer.start()
    publisher = CommandPublisher(aiokafka_send(producer), commands_topic(settings), settings.service.partitions)
    app = web.Application()
    UnsubscribeRoutes(publisher.publish, secret).add_to(app)
    try:
        async with TestClient(TestServer(app)) as http:
            page = await http.get(path)
            forged_path = path[:-3] + ("A" if path[-3] != "A" else "B") + path[-2:]
            forged = await http.post(forged_path, data={"List-Unsubscribe": "One-Click"})
            click = await http.post(path, data={"List-Unsubscribe": "One-Click"}, allow_redirects=False)
            return page.status, await page.text(), forged.status, await click.text(), click.status
    finally:
        await producer.stop()


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
    path = link.removeprefix(settings.service.public_url)

    secret = (worker.data_dir / "unsubscribe.key").read_bytes()
    page_status, page, forged_status, done, click_status = asyncio.run(_click(settings, secret, path))
    assert page_status == 200 and 'method="post"' in page
    assert forged_status == 404
    assert click_status == 200 and "Unsubscribed" in done

    eventually(lambda: recipient(worker, ann)["status"] == "unsubscribed")
    assert recipient(worker, bo)["status"] == "active"  # the forged link changed nothing
    later = send(settings, [message(settings, ann), message(settings, bo)])
    rows = wait_statuses(settings, {later[0]: "suppressed", later[1]: "sent"})
    assert rows[later[0]].reason == "recipient unsubscribed"
