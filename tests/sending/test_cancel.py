"""Cancelling a batch (SPEC §4 `POST /api/v1/batches/{batchId}/cancel`), end to end.

Two worker processes on the real broker, so a batch's messages sit on partitions of both and the cancel
reaches the other worker's partitions by a signed request; the streamapp SMTP sink in another process,
slowed by the workers' own `rate_per_second`, so a cancel lands in the middle of a send. What was sent is
read from the sink's Maildir, what was recorded from the ledger's changelog.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import Worker, WorkerPool, client, eventually, get_when, sha
from tests.mail.fixtures import Peers
from tests.sending.fixtures import add_recipients, ledger, maildir_ids, settings_of, smtp_extra, write_templates

pytestmark = pytest.mark.integration

#: Messages a second each worker sends (so a send of 1,500 takes about 15 s with two workers).
RATE = 50
CONNECTIONS = 2
#: Sender tasks per worker (streamapp.sending.engine.SENDERS_PER_CONNECTION): at most this many messages
#: per worker can be past the last check when the cancel comes.
IN_FLIGHT = 2 * CONNECTIONS
OTHER_SENDER = "test-other-db-sender-token"


@pytest.fixture(scope="module")
def pool(
    kafka: str, tmp_path_factory: pytest.TempPathFactory, peers_module: Peers
) -> Iterator[tuple[WorkerPool, Path]]:
    base = tmp_path_factory.mktemp("cancel")
    write_templates(base)
    peer, maildir = peers_module.streamapp_sink()
    extra = smtp_extra(peer.port, connections=CONNECTIONS).replace("[smtp]\n", f"[smtp]\nrate_per_second = {RATE}\n")
    extra += f'\n[[tokens]]\nname = "other-sender"\nsha256 = "{sha(OTHER_SENDER)}"\nscopes = ["send"]\n'
    extra += 'databases = ["other"]\n'
    workers = WorkerPool(kafka, base)
    try:
        workers.create(extra=extra)
        workers.create(extra=extra)
        yield workers, maildir
    finally:
        workers.stop_all()


def campaign(worker: Worker, ids: list[str], send_time: datetime | None = None) -> str:
    """A list campaign to existing recipients (rows carry only their originalId); its batch id."""
    query = f"?sendTime={send_time.isoformat()}".replace("+", "%2B") if send_time else ""
    body = "".join(json.dumps({"originalId": i}) + "\n" for i in ids)
    with client(worker, "sender") as api:
        response = api.post(f"/api/v1/campaigns/promo/sends{query}", content=body,
                            headers={"Content-Type": "application/x-ndjson"}, timeout=60)  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(ids)
    return str(response.json()["batchId"])


def cancel(worker: Worker, batch_id: str, token: str | None = "sender") -> httpx.Response:
    with client(worker, token) as api:
        return api.post(f"/api/v1/batches/{batch_id}/cancel")


def status(worker: Worker, batch_id: str) -> dict[str, Any]:
    with client(worker, "sender") as api:
        response = api.get(f"/api/v1/batches/{batch_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def settled(worker: Worker, batch_id: str) -> dict[str, Any]:
    """The status once no message of the batch is queued, scheduled or deferred any more."""
    done = lambda b: b["queued"] == b["scheduled"] == b["deferred"] == 0  # noqa: E731
    body: dict[str, Any] = get_when(worker, f"/api/v1/batches/{batch_id}", done, timeout=120)
    return body


def received(maildir: Path, batch_id: str) -> dict[str, float]:
    """Messages of the batch the sink took, each with when it took it (from its Maildir file name)."""
    times: dict[str, float] = {}
    counts = maildir_ids(maildir)
    assert all(n == 1 for m, n in counts.items() if batch_id in m), "a message was delivered twice"
    for path in (maildir / "new").glob("*"):
        with path.open("rb") as f:
            for line in f:
                if line.startswith(b"X-Streamapp-Message-Id:"):
                    message_id = line.split(b":", 1)[1].strip().decode()
                    if batch_id in message_id:
                        seconds, micros = re.match(r"(\d+)\.M(\d+)P", path.name).groups()  # type: ignore[union-attr]
                        times[message_id] = int(seconds) + int(micros) / 1e6
                    break
    return times


def batch_rows(worker: Worker, batch_id: str) -> dict[str, Any]:
    return {m: s for m, s in ledger(settings_of(worker)).items() if s.batchId == batch_id}


def test_a_scheduled_campaign_cancelled_sends_nothing_and_every_message_is_failed(
    pool: tuple[WorkerPool, Path],
) -> None:
    workers, maildir = pool
    first, second = workers.workers
    ids = [f"sched-{i}" for i in range(200)]
    add_recipients(first, ids)
    send_time = datetime.now(UTC) + timedelta(seconds=12)
    batch_id = campaign(first, ids, send_time)
    get_when(first, f"/api/v1/batches/{batch_id}", lambda b: b["scheduled"] == 200)
    answer = cancel(second, batch_id)  # any worker: the batch's owner and every partition's are asked
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"batchId": batch_id, "cancelled": True}
    again = cancel(first, batch_id)
    assert (again.status_code, again.json()) == (202, answer.json())
    now = status(second, batch_id)
    assert now["sent"] == 0 and now["total"] == 200
    assert sum(now[s] for s in ("queued", "scheduled", "sent", "deferred", "failed", "suppressed")) == 200
    assert settled(first, batch_id)["failed"] == 200
    rows = batch_rows(first, batch_id)
    assert len(rows) == 200 and {(s.status, s.reason) for s in rows.values()} == {("failed", "cancelled")}
    time.sleep(max(0.0, (send_time - datetime.now(UTC)).total_seconds()) + 4)
    assert received(maildir, batch_id) == {}
    final = status(first, batch_id)
    assert (final["failed"], final["sent"], final["scheduled"]) == (200, 0, 0)
    assert cancel(second, batch_id).status_code == 202


def test_a_cancel_in_the_middle_of_a_send_stops_it_but_for_messages_in_flight(pool: tuple[WorkerPool, Path]) -> None:
    workers, maildir = pool
    first, second = workers.workers
    total = 1500
    ids = [f"mid-{i}" for i in range(total)]
    add_recipients(first, ids)
    batch_id = campaign(second, ids)
    get_when(first, f"/api/v1/batches/{batch_id}", lambda b: b["sent"] >= 150, timeout=60)
    answer = cancel(first, batch_id)
    acknowledged = time.time()
    assert answer.status_code == 202, answer.text
    final = settled(second, batch_id)
    assert final["total"] == total and final["sent"] < total - 300  # stopped well before the end
    assert final["sent"] + final["failed"] == total
    rows = batch_rows(first, batch_id)
    cancelled = [m for m, s in rows.items() if (s.status, s.reason) == ("failed", "cancelled")]
    sent = {m for m, s in rows.items() if s.status == "sent"}
    got = received(maildir, batch_id)
    assert set(got) == sent and len(got) + len(cancelled) == total == len(rows)
    late = sorted(t - acknowledged for t in got.values() if t > acknowledged)
    assert len(late) <= IN_FLIGHT * len(workers.workers), f"sent after the cancel was acknowledged: {late}"
    time.sleep(2)
    assert len(received(maildir, batch_id)) == len(got)


def test_cancel_answers_404_for_unknown_batches_and_403_without_scope_or_database(
    pool: tuple[WorkerPool, Path],
) -> None:
    workers, _ = pool
    first, second = workers.workers
    add_recipients(first, ["auth-1", "auth-2"])
    batch_id = campaign(first, ["auth-1", "auth-2"], datetime.now(UTC) + timedelta(hours=1))
    get_when(first, f"/api/v1/batches/{batch_id}", lambda b: b["scheduled"] == 2)
    unknown = "0001" + "0" * 12 + "deadbeef"
    for worker in (first, second):
        assert cancel(worker, unknown).status_code == 404
        assert cancel(worker, "not-a-batch").status_code == 404
        assert cancel(worker, batch_id, "reader").status_code == 403  # no `send` scope
        assert cancel(worker, batch_id, token=None).status_code == 401
        with httpx.Client(base_url=worker.url, headers={"Authorization": f"Bearer {OTHER_SENDER}"}) as api:
            refused = api.post(f"/api/v1/batches/{batch_id}/cancel")
            assert refused.status_code == 403 and "members" in refused.json()["error"]
        with client(worker, "sender") as api:  # only workers name partitions
            direct = api.post(f"/api/v1/batches/{batch_id}/cancel?partitions=0,1")
            assert direct.status_code == 422 and direct.json()["details"][0]["path"] == "/query/partitions"
    assert status(first, batch_id)["scheduled"] == 2  # nothing refused changed anything
    assert cancel(second, batch_id).status_code == 202
    assert settled(first, batch_id)["failed"] == 2


def test_a_cancel_survives_a_crash_of_every_worker(pool: tuple[WorkerPool, Path]) -> None:
    """kill -9 right after the answer: the markers are in the ledger's changelog, so the restarted workers
    neither send the batch at its time nor lose the cancelled rows (a row the sweep had not reached is
    caught when the schedule releases it)."""
    workers, maildir = pool
    first, second = workers.workers
    ids = [f"crash-{i}" for i in range(300)]
    add_recipients(first, ids)
    send_time = datetime.now(UTC) + timedelta(seconds=25)
    batch_id = campaign(first, ids, send_time)
    get_when(first, f"/api/v1/batches/{batch_id}", lambda b: b["scheduled"] == 300)
    assert cancel(first, batch_id).status_code == 202
    for worker in (first, second):
        worker.kill()
    for worker in (first, second):
        worker.start()
    for worker in (first, second):
        worker.wait_ready()
    time.sleep(max(0.0, (send_time - datetime.now(UTC)).total_seconds()) + 4)
    final = eventually(lambda: settled(second, batch_id), timeout=60)
    assert (final["failed"], final["sent"]) == (300, 0)
    assert received(maildir, batch_id) == {}

    def all_cancelled_in_the_changelog() -> bool:
        """The owners' rows reach the changelog a moment after the counts they answer with."""
        rows = batch_rows(first, batch_id)
        assert len(rows) == 300, len(rows)
        statuses = {(s.status, s.reason) for s in rows.values()}
        assert statuses == {("failed", "cancelled")}, statuses
        return True

    eventually(all_cancelled_in_the_changelog, timeout=30, interval=1)
