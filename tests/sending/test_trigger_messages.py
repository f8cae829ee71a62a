"""Single transactional messages by API, end to end: real broker, worker processes, SMTP sink.

Each test reads the mail the sink actually received and checks its rendered personalization.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures import Worker, WorkerPool, client, get_when
from tests.sending.fixtures import (
    add_recipients,
    html_of,
    ledger,
    mail_by_recipient,
    maildir_ids,
    recipient,
    settings_of,
    smtp_extra,
    wait_for,
    wait_statuses,
)

pytestmark = pytest.mark.integration


def post_message(worker: Worker, trigger: str, body: object, token: str = "sender", **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    with client(worker, token) as api:
        response = api.post(f"/api/v1/triggers/{trigger}/messages", json=body, headers=headers)
        return response.status_code, response.json()


def test_unknown_recipient_is_created_and_gets_its_personalized_message(
    sending: tuple[WorkerPool, Worker, Path],
) -> None:
    _, worker, maildir = sending
    body = {"originalId": "new-1", "email": "new-1@example.com", "properties": {"code": "X-42"}}
    code, answer = post_message(worker, "receipt", {**body, "properties": {"order": "A-17"}})
    assert code == 202, answer
    wait_statuses(settings_of(worker), {answer["messageId"]: "sent"})
    created = recipient(worker, "new-1")
    assert (created["email"], created["status"]) == ("new-1@example.com", "active")
    mail = mail_by_recipient(maildir, ["new-1@example.com"])["new-1@example.com"]
    assert mail["Subject"] == "Receipt A-17" and "Order A-17" in html_of(mail)


def test_an_existing_recipient_keeps_its_address_and_the_message_goes_where_asked(
    sending: tuple[WorkerPool, Worker, Path],
) -> None:
    _, worker, maildir = sending
    add_recipients(worker, ["old-1"], attributes={"firstname": "Olga"})
    body = {"originalId": "old-1", "email": "elsewhere@example.com", "properties": {"code": "C1"}}
    code, answer = post_message(worker, "welcome", body)
    assert code == 202, answer
    wait_statuses(settings_of(worker), {answer["messageId"]: "sent"})
    mail = mail_by_recipient(maildir, ["elsewhere@example.com"])["elsewhere@example.com"]
    assert mail["Subject"] == "Welcome Olga" and "Hi Olga (elsewhere@example.com), code C1" in html_of(mail)
    assert recipient(worker, "old-1")["email"] == "old-1@example.com"


def test_save_props_stores_matching_properties_before_rendering(sending: tuple[WorkerPool, Worker, Path]) -> None:
    _, worker, maildir = sending
    add_recipients(worker, ["sp-1"], attributes={"firstname": "Before"})
    body = {
        "originalId": "sp-1",
        "properties": {"firstname": "After", "zipcode": "41101", "code": "Z9"},
        "saveProps": True,
    }
    code, answer = post_message(worker, "welcome", body)
    assert code == 202, answer
    wait_statuses(settings_of(worker), {answer["messageId"]: "sent"})
    mail = mail_by_recipient(maildir, ["sp-1@example.com"])["sp-1@example.com"]
    assert mail["Subject"] == "Welcome After" and "code Z9" in html_of(mail)
    stored = recipient(worker, "sp-1")["attributes"]
    assert stored == {"firstname": "After", "zipcode": "41101"}  # `code` is not an attribute


def test_idempotency_key_gives_one_message_and_409_for_another_body(
    sending: tuple[WorkerPool, Worker, Path],
) -> None:
    pool, worker, maildir = sending
    second = pool.create(extra=smtp_extra(_sink_port(worker)))  # keys live on one of two workers
    body = {"originalId": "idem-1", "email": "idem-1@example.com", "properties": {"order": "O-1"}}
    ids = set()
    for target, extra in ((worker, {}), (second, {}), (worker, {"Idempotency-Key": "k-1"})):
        keyed = {**body, "idempotencyKey": "k-1"} if not extra else body
        code, answer = post_message(target, "receipt", keyed, **extra)
        assert code == 202, answer
        ids.add(answer["messageId"])
    assert len(ids) == 1
    code, answer = post_message(
        second, "receipt", {**body, "properties": {"order": "O-2"}}, **{"Idempotency-Key": "k-1"}
    )
    assert code == 409, answer
    code, other = post_message(worker, "receipt", body, **{"Idempotency-Key": "k-2"})
    assert code == 202 and other["messageId"] not in ids
    (message_id,) = ids
    wait_statuses(settings_of(worker), {message_id: "sent", other["messageId"]: "sent"})
    time.sleep(1)  # a second copy would have been sent by now
    assert maildir_ids(maildir)[message_id] == 1


def _sink_port(worker: Worker) -> int:
    return int(settings_of(worker).smtp.port)  # type: ignore[union-attr]


def test_delivery_time_is_never_early_and_survives_a_restart(sending: tuple[WorkerPool, Worker, Path]) -> None:
    _, worker, maildir = sending
    due = datetime.now(UTC) + timedelta(seconds=12)
    body = {"originalId": "later-1", "email": "later-1@example.com", "properties": {"order": "L"},
            "deliveryTime": due.isoformat()}  # fmt: skip
    code, answer = post_message(worker, "receipt", body)
    assert code == 202, answer
    message_id = answer["messageId"]
    rows = wait_statuses(settings_of(worker), {message_id: "scheduled"})
    assert rows[message_id].nextAttemptAt is not None
    worker.kill()
    worker.start().wait_ready()
    wait_for(lambda: maildir_ids(maildir)[message_id] == 1, timeout=60)
    received = datetime.now(UTC)
    assert received >= due
    with client(worker, "sender") as api:
        state = api.get(f"/api/v1/messages/{message_id}").json()
    assert state["status"] == "sent" and datetime.fromisoformat(state["updatedAt"]) >= due
    time.sleep(1)
    assert maildir_ids(maildir)[message_id] == 1


def test_errors_404_403_422(sending: tuple[WorkerPool, Worker, Path]) -> None:
    _, worker, _ = sending
    body = {"originalId": "e-1"}
    assert post_message(worker, "nope", body)[0] == 404
    assert post_message(worker, "receipt", body, token="reader")[0] == 403
    assert post_message(worker, "receipt", body, token="other")[0] == 403
    code, answer = post_message(
        worker, "receipt",
        {"email": "not-an-address", "properties": [], "saveProps": "yes", "deliveryTime": "soon", "x": 1},
    )  # fmt: skip
    assert code == 422
    paths = {d["path"] for d in answer["details"]}
    assert paths == {"/originalId", "/email", "/properties", "/saveProps", "/deliveryTime", "/x"}
    code, answer = post_message(worker, "welcome", {"originalId": "e-1", "saveProps": True,
                                                    "properties": {"score": "high"}})  # fmt: skip
    assert code == 422 and answer["details"] == [{"path": "/properties/score", "message": "must be an integer"}]
    code, _ = post_message(worker, "receipt", {"originalId": "e-1", "idempotencyKey": "a"}, **{"Idempotency-Key": "b"})
    assert code == 422
    with client(worker, None) as api:
        assert api.post("/api/v1/triggers/receipt/messages", json=body).status_code == 401
    with client(worker, "sender") as api:
        assert api.get(f"/api/v1/batches/0000{uuid.uuid4().hex[:20]}").status_code == 404


def test_a_scheduled_campaign_goes_out_once_and_not_early_across_a_rebalance(
    sending: tuple[WorkerPool, Worker, Path],
) -> None:
    pool, worker, maildir = sending
    items = "".join(f'{{"originalId": "sched-{i}", "email": "sched-{i}@example.com"}}\n' for i in range(200))
    send_time = datetime.now(UTC) + timedelta(seconds=15)
    with client(worker, "campaigner") as api:
        response = api.post(
            "/api/v1/campaigns/newsletter/sends",
            params={"sendTime": send_time.isoformat()},
            content=items.encode(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]
    get_when(worker, f"/api/v1/batches/{batch_id}", lambda b: b["scheduled"] == 200)
    pool.create(extra=smtp_extra(_sink_port(worker)))  # half the partitions, and their schedules, move
    get_when(worker, f"/api/v1/batches/{batch_id}", lambda b: b["sent"] == 200, timeout=90)
    delivered = {m: n for m, n in maildir_ids(maildir).items() if m[4:28] == batch_id}
    assert len(delivered) == 200 and set(delivered.values()) == {1}
    rows = ledger(settings_of(worker))
    assert all(datetime.fromisoformat(rows[m].updatedAt) >= send_time for m in delivered)
