"""Applying a partition's commands: order, replays after a crash, and a bad command skipped."""

from __future__ import annotations

from collections.abc import Iterator

from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    AppendHistory,
    BatchInfo,
    Command,
    DeleteRecipient,
    HistoryRecord,
    SoftBounce,
    SweepInactive,
    UpsertRecipient,
    decode_batch_info,
    decode_history,
    decode_recipient,
)
from streamapp.recipients.apply import Chunks, apply_commands


class MemoryTransaction:
    """The PartitionTransaction interface over a dict (the RocksDB one is tests/kafka/test_store.py)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}

    def prefetch(self, keys: list[bytes]) -> None:
        pass

    def get(self, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def set(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted((k, v) for k, v in self.rows.items() if k.startswith(prefix))


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
    assert apply_commands(c, commands, offset=7) == 0
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
    apply_commands(c, first, offset=1)
    apply_commands(c, second, offset=2)
    state = dict(c.recipients.rows)  # type: ignore[attr-defined]
    apply_commands(c, first, offset=1)  # replayed: older than the stored seq
    apply_commands(c, second, offset=2)  # replayed: the soft bounce is not counted twice
    assert c.recipients.rows == state  # type: ignore[attr-defined]
    assert recipient(c, "A").attributes == {"firstname": "Anna"}  # type: ignore[attr-defined]


def test_a_sweep_after_a_replace_import_makes_the_unwritten_inactive() -> None:
    c = chunks()
    apply_commands(c, [upsert("old", "2026-11-01T00:00:00"), upsert("new", "2026-12-01T00:00:00")], offset=1)
    apply_commands(c, [SweepInactive(database="members", before="2026-11-15T00:00:00")], offset=2)
    assert recipient(c, "old").status == "inactive"  # type: ignore[attr-defined]
    assert recipient(c, "new").status == "active"  # type: ignore[attr-defined]


def test_a_command_that_fails_is_counted_and_skipped() -> None:
    c = chunks()
    c.recipients.set(recipient_key("members", "X"), b"\xc1 not msgpack")  # a corrupt row
    failed = apply_commands(c, [upsert("X", "2026-12-01T00:00:01"), upsert("Y", "2026-12-01T00:00:01")], offset=1)
    assert failed == 1 and recipient(c, "Y") is not None
