"""The `<file>.report.json` written beside every processed or rejected file."""

from __future__ import annotations

from typing import Literal

import msgspec

#: Rejected rows listed in one report; the count is always complete.
MAX_LISTED = 1000

Outcome = Literal["processed", "rejected", "duplicate"]


class RowRejection(msgspec.Struct):
    line: int
    reason: str


class ImportReport(msgspec.Struct, kw_only=True):
    file: str
    import_: str = msgspec.field(name="import")
    database: str
    kind: str
    mode: str
    outcome: Outcome = "processed"
    reason: str | None = None  # why a whole file was rejected
    duplicateOf: str | None = None
    sha256: str | None = None
    rowsRead: int = 0
    applied: int = 0
    rejected: int = 0
    rejections: list[RowRejection] = msgspec.field(default_factory=list)
    rejectionsNotListed: int = 0
    ignoredColumns: list[str] = msgspec.field(default_factory=list)
    #: Send folders (triggers/, campaigns/): the batch the rows were sent as, and when.
    batchId: str | None = None
    sendTime: str | None = None
    startedAt: str = ""
    finishedAt: str = ""
    seconds: float = 0.0
    rowsPerSecond: float = 0.0

    def reject_rows(self, rows: list[tuple[int, str]]) -> None:
        self.rejected += len(rows)
        room = MAX_LISTED - len(self.rejections)
        self.rejections.extend(RowRejection(line, reason) for line, reason in rows[: max(room, 0)])
        self.rejectionsNotListed += max(0, len(rows) - max(room, 0))


def encode_report(report: ImportReport) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"


def decode_report(data: bytes) -> ImportReport:
    return msgspec.json.decode(data, type=ImportReport)
