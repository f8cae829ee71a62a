"""A campaign file across kill -9 of its worker: one report, every recipient mailed once.

The file is redone after the restart with the batch id derived from its claim, so the messages
published before the kill and again after it have the same ids, and the ledger sends each once.
Only the few messages in flight at the kill may go twice (docs/sending.md: 2 x smtp.connections).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures import WorkerPool, applied_commands, eventually, get_when
from tests.imports.fixtures import drop, find_report, wait_report
from tests.mail.fixtures import Peers
from tests.sending.fixtures import header_counts, smtp_extra, write_templates

pytestmark = pytest.mark.integration

CONNECTIONS = 8


def test_kill9_while_a_campaign_file_is_published_and_sent(workers: WorkerPool, tmp_path: Path, peers: Peers) -> None:
    write_templates(tmp_path)
    peer, maildir = peers.streamapp_sink()
    worker = workers.create(extra=smtp_extra(peer.port, connections=CONNECTIONS))
    count = 30_000
    lines = ["originalId,email,firstname,zipcode", *(f"k{i},k{i}@example.com,F{i},{i}" for i in range(count))]
    name = f"members__promo__{datetime.now(ZoneInfo('Europe/Stockholm')) - timedelta(minutes=5):%Y%m%dT%H%M}.csv"
    drop(worker, "campaigns", name, ("\n".join(lines) + "\n").encode())
    eventually(lambda: applied_commands(worker.url) > 0, timeout=60, interval=0.02)
    assert find_report(worker, name) is None, "the file was done before the kill: nothing was tested"
    worker.kill()
    worker.start().wait_ready()
    outcome, report = wait_report(worker, name, timeout=120)
    assert outcome == "processed" and report["applied"] == count
    get_when(worker, f"/api/v1/batches/{report['batchId']}", lambda b: b["sent"] == count, timeout=180)
    received = header_counts(maildir, b"To:")
    assert set(received) == {f"k{i}@example.com" for i in range(count)}
    twice = sum(n - 1 for n in received.values())
    assert twice <= 2 * CONNECTIONS, f"{twice} duplicates"
