"""Applying a partition's commands: order, replays after a crash, and a bad command skipped."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    AppendHistory,
    BatchInfo,
    Command,
    DeleteRecipient,
    EraseIdempotency,
    HistoryRecord,
    IdempotencyRecord,
    Recipient,
    SendMessage,
    SoftBounce,
    SweepInactive,
    UpsertRecipient,
    decode_batch_info,
    decode_history,
    decode_recipient,
    encode,
)
from streamapp.kafka.memory import MemoryTransaction
from streamapp.recipients.apply import Chunks, apply_all
from streamapp.tables.idempotency import SCRUB, erased_key, index_key, index_prefix


def chunks() -> Chunks:
    return Chunks(MemoryTransaction(), MemoryTransaction(), MemoryTransaction())  # type: ignore[arg-type]


def upsert(original_id: str, at: str, **fields: object) -> UpsertRecipient:
    return UpsertRecipient(database="members", originalId=original_id, at=at, **fields)  # type: ignore[arg-type]


def recipient(c: Chunks, original_id: str) -> object:
    raw = c.recipients.get(recipient_key("members", original_id))
    return decode_recipient(raw) if raw is not None else None


def test_commands_apply_in_order_per_recipient() -> None:
    c = chunks()
    commands: list[Command] = [
        upsert("A", "2026-12-01T00:00:01", email="a@x.se", attributes={"firstname": "Ann"}),
        upsert("A", "2026-12-01T00:00:02", attributes={"zipcode": "111"}),  # touches only what it carries
        AppendHistory(database="members", originalId="A", records=[HistoryRecord(id="h1", type="purchase", time="2026-11-30T10:00:00")]),
        upsert("B", "2026-12-01T00:00:03", email="b@x.se"),
        DeleteRecipient(database="members", originalId="B"),
        SoftBounce(database="members", originalId="A", at="2026-12-01T00:00:04", action="inc"),
        BatchInfo(batchId="b1", database="members", kind="trigger", name="welcome", priority="batch", source="api", total=1, createdAt="2026-12-01T00:00:05"),
    ]  # fmt: skip
    assert apply_all(c, commands, offset=7).skipped == 0
    a = recipient(c, "A")
    assert a.email == "a@x.se" and a.attributes == {"firstname": "Ann", "zipcode": "111"}  # type: ignore[attr-defined]
    assert a.softBounces == 1  # type: ignore[attr-defined]
    history = decode_history(c.history.get(recipient_key("members", "A")) or b"")
    assert [r.id for r in history] == ["h1"]
    assert recipient(c, "B") is None and c.history.get(recipient_key("members", "B")) is None
    assert decode_batch_info(c.batches.get(b"b1") or b"").total == 1


def test_a_replayed_event_changes_nothing() -> None:
    """After a crash, events after the committed offset are applied again over their own effects."""
    c = chunks()
    first = [upsert("A", "2026-12-01T00:00:01", attributes={"firstname": "Ann"})]
    second = [
        upsert("A", "2026-12-01T00:00:02", attributes={"firstname": "Anna"}),
        SoftBounce(database="members", originalId="A", at="2026-12-01T00:00:02", action="inc"),
    ]
    apply_all(c, first, offset=1)
    apply_all(c, second, offset=2)
    state = dict(c.recipients.rows)  # type: ignore[attr-defined]
    apply_all(c, first, offset=1)  # replayed: older than the stored seq
    apply_all(c, second, offset=2)  # replayed: the soft bounce is not counted twice
    assert c.recipients.rows == state  # type: ignore[attr-defined]
    assert recipient(c, "A").attributes == {"firstname": "Anna"}  # type: ignore[attr-defined]


def test_a_sweep_after_a_replace_import_makes_the_unwritten_inactive() -> None:
    c = chunks()
    apply_all(c, [upsert("old", "2026-11-01T00:00:00"), upsert("new", "2026-12-01T00:00:00")], offset=1)
    apply_all(c, [SweepInactive(database="members", before="2026-11-15T00:00:00")], offset=2)
    assert recipient(c, "old").status == "inactive"  # type: ignore[attr-defined]
    assert recipient(c, "new").status == "active"  # type: ignore[attr-defined]


def test_a_command_that_fails_is_counted_and_skipped() -> None:
    c = chunks()
    c.recipients.set(recipient_key("members", "X"), b"\xc1 not msgpack")  # a corrupt row
    failed = apply_all(c, [upsert("X", "2026-12-01T00:00:01"), upsert("Y", "2026-12-01T00:00:01")], offset=1).skipped
    assert failed == 1 and recipient(c, "Y") is not None


# -- SPEC §3: a row never grows past 512 KiB; the command is skipped and counted, never a crash ------

KIB60 = "x" * (60 * 1024)


def oversize_count() -> float:
    return REGISTRY.get_sample_value("streamapp_recipient_commands_total", {"outcome": "oversize"}) or 0.0


def test_an_upsert_that_would_outgrow_the_row_is_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    c = chunks()
    before = oversize_count()
    grow = [upsert("A", f"2026-12-01T00:00:0{i}", attributes={f"a{i}": KIB60, f"b{i}": KIB60}) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="streamapp.recipients.apply"):
        result = apply_all(c, [*grow, upsert("B", "2026-12-01T00:00:06", attributes={"firstname": "Bo"})], offset=1)
    assert (result.failed, result.oversize) == (0, 1) and oversize_count() == before + 1
    a = recipient(c, "A")
    assert sorted(a.attributes) == sorted(f"{k}{i}" for i in range(4) for k in "ab")  # type: ignore[attr-defined]
    assert recipient(c, "B") is not None
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "UpsertRecipient of members/'A'" in record.getMessage() and "more than 524288" in record.getMessage()
    assert "x" * 100 not in caplog.text  # no attribute values in the log
    assert apply_all(c, [upsert("A", "2026-12-01T00:00:07", attributes={"a0": "small"})], offset=2).skipped == 0
    assert recipient(c, "A").attributes["a0"] == "small"  # type: ignore[attr-defined]


def test_a_row_stored_too_large_before_still_takes_what_does_not_grow_it() -> None:
    """Above all an unsubscribe: it must never be refused for the size of the row."""
    c = chunks()
    big = Recipient(originalId="L", attributes={f"a{i}": KIB60 for i in range(10)}, createdAt="t", updatedAt="t")
    c.recipients.rows[recipient_key("members", "L")] = encode(big)  # type: ignore[attr-defined]
    assert apply_all(c, [upsert("L", "2026-12-01T00:00:01", status="unsubscribed")], offset=1).skipped == 0
    assert recipient(c, "L").status == "unsubscribed"  # type: ignore[attr-defined]
    assert apply_all(c, [upsert("L", "2026-12-01T00:00:02", attributes={"b": "x"})], offset=2).oversize == 1
    assert apply_all(c, [upsert("L", "2026-12-01T00:00:03", attributes={"a0": None})], offset=3).skipped == 0
    assert "a0" not in recipient(c, "L").attributes  # type: ignore[attr-defined]


def test_at_most_256_attributes_once_merged() -> None:
    """auto_create_attributes: each command has at most 256, several together must not make more."""
    c = chunks()
    first = upsert("A", "2026-12-01T00:00:01", attributes={f"a{i}": "x" for i in range(200)})
    second = upsert("A", "2026-12-01T00:00:02", attributes={f"b{i}": "x" for i in range(100)})
    assert apply_all(c, [first, second], offset=1).oversize == 1
    assert len(recipient(c, "A").attributes) == 200  # type: ignore[attr-defined]


def record(n: int, size: int = 0) -> HistoryRecord:
    fields = {"custom1": "y" * size} if size else {}
    return HistoryRecord(id=f"h{n}", type="purchase", time=f"2026-11-01T00:00:{n:02d}+00:00", fields=fields)


def test_a_history_that_would_outgrow_its_row_drops_its_oldest_records() -> None:
    c = chunks()
    key = recipient_key("members", "A")
    commands: list[Command] = [
        AppendHistory(database="members", originalId="A", records=[record(n, 100 * 1024)]) for n in range(6)
    ]
    assert apply_all(c, commands, offset=1).skipped == 0
    kept = decode_history(c.history.get(key) or b"")
    assert [r.id for r in kept] == ["h5", "h4", "h3", "h2", "h1"]  # the newest that fit, newest first
    assert len(c.history.get(key) or b"") <= 512 * 1024


def test_a_history_record_too_large_alone_is_skipped_not_the_history() -> None:
    c = chunks()
    huge = AppendHistory(database="members", originalId="A", records=[record(2, 600 * 1024)])
    small = AppendHistory(database="members", originalId="A", records=[record(1)])
    result = apply_all(c, [small, huge], offset=1)
    assert (result.failed, result.oversize) == (0, 1)
    assert [r.id for r in decode_history(c.history.get(recipient_key("members", "A")) or b"")] == ["h1"]


def test_what_the_store_refuses_is_skipped_as_oversize() -> None:
    """A row stored at 950 KB (before the limits): re-encoding it for a soft bounce is refused by the store."""
    c = chunks()
    big = Recipient(originalId="L", attributes={f"a{i}": KIB60 for i in range(16)}, createdAt="t", updatedAt="t")
    c.recipients.rows[recipient_key("members", "L")] = encode(big)  # type: ignore[attr-defined]
    bounce = SoftBounce(database="members", originalId="L", at="2026-12-01T00:00:01", action="inc")
    result = apply_all(c, [bounce, upsert("B", "2026-12-01T00:00:02")], offset=1)
    assert (result.failed, result.oversize) == (0, 1) and recipient(c, "B") is not None


# -- erasure (SPEC §3): an unsubscribe link never recreates; the recipient's idempotency records go ---------


def test_an_unsubscribe_link_changes_an_existing_recipient_and_never_creates_one() -> None:
    c = chunks()
    link = {"status": "unsubscribed", "ifExists": True}
    apply_all(c, [upsert("gone", "2026-12-01T00:00:01", **link)], offset=1)
    assert recipient(c, "gone") is None and c.recipients.rows == {}  # type: ignore[attr-defined]
    apply_all(c, [upsert("here", "2026-12-01T00:00:01"), upsert("here", "2026-12-01T00:00:02", **link)], offset=2)
    assert recipient(c, "here").status == "unsubscribed"  # type: ignore[attr-defined]
    apply_all(c, [DeleteRecipient(database="members", originalId="here")], offset=3)
    apply_all(c, [upsert("here", "2026-12-01T00:00:03", **link)], offset=4)  # a link in a mail sent before the erase
    assert recipient(c, "here") is None


def keyed_record(original_id: str, key: bytes) -> tuple[bytes, bytes]:
    """An idempotency record of `original_id` and its index row, as IdempotencyKeys.put writes them."""
    at = "2026-12-01T00:00:00.000+00:00"
    message = SendMessage(messageId="m", database="members", originalId=original_id, priority="transactional",
                          template="welcome", enqueuedAt=at)  # fmt: skip
    value = IdempotencyRecord(
        bodyHash="h", messageId="m", createdAt=at, upsert=upsert(original_id, at), message=message
    )
    return index_key(recipient_key("members", original_id), key), encode(value)


def test_an_erase_removes_the_recipients_idempotency_records_and_marks_its_ledger_rows() -> None:
    c = Chunks(MemoryTransaction(), MemoryTransaction(), MemoryTransaction(), MemoryTransaction())  # type: ignore[arg-type]
    idempotency = c.idempotency
    assert idempotency is not None
    for original_id, key in (("ann", b"k1"), ("ann", b"k2"), ("bo", b"k3"), ("ann", b"k4"), ("bo", b"k4")):
        index, value = keyed_record(original_id, key)
        idempotency.set(index, b"2026-12-01T00:00:00.000+00:00")
        idempotency.set(key, value)  # k4: ann's record, replaced by bo's (the same key a day later)
    erase = [
        DeleteRecipient(database="members", originalId="ann"),
        EraseIdempotency(database="members", originalId="ann"),
    ]
    assert apply_all(c, erase, offset=1).skipped == 0  # type: ignore[arg-type]
    rows = idempotency.rows  # type: ignore[attr-defined]
    assert not any(k in rows for k in (b"k1", b"k2")) and {b"k3", b"k4"} <= rows.keys()
    assert not list(idempotency.scan(index_prefix(recipient_key("members", "ann"))))
    assert len(list(idempotency.scan(index_prefix(recipient_key("members", "bo"))))) == 2
    assert erased_key(recipient_key("members", "ann")) in rows and SCRUB in rows  # the ledger is scrubbed from these
    longer = index_key(recipient_key("members", "annika"), b"k5")  # not found by ann's prefix
    assert not longer.startswith(index_prefix(recipient_key("members", "ann")))


class CountingTransaction(MemoryTransaction):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set(self, key: bytes, value: bytes | None) -> None:
        self.writes += 1
        super().set(key, value)


def test_many_history_records_of_one_recipient_in_one_event_are_one_write_with_the_same_result() -> None:
    """10,000 records of one recipient in one request used to re-encode its history 10,000 times on the loop."""
    commands: list[Command] = [
        AppendHistory(database="members", originalId=rid, records=[record(n)])
        for n in range(3000)
        for rid in ("A", "B")
    ]
    commands.insert(1000, upsert("A", "2026-01-01T00:00:00+00:00", email="a@example.com"))
    commands.append(commands[5])  # a record given twice is kept once
    merged = Chunks(MemoryTransaction(), CountingTransaction(), MemoryTransaction())  # type: ignore[arg-type]
    assert apply_all(merged, commands, offset=1).skipped == 0
    one_by_one = chunks()
    for offset, command in enumerate(commands):
        apply_all(one_by_one, [command], offset=offset)
    for rid in ("A", "B"):
        key = recipient_key("members", rid)
        assert decode_history(merged.history.get(key) or b"") == decode_history(one_by_one.history.get(key) or b"")
    assert merged.history.writes == 4  # A and B before the upsert and after it
