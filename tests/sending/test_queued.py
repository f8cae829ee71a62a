"""A message is `queued` from the moment its 202 is returned, never 404 (SPEC §3), against a real worker.

The campaign rows asked about wait behind a larger campaign posted just before them, so the
worker has surely not processed them when they are asked for: without the id's tag, each was a
404 until its ledger row existed. Single trigger messages are asked for at once after their 202.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from streamapp.core.ids import batch_message_id
from streamapp.core.keys import partition_for, recipient_key
from tests.fixtures import Worker, WorkerPool, client, eventually
from tests.sending.fixtures import add_recipients, settings_of

pytestmark = pytest.mark.integration

AHEAD = 3000


def _status(api: httpx.Client, message_id: str) -> str:
    response = api.get(f"/api/v1/messages/{message_id}")
    assert response.status_code == 200, f"{message_id}: {response.status_code} {response.text}"
    body = response.json()
    assert body["messageId"] == message_id and body["database"] == "members"
    return str(body["status"]) if body["status"] != "failed" else f"failed: {body.get('reason')}"


def test_messages_are_queued_from_their_202_and_ids_never_issued_are_404(
    sending: tuple[WorkerPool, Worker, Path],
) -> None:
    _, worker, _ = sending
    settings = settings_of(worker)
    key = (worker.data_dir / "unsubscribe.key").read_bytes()  # this loopback worker's key (no secret_file)
    tag = uuid.uuid4().hex[:6]
    ahead = [{"originalId": f"ahead-{tag}-{i}", "email": f"ahead-{i}@example.com"} for i in range(AHEAD)]
    rows = [f"row-{tag}-{i}" for i in range(5)]
    add_recipients(worker, rows)
    seen: list[str] = []
    with client(worker) as api:  # admin: rows with an e-mail address need recipients:write too
        assert api.post("/api/v1/campaigns/newsletter/sends", json=ahead).status_code == 202
        answer = api.post("/api/v1/campaigns/newsletter/sends", json=[{"originalId": r} for r in rows])
        assert answer.status_code == 202, answer.text
        batch_id = answer.json()["batchId"]
        partitions = settings.service.partitions
        ids = [
            batch_message_id(partition_for(recipient_key("members", r), partitions), batch_id, i, key, "members",
                             "campaign")
            for i, r in enumerate(rows)
        ]  # fmt: skip
        seen += [_status(api, m) for m in ids]
        for n in range(20):
            # with the property the template needs: a message that fails to render is `failed` as soon as
            # the worker gets to it, which a transactional message may do before it is asked for
            body = {"originalId": rows[n % 5], "properties": {"order": f"Q{n}"}}
            single = api.post("/api/v1/triggers/receipt/messages", json=body)
            assert single.status_code == 202, single.text
            seen.append(_status(api, single.json()["messageId"]))
        assert seen[:5] == ["queued"] * 5  # behind 3,000 campaign messages
        assert set(seen) <= {"queued", "sent"}

        never = [
            ids[0][:-1] + ("0" if ids[0][-1] != "0" else "1"),  # an altered tag
            batch_message_id(0, batch_id, 9, key, "members", "campaign")[:-8] + "0" * 8,
            batch_message_id(0, batch_id, 9),  # an untagged id nobody recorded
        ]
        assert [api.get(f"/api/v1/messages/{m}").status_code for m in never] == [404, 404, 404]
        eventually(lambda: all(_status(api, m) == "sent" for m in ids), timeout=120, interval=1)
