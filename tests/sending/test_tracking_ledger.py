"""Engagement counts in the ledger and the recorder that feeds them (streamapp.sending.ledger, .tracking).

A real `messages` Store (RocksDB) and its changelog on the broker. A mark counts once per message in
its batch's and its campaign's counters however often it is written (replays, repeated hits, hits
at once), the counters survive a rebuild from the rows and reach the changelog as RocksDB has them;
the recorder publishes one history record per message and mark (per URL for clicks), classes early
and prefetched opens as machine opens, and records only history for a partition it does not own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from streamapp.core import clock
from streamapp.core.ids import batch_message_id, new_batch_id
from streamapp.core.models import AppendHistory, MessageState, RecipientCommand
from streamapp.mail.tracking import TrackedMessage
from streamapp.sending.ledger import COMPLETE, campaign_key, counts_key
from streamapp.sending.tracking import Hit, Place, TrackingRecorder, url_digest
from tests.sending.test_ledger import EVERYONE, changelog, started_ledger, state

pytestmark = pytest.mark.integration


def sent(message_id: str, batch: str, name: str = "newsletter") -> MessageState:
    return msgspec.structs.replace(state(message_id, batch, "sent"), name=name)


def _at(row: MessageState, moment: float) -> MessageState:
    return msgspec.structs.replace(row, updatedAt=clock.iso(datetime.fromtimestamp(moment, UTC)))


async def _marks_count_once(kafka: str, tmp_path: Path) -> None:
    async with started_ledger(kafka, tmp_path) as (ledger, bootstrap):
        batch = new_batch_id(0)
        ids = [batch_message_id(1, batch, row) for row in range(3)]
        for message_id in ids:
            await ledger.put(1, sent(message_id, batch))
        # the first message: opened five times at once, clicked on two links, each twice
        opened = await asyncio.gather(*(ledger.engage(1, ids[0], "opened") for _ in range(5)))
        assert sorted(opened) == [False, False, False, False, True]
        for link in ("a", "b", "a", "b"):
            await ledger.engage(1, ids[0], "clicked", url_digest(link))
        await ledger.engage(1, ids[1], "machine")
        await ledger.engage(1, ids[1], "opened")
        await ledger.put(1, ledger.get(1, ids[0]))  # type: ignore[arg-type]  # a replayed write
        assert await ledger.engage(1, "0001" + "f" * 40, "opened") is False  # no such message: nothing

        row = ledger.get(1, ids[0])
        assert row is not None and sorted(row.engaged) == ["clicked", "opened"]
        assert row.clicks == [url_digest("a"), url_digest("b")] and row.status == "sent" and row.name == "newsletter"
        expected = Counter({"opened": 2, "clicked": 1, "machine": 1})
        assert ledger.engaged_batch(1, batch, EVERYONE) == expected
        assert ledger.count_batch(1, batch, EVERYONE) == Counter({"sent": 3})  # statuses untouched
        campaign = ledger.campaign_counts(1, "members", "newsletter")
        assert campaign is not None and Counter(campaign.engaged) == expected and campaign.counts == {"sent": 3}
        assert ledger.campaign_counts(0, "members", "newsletter") is None

        replica = await changelog(bootstrap, ledger.store.changelog, 1)
        assert replica == dict(ledger.store.items(1)), "the changelog must end as RocksDB does"

        # rebuilt from the rows (a ledger older than its bookkeeping): the same counters
        before = {key: ledger.store.get(1, key) for key in (counts_key(batch), campaign_key("members", "newsletter"))}
        await ledger.writer.write(1, {COMPLETE: None, **dict.fromkeys(before)})
        assert await ledger.prepare(1) == 3
        rebuilt = ledger.engaged_batch(1, batch, EVERYONE), ledger.campaign_counts(1, "members", "newsletter")
        assert rebuilt[0] == expected and rebuilt[1] is not None and Counter(rebuilt[1].engaged) == expected


def test_each_mark_counts_once_per_message_in_its_batch_and_campaign(kafka: str, tmp_path: Path) -> None:
    asyncio.run(_marks_count_once(kafka, tmp_path))


async def _recorder(kafka: str, tmp_path: Path) -> None:
    async with started_ledger(kafka, tmp_path) as (ledger, _):
        batch = new_batch_id(0)
        early, late = (batch_message_id(1, batch, row) for row in range(2))
        now = time.time()
        await ledger.put(1, _at(sent(early, batch), now - 5))  # delivered 5 s ago
        await ledger.put(1, _at(sent(late, batch), now - 600))  # 10 minutes ago
        published: list[RecipientCommand] = []

        async def publish(commands: list[RecipientCommand]) -> None:
            published.extend(commands)

        relayed: list[Hit] = []
        places: dict[int, Place] = {1: "here"}
        recorder = TrackingRecorder(
            ledger, publish, lambda p: places.get(p, "elsewhere"), relayed.append, linger=0.01, retry=0.05
        )

        def hit(message_id: str, kind: str = "open", url: str | None = None, prefetcher: bool = False) -> Hit:
            message = TrackedMessage("members", f"r-{message_id[-4:]}", message_id, "newsletter")
            return Hit(kind, message, int(now) - 600, url, prefetcher)  # type: ignore[arg-type]

        for _ in range(3):
            recorder.add(hit(early))  # within a minute of delivery: machine
            recorder.add(hit(late))  # a reader
            recorder.add(hit(late, prefetcher=True))  # Apple's proxy, later: machine too
            recorder.add(hit(late, "click", "https://shop.example/a"))
            recorder.add(hit(late, "click", "https://shop.example/b"))
        await recorder.drain()
        recorder.add(hit(late))  # a repeat in a later window: no record
        await recorder.drain()
        records = [(c.originalId, r.id, r.fields) for c in published if isinstance(c, AppendHistory) for r in c.records]
        assert sorted(records) == sorted(
            [
                (f"r-{early[-4:]}", f"mail.opened:{early}:machine", {"custom1": early, "custom3": "machine"}),
                (f"r-{late[-4:]}", f"mail.opened:{late}", {"custom1": late}),
                (f"r-{late[-4:]}", f"mail.opened:{late}:machine", {"custom1": late, "custom3": "machine"}),
                (f"r-{late[-4:]}", f"mail.clicked:{late}:{url_digest('https://shop.example/a')}",
                 {"custom1": late, "custom2": "https://shop.example/a"}),
                (f"r-{late[-4:]}", f"mail.clicked:{late}:{url_digest('https://shop.example/b')}",
                 {"custom1": late, "custom2": "https://shop.example/b"}),
            ]
        )  # fmt: skip
        assert all(c.ifExists for c in published if isinstance(c, AppendHistory))
        assert ledger.engaged_batch(1, batch, EVERYONE) == Counter({"machine": 2, "opened": 1, "clicked": 1})

        published.clear()  # a partition another worker owns: passed on to it, nothing recorded here
        other = batch_message_id(2, batch, 9)
        recorder.add(hit(other))
        await recorder.drain()
        assert published == [] and [h.message.message_id for h in relayed] == [other]
        relayed.clear()  # ... unless it was passed here by another worker: its history, no count
        recorder.add(dataclasses.replace(hit(other), relayed=True))
        await recorder.drain()
        assert [r.id for c in published if isinstance(c, AppendHistory) for r in c.records] == [f"mail.opened:{other}"]
        assert relayed == []

        published.clear()  # a rebalance: the owner is not known yet, the history goes out, the count waits
        third = batch_message_id(1, batch, 2)
        await ledger.put(1, _at(sent(third, batch), now - 600))
        places[1] = "unknown"
        recorder.add(hit(third))
        await asyncio.sleep(0.2)
        assert [r.id for c in published if isinstance(c, AppendHistory) for r in c.records] == [f"mail.opened:{third}"]
        assert ledger.engaged_batch(1, batch, EVERYONE)["opened"] == 1
        places[1] = "here"
        await recorder.drain()
        assert ledger.engaged_batch(1, batch, EVERYONE)["opened"] == 2


def test_the_recorder_publishes_each_mark_once_and_counts_it(kafka: str, tmp_path: Path) -> None:
    asyncio.run(_recorder(kafka, tmp_path))
