"""The send engine of one worker: a mode.Service beside the Faust app.

It owns the SMTP pool, the dispatcher with its sender tasks, the schedule of deferred and
scheduled messages, and the flow control that pauses priority topics' partitions. The send
agents (agents/sending.py) only hand events to `submit`. Design: docs/sending.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mode import Service

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.models import PRIORITIES, Priority, RecipientCommand, SendMessage
from streamapp.kafka.app import KafkaApp
from streamapp.kafka.gaps import OffsetTracker, read_range
from streamapp.kafka.publisher import CommandPublisher
from streamapp.kafka.security import client_options
from streamapp.kafka.store import Store
from streamapp.kafka.topics import bootstrap_servers, messages_topic
from streamapp.mail.dkim import configured_signer
from streamapp.mail.mime import MimeBuilder
from streamapp.mail.smtp import SmtpPool
from streamapp.mail.templates import TemplateStore
from streamapp.mail.unsubscribe import unsubscribe_keys
from streamapp.mail.verp import return_path
from streamapp.sending.audience import Audiences, Members
from streamapp.sending.cancel import BatchCancels
from streamapp.sending.dispatcher import Dispatcher
from streamapp.sending.ledger import Ledger, waiting_counts
from streamapp.sending.pipeline import Job, Pipeline
from streamapp.sending.reports import ReportEffects
from streamapp.sending.schedule import Schedule
from streamapp.sending.tracking import TrackingPolicy
from streamapp.settings import Settings

log = logging.getLogger(__name__)

#: Sender tasks per SMTP connection: while one waits for its ledger write, another uses the connection.
SENDERS_PER_CONNECTION = 2
#: Queued messages per priority at which its partitions stop being fetched (resumed below half).
QUEUE_HIGH = 1000
TICK_SECONDS = 0.02
#: How often the schedule reads the next due times of its partitions from the ledger's index.
WINDOW_SECONDS = 1.0


def template_names(settings: Settings) -> set[str]:
    return {t.template for t in settings.triggers.values()} | {c.template for c in settings.campaigns.values()}


@dataclass(frozen=True, slots=True)
class SendStores:
    """The tables the engine reads and writes: recipients and history (read), the ledger."""

    recipients: Store
    history: Store
    messages: Store


def verp_sender(settings: Settings) -> Callable[[str], str] | None:
    """`[bounces] domain`: each message's envelope sender names it (SPEC §11); else None."""
    bounces, ring = settings.bounces, unsubscribe_keys(settings)
    if bounces.domain is None:
        return None
    domain = bounces.domain
    return lambda message_id: return_path(bounces.local, domain, message_id, ring)


