"""One import of one claimed file, from precheck to report.

Runs in a process of its own (`python -m streamapp.imports.job`), started by
the worker's watcher, or inside `streamapp import`: parsing a large file is
CPU work that must not starve the worker's agents, and a child process uses
the second core. It publishes with its own Kafka producer.

Order of work, so that a file is never half-imported silently:
0. the claimed file is opened once, without following links, and must be a
   regular file with one name (nofollow.py) — else rejected, never read; every
   later read goes through that descriptor;
1. precheck: the whole file decodes strictly in its declared encoding (and has
   no NUL bytes), and its SHA-256 is known — else rejected, nothing applied;
2. the same content seen before: reported as a duplicate, nothing applied;
3. header and identity column — else rejected, nothing applied;
4. rows are converted batch by batch; good rows published (acknowledged by
   Kafka) while bad rows are listed with their line;
5. `replace` mode: a sweep marks absent recipients inactive;
6. the report is staged, then file and report move to processed/.
Every command carries the claim time, so redoing a file after a crash writes
the same state as one clean import. A file that changes after step 1 (an
uploader that kept it open) is detected — by the reader's decode error or by
its size and mtime at the end — and rejected with a reason that says what was
already applied: never a silent half-import.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from streamapp.core import clock
from streamapp.core.models import RecipientCommand, SweepInactive
from streamapp.imports.files import LOCK_FILE, Claim, DropLayout, Outcome, try_lock
from streamapp.imports.nofollow import ClaimedFile, ClaimGone, FileRefused
from streamapp.imports.report import ImportReport, decode_report, encode_report
from streamapp.imports.send_files import SendFileTarget, SendFolder, seen_key, send_drops, send_file, target_of
from streamapp.kafka.publisher import AckWindow, CommandPublisher, aiokafka_send, new_producer, started_producer
from streamapp.kafka.topics import commands_topic
from streamapp.settings import ImportSettings, Settings, load_settings
from streamapp.tabular.csvreader import DelimitedFile, FileRejected, precheck
from streamapp.tabular.rows import convert_history, convert_recipients, plan_columns

log = logging.getLogger(__name__)

#: The job prints its report on one line with this prefix, for the worker's metrics.
RESULT_PREFIX = b"STREAMAPP-IMPORT-RESULT "
LOCKED = 3  # exit code: another process holds the claim
#: The end of every reason that rejects a file found changed while it was imported.
AGAIN = "drop the file again once it is complete"
#: Converted batches whose acknowledgements may be outstanding (bounds memory).
MAX_BATCHES_IN_FLIGHT = 3

Progress = Callable[[int, int], None]  # (rows read so far, file size in bytes read so far)


#: A folder the watcher takes files from: a configured import, or a send folder.
WatchedFolder = ImportSettings | SendFolder


def watched(settings: Settings) -> list[WatchedFolder]:
    """Every watched folder: the configured imports and the send folders."""
    return [*settings.imports, *send_drops(settings)]


class ParentGone(Exception):
    """The worker that started this job died; its restart redoes the file."""


def import_settings(settings: Settings, name: str) -> WatchedFolder:
    for imp in watched(settings):
        if imp.name == name:
            return imp
    known = ", ".join(i.name for i in watched(settings)) or "none"
    raise KeyError(f"unknown import {name!r} (configured: {known})")


def claim_lock(layout: DropLayout, claim: Claim) -> AbstractContextManager[bool]:
    """Held while a process works on a claim; released by the kernel if it dies."""
    return try_lock(layout.claim_dir(claim.id) / LOCK_FILE)


async def run_import(
    settings: Settings,
    layout: DropLayout,
    claim: Claim,
    progress: Progress | None = None,
    parent_pid: int | None = None,
) -> tuple[ImportReport, Path]:
    """Import one claimed file; return its report and where the file ended.

    ClaimGone (the claim released) when the claim holds no file and nothing to finish.
    """
    imp = import_settings(settings, claim.import_name)
    finished = layout.resume_finish(claim)
    if finished is not None:
        return _earlier_report(layout, finished, claim, imp), finished
    try:
        return await _Import(settings, layout, imp, claim, progress, parent_pid).run()
    except ClaimGone:
        layout.release(claim)
        raise


def _new_report(claim: Claim, imp: WatchedFolder) -> ImportReport:
    return ImportReport(file=claim.original_name, import_=imp.name, database=imp.database, kind=imp.kind, mode=imp.mode)


def _earlier_report(layout: DropLayout, target: Path, claim: Claim, imp: WatchedFolder) -> ImportReport:
    """The report of a finish a crash interrupted (redone now), for the worker's metrics."""
    staged = layout.staged_report(target)
    try:
        return decode_report(staged) if staged else _new_report(claim, imp)
    except msgspec.DecodeError:
        return _new_report(claim, imp)


