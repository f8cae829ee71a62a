"""With one worker of two killed, every write keeps answering 202: only a broker outage may refuse one.

Upserts and trigger messages without a key only need Kafka. A trigger message with an
idempotency key needs the key's owner, which checks and records the key
(streamapp.http.forwarding): when that owner is killed, the request waits until the survivor
owns the partition (the group notices after the session timeout) instead of answering 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures import TOKENS, Worker, WorkerPool, client, eventually
from tests.mail.fixtures import Peers, peers  # noqa: F401
from tests.sending.fixtures import maildir_ids, smtp_extra, write_templates

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM_SECONDS = 30
INTERVAL = 0.5


@dataclass
class Answer:
    kind: str  # "keyed", "unkeyed" (trigger messages) or "upsert"
    key: str
    status: int
    message_id: str | None
    took: float


async def stream(worker: Worker, tag: str) -> list[Answer]:
    """Every INTERVAL for STREAM_SECONDS: a keyed and an unkeyed trigger message and an upsert, each
    sent without waiting for the answers before it."""
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    async with httpx.AsyncClient(base_url=worker.url, headers=headers, timeout=60) as api:

        async def send(kind: str, n: int) -> Answer:
            key, started = f"{tag}-{kind}-{n}", time.monotonic()
            if kind == "upsert":
                reply = await api.put(
                    f"/api/v1/databases/members/recipients/{key}", json={"email": f"{key}@example.com"}
                )
            else:
                body = {"originalId": key, "email": f"{key}@example.com"}
                extra = {"Idempotency-Key": key} if kind == "keyed" else {}
                reply = await api.post("/api/v1/triggers/news/messages", json=body, headers=extra)
            message_id = reply.json().get("messageId") if reply.status_code == 202 and kind != "upsert" else None
            return Answer(kind, key, reply.status_code, message_id, time.monotonic() - started)

        tasks = []
        for n in range(int(STREAM_SECONDS / INTERVAL)):
            tasks += [asyncio.create_task(send(kind, n)) for kind in ("keyed", "unkeyed", "upsert")]
            await asyncio.sleep(INTERVAL)
        return list(await asyncio.gather(*tasks))


def forwarded_before(worker: Worker, both: set[str]) -> set[str]:
    """Keyed messages while both workers live: the other worker's keys are forwarded to it (signed, with
    their body) and accepted there; returns their message ids."""
    tag = uuid.uuid4().hex[:6]
    served, ids = set(), set()
    with client(worker) as api:
        for n in range(16):
            key = f"{tag}-both-{n}"
            reply = api.post("/api/v1/triggers/news/messages", headers={"Idempotency-Key": key},
                             json={"originalId": key, "email": f"{key}@example.com"})  # fmt: skip
            assert reply.status_code == 202, reply.text
            served.add(reply.headers["X-Streamapp-Served-By"])
            ids.add(reply.json()["messageId"])
    assert served == both, served
    return ids


def test_writes_keep_answering_202_while_a_worker_is_down(kafka: str, tmp_path: Path, peers: Peers) -> None:  # noqa: F811
    write_templates(tmp_path)
    sink, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    try:
        survivor = pool.create(extra=smtp_extra(sink.port))
        doomed = pool.create(extra=smtp_extra(sink.port))
        eventually(lambda: httpx.get(f"{survivor.url}/healthz").status_code == 200, timeout=60)
        before = forwarded_before(survivor, {survivor.url, doomed.url})
        doomed.kill()  # it owns half the partitions: half the keys' owner is gone
        answers = asyncio.run(stream(survivor, uuid.uuid4().hex[:6]))

        refused = [a for a in answers if a.status != 202]
        assert not refused, f"{len(refused)} of {len(answers)} writes refused, e.g. {refused[:3]}"
        waited = max(a.took for a in answers if a.kind == "keyed")
        assert waited > 2, f"no keyed write waited for an owner ({waited:.1f} s): nothing was tested"

        messages = {a.message_id for a in answers if a.message_id}
        assert len(messages) == 2 * len(answers) // 3
        messages |= before
        eventually(lambda: messages <= set(maildir_ids(maildir)), timeout=120, interval=0.5)
        with client(survivor) as api:
            paths = [f"/api/v1/databases/members/recipients/{a.key}" for a in answers if a.kind == "upsert"]

            def missing() -> dict[str, str]:
                replies = {path: api.get(path) for path in paths}
                return {p: f"{r.status_code} {r.text[:120]}" for p, r in replies.items() if r.status_code != 200}

            with contextlib.suppress(AssertionError):  # reported below, with what the survivor said
                eventually(lambda: not missing(), timeout=90, interval=1)
            gone = missing()
            assert not gone, f"{len(gone)} upserts answered 202 are not readable: {gone}\n{survivor.tail()}"
            # A client retrying a keyed message now gets the same one back, and nothing more is sent.
            for a in [a for a in answers if a.kind == "keyed"][:10]:
                again = api.post("/api/v1/triggers/news/messages", headers={"Idempotency-Key": a.key},
                                 json={"originalId": a.key, "email": f"{a.key}@example.com"})  # fmt: skip
                assert again.status_code == 202 and again.json()["messageId"] == a.message_id, again.text
                assert again.headers.get("Idempotent-Replayed") == "true"
        time.sleep(2)
        delivered = maildir_ids(maildir)
        assert all(delivered[m] == 1 for m in messages if m), "a message was delivered twice"
    finally:
        pool.stop_all()
