"""Template names end to end (SPEC §2): real broker, a worker process, the streamapp SMTP sink.

A declared attribute the recipient has no value for renders through `default`, and a trigger's
declared properties are checked at the door (422), never sent as a blank.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import Worker, WorkerPool, client
from tests.mail.fixtures import Peers
from tests.sending.fixtures import html_of, mail_by_recipient, settings_of, smtp_extra, wait_statuses, write_templates

pytestmark = pytest.mark.integration

GREETING = '{{ recipient.attributes.firstname | default("friend") }}'
GREET = """
[[triggers]]
name = "greet"
database = "members"
template = "greet"
properties = { code = "string", note = "string?" }
"""


@pytest.fixture(scope="module")
def greeting(
    kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers
) -> Iterator[tuple[Worker, Path]]:
    """A sending worker with trigger `greet` (declared properties) and the sink's Maildir."""
    base = tmp_path_factory.mktemp("names")
    write_templates(base)
    folder = base / "templates" / "greet"
    folder.mkdir()
    (folder / "subject.txt").write_text(f"Hello {GREETING}")
    (folder / "body.html").write_text(
        f"<p>Hello {GREETING}, code {{{{ properties.code }}}}{{{{ properties.note }}}}.</p>\n"
    )
    peer, maildir = peers_module.streamapp_sink()
    pool = WorkerPool(kafka, base)
    try:
        yield pool.create(extra=smtp_extra(peer.port, connections=2) + GREET), maildir
    finally:
        pool.stop_all()


def post_message(worker: Worker, body: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    with client(worker, "sender") as api:
        response = api.post("/api/v1/triggers/greet/messages", json=body)
        return response.status_code, response.json()


def test_a_recipient_without_firstname_is_greeted_as_friend(greeting: tuple[Worker, Path]) -> None:
    worker, maildir = greeting
    body = {"originalId": "nf-1", "email": "nf-1@example.com", "properties": {"code": "K1"}}
    code, answer = post_message(worker, body)
    assert code == 202, answer
    wait_statuses(settings_of(worker), {answer["messageId"]: "sent"})
    mail = mail_by_recipient(maildir, ["nf-1@example.com"])["nf-1@example.com"]
    assert mail["Subject"] == "Hello friend"
    assert "<p>Hello friend, code K1.</p>" in html_of(mail)  # the unset optional `note` renders empty


def test_a_message_missing_a_required_property_is_refused_at_the_door(greeting: tuple[Worker, Path]) -> None:
    worker, _ = greeting
    code, answer = post_message(worker, {"originalId": "nf-2", "properties": {"cod": "K2", "note": 5}})
    assert code == 422, answer
    assert {(d["path"], d["message"]) for d in answer["details"]} == {
        ("/properties/code", "is required by trigger 'greet' (string)"),
        ("/properties/cod", "not declared by trigger 'greet'"),
        ("/properties/note", "must be a string (declared string by trigger 'greet')"),
    }
