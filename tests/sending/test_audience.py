"""Audience sends (SPEC §9: `POST /api/v1/campaigns/{campaign}/sends` with a JSON object body), end to end.

Two worker processes on the real broker and the streamapp SMTP sink: the members are those of a
configured segment as of `sendTime` (recipients that join or leave between the request and then are
counted as they are then), each active one gets one mail; the batch's counts are `null` until then; a
scheduled one survives kill -9 of every worker and can be cancelled. Membership is the segment engine's
(streamapp.runtime.SegmentMembers: the memberships kept beside each recipient row).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamapp.core import clock
from streamapp.core.models import MessageState
from streamapp.sending.ledger import due_key
from streamapp.sending.schedule import Schedule
from tests.fixtures import Worker, WorkerPool, client, eventually, get_when
from tests.mail.fixtures import Peers
from tests.sending.fixtures import add_recipients, ledger, maildir_messages, settings_of, smtp_extra, write_templates

SEGMENTS = """
[[segments]]
name = "vip"
database = "members"
definition = { all = [{ attribute = "vip", op = "eq", value = true }, { attribute = "zipcode", op = "starts_with", value = "1" }] }
"""


def test_rows_written_past_the_memory_bound_wait_in_the_index_for_their_window() -> None:
    """Schedule.add: a due row that finds memory full moves the cursor back instead of growing memory."""
    schedule, keys = Schedule(horizon=3600, max_in_memory=3), []
    schedule.take(0)
    now = datetime.now(UTC)
    schedule.window(0, lambda p, start, end, limit: [], now=now.timestamp())
    for n in range(5):
        state = MessageState(messageId=f"m{n}", database="d", originalId="o", priority="campaign", status="scheduled",
                             createdAt="t", updatedAt="t", nextAttemptAt=clock.iso(now))  # fmt: skip
        keys.append((due_key(int(now.timestamp() * 1000), state.messageId), "campaign"))
        schedule.add(state, 0)
    assert len(schedule) == 3 and schedule.cursors[0] == keys[3][0]

    def read(partition: int, start: bytes, end: bytes, limit: int) -> list[Any]:
        return [k for k in keys if start <= k[0] < end][:limit]

    released = [m for _, m in schedule.due(now=now.timestamp() + 1)]
    assert schedule.window(0, read, now=now.timestamp() + 1) == 2
    released += [m for _, m in schedule.due(now=now.timestamp() + 1)]
    assert released == [f"m{n}" for n in range(5)]


@pytest.fixture(scope="module")
def pool(
    kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers
) -> Iterator[tuple[WorkerPool, Path]]:
    base = tmp_path_factory.mktemp("audience")
    write_templates(base)
    peer, maildir = peers_module.streamapp_sink()
    workers = WorkerPool(kafka, base)
    try:
        extra = smtp_extra(peer.port, connections=2) + SEGMENTS
        workers.create(extra=extra)
        workers.create(extra=extra)
        yield workers, maildir
    finally:
        workers.stop_all()


def audience(worker: Worker, body: object, query: str = "", token: str = "sender") -> httpx.Response:
    with client(worker, token) as api:
        return api.post(f"/api/v1/campaigns/promo/sends{query}", json=body)


def received(maildir: Path, batch_id: str) -> list[str]:
    """The To addresses of the batch's messages the sink took (one entry per delivery)."""
    return sorted(str(m["To"]) for m in maildir_messages(maildir) if batch_id in str(m["X-Streamapp-Message-Id"]))


def upsert(worker: Worker, original_id: str, **attributes: object) -> None:
    with client(worker, "admin") as api:
        path = f"/api/v1/databases/members/recipients/{original_id}"
        assert api.put(path, json={"attributes": attributes}).status_code == 202
        get_when(worker, path, lambda r: all(r["attributes"].get(k) == v for k, v in attributes.items()))


