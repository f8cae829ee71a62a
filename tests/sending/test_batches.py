"""Batch transactional and send campaign, by API and by file, end to end.

Real broker, a worker process, the streamapp SMTP sink in another process. Each test checks the
personalization of mail actually received, the recipients the rows updated, and the batch
counts converging to the total.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures import Worker, WorkerPool, client, eventually, get_when, metric_value
from tests.imports.fixtures import drop, wait_report
from tests.mail.fixtures import Peers
from tests.sending.fixtures import (
    add_recipients,
    html_of,
    mail_by_recipient,
    maildir_ids,
    recipient,
    smtp_extra,
    write_templates,
)

pytestmark = pytest.mark.integration

#: The module's worker takes batch bodies up to this size (the 10,000-row bodies are about 1.2 MB).
MAX_BATCH = 4_000_000


@pytest.fixture(scope="module")
def sending(kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers) -> Iterator[tuple[Worker, Path]]:
    base = tmp_path_factory.mktemp("batches")
    write_templates(base)
    peer, maildir = peers_module.streamapp_sink()
    pool = WorkerPool(kafka, base)
    try:
        yield pool.create(extra=smtp_extra(peer.port, connections=8), service=f"max_batch_bytes = {MAX_BATCH}"), maildir
    finally:
        pool.stop_all()


def rows(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {"originalId": f"{prefix}-{i}", "email": f"{prefix}-{i}@example.com",
         "attributes": {"firstname": f"F{i}", "zipcode": f"{10000 + i}"}}
        for i in range(n)
    ]  # fmt: skip


def as_csv(items: list[dict[str, Any]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(["originalId", "email", "firstname", "zipcode"])
    for item in items:
        attributes = item.get("attributes", {})
        writer.writerow([item["originalId"], item.get("email", ""), attributes.get("firstname", ""),
                         attributes.get("zipcode", "")])  # fmt: skip
    return out.getvalue().encode()


def body_of(items: list[dict[str, Any]], fmt: str) -> tuple[bytes, str]:
    if fmt == "json":
        return json.dumps(items).encode(), "application/json"
    if fmt == "ndjson":
        return "".join(json.dumps(i) + "\n" for i in items).encode(), "application/x-ndjson"
    return as_csv(items), "text/csv"


def post_batch(worker: Worker, path: str, body: bytes, content_type: str, token: str = "campaigner") -> Any:
    with client(worker, token) as api:
        return api.post(path, content=body, headers={"Content-Type": content_type}, timeout=120)


def wait_batch(worker: Worker, batch_id: str, done: int, timeout: float = 120) -> dict[str, Any]:
    """Until the batch's sent + failed + suppressed reach `done`."""
    body: dict[str, Any] = get_when(
        worker, f"/api/v1/batches/{batch_id}",
        lambda b: b["sent"] + b["failed"] + b["suppressed"] >= done, timeout=timeout,
    )  # fmt: skip
    return body