class SendEngine(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        kafka: KafkaApp,
        stores: SendStores,
        publisher: CommandPublisher,
        members: Members,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        assert settings.smtp is not None, "sending needs [smtp] (or the dev sink)"
        self.settings = settings
        self.kafka = kafka
        self.publisher = publisher
        self.smtp = smtp = settings.smtp
        self.topics: dict[Priority, str] = {p: messages_topic(settings, p) for p in PRIORITIES}
        self.ledger = Ledger(stores.messages)
        self.schedule = Schedule()
        self.cancels = BatchCancels(self.ledger, self._owns, self.add_future)
        self.pool = SmtpPool(
            smtp.host, smtp.port, smtp.connections, smtp.rate_per_second, smtp.username, smtp.password, smtp.starttls,
            pipelining=smtp.pipelining,
        )  # fmt: skip
        self.pipeline = Pipeline(
            smtp=smtp,
            public_url=settings.service.public_url,
            ledger=self.ledger,
            recipients=stores.recipients,
            history=stores.history,
            templates=TemplateStore.for_settings(settings),
            builder=MimeBuilder(smtp.sender, unsubscribe_mailto=smtp.unsubscribe_mailto),
            send=self.pool.send,
            publish=self._publish,
            secret=unsubscribe_keys(settings),
            schedule=self.schedule.add,
            cancelled=self.cancels.cancelled,
            tracking=TrackingPolicy.of(settings),
            sign=signer.sign if (signer := configured_signer(settings)) else None,
            return_path=verp_sender(settings),
        )
        #: Bounce reports and complaints about messages of this worker's partitions (streamapp.sending.reports).
        self.reports = ReportEffects(self.ledger, self._publish)
        #: Audience sends; `members` tells a segment's members (the segment engine's, streamapp.runtime).
        self.audiences = Audiences(
            self.ledger, stores.recipients, members, self.cancels, self.schedule.add, unsubscribe_keys(settings).signing
        )
        self.dispatcher = Dispatcher(self._run, smtp.connections * SENDERS_PER_CONNECTION, QUEUE_HIGH)
        self.dispatcher.on_change = self._flow_if_changed
        self.owned: set[int] = set()
        self.active: set[str] = set()  # message ids being processed (a duplicate event waits for the ledger)
        self.offsets = OffsetTracker()
        self._last_wanted: set[Priority] = set()
        self._windowed_at = 0.0
        self._audienced_at = 0.0
        self._wake = asyncio.Event()

    # -- from the agents -------------------------------------------------------

    def submit(self, event: Any, command: SendMessage) -> None:
        """Queue a message read from Kafka; its event is acked once the outcome is recorded."""
        message = event.message
        skipped = self.offsets.seen(message.tp, message.offset)
        if skipped is not None:
            self._read_again(message.tp, *skipped)
        self._accept(Job(command, message.partition, event))

    def _accept(self, job: Job) -> None:
        """A bounce report is applied and an audience command registered (each then acked), any other message
        queued."""
        command = job.command
        if command.report is not None:
            self._record_then_ack(
                job, self.reports.apply(job.partition, command), f"the report on message {command.messageId}"
            )
        elif command.audience is not None:
            self._record_then_ack(
                job, self.audiences.register(job.partition, command), f"audience send {command.batchId}"
            )
        else:
            self.dispatcher.submit(job)

    def _record_then_ack(self, job: Job, record: Awaitable[None], what: str) -> None:
        """Run `record` beside the dispatcher and ack the job's event once it is done; a failure to record
        stops the worker (the event is read again), unless it stops anyway or the partition moved."""

        async def run() -> None:
            try:
                await record
            except Exception as exc:
                if not self._stopping() and job.partition in self._assigned_partitions():
                    log.exception("cannot record %s: stopping the worker", what)
                    await self.kafka.crash(exc)
                return
            self._ack(job)

        self.add_future(run())

    def _read_again(self, tp: Any, start: int, end: int) -> None:
        """Offsets [start, end) never reached the agent: read them ourselves (streamapp.kafka.gaps)."""
        log.error("%s: offsets %d..%d skipped on the way in; reading them again", tp, start, end - 1)
        metrics.SKIPPED_RECORDS.inc(end - start)

        async def refill() -> None:
            bootstrap, security = bootstrap_servers(self.settings), client_options(self.settings)
            for command in await read_range(bootstrap, tp.topic, tp.partition, start, end, security):
                self._accept(Job(command, tp.partition))

        self.add_future(refill())

    # -- processing ------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        message_id = job.command.messageId
        if message_id in self.active:  # the same message twice on the topic: the first one decides
            self._ack(job)
            return
        self.active.add(message_id)
        started = time.monotonic()
        try:
            if self._stopping() or (job.partition not in self.owned and self.owned):
                return  # revoked while queued, or shutting down: read again later, by us or the new owner
            await self.pipeline.run(job)
        except Exception as exc:
            if self._stopping():
                log.info("message %s left unrecorded at shutdown (%r): it will be read again", message_id, exc)
                return
            if job.partition not in self._assigned_partitions():
                log.info("message %s dropped: partition %d was revoked (%r)", message_id, job.partition, exc)
                return
            log.exception("cannot record the outcome of message %s: stopping the worker", message_id)
            await self.kafka.crash(exc)
            return
        finally:
            self.active.discard(message_id)
        self._ack(job)
        metrics.SEND_DURATION.labels(priority=job.command.priority).observe(time.monotonic() - started)

    def _stopping(self) -> bool:
        """The app closes its tables on shutdown: nothing may be sent or recorded from then on."""
        return bool(self.should_stop or self.kafka.should_stop)

    @staticmethod
    def _ack(job: Job) -> None:
        if job.event is not None:
            job.event.ack()

    async def _publish(self, commands: list[RecipientCommand]) -> None:
        await self.publisher.publish(commands)

    # -- service ---------------------------------------------------------------

    async def on_start(self) -> None:
        for _ in range(self.dispatcher.senders):
            self.add_future(self.dispatcher.sender())
        self.add_future(self._ticker())
        self.add_future(self._gauges())
        self.kafka.on_revoked(self._on_revoked)
        log.info("send engine: %d sender tasks, SMTP %s:%d", self.dispatcher.senders, self.smtp.host, self.smtp.port)

    async def on_stop(self) -> None:
        await self.pool.close()

    async def _on_revoked(self, revoked: list[tuple[str, int]]) -> None:
        mine = [(p, partition) for name, partition in revoked for p, topic in self.topics.items() if name == topic]
        partitions = {partition for _, partition in mine}
        self.owned -= partitions
        self.schedule.forget(partitions)
        self.offsets.forget(partitions)
        self.dispatcher.drop(mine)

    # -- timer: schedule, flow control -------------------------------------------

    def _owns(self, partition: int) -> bool:
        return not self._stopping() and partition in self._assigned_partitions()

    def _assigned_partitions(self) -> set[int]:
        return self.kafka.assigned(self.topics["transactional"])  # all priority topics are co-partitioned

    async def _ticker(self) -> None:
        """Every tick: take over newly assigned partitions' schedules, release due messages, re-apply pauses."""
        while not self.should_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()
            if not self.kafka.is_ready():
                continue
            try:
                await self._tick()
                await self._flow()
            except Exception:
                log.exception("send engine tick failed")

    async def _tick(self) -> None:
        assigned = self._assigned_partitions()
        self.schedule.forget(self.schedule.loaded - assigned)
        taken = sorted(assigned - self.schedule.loaded)
        for partition in taken:
            await self.ledger.prepare(partition)  # once per ledger older than its due index
            if partition in self._assigned_partitions():
                self.schedule.take(partition)
                self.cancels.resume(partition)
                waiting = {f"{p}/{s}": n for (p, s), n in self.ledger.waiting(partition).items()}
                log.info("partition %d: %s messages waiting", partition, waiting)
        self.owned = assigned
        self._window(bool(taken))
        self._audiences(bool(taken))
        room = {p: max(0, QUEUE_HIGH - self.dispatcher.queued(p)) for p in PRIORITIES}
        for partition, message_id in self.schedule.due(room):
            state = self.ledger.get(partition, message_id) if partition in assigned else None
            if state is not None and state.waiting() and state.command is not None:
                self.dispatcher.submit(Job(state.command, partition, released=True))

    def _window(self, now: bool) -> None:
        """Every WINDOW_SECONDS (and at once for new partitions), read the due times of the next hour."""
        if not now and time.monotonic() - self._windowed_at < WINDOW_SECONDS:
            return
        self._windowed_at = time.monotonic()
        for partition in sorted(self.schedule.loaded):
            self.schedule.window(partition, self.ledger.due_entries)

    def _audiences(self, now: bool) -> None:
        """Every WINDOW_SECONDS (and at once for new partitions), start the audience sends whose time came."""
        if not now and time.monotonic() - self._audienced_at < WINDOW_SECONDS:
            return
        self._audienced_at, moment = time.monotonic(), datetime.now(UTC)
        for partition in sorted(self.owned):
            for batch_id in self.audiences.take_due(partition, moment):
                self.add_future(self.audiences.evaluate(partition, batch_id, self._owns))

    def _flow_if_changed(self) -> None:
        """Called on every queue change (cheap); wakes the ticker when the wanted pauses changed."""
        if self.dispatcher.wanted_pauses() != self._last_wanted:
            self._wake.set()

    async def _flow(self) -> None:
        """Pause fetching the partitions of priorities that should wait; resume the others.

        A priority waits while its in-memory queue is full, or while a higher priority has work
        queued in memory or unread in Kafka (streamapp.kafka.flow says why both).
        """
        queued = self.dispatcher.wanted_pauses()
        self._last_wanted = queued
        ranked = [self.topics[p] for p in PRIORITIES]
        await self.kafka.pause_by_priority(ranked, {self.topics[p] for p in queued}, set(self.owned))

    # -- metrics -----------------------------------------------------------------

    async def _gauges(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(1.0)
            try:
                await self._update_gauges()
            except Exception:
                log.debug("queue gauges not updated", exc_info=True)

    async def _update_gauges(self) -> None:
        """Per worker, over its partitions: `ready` (unread records + in-memory queue), `scheduled`, `deferred`.

        Unread records are end offsets (asked from the broker: a paused partition's cached
        high-water mark is stale) minus the next offset this worker has not seen yet.
        """
        if not self.kafka.is_ready():
            return
        tps = [tp for tp in self.offsets.next if tp.partition in self.owned]
        ends = await self.kafka.end_offsets((tp.topic, tp.partition) for tp in tps)
        waiting = waiting_counts(self.ledger, self.owned)
        now = datetime.now(UTC)
        for priority, topic in self.topics.items():
            unread = sum(
                max(0, ends.get((tp.topic, tp.partition), 0) - self.offsets.next[tp]) for tp in tps if tp.topic == topic
            )
            queue = self.dispatcher.queues[priority]
            metrics.QUEUE_DEPTH.labels(priority, "ready").set(unread + len(queue))
            for state in ("scheduled", "deferred"):
                metrics.QUEUE_DEPTH.labels(priority, state).set(waiting[priority, state])
            oldest = (now - clock.parse_time(queue[0].command.enqueuedAt)).total_seconds() if queue else 0.0
            metrics.OLDEST_QUEUED_AGE.labels(priority).set(max(0.0, oldest))