@dataclass
class _Import:
    """One run of the steps in the module docstring on an opened claim."""

    settings: Settings
    layout: DropLayout
    imp: WatchedFolder
    claim: Claim
    progress: Progress | None
    parent_pid: int | None
    seen: str = ""  # the duplicate marker taken, forgotten again if the file is rejected
    report: ImportReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = _new_report(self.claim, self.imp)

    async def run(self) -> tuple[ImportReport, Path]:
        report = self.report
        started = time.monotonic()
        report.startedAt = clock.now_iso()
        outcome: Outcome = "processed"
        keep = True
        try:
            with self.layout.open_claimed(self.claim) as source:
                await self._checked(source)
        except FileRefused as exc:  # a link, a folder, ...: reported, never read, never kept
            outcome, keep = self._rejected(exc), False
        except FileRejected as exc:
            outcome = self._rejected(exc)
        report.finishedAt = clock.now_iso()
        report.seconds = round(time.monotonic() - started, 3)
        report.rowsPerSecond = round(report.rowsRead / report.seconds) if report.seconds else 0
        return report, self.layout.finish(self.claim, outcome, encode_report(report), keep_file=keep)

    def _rejected(self, exc: FileRejected) -> Outcome:
        self.report.outcome, self.report.reason = "rejected", str(exc)
        if self.seen and self.report.duplicateOf is None:
            self.layout.unmark_seen(self.seen)
        return "rejected"

    async def _checked(self, source: ClaimedFile) -> None:
        imp, claim, report = self.imp, self.claim, self.report
        # A bad campaign file name rejects the file before anything else.
        target = target_of(self.settings, imp, claim) if isinstance(imp, SendFolder) else None
        report.sha256 = precheck(source.path, imp.encoding)
        self.seen = seen_key(report.sha256, claim) if isinstance(imp, SendFolder) else report.sha256
        report.duplicateOf = self.layout.mark_seen(self.seen, claim)
        if report.duplicateOf is not None:
            report.outcome = "duplicate"
            return
        try:
            if target is not None:
                await _send_file(self.settings, target, claim, source.path, report, self.parent_pid)
            elif isinstance(imp, ImportSettings):
                await _import_rows(self.settings, imp, claim, source.path, report, self.progress, self.parent_pid)
        except UnicodeDecodeError as exc:
            raise _undecodable_part_way(source, imp, exc, report) from None
        if source.changed():
            raise FileRejected(f"the file changed while it was being imported: {_applied(imp, report)}; {AGAIN}")


def _applied(imp: WatchedFolder, report: ImportReport) -> str:
    """What already happened to a file found changed part-way, for its rejection reason."""
    return (
        "rows of it may have been sent"
        if isinstance(imp, SendFolder)
        else f"{report.applied:,} rows of it were applied"
    )


def _undecodable_part_way(
    source: ClaimedFile, imp: WatchedFolder, exc: UnicodeDecodeError, report: ImportReport
) -> FileRejected:
    """The reader met bytes the precheck accepted: the file changed after it was checked.

    (Someone kept it open and wrote to it.) Checking it again names the line and byte.
    """
    try:
        precheck(source.path, imp.encoding)
        where = f"not valid {imp.encoding} ({exc.reason})"
    except FileRejected as again:
        where = str(again)
    return FileRejected(f"{where}, found part-way through the import (the file changed after its check): "
                        f"{_applied(imp, report)} before that; {AGAIN}")  # fmt: skip


async def _send_file(
    settings: Settings, target: SendFileTarget, claim: Claim, source: Path, report: ImportReport, parent_pid: int | None
) -> None:
    def between_chunks() -> None:
        _check_parent(parent_pid)

    async with started_producer(settings) as producer:
        await send_file(settings, target, claim, source, report, aiokafka_send(producer), between_chunks)


def _check_parent(parent_pid: int | None) -> None:
    if parent_pid is not None and os.getppid() != parent_pid:
        raise ParentGone


