"""One import of one claimed file, from precheck to report.

Runs in a process of its own (`python -m streamapp.imports.job`), started by
the worker's watcher, or inside `streamapp import`: parsing a large file is
CPU work that must not starve the worker's agents, and a child process uses
the second core. It publishes with its own Kafka producer.

Order of work, so that a file is never half-imported silently:
1. precheck: the whole file decodes strictly in its declared encoding (and has
   no NUL bytes), and its SHA-256 is known — else rejected, nothing applied;
2. the same content seen before: reported as a duplicate, nothing applied;
3. header and identity column — else rejected, nothing applied;
4. rows are converted batch by batch; good rows published (acknowledged by
   Kafka) while bad rows are listed with their line;
5. `replace` mode: a sweep marks absent recipients inactive;
6. the report is staged, then file and report move to processed/.
Every command carries the claim time, so redoing a file after a crash writes
the same state as one clean import.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from streamapp.core import clock
from streamapp.core.models import RecipientCommand, SweepInactive
from streamapp.imports.files import Claim, DropLayout
from streamapp.imports.report import ImportReport, encode_report
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


@contextmanager
def claim_lock(layout: DropLayout, claim: Claim) -> Iterator[bool]:
    """Held while a process works on a claim; released by the kernel if it dies."""
    with (layout.inflight / f"{claim.id}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


async def run_import(
    settings: Settings,
    layout: DropLayout,
    claim: Claim,
    progress: Progress | None = None,
    parent_pid: int | None = None,
) -> tuple[ImportReport, Path]:
    """Import one claimed file; return its report and where the file ended."""
    finished = layout.resume_finish(claim)
    imp = import_settings(settings, claim.import_name)
    report = ImportReport(
        file=claim.original_name, import_=imp.name, database=imp.database, kind=imp.kind, mode=imp.mode
    )
    if finished is not None or not Path(claim.path).exists():
        layout.release(claim)
        return report, finished or Path(claim.path)
    started = time.monotonic()
    report.startedAt = clock.now_iso()
    folder = layout.processed
    sends = isinstance(imp, SendFolder)
    seen = ""
    try:
        # A bad campaign file name rejects the file before anything else.
        target = target_of(settings, imp, claim) if isinstance(imp, SendFolder) else None
        report.sha256 = precheck(Path(claim.path), imp.encoding)
        seen = seen_key(report.sha256, claim) if sends else report.sha256
        report.duplicateOf = layout.mark_seen(seen, claim)
        if report.duplicateOf is not None:
            report.outcome = "duplicate"
        elif target is not None:
            await _send_file(settings, target, claim, report, parent_pid)
        elif isinstance(imp, ImportSettings):
            await _import_rows(settings, imp, claim, report, progress, parent_pid)
    except FileRejected as exc:
        report.outcome, report.reason, folder = "rejected", str(exc), layout.rejected
        if seen and report.duplicateOf is None:
            layout.unmark_seen(seen)
    report.finishedAt = clock.now_iso()
    report.seconds = round(time.monotonic() - started, 3)
    report.rowsPerSecond = round(report.rowsRead / report.seconds) if report.seconds else 0
    return report, layout.finish(claim, folder, encode_report(report))


async def _send_file(
    settings: Settings, target: SendFileTarget, claim: Claim, report: ImportReport, parent_pid: int | None
) -> None:
    async with started_producer(settings) as producer:
        await send_file(settings, target, claim, report, aiokafka_send(producer), lambda: _check_parent(parent_pid))


def _check_parent(parent_pid: int | None) -> None:
    if parent_pid is not None and os.getppid() != parent_pid:
        raise ParentGone


async def _import_rows(
    settings: Settings,
    imp: ImportSettings,
    claim: Claim,
    report: ImportReport,
    progress: Progress | None,
    parent_pid: int | None,
) -> None:
    db = settings.databases[imp.database]
    zone = settings.service.zone
    source = DelimitedFile(Path(claim.path), imp.encoding, imp.delimiter, imp.header, ragged_ok=imp.kind == "history")
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
        source.close()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the job process: `python -m streamapp.imports.job CLAIM_JSON`."""
    parser = argparse.ArgumentParser(prog="streamapp.imports.job")
    parser.add_argument("claim", type=Path)
    parser.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s import-job: %(message)s")
    settings = load_settings()
    claim = msgspec.json.decode(args.claim.read_bytes(), type=Claim)
    layout = DropLayout(settings.service.data_dir, args.claim.parent.name)
    with claim_lock(layout, claim) as locked:
        if not locked:
            log.info("claim %s is being imported by another process", claim.id)
            return LOCKED
        try:
            report, target = asyncio.run(run_import(settings, layout, claim, parent_pid=args.parent))
        except ParentGone:
            log.warning("worker gone: leaving %s for its restart to redo", claim.original_name)
            return 4
    log.info("%s: %s, %d rows read, %d applied, %d rejected -> %s", claim.original_name, report.outcome,
             report.rowsRead, report.applied, report.rejected, target)  # fmt: skip
    sys.stdout.buffer.write(RESULT_PREFIX + msgspec.json.encode(report) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
