"""Watching the drop folders: settle, claim, import in a child process, count.

watchdog wakes the scan loop as soon as something changes; a scan every
half second as well catches what inotify cannot see (network mounts) and the
files already there at start-up. A file is taken once its size, mtime and
inode have not changed for the import's `settle_seconds`, then claimed by
atomic rename into the claims folder (see files.py) and imported by
`python -m streamapp.imports.job`, one file at a time per worker. Claims left by
a previous run of this worker are redone first, and claims of workers that
are not running are adopted (at start and every ADOPT_INTERVAL).

Every name found in a drop folder is an uploader's choice: it is logged with
%r (so a newline or a terminal escape in it cannot forge a log line) and is
never used as a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from mode import Service
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from streamapp import metrics
from streamapp.core import clock
from streamapp.imports.files import Claim, DropLayout, SettleTracker, is_candidate
from streamapp.imports.job import LOCKED, RESULT_PREFIX, WatchedFolder, watched
from streamapp.imports.nofollow import NotAFolder, WatchedDir, open_watched, scan
from streamapp.imports.report import ImportReport, decode_report
from streamapp.settings import Settings

log = logging.getLogger(__name__)

SCAN_INTERVAL = 0.5
#: How often a worker looks for claims of workers that are not running.
ADOPT_INTERVAL = 10.0


class _Wake(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self.loop = loop
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


def layout_for(settings: Settings) -> DropLayout:
    return DropLayout.of(settings)


class DropWatcher(Service):  # type: ignore[misc]
    """Runs in every worker; several workers may watch one shared drop folder."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.watched = watched(settings)  # import folders and send folders
        self.imports = [folder.name for folder in self.watched]
        self.layout = layout_for(settings)
        self.settle = SettleTracker()
        self.wake = asyncio.Event()
        self.queue: asyncio.Queue[Claim] = asyncio.Queue()
        self.observer: Any = None
        self.worker_lock: IO[bytes] | None = None
        self.next_adoption = 0.0
        self.problems: dict[str, str] = {}  # watch folder -> what was last logged about it

    async def on_start(self) -> None:
        refused = self.layout.prepare([imp.watch for imp in self.watched])
        self.worker_lock = await asyncio.to_thread(self.layout.hold_worker_lock)
        if (self.layout.drop / ".streamapp").exists():
            log.warning("%s is no longer read: claims are kept in %s", self.layout.drop / ".streamapp",
                        self.layout.claims)  # fmt: skip
        for claim in self.layout.unfinished_claims(self.imports):
            log.info("redoing %r, claimed before a restart", claim.original_name)
            self.queue.put_nowait(claim)
        self._adopt()
        self.observer = Observer()
        handler = _Wake(asyncio.get_running_loop(), self.wake)
        for imp in self.watched:
            if imp.watch not in refused:
                self.observer.schedule(handler, str(self.layout.folder(imp.watch)), recursive=False)
        self.observer.start()
        self.add_future(self._scan_loop())
        self.add_future(self._import_loop())

    async def on_stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            await asyncio.to_thread(self.observer.join, 5)
        if self.worker_lock is not None:
            self.worker_lock.close()

    async def _scan_loop(self) -> None:
        while not self.should_stop:
            present: set[Path] = set()
            for imp in self.watched:
                present |= self._scan(imp)
            self.settle.retain(present)
            if time.monotonic() >= self.next_adoption:
                self._adopt()
            metrics.FILES_WAITING.set(self.settle.waiting() + self.queue.qsize())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), SCAN_INTERVAL)
            self.wake.clear()

    def _adopt(self) -> None:
        self.next_adoption = time.monotonic() + ADOPT_INTERVAL
        try:
            adopted = self.layout.adopt_orphans(self.imports)
        except OSError as exc:
            log.error("looking for claims of stopped workers failed: %s", exc)
            return
        for claim in adopted:
            log.info("redoing %r, claimed by a worker that is not running", claim.original_name)
            self.queue.put_nowait(claim)

    def _scan(self, imp: WatchedFolder) -> set[Path]:
        """The candidates present in one folder (for the settle tracker); ready ones are claimed."""
        try:
            with open_watched(self.layout.drop, imp.watch) as folder:
                self.problems.pop(imp.watch, None)
                return self._take_ready(imp, folder)
        except (NotAFolder, OSError) as exc:
            self._problem(imp.watch, str(exc))
        return set()

    def _problem(self, watch: str, message: str) -> None:
        """Log what is wrong with a watch folder once, not every half second."""
        if self.problems.get(watch) != message:
            self.problems[watch] = message
            log.error("watch folder %r is not scanned: %s", watch, message)

    def _take_ready(self, imp: WatchedFolder, folder: WatchedDir) -> set[Path]:
        present = set()
        for name, status in scan(folder):
            if not is_candidate(name, imp.pattern):
                continue
            key = folder.path / name
            present.add(key)
            if self.settle.ready(key, imp.settle_seconds, status):
                self.settle.forget(key)
                self._take(imp, folder, name, status)
        return present

    def _take(self, imp: WatchedFolder, folder: WatchedDir, name: str, settled: os.stat_result) -> None:
        try:
            claim = self.layout.claim_entry(folder, name, imp.name, clock.now_iso(), settled)
        except OSError as exc:
            log.error("could not claim %r in %r: %s", name, imp.watch, exc)
            return
        if claim is not None:
            log.info("took %r for import %r (claim %s)", claim.original_name, imp.name, claim.id)
            self.queue.put_nowait(claim)

    async def _import_loop(self) -> None:
        while not self.should_stop:
            claim = await self.queue.get()
            try:
                await self._run_job(claim)
            except Exception:
                log.exception("import of %r failed; it stays claimed and is redone at restart", claim.original_name)

    async def _run_job(self, claim: Claim) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamapp.imports.job", "--worker", self.layout.worker, claim.id,
            "--parent", str(os.getpid()),
            env={**os.environ, "STREAMAPP_CONFIG": str(self.settings.path)}, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode == LOCKED:  # an orphaned job of a previous run still holds the claim
            await asyncio.sleep(2)
            self.queue.put_nowait(claim)
            return
        report = result_of(output)
        if process.returncode != 0:
            log.error("import job for %r exited with %s", claim.original_name, process.returncode)
        if report is not None:
            record_metrics(report)


def result_of(output: bytes) -> ImportReport | None:
    """The report a job prints as its last line of standard output."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return decode_report(line.removeprefix(RESULT_PREFIX))
    return None


def record_metrics(report: ImportReport) -> None:
    metrics.FILES.labels(report.import_, report.outcome).inc()
    metrics.IMPORT_DURATION.labels(report.import_).observe(report.seconds)
    source = f"file:{report.import_}"
    metrics.INGEST_ROWS.labels(report.database, source, "accepted").inc(report.applied)
    metrics.INGEST_ROWS.labels(report.database, source, "rejected").inc(report.rejected)
