"""Bounded work per request, end to end (README "Limits"): a real worker, broker and SMTP sink.

Declared properties checked in every batch row; one message per originalId per batch; send times
at most a year ahead (API and drop folder); the batch status route's `?partitions=` checked; a
trickled body cut with 408; the spool's quota answered with 503 and Retry-After.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Worker, WorkerPool, client, eventually
from tests.imports.fixtures import drop, wait_report
from tests.mail.fixtures import Peers
from tests.sending.fixtures import mail_by_recipient, maildir_messages, smtp_extra, write_templates
from tests.sending.test_batches import post_batch, wait_batch

pytestmark = pytest.mark.integration

MAX_BATCH = 1_000_000
STRICT = """
[[triggers]]
name = "strict"
database = "members"
template = "receipt"
properties = { order = "int", note = "string?" }
"""


@pytest.fixture(scope="module")
def sending(kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers) -> Iterator[tuple[Worker, Path]]:
    base = tmp_path_factory.mktemp("bounded")
    write_templates(base)
    peer, maildir = peers_module.streamapp_sink()
    pool = WorkerPool(kafka, base)
    try:
        extra = smtp_extra(peer.port, connections=4) + STRICT
        yield pool.create(extra=extra, service=f"max_batch_bytes = {MAX_BATCH}"), maildir
    finally:
        pool.stop_all()


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(i) + "\n" for i in items).encode()


def test_every_batch_row_is_checked_against_the_declared_properties(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    items = [
        {"originalId": "dp-1", "email": "dp-1@example.com", "properties": {"order": 7}},
        {"originalId": "dp-2", "email": "dp-2@example.com"},
        {"originalId": "dp-3", "email": "dp-3@example.com", "properties": {"order": "7"}},
        {"originalId": "dp-4", "email": "dp-4@example.com", "properties": {"order": 1, "coupon": "x"}},
    ]
    response = post_batch(worker, "/api/v1/triggers/strict/batches", ndjson(items), "application/x-ndjson")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 3)
    assert [(e["line"], e["reason"]) for e in answer["errors"]] == [
        (2, "/properties/order: is required by trigger 'strict' (int)"),
        (3, "/properties/order: must be an integer (declared int by trigger 'strict')"),
        (4, "/properties/coupon: not declared by trigger 'strict'"),
    ]
    assert wait_batch(worker, answer["batchId"], 1)["sent"] == 1
    received = mail_by_recipient(maildir)
    assert received["dp-1@example.com"]["Subject"] == "Receipt 7"
    assert not any(f"dp-{n}@example.com" in received for n in (2, 3, 4))
    csv = b"originalId;email\r\ndp-5;dp-5@example.com\r\n"
    answer = post_batch(worker, "/api/v1/triggers/strict/batches", csv, "text/csv").json()
    assert (answer["accepted"], answer["errors"]) == (0, [{"line": 2, "reason": answer["errors"][0]["reason"]}])
    assert "is required by trigger 'strict'" in answer["errors"][0]["reason"]


def test_a_second_row_for_a_recipient_is_rejected_and_one_mail_sent(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    items = [{"originalId": i, "email": f"{i}@example.com"} for i in ("dup-a", "dup-b", "dup-a", "dup-a")]
    answer = post_batch(worker, "/api/v1/triggers/news/batches", ndjson(items), "application/x-ndjson").json()
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    assert [e["line"] for e in answer["errors"]] == [3, 4]
    assert answer["errors"][0]["reason"] == "duplicate originalId in this batch (its first row is sent)"
    status = wait_batch(worker, answer["batchId"], 2)
    assert (status["total"], status["sent"], status["rejected"], status["queued"]) == (2, 2, 2, 0)
    to = [str(m["To"]) for m in maildir_messages(maildir)]
    assert (to.count("dup-a@example.com"), to.count("dup-b@example.com")) == (1, 1)


def test_send_times_more_than_a_year_ahead_are_refused(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    far = "2099-01-01T08:00:00%2B01:00"
    response = post_batch(worker, f"/api/v1/campaigns/promo/sends?sendTime={far}", b"[]", "application/json")
    assert response.status_code == 422
    assert response.json()["details"][0]["path"] == "/query/sendTime"
    assert "at most 365 days ahead" in response.json()["details"][0]["message"]
    with client(worker, "sender") as api:
        body = {"originalId": "far-1", "email": "far-1@example.com", "deliveryTime": "2099-01-01T08:00:00+01:00"}
        response = api.post("/api/v1/triggers/news/messages", json=body)
    assert response.status_code == 422 and "/deliveryTime" in response.text
    name = "members__promo__20990101T0800.csv"
    drop(worker, "campaigns", name, b"originalId,email\r\nfar-2,far-2@example.com\r\n")
    outcome, report = wait_report(worker, name)
    assert outcome == "rejected" and "at most 365 days ahead" in report["reason"], report


def test_the_partitions_of_a_count_request_are_checked(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    items = [{"originalId": "cnt-1", "email": "cnt-1@example.com"}]
    batch_id = post_batch(worker, "/api/v1/triggers/news/batches", ndjson(items), "application/x-ndjson").json()[
        "batchId"
    ]
    path = f"/api/v1/batches/{batch_id}"
    with client(worker, "sender") as api:
        started = time.monotonic()
        response = api.get(f"{path}?partitions={','.join(['0'] * 4000)}")  # 8,000 characters: aiohttp takes the line
        assert response.status_code == 422 and time.monotonic() - started < 1.0
        for bad in ("0,0", "4", "-1", "x", "", "0,,1"):
            assert api.get(path, params={"partitions": bad}).status_code == 422, bad
        counts = eventually(lambda: api.get(path, params={"partitions": "0,1,2,3"}).json()["counts"].get("sent"))
        assert counts == 1


def _post_head(worker: Worker, length: int, path: str = "/api/v1/triggers/news/batches") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", worker.port), timeout=30)
    token = "test-sender-token"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    return sock


def _status(sock: socket.socket) -> tuple[int, str]:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split()[1]), head.decode(errors="replace")


@pytest.mark.slow
def test_a_trickled_body_is_cut_with_408_and_leaves_nothing_in_the_spool(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    sock = _post_head(worker, 10_000)
    started = time.monotonic()
    sock.settimeout(0.9)
    status = None
    try:
        for _ in range(30):  # one byte a second
            sock.sendall(b"x")
            try:
                status, _ = _status(sock)
                break
            except TimeoutError:
                continue
    finally:
        sock.close()
    assert status == 408, "the body was never cut"
    assert 9 <= time.monotonic() - started < 16
    assert not list((worker.data_dir / "spool").iterdir())
    with client(worker) as api:
        assert api.get("/healthz").status_code == 200


def test_bodies_past_the_spool_quota_are_503_and_it_frees_when_they_go(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    holders = [_post_head(worker, MAX_BATCH) for _ in range(4)]  # 4 x max_batch_bytes: the whole quota
    try:
        time.sleep(0.5)
        sock = _post_head(worker, 100)
        status, head = _status(sock)
        sock.close()
        assert status == 503 and "Retry-After: 5" in head
    finally:
        for holder in holders:
            holder.close()
    body = b"originalId,email\r\nspool-1,spool-1@example.com\r\n"

    def accepted() -> bool:
        return post_batch(worker, "/api/v1/triggers/news/batches", body, "text/csv").status_code == 202

    eventually(accepted, timeout=10)
    assert not list((worker.data_dir / "spool").iterdir())
