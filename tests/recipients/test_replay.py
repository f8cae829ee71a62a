"""A command replayed after a crash writes its row again, so the changelog gets what the crash lost.

The store writes RocksDB before the changelog (streamapp.kafka.store). A worker killed in between
kept rows its changelog never got; the command, not committed, was read again after the restart
and skipped as already applied (its `seq` is the row's), so the rows lived on that worker's disk
only. The 20-minute chaos run found 2,000 of them (bench/README.md "Chaos").
"""

from __future__ import annotations

from streamapp.core.keys import recipient_key
from streamapp.core.models import Command, SoftBounce, UpsertRecipient, decode_recipient
from streamapp.recipients.apply import Chunks, apply_all
from tests.recipients.test_apply import MemoryTransaction

KEY = recipient_key("members", "ann")


class ChangelogTransaction(MemoryTransaction):
    """MemoryTransaction that also lists every write, as the changelog would receive them."""

    def __init__(self, rows: dict[bytes, bytes] | None = None) -> None:
        super().__init__()
        self.rows.update(rows or {})
        self.written: list[tuple[bytes, bytes | None]] = []

    def set(self, key: bytes, value: bytes | None) -> None:
        super().set(key, value)
        self.written.append((key, value))


def applied(rows: dict[bytes, bytes], commands: list[Command], offset: int) -> ChangelogTransaction:
    recipients = ChangelogTransaction(rows)
    apply_all(Chunks(recipients, MemoryTransaction(), MemoryTransaction()), commands, offset)  # type: ignore[arg-type]
    return recipients


def test_a_replayed_upsert_writes_its_row_to_the_changelog_again() -> None:
    upsert = UpsertRecipient(database="members", originalId="ann", at="2026-12-01T10:00:00Z", email="ann@example.com")
    first = applied({}, [upsert], offset=41)
    [(_, row)] = first.written
    assert row is not None and decode_recipient(row).email == "ann@example.com"

    # The crash: RocksDB kept the row, the changelog lost it. The same event is read again.
    replayed = applied({KEY: row}, [upsert], offset=41)
    assert replayed.written == [(KEY, row)]  # the same bytes again: nothing changes but the changelog has it


def test_a_replayed_soft_bounce_writes_its_row_again_and_a_new_one_counts() -> None:
    upsert = UpsertRecipient(database="members", originalId="ann", at="2026-12-01T10:00:00Z", email="ann@example.com")
    bounce = SoftBounce(database="members", originalId="ann", at="2026-12-01T11:00:00Z", action="inc")
    [(_, row)] = applied({}, [upsert], offset=1).written
    [(_, bounced)] = applied({KEY: row}, [bounce], offset=2).written  # type: ignore[misc]
    assert bounced is not None and decode_recipient(bounced).softBounces == 1
    assert applied({KEY: bounced}, [bounce], offset=2).written == [(KEY, bounced)]  # replayed: unchanged, again
    [(_, again)] = applied({KEY: bounced}, [bounce], offset=3).written  # a new bounce counts
    assert again is not None and decode_recipient(again).softBounces == 2
