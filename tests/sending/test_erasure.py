"""DELETE of a recipient erases it from every store (SPEC §3), against a real worker and SMTP sink.

Its idempotency records go (they live in their keys' partitions, not the recipient's): the same key
with another body is a new message, not a 409. Its ledger rows keep only the message id, status
and times.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.fixtures import Worker, WorkerPool, client, eventually
from tests.sending.fixtures import ledger, settings_of, wait_statuses

pytestmark = pytest.mark.integration


def post_message(worker: Worker, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    with client(worker, "sender") as api:
        response = api.post("/api/v1/triggers/receipt/messages", json=body)
        return response.status_code, response.json()


def test_an_erased_recipient_leaves_no_idempotency_record_and_a_bare_ledger_row(
    sending: tuple[WorkerPool, Worker, Path],
) -> None:
    _, worker, _ = sending
    settings = settings_of(worker)
    ann = f"ann-{uuid.uuid4().hex[:6]}"
    body: dict[str, object] = {
        "originalId": ann,
        "email": f"{ann}@example.com",
        "properties": {"order": "A-1"},
        "idempotencyKey": "k-1",
    }
    code, first = post_message(worker, body)
    assert code == 202, first
    message_id = str(first["messageId"])
    wait_statuses(settings, {message_id: "sent"})
    other_body: dict[str, object] = {**body, "properties": {"order": "A-2"}}
    assert post_message(worker, other_body)[0] == 409  # the record is there

    with client(worker) as api:
        assert api.delete(f"/api/v1/databases/members/recipients/{ann}").status_code == 202
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/{ann}").status_code == 404)
    with client(worker, "sender") as api:

        def bare() -> dict[str, object] | None:
            row = api.get(f"/api/v1/messages/{message_id}").json()
            return row if row.get("originalId") == "" else None

        row = eventually(bare, timeout=30, interval=0.3)
    assert row["status"] == "sent" and "lastReply" not in row and {"createdAt", "updatedAt"} <= row.keys()
    stored = ledger(settings)[message_id]  # the changelog too: a replica restored from it has no more
    assert (stored.originalId, stored.lastReply, stored.command) == ("", None, None)

    def accepted_again() -> dict[str, object] | None:
        code, answer = post_message(worker, other_body)
        assert code in (202, 409), answer
        return answer if code == 202 else None

    again = eventually(accepted_again, timeout=30, interval=0.3)  # a new message, not the erased one's 409
    assert again["messageId"] != message_id