async def _import_rows(
    settings: Settings,
    imp: ImportSettings,
    claim: Claim,
    path: Path,
    report: ImportReport,
    progress: Progress | None,
    parent_pid: int | None,
) -> None:
    db = settings.databases[imp.database]
    zone = settings.service.zone
    source = DelimitedFile(path, imp.encoding, imp.delimiter, imp.header, ragged_ok=imp.kind == "history")
    producer = new_producer(settings)
    await producer.start()
    try:
        publisher = CommandPublisher(aiokafka_send(producer), commands_topic(settings), settings.service.partitions)
        plan = None
        if imp.kind == "recipients" and source.header is not None:
            plan = plan_columns(imp, db, source.header, len(source.header))
            report.ignoredColumns = list(plan.ignored)
        batches = source.batches()

        def next_chunk() -> tuple[list[RecipientCommand], list[tuple[int, str]]] | None:
            """Read and convert the next batch (CPU work, run in a thread so sends go on meanwhile)."""
            nonlocal plan
            batch = next(batches, None)
            if batch is None:
                return None
            if imp.kind == "history":
                commands, bad = convert_history(batch.rows, batch.lines, imp, zone, claim.claimed_at, digest)
            else:
                if plan is None:
                    plan = plan_columns(imp, db, source.header, source.width or 0)
                    report.ignoredColumns = list(plan.ignored)
                commands, bad = convert_recipients(batch.rows, batch.lines, plan, imp, zone, claim.claimed_at)
            return commands, sorted(batch.rejected + bad)

        digest = report.sha256 or ""
        in_flight = AckWindow(MAX_BATCHES_IN_FLIGHT)
        while (chunk := await asyncio.to_thread(next_chunk)) is not None:
            _check_parent(parent_pid)
            commands, rejected = chunk
            report.reject_rows(rejected)
            report.applied += len(commands)
            await in_flight.add(await publisher.enqueue(commands))  # sends queued in file order
            if progress:
                progress(source.rows_read, source.position())
        await in_flight.drain()
        report.rowsRead = source.rows_read
        if report.rowsRead == 0:
            raise FileRejected("no data rows" + (" (only a header line)" if imp.header else ""))
        if imp.kind == "recipients" and plan is None:
            plan_columns(imp, db, source.header, source.width or 0)  # every row was malformed: still check the header
        if imp.mode == "replace" and imp.kind == "recipients":
            await publisher.publish_everywhere(SweepInactive(database=imp.database, before=claim.claimed_at))
    finally:
        report.rowsRead = source.rows_read
        source.close()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the job process: `python -m streamapp.imports.job --worker TAG CLAIM_ID`.

    Only ids are passed: the claim's folder and file follow from the configured claims
    folder, the worker tag and the claim id.
    """
    parser = argparse.ArgumentParser(prog="streamapp.imports.job")
    parser.add_argument("claim", help="the claim id (12 hex digits)")
    parser.add_argument("--worker", required=True, help="the worker tag whose inflight folder holds the claim")
    parser.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s import-job: %(message)s")
    settings = load_settings()
    layout = DropLayout.of(settings, worker=args.worker)
    claim = layout.load_claim(args.claim, [folder.name for folder in watched(settings)])
    if claim is None:
        log.info("claim %r: nothing to do", args.claim)
        return 0
    with claim_lock(layout, claim) as locked:
        if not locked:
            if not layout.claim_dir(claim.id).exists():
                return 0  # finished by the process that held it
            log.info("claim %s is being imported by another process", claim.id)
            return LOCKED
        return _run_locked(settings, layout, claim, args.parent)


def _run_locked(settings: Settings, layout: DropLayout, claim: Claim, parent: int | None) -> int:
    try:
        _check_parent(parent)
        report, target = asyncio.run(run_import(settings, layout, claim, parent_pid=parent))
    except ParentGone:
        log.warning("worker gone: leaving %r for its restart to redo", claim.original_name)
        return 4
    except ClaimGone:
        log.info("claim %s held no file (finished earlier, or claimed just before a crash): released", claim.id)
        return 0
    log.info("%r: %s, %d rows read, %d applied, %d rejected -> %s", claim.original_name, report.outcome,
             report.rowsRead, report.applied, report.rejected, target)  # fmt: skip
    sys.stdout.buffer.write(RESULT_PREFIX + msgspec.json.encode(report) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
