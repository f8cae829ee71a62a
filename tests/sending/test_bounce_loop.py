"""The real bounce loop (SPEC §11): streamapp → a private Postfix relay → the recipients' servers, and
Postfix's delivery status notifications back to streamapp's return-path listener.

Postfix routes `refused.example` to an smtp-sink that refuses every recipient (5xx: Postfix bounces at
once), `deferred.example` to one that answers 4xx (Postfix retries every second and gives up after a few
seconds), the bounce domain to the worker's listener, and the rest to an accepting smtp-sink. Streamapp
hears 250 from Postfix for every message; only the DSNs, sent by Postfix to each message's VERP
address, tell it which ones bounced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import Worker, WorkerPool, client, eventually, free_port, get_when
from tests.mail.fixtures import Peers, PostfixRelay, needs_postfix, needs_smtp_sink
from tests.sending.fixtures import recipient, write_templates

pytestmark = [pytest.mark.integration, pytest.mark.slow, needs_postfix, needs_smtp_sink]

DOMAIN = "bounces.example.com"


@pytest.fixture
def loop(kafka: str, tmp_path: Path, peers: Peers) -> Iterator[tuple[Worker, PostfixRelay]]:
    write_templates(tmp_path)
    accepting, refusing = peers.postfix_sink(), peers.postfix_sink(("-f", "rcpt"))
    deferring = peers.postfix_sink(("-r", "rcpt"))
    listen = free_port()
    routes = {"refused.example": refusing.port, "deferred.example": deferring.port, DOMAIN: listen}
    relay = PostfixRelay(routes, default=accepting.port).start()
    pool = WorkerPool(kafka, tmp_path)
    extra = f"""
[smtp]
host = "127.0.0.1"
port = {relay.port}
connections = 2
sender = "news@example.com"

[[triggers]]
name = "receipt"
database = "members"
template = "receipt"

[bounces]
domain = "{DOMAIN}"
listen = "127.0.0.1:{listen}"
"""
    try:
        yield pool.create(extra=extra), relay
    finally:
        pool.stop_all()
        relay.stop()


def send(worker: Worker, original_id: str, address: str) -> str:
    with client(worker) as api:
        answer = api.post("/api/v1/triggers/receipt/messages",
                          json={"originalId": original_id, "email": address, "properties": {"order": "L1"}})  # fmt: skip
        assert answer.status_code == 202, answer.text
        return str(answer.json()["messageId"])


def status(worker: Worker, message_id: str, *wanted: str, timeout: float = 60) -> dict[str, object]:
    path = f"/api/v1/messages/{message_id}"
    return dict(get_when(worker, path, lambda m: m["status"] in wanted, timeout=timeout))


def test_postfix_bounces_come_back_and_bounce_their_messages_and_recipients(
    loop: tuple[Worker, PostfixRelay],
) -> None:
    worker, relay = loop
    ok = send(worker, "loop-ok", "ok@example.com")
    gone = send(worker, "loop-gone", "gone@refused.example")
    later = send(worker, "loop-later", "later@deferred.example")
    try:
        for message_id in (ok, gone, later):  # Postfix took each one (and may have bounced it already)
            assert status(worker, message_id, "sent", "bounced")["attempts"] == 1
        assert "5" in str(status(worker, gone, "bounced")["reason"])
        eventually(lambda: recipient(worker, "loop-gone")["status"] == "bounced")
        status(worker, later, "bounced", timeout=90)  # Postfix gave up on the 4xx
        eventually(lambda: recipient(worker, "loop-later")["status"] == "bounced")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nPostfix log:\n{relay.tail()}\nworker log:\n{worker.tail()}") from None
    assert status(worker, ok, "sent")["status"] == "sent" and recipient(worker, "loop-ok")["status"] == "active"
    again = send(worker, "loop-gone", "gone@refused.example")
    assert status(worker, again, "suppressed")["reason"] == "recipient bounced"
