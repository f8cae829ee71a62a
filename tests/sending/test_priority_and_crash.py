"""Strict priority under a queued campaign, and exactly-once delivery across kill -9 of the worker.

No timing assertions: priority is asserted on the order the SMTP peer accepted messages in
(the sink names each file with a per-process counter), durability on Message-ID counts.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.fixtures import Worker, WorkerPool
from tests.sending.fixtures import (
    add_recipients,
    ledger,
    maildir_ids,
    message,
    send,
    settings_of,
    wait_for,
    wait_statuses,
)

pytestmark = pytest.mark.integration

_COUNTER = re.compile(rb"Q(\d+)\.")


def accepted_in_order(maildir: Path) -> list[str]:
    """Message ids in the order the sink accepted them."""
    files = sorted((maildir / "new").glob("*"), key=lambda p: int(_COUNTER.search(p.name.encode()).group(1)))  # type: ignore[union-attr]
    order = []
    for path in files:
        for line in path.read_bytes().split(b"\r\n"):
            if line.startswith(b"X-Streamapp-Message-Id:"):
                order.append(line.split(b":", 1)[1].strip().decode())
                break
    return order


def test_transactional_overtakes_a_queued_campaign(sending: tuple[WorkerPool, Worker, Path]) -> None:
    _, worker, maildir = sending
    settings = settings_of(worker)
    tag = uuid.uuid4().hex[:6]
    ids = [f"c{tag}-{i}" for i in range(5000)]
    add_recipients(worker, [*ids, f"vip-{tag}"])
    campaign = send(settings, [message(settings, i) for i in ids])
    wait_for(lambda: len(maildir_ids(maildir)) >= 200)
    before = len(maildir_ids(maildir))
    [urgent] = send(settings, [message(settings, f"vip-{tag}", "receipt", "transactional", properties={"order": "X"})])
    wait_statuses(settings, {urgent: "sent"})

    order = accepted_in_order(maildir)
    position = order.index(urgent)
    overtaken = len(set(campaign) - set(order[:position]))
    # It waited only for what was in flight or being fetched, not for the rest of the campaign.
    assert position - before < 1000, (position, before)
    assert overtaken >= 2000, overtaken
    wait_statuses(settings, dict.fromkeys(campaign, "sent"), timeout=120)
    assert set(maildir_ids(maildir).values()) == {1}


def test_kill9_mid_send_delivers_each_message_once_but_the_in_flight(sending: tuple[WorkerPool, Worker, Path]) -> None:
    _, worker, maildir = sending
    settings = settings_of(worker)
    tag = uuid.uuid4().hex[:6]
    ids = [f"k{tag}-{i}" for i in range(20_000)]
    add_recipients(worker, ids)
    messages = send(settings, [message(settings, i) for i in ids])
    wait_for(lambda: len(maildir_ids(maildir)) >= 3000)
    worker.kill()
    delivered_at_kill = len(maildir_ids(maildir))
    assert delivered_at_kill < len(ids), "the worker finished before it was killed: nothing tested"
    worker.start().wait_ready()
    try:
        wait_for(lambda: set(maildir_ids(maildir)) >= set(messages), timeout=150)
    except AssertionError:
        rows = ledger(settings)
        missing = sorted(set(messages) - set(maildir_ids(maildir)))
        raise AssertionError(f"{len(missing)} never delivered: {[(m, rows.get(m)) for m in missing[:5]]}") from None

    counts = maildir_ids(maildir)
    duplicates = sum(n - 1 for n in counts.values())
    senders = 2 * 2  # SENDERS_PER_CONNECTION x connections: the documented bound
    assert duplicates <= senders, (duplicates, [m for m, n in counts.items() if n > 1][:10])
    assert set(counts) == set(messages)
