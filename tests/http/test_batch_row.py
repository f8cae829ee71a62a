"""batch_row: a batch id is answered from its 202 on, though its BatchInfo reaches the table later."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamapp.core.ids import new_batch_id
from streamapp.http.routes import batches


class Table:
    """A `batches` partition whose row is written `delay` seconds after the first read (None: never)."""

    def __init__(self, delay: float | None) -> None:
        self.delay, self.first, self.reads = delay, None, 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        self.reads += 1
        now = time.monotonic()
        self.first = self.first or now
        return b"info" if self.delay is not None and now - self.first >= self.delay else None


def test_a_young_id_whose_row_is_written_later_is_found() -> None:
    table = Table(delay=0.3)
    assert asyncio.run(batches.batch_row(table.get, 0, new_batch_id(0))) == b"info"
    assert table.reads > 1


def test_an_id_made_long_ago_without_a_row_is_absent_at_once() -> None:
    table = Table(delay=0.3)
    old = new_batch_id(0, now=time.time() - batches.RECENT - 5)
    assert asyncio.run(batches.batch_row(table.get, 0, old)) is None
    assert table.reads == 1


def test_a_young_id_never_written_is_absent_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "ACCEPT_WAIT", 0.2)
    started = time.monotonic()
    assert asyncio.run(batches.batch_row(Table(delay=None).get, 0, new_batch_id(0))) is None
    assert 0.2 <= time.monotonic() - started < 1.0


def test_a_malformed_id_is_not_waited_for() -> None:
    table = Table(delay=0.3)
    assert asyncio.run(batches.batch_row(table.get, 0, "not-a-batch-id")) is None
    assert table.reads == 1
