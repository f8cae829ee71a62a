"""Watching the drop folders: settle, claim, import in a child process, count.

watchdog wakes the scan loop as soon as something changes; a scan every
half second as well catches what inotify cannot see (network mounts) and the
files already there at start-up. A file is taken once its size and mtime
have not changed for the import's `settle_seconds`, then claimed by atomic
rename (see files.py) and imported by `python -m streamapp.imports.job`, one
file at a time per worker. Claims left by a previous run of this worker are
redone first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

from mode import Service
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from streamapp import metrics
from streamapp.core import clock
from streamapp.imports.files import Claim, DropLayout, SettleTracker, scan, worker_tag
from streamapp.imports.job import LOCKED, RESULT_PREFIX, WatchedFolder, watched
from streamapp.imports.report import ImportReport, decode_report
from streamapp.settings import Settings

log = logging.getLogger(__name__)

SCAN_INTERVAL = 0.5


class _Wake(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self.loop = loop
        self.event = event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


def layout_for(settings: Settings) -> DropLayout:
    return DropLayout(settings.service.data_dir, worker_tag(settings.service.advertised_url))


class DropWatcher(Service):  # type: ignore[misc]
    """Runs in every worker; several workers may watch one shared drop folder."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.watched = watched(settings)  # import folders and send folders
        self.layout = layout_for(settings)
        self.settle = SettleTracker()
        self.wake = asyncio.Event()
        self.queue: asyncio.Queue[Claim] = asyncio.Queue()
        self.observer: Any = None

    async def on_start(self) -> None:
        imports = self.watched
        self.layout.create([imp.watch for imp in imports])
        for claim in self.layout.unfinished_claims():
            log.info("redoing %s, claimed before a restart", claim.original_name)
            self.queue.put_nowait(claim)
        self.observer = Observer()
        handler = _Wake(asyncio.get_running_loop(), self.wake)
        for imp in imports:
            self.observer.schedule(handler, str(self.layout.folder(imp.watch)), recursive=False)
        self.observer.start()
        self.add_future(self._scan_loop())
        self.add_future(self._import_loop())

    async def on_stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            await asyncio.to_thread(self.observer.join, 5)

    async def _scan_loop(self) -> None:
        while not self.should_stop:
            for imp in self.watched:
                self._scan(imp)
            metrics.FILES_WAITING.set(self.settle.waiting() + self.queue.qsize())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), SCAN_INTERVAL)
            self.wake.clear()

    def _scan(self, imp: WatchedFolder) -> None:
        for path in scan(self.layout.folder(imp.watch), imp.pattern):
            if not self.settle.ready(path, imp.settle_seconds):
                continue
            self.settle.forget(path)
            claim = self.layout.claim(path, imp.name, clock.now_iso())
            if claim is not None:
                log.info("took %s for import %s", path.name, imp.name)
                self.queue.put_nowait(claim)

    async def _import_loop(self) -> None:
        while not self.should_stop:
            claim = await self.queue.get()
            try:
                await self._run_job(claim)
            except Exception:
                log.exception("import of %s failed; it stays claimed and is redone at restart", claim.original_name)

    async def _run_job(self, claim: Claim) -> None:
        marker = self.layout.inflight / f"{claim.id}.claim.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamapp.imports.job", str(marker), "--parent", str(os.getpid()),
            env={**os.environ, "STREAMAPP_CONFIG": str(self.settings.path)}, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        output, _ = await process.communicate()
        if process.returncode == LOCKED:  # an orphaned job of a previous run still holds the claim
            await asyncio.sleep(2)
            self.queue.put_nowait(claim)
            return
        report = result_of(output)
        if process.returncode != 0 or report is None:
            log.error("import job for %s exited with %s", claim.original_name, process.returncode)
            return
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
    metrics.INGEST_ROWS.labels(report.database, source, "applied").inc(report.applied)
    metrics.INGEST_ROWS.labels(report.database, source, "rejected").inc(report.rejected)