def check_received(maildir: Path, items: list[dict[str, Any]], sample: int = 25) -> None:
    chosen = items[:: max(1, len(items) // sample)]
    received = mail_by_recipient(maildir, {item["email"] for item in chosen})
    for item in chosen:
        mail = received[item["email"]]
        attributes = item["attributes"]
        assert mail["Subject"] == f"Hello {attributes['firstname']}"
        assert f"{item['originalId']} in {attributes['zipcode']}" in html_of(mail)


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_batch_of_10000_by_each_body_format(sending: tuple[Worker, Path], fmt: str) -> None:
    worker, maildir = sending
    items = rows(f"b{fmt}", 10_000)
    bad = [{"originalId": "", "email": "x@example.com"}, {"originalId": f"{fmt}-bad", "email": "nope"}]
    body, content_type = body_of([*items[:5000], *bad, *items[5000:]], fmt)
    response = post_batch(worker, "/api/v1/triggers/hello/batches", body, content_type)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (10_000, 2)
    where = {"json": "item", "ndjson": "line", "csv": "line"}[fmt]
    first_bad = {"json": 5000, "ndjson": 5001, "csv": 5002}[fmt]  # item from 0; lines from 1 (CSV: after its header)
    assert [e[where] for e in answer["errors"]] == [first_bad, first_bad + 1]
    assert "e-mail" in answer["errors"][1]["reason"]
    status = wait_batch(worker, answer["batchId"], 10_000)
    assert (status["total"], status["sent"], status["queued"], status["priority"]) == (10_000, 10_000, 0, "batch")
    assert status["rejected"] == 2 and len(status["errors"]) == 2 and "type" not in status
    check_received(maildir, items)
    assert recipient(worker, f"b{fmt}-77")["attributes"] == {"firstname": "F77", "zipcode": "10077"}


def test_batch_rows_update_existing_recipients_before_rendering(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    add_recipients(worker, ["upd-1"], attributes={"firstname": "Old", "zipcode": "11111"})
    item = {"originalId": "upd-1", "email": "upd-1@example.com", "attributes": {"firstname": "New"}}
    response = post_batch(worker, "/api/v1/triggers/hello/batches", json.dumps([item]).encode(), "application/json")
    assert response.status_code == 202, response.text
    wait_batch(worker, response.json()["batchId"], 1)
    mail = mail_by_recipient(maildir, ["upd-1@example.com"])["upd-1@example.com"]
    assert mail["Subject"] == "Hello New" and "upd-1 in 11111" in html_of(mail)
    assert recipient(worker, "upd-1")["attributes"] == {"firstname": "New", "zipcode": "11111"}


def test_batch_bodies_that_cannot_be_read_are_refused_whole(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    path = "/api/v1/triggers/hello/batches"
    assert post_batch(worker, path, b'{"originalId": "x"}', "application/json").status_code == 422
    assert post_batch(worker, path, b"id,email\r\n1,a@example.com\r\n", "text/csv").status_code == 422
    assert post_batch(worker, path, b"originalId\r\n\xff\xfe\r\n", "text/csv").status_code == 422
    assert post_batch(worker, path, b"", "application/x-ndjson").status_code == 422
    assert post_batch(worker, "/api/v1/triggers/nope/batches", b"[]", "application/json").status_code == 404
    assert post_batch(worker, path, b"[]", "application/json", token="reader").status_code == 403
    assert post_batch(worker, "/api/v1/campaigns/nope/sends", b"[]", "application/json").status_code == 404
    response = post_batch(worker, "/api/v1/campaigns/promo/sends?sendTime=tomorrow", b"[]", "application/json")
    assert response.status_code == 422 and response.json()["details"][0]["path"] == "/query/sendTime"


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_a_send_only_token_sends_to_recipients_but_does_not_rewrite_them(
    sending: tuple[Worker, Path], fmt: str
) -> None:
    worker, maildir = sending
    known = rows(f"so{fmt}", 3)
    add_recipients(worker, [r["originalId"] for r in known], attributes={"firstname": "Kept", "zipcode": "22222"})
    rewrite = [{"originalId": r["originalId"]} for r in known[:2]] + [known[2]]  # the third row carries email
    body, content_type = body_of(rewrite, fmt)
    refused = post_batch(worker, "/api/v1/campaigns/promo/sends", body, content_type, token="sender")
    assert refused.status_code == 403, refused.text
    where = {"json": "item 2", "ndjson": "line 3", "csv": "line 4"}[fmt]  # empty CSV cells write nothing
    assert "recipients:write" in refused.json()["error"] and where in refused.json()["error"], refused.text
    assert recipient(worker, known[2]["originalId"])["attributes"] == {"firstname": "Kept", "zipcode": "22222"}
    assert not list((worker.data_dir / "spool").iterdir())
    ids = [{"originalId": r["originalId"]} for r in known]
    ids_only = "".join(f"{i['originalId']}\r\n" for i in [{"originalId": "originalId"}, *ids]).encode() if (
        fmt == "csv") else body_of(ids, fmt)[0]  # fmt: skip
    sent = post_batch(worker, "/api/v1/triggers/hello/batches", ids_only, content_type, token="sender")
    assert sent.status_code == 202 and sent.json()["accepted"] == 3, sent.text
    wait_batch(worker, sent.json()["batchId"], 3)
    assert mail_by_recipient(maildir, [f"so{fmt}-2@example.com"])[f"so{fmt}-2@example.com"]["Subject"] == "Hello Kept"


def test_a_body_over_the_batch_limit_is_413_and_nothing_is_sent(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    body, content_type = body_of(rows("huge", 40_000), "ndjson")
    assert len(body) > MAX_BATCH
    response = post_batch(worker, "/api/v1/triggers/hello/batches", body, content_type)
    assert response.status_code == 413 and str(MAX_BATCH) in response.json()["error"]
    time.sleep(1)
    with client(worker) as api:
        assert api.get("/api/v1/databases/members/recipients/huge-0").status_code == 404
    assert not list((worker.data_dir / "spool").iterdir())


def test_a_json_array_broken_halfway_keeps_the_rows_before(sending: tuple[Worker, Path]) -> None:
    worker, _ = sending
    good = json.dumps(rows("half", 3))[:-1].encode()
    response = post_batch(worker, "/api/v1/triggers/hello/batches", good + b', {"originalId": ', "application/json")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 3 and "the rest of the body was not read" in answer["errors"][-1]["reason"]
    assert wait_batch(worker, answer["batchId"], 3)["sent"] == 3


def test_campaign_by_api_is_not_sent_before_its_send_time(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    items = rows("camp-api", 50)
    send_time = datetime.now(UTC) + timedelta(seconds=8)
    response = post_batch(worker, f"/api/v1/campaigns/promo/sends?sendTime={send_time.isoformat()}".replace("+", "%2B"),
                          *body_of(items, "ndjson"))  # fmt: skip
    assert response.status_code == 202, response.text
    batch_id = response.json()["batchId"]
    status = get_when(worker, f"/api/v1/batches/{batch_id}", lambda b: b["scheduled"] == 50)
    assert status["sent"] == 0 and status["priority"] == "campaign"
    assert not mail_by_recipient(maildir, [i["email"] for i in items])
    depth = {"priority": "campaign", "state": "scheduled"}  # SPEC §7: the queue depth's state
    scheduled = eventually(lambda: metric_value(worker.url, "streamapp_queue_depth", **depth) >= 50 and
                           metric_value(worker.url, "streamapp_queue_depth", **depth))  # fmt: skip
    status = wait_batch(worker, batch_id, 50, timeout=60)
    assert datetime.now(UTC) >= send_time and status["sent"] == 50
    eventually(lambda: metric_value(worker.url, "streamapp_queue_depth", **depth) <= scheduled - 50)
    check_received(maildir, items)


def test_trigger_batch_by_file_with_a_report(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    items = rows("tfile", 10_000)
    data = as_csv(items, delimiter=";") + b"tfile-bad;not-an-address;X;1\r\n"
    drop(worker, "triggers/hello", "birthdays.csv", data)
    outcome, report = wait_report(worker, "birthdays.csv")
    assert outcome == "processed", report
    assert (report["rowsRead"], report["applied"], report["rejected"]) == (10_001, 10_000, 1)
    assert report["rejections"][0]["line"] == 10_002
    status = wait_batch(worker, report["batchId"], 10_000)
    assert (status["sent"], status["source"], status["kind"], status["name"]) == (
        10_000,
        "birthdays.csv",
        "trigger",
        "hello",
    )
    check_received(maildir, items)
    drop(worker, "triggers/hello", "birthdays-again.csv", data)
    assert wait_report(worker, "birthdays-again.csv")[1]["batchId"] not in (None, report["batchId"])


def test_campaign_file_of_20000_recipients(sending: tuple[Worker, Path]) -> None:
    worker, maildir = sending
    items = rows("cfile", 20_000)
    past = datetime.now(ZoneInfo("Europe/Stockholm")) - timedelta(hours=1)
    name = f"members__promo__{past:%Y%m%dT%H%M}.csv"
    drop(worker, "campaigns", name, as_csv(items))
    outcome, report = wait_report(worker, name)
    assert outcome == "processed", report
    assert (report["applied"], report["rejected"], report["sendTime"]) == (20_000, 0, None)
    status = wait_batch(worker, report["batchId"], 20_000, timeout=180)
    assert (status["sent"], status["priority"], status["kind"]) == (20_000, "campaign", "campaign")
    check_received(maildir, items)
    assert max(maildir_ids(maildir).values()) == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("members_promo_20261201T0800.csv", "does not match"),
        ("nowhere__promo__20261201T0800.csv", "unknown database 'nowhere'"),
        ("members__nothing__20261201T0800.csv", "unknown campaign 'nothing'"),
        ("members__promo__20261399T0800.csv", "is not a valid time"),
        ("members__promo__20261201T0800.txt", "does not match"),
    ],
)
def test_badly_named_campaign_files_are_rejected_with_the_pattern(
    sending: tuple[Worker, Path], name: str, reason: str
) -> None:
    worker, _ = sending
    drop(worker, "campaigns", name, as_csv(rows("never", 3)))
    outcome, report = wait_report(worker, name)
    assert outcome == "rejected" and reason in report["reason"], report
    assert "<database>__<campaign>__<YYYYMMDDTHHMM>.csv" in report["reason"]
    time.sleep(0.5)
    with client(worker) as api:
        assert api.get("/api/v1/databases/members/recipients/never-0").status_code == 404


def test_a_future_campaign_file_is_scheduled_for_the_local_time_in_its_name(sending: tuple[Worker, Path]) -> None:
    """Release at that time is the schedule's job, tested with sendTime and across a rebalance."""
    worker, maildir = sending
    items = rows("cfuture", 20)
    start = (datetime.now(ZoneInfo("Europe/Stockholm")) + timedelta(hours=2)).replace(second=0, microsecond=0)
    name = f"members__promo__{start:%Y%m%dT%H%M}.csv"
    drop(worker, "campaigns", name, as_csv(items))
    _, report = wait_report(worker, name)
    assert datetime.fromisoformat(report["sendTime"]) == start
    status = get_when(worker, f"/api/v1/batches/{report['batchId']}", lambda b: b["scheduled"] == 20)
    assert status["sent"] == 0 and status["sendTime"] == report["sendTime"]
    assert not mail_by_recipient(maildir, [i["email"] for i in items])
