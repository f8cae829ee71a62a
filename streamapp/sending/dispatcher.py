"""Strict priority in front of the SMTP senders.

The send agents never block: each event goes straight into this dispatcher's queue for its
priority, so Faust's Conductor (which stops delivering to *every* topic when one agent's buffer
is full) never stalls transactional messages behind a campaign. Sender tasks always take the
oldest message of the highest non-empty priority, so a transactional message waits only for the
messages already in flight.

Memory and fetching are bounded by flow control instead of blocking: `wanted_pauses` names the
priorities whose topic partitions should not be fetched (their queue reached `high`, until it
drains below `low`; or a higher priority has work queued), and the engine pauses and resumes the
consumer's partitions accordingly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

from streamapp.core.models import PRIORITIES, Priority
from streamapp.sending.pipeline import Job

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, run: Callable[[Job], Awaitable[None]], senders: int, high: int) -> None:
        self.run = run
        self.senders = senders
        self.high = high
        self.low = high // 2
        self.queues: dict[Priority, deque[Job]] = {p: deque() for p in PRIORITIES}
        self.in_flight: dict[Priority, int] = dict.fromkeys(PRIORITIES, 0)
        self._available = asyncio.Semaphore(0)
        self._full: set[Priority] = set()
        self.on_change: Callable[[], None] = lambda: None

    def submit(self, job: Job) -> None:
        """Queue a job; never blocks."""
        priority = job.command.priority
        self.queues[priority].append(job)
        if len(self.queues[priority]) >= self.high:
            self._full.add(priority)
        self._available.release()
        self.on_change()

    def queued(self, priority: Priority) -> int:
        return len(self.queues[priority])

    def wanted_pauses(self) -> set[Priority]:
        """Priorities whose partitions should not be fetched now."""
        paused: set[Priority] = set()
        higher_waiting = False
        for priority in PRIORITIES:
            queued = len(self.queues[priority])
            if priority in self._full and queued < self.low:
                self._full.discard(priority)
            if higher_waiting or priority in self._full:
                paused.add(priority)
            higher_waiting = higher_waiting or queued > 0
        return paused

    def drop(self, partitions: Iterable[tuple[Priority, int]]) -> None:
        """Forget queued Kafka jobs of revoked partitions (their new owner reads them again)."""
        gone = set(partitions)
        for priority, queue in self.queues.items():
            kept = [j for j in queue if j.event is None or (priority, j.partition) not in gone]
            if len(kept) != len(queue):
                log.info("dropped %d queued %s messages of revoked partitions", len(queue) - len(kept), priority)
                self.queues[priority] = deque(kept)
        self.on_change()

    def _take(self) -> Job | None:
        for priority in PRIORITIES:
            queue = self.queues[priority]
            if queue:
                return queue.popleft()
        return None

    async def sender(self) -> None:
        """One sender task: take the most urgent job, run it, repeat."""
        while True:
            await self._available.acquire()
            job = self._take()
            if job is None:  # dropped by a revocation
                continue
            self.on_change()
            priority = job.command.priority
            self.in_flight[priority] += 1
            try:
                await self.run(job)
            finally:
                self.in_flight[priority] -= 1