def when(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.mark.integration
def test_an_audience_send_reaches_the_active_members_as_of_its_send_time_each_once(
    pool: tuple[WorkerPool, Path],
) -> None:
    workers, maildir = pool
    first, second = workers.workers
    members = [f"aud-{i}" for i in range(60)]
    add_recipients(first, members, attributes={"vip": True, "zipcode": "11000"})
    add_recipients(first, [f"aud-no-{i}" for i in range(30)], attributes={"vip": False, "zipcode": "11000"})
    add_recipients(first, ["aud-gone"], status="unsubscribed")
    upsert(first, "aud-gone", vip=True, zipcode="12000")  # a member, but not active
    answer = audience(second, {"segment": "vip", "sendTime": when(10), "properties": {}})
    assert answer.status_code == 202, answer.text
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (None, 0)
    batch_id = answer.json()["batchId"]
    status = get_when(first, f"/api/v1/batches/{batch_id}")
    assert status["segment"] == "vip" and status["total"] is None and status["sent"] is None
    upsert(first, "aud-no-0", vip=True)  # joins before the send time
    upsert(first, "aud-1", vip=False)  # leaves
    expected = sorted(f"{i}@example.com" for i in [*members, "aud-no-0"] if i != "aud-1")
    done = get_when(second, f"/api/v1/batches/{batch_id}", lambda b: b["sent"] == len(expected), timeout=90)
    assert done["total"] == len(expected) and done["queued"] == 0 and done["failed"] == 0
    assert datetime.now(UTC) >= clock.parse_time(done["sendTime"])
    assert received(maildir, batch_id) == expected
    rows = [s for s in ledger(settings_of(first)).values() if s.batchId == batch_id]
    assert len(rows) == len(expected) and len({s.originalId for s in rows}) == len(rows)


@pytest.mark.integration
def test_audience_bodies_are_checked_with_the_path_of_each_problem(pool: tuple[WorkerPool, Path]) -> None:
    workers, _ = pool
    worker = workers.workers[0]
    bad = audience(worker, {"segment": "vip", "extra": 1})
    assert bad.status_code == 422 and [d["path"] for d in bad.json()["details"]] == ["/extra"]
    both = audience(worker, {"segment": "vip", "sendTime": when(60)}, query=f"?sendTime={when(60)}".replace("+", "%2B"))
    assert both.status_code == 422 and both.json()["details"][0]["path"] == "/sendTime"
    name = audience(worker, {"segment": "not a name"})
    assert name.status_code == 422 and name.json()["details"][0]["path"] == "/segment"
    time = audience(worker, {"segment": "vip", "sendTime": "tomorrow"})
    assert time.status_code == 422 and time.json()["details"][0]["path"] == "/sendTime"
    props = audience(worker, {"segment": "vip", "properties": []})
    assert props.status_code == 422 and props.json()["details"][0]["path"] == "/properties"
    assert audience(worker, {"segment": "nosuch"}).status_code == 404
    assert audience(worker, {"segment": "vip"}, token="reader").status_code == 403


@pytest.mark.integration
def test_a_scheduled_audience_send_survives_kill_9_of_every_worker(pool: tuple[WorkerPool, Path]) -> None:
    workers, maildir = pool
    first, second = workers.workers
    ids = [f"aud-crash-{i}" for i in range(40)]
    add_recipients(first, ids, attributes={"vip": True, "zipcode": "13000"})
    answer = audience(first, {"segment": "vip", "sendTime": when(30)})
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batchId"]
    cancelled = audience(first, {"segment": "vip", "sendTime": when(30)})
    assert cancelled.status_code == 202
    other_id = cancelled.json()["batchId"]
    with client(second, "sender") as api:
        assert api.post(f"/api/v1/batches/{other_id}/cancel").status_code == 202
    for worker in (first, second):
        worker.kill()
    for worker in (first, second):
        worker.start()
    for worker in (first, second):
        worker.wait_ready()
    done = get_when(first, f"/api/v1/batches/{batch_id}", lambda b: b["total"] is not None and b["queued"] == 0
                    and b["scheduled"] == 0, timeout=120)  # fmt: skip
    got = received(maildir, batch_id)
    assert len(got) == len(set(got)) == done["sent"] == done["total"]
    assert {f"{i}@example.com" for i in ids} <= set(got)
    gone = get_when(second, f"/api/v1/batches/{other_id}", lambda b: b["total"] is not None)
    assert (gone["total"], gone["sent"]) == (0, 0) and received(maildir, other_id) == []


@pytest.mark.integration
def test_a_segment_a_scheduled_send_waits_for_is_not_deleted_until_the_send_is_cancelled(
    pool: tuple[WorkerPool, Path],
) -> None:
    """SPEC §4: DELETE of a segment is a 409 while a scheduled send uses it; the jobs are spread over both
    workers' partitions, so the worker asked must also ask the other."""
    workers, _ = pool
    first, second = workers.workers
    path = "/api/v1/databases/members/segments/aud-api"
    with client(first, "admin") as api:
        put = api.put(path, json={"attribute": "zipcode", "op": "starts_with", "value": "19"})
        assert put.status_code == 200, put.text
    get_when(second, path)  # the definition reached the other worker
    answer = audience(first, {"segment": "aud-api", "sendTime": when(600)})
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batchId"]
    with client(second, "admin") as api:
        refused = eventually(lambda: (r := api.delete(path)).status_code == 409 and r)
        assert "scheduled send" in refused.json()["error"]
        assert api.post(f"/api/v1/batches/{batch_id}/cancel").status_code == 202
        deleted = eventually(lambda: (r := api.delete(path)).status_code == 200 and r)
        assert deleted.json() == {"name": "aud-api", "deleted": True}
