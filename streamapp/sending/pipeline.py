"""One message, from the ledger check to its recorded outcome (SPEC §6).

Order: ledger (already final: skip, so a redelivered event sends nothing), not-before (too
early: scheduled), recipient (unknown: failed; not created yet by the upsert its request
published: deferred), suppression (bounced always; unsubscribed unless
the trigger is transactional), render (an undefined variable fails the message, naming it),
MIME, SMTP, then the recipient commands (bounces, soft-bounce counts, the engagement history of SPEC
§8: `mail.bounced`) and the ledger row; a sent message's `mail.sent` record goes out in bulk with
other messages' after its ledger row (streamapp.sending.engagement).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from streamapp import metrics
from streamapp.core import clock
from streamapp.core.engagement import engagement
from streamapp.core.keys import recipient_key
from streamapp.core.models import (
    FINAL_STATUSES,
    WAITING_STATUSES,
    AppendHistory,
    MessageState,
    Recipient,
    RecipientCommand,
    SendMessage,
    SmtpReply,
    SoftBounce,
    UpsertRecipient,
    decode_history,
    decode_recipient,
)
from streamapp.core.rules import SOFT_BOUNCE_LIMIT
from streamapp.kafka.store import Store
from streamapp.mail import links
from streamapp.mail.mime import MimeBuilder, MimeError
from streamapp.mail.smtp import SmtpOutcome
from streamapp.mail.templates import RenderError, TemplateStore
from streamapp.mail.tracking import TrackedMessage
from streamapp.mail.unsubscribe import make_token
from streamapp.sending import retry
from streamapp.sending.engagement import Ackable, EngagementPublisher
from streamapp.sending.ledger import Ledger
from streamapp.sending.tracking import TrackingPolicy
from streamapp.settings import KeyRing, SmtpSettings

log = logging.getLogger(__name__)

#: A message enqueued less than this long ago waits for its recipient to be created...
UNKNOWN_RECIPIENT_GRACE = 10.0
#: ...polling the recipients table (a local RocksDB read) this often, this many times (3 s in all):
#: a message and the upsert that creates its recipient are usually a few milliseconds apart.
UNKNOWN_RECIPIENT_POLL_SECONDS = 0.01
UNKNOWN_RECIPIENT_POLLS = 300
#: A message whose request upserted its recipient, still without it after the wait, is retried
#: this often, without waiting again, until this long after the first miss: then it fails (the
#: recipient was deleted meanwhile, or the upsert was lost).
LATE_RECIPIENT_RETRY = 1.0
LATE_RECIPIENT_LIMIT = 300.0


@dataclass(slots=True)
class Job:
    """A message to process on `partition`; `event` (from Kafka) is acked once it is recorded."""

    command: SendMessage
    partition: int
    event: Ackable | None = None
    released: bool = False  # taken from the schedule (scheduled or deferred before)
    queued_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Outcome:
    status: str
    reason: str | None = None
    reply: SmtpOutcome | None = None


Send = Callable[[str, str, bytes], Awaitable[SmtpOutcome]]
Publish = Callable[[list[RecipientCommand]], Awaitable[None]]


class Pipeline:
    """Everything one message needs; shared by all sender tasks of a worker."""

    def __init__(
        self,
        *,
        smtp: SmtpSettings,
        public_url: str,
        ledger: Ledger,
        recipients: Store,
        history: Store,
        templates: TemplateStore,
        builder: MimeBuilder,
        send: Send,
        publish: Publish,
        secret: KeyRing,
        schedule: Callable[[MessageState, int], None],
        cancelled: Callable[[int, str | None], bool] = lambda partition, batch_id: False,
        tracking: TrackingPolicy | None = None,
        sign: Callable[[bytes], bytes] | None = None,
        return_path: Callable[[str], str] | None = None,
    ) -> None:
        self.smtp = smtp
        self.public_url = public_url
        self.ledger = ledger
        self.recipients = recipients
        self.history = history
        self.templates = templates
        self.builder = builder
        self.send = send
        self.publish = publish
        self.engagement = EngagementPublisher(publish)
        self.secret = secret
        self.schedule = schedule
        #: Whether the batch was cancelled in this partition (streamapp.sending.cancel): asked before a message is
        #: recorded and again right before SMTP.
        self.cancelled = cancelled
        self.tracking = tracking or TrackingPolicy.off()
        #: DKIM (streamapp.mail.dkim): OpenSSL releases the GIL, so it runs in a thread, off the event loop.
        self.sign = sign
        #: The envelope sender of a message id (VERP, streamapp.mail.verp); None: `[smtp] sender` for all.
        self.return_path = return_path

    async def run(self, job: Job) -> None:
        """Process and record one message; the caller acks the job's event afterwards, unless the pipeline
        took it over (`job.event` is then None: the bulk publisher acks it with the message's record)."""
        previous = self.ledger.get(job.partition, job.command.messageId)
        if previous is not None and (previous.status in FINAL_STATUSES or not job.released):
            if previous.status == "sent" and job.event is not None:  # read again: its record may be lost
                self.engagement.add([sent_record(job.command, previous.updatedAt)], job.event)
                job.event = None
            return  # done before, or scheduled/deferred and owned by the schedule
        now = datetime.now(UTC)
        if self.cancelled(job.partition, job.command.batchId):
            await self._record(job, previous, Outcome("failed", "cancelled"), now)
            return
        if job.command.notBefore and clock.parse_time(job.command.notBefore) > now:
            await self._record(job, previous, Outcome("scheduled"), now)
            return
        outcome, recipient = await self._deliver(job, now)
        await self._recorded(job, previous, outcome, recipient, datetime.now(UTC))

    async def _recorded(
        self, job: Job, previous: MessageState | None, outcome: Outcome, recipient: Recipient | None, done: datetime
    ) -> None:
        """Publish the recipient commands of the outcome and write the ledger row.

        A bounce goes first: a crash in between re-sends nothing (the recipient is then bounced and the
        replayed message suppressed) instead of losing the bounce. Engagement history alone (the common
        case, `mail.sent` of a message read from Kafka) goes to the bulk publisher after the ledger row,
        with the message's event: the event is acked once the record is in Kafka (`job.event` is handed
        over, so the engine's ack is a no-op), and a crash before that is a replayed event that finds the
        ledger row `sent` and publishes the record again (`run`). A message of the schedule has no event
        to hold back: its record is published first, like a bounce.
        """
        reply, at = outcome.reply, clock.iso(done)
        effects = recipient_effects(job.command, reply, recipient, at) if recipient and reply else []
        if effects and job.event is not None and all(isinstance(c, AppendHistory) for c in effects):
            await self._record(job, previous, outcome, done)
            self.engagement.add(effects, job.event)
            job.event = None
            return
        if effects:
            await self.publish(effects)
        await self._record(job, previous, outcome, done)

    async def _deliver(self, job: Job, now: datetime) -> tuple[Outcome, Recipient | None]:
        command = job.command
        key = recipient_key(command.database, command.originalId)
        raw = await self._recipient(job, key, now)
        if raw is None and command.upserted:  # looked at again every second: its upsert is on the way
            return Outcome("deferred", "recipient not created yet"), None
        if raw is None:
            return Outcome("failed", "unknown recipient"), None
        recipient = decode_recipient(raw)
        suppressed = _suppression(recipient, command)
        if suppressed:
            return Outcome("suppressed", suppressed), recipient
        address = command.email or recipient.email
        if not address:
            return Outcome("failed", "recipient has no e-mail address"), recipient
        try:
            data = self._build(command, recipient, address, job.partition, key)
        except (RenderError, MimeError, KeyError) as exc:
            return Outcome("failed", str(exc).strip("'\"")), recipient
        if self.sign is not None:
            data = await asyncio.to_thread(self.sign, data)
        if self.cancelled(job.partition, command.batchId):  # cancelled while it waited for its recipient
            return Outcome("failed", "cancelled"), recipient
        envelope = self.return_path(command.messageId) if self.return_path else self.smtp.sender
        reply = await self.send(envelope, address, data)
        metrics.SMTP_REPLIES.labels(reply.reply_class).inc()
        if kind := bounce_kind(reply):
            metrics.BOUNCES.labels(kind, "smtp").inc()
        return Outcome(reply.kind, reply.text if reply.kind != "sent" else None, reply), recipient

    def _build(self, command: SendMessage, recipient: Recipient, address: str, partition: int, key: bytes) -> bytes:
        history_raw = self.history.get(partition, key)
        history = msgspec.to_builtins(decode_history(history_raw)) if history_raw is not None else []
        attributes = recipient.attributes
        if command.attributes:  # null clears, as in the upsert
            attributes = {k: v for k, v in {**attributes, **command.attributes}.items() if v is not None}
        view = {
            "originalId": recipient.originalId,
            "email": address,
            "status": recipient.status,
            "attributes": attributes,
        }
        about = {"messageId": command.messageId, "priority": command.priority}
        rendered = self.templates.render(command.template, view, command.properties, history, about)
        token = make_token(self.secret.signing, command.database, command.originalId, command.messageId)
        return self.builder.build(
            message_id=command.messageId,
            to=address,
            subject=rendered.subject,
            text=rendered.text,
            html=self._tracked(command, rendered.html),
            unsubscribe_url=f"{self.public_url}/u/{token}",
        )

    def _tracked(self, command: SendMessage, html: str) -> str:
        """`html` with its links through the click redirect and the open pixel, as the message tracks them."""
        opens, clicks = self.tracking.for_message(command)
        if not (opens or clicks):
            return html
        message = TrackedMessage(command.database, command.originalId, command.messageId, command.name or "")
        return links.tracked(html, base=self.public_url, key=self.secret.signing, message=message, opens=opens,
                             clicks=clicks, issued=time.time())  # fmt: skip

    async def _record(self, job: Job, previous: MessageState | None, outcome: Outcome, now: datetime) -> MessageState:
        state = next_state(self.smtp, job.command, previous, outcome, now)
        await self.ledger.put(job.partition, state)
        if state.status in WAITING_STATUSES:
            self.schedule(state, job.partition)
        metrics.MESSAGES.labels(priority=state.priority, outcome=state.status).inc()
        return state

    async def _recipient(self, job: Job, key: bytes, now: datetime) -> bytes | None:
        """The recipient's row; a fresh message, or one whose request upserted it, waits briefly for it.

        The API creates an unknown recipient and enqueues its message at once, on two topics
        that different agents consume: the message may arrive first by a few milliseconds, or
        by more when a restarted worker catches up on both topics.
        """
        command = job.command
        raw = self.recipients.get(job.partition, key)
        fresh = (now - clock.parse_time(command.enqueuedAt)).total_seconds() < UNKNOWN_RECIPIENT_GRACE
        waits = (fresh or command.upserted) and not job.released  # a retry only looks again
        for _ in range(UNKNOWN_RECIPIENT_POLLS if waits else 0):
            if raw is not None:
                break
            await asyncio.sleep(UNKNOWN_RECIPIENT_POLL_SECONDS)
            raw = self.recipients.get(job.partition, key)
        return raw


def recipient_effects(
    command: SendMessage, reply: SmtpOutcome, recipient: Recipient, at: str
) -> list[RecipientCommand]:
    """Hard bounce: the recipient is bounced; soft bounce: counted (the fifth in a row bounces it);
    delivery: the count resets. Sent and bounced messages are recorded as engagement history, one record
    per message and type (streamapp.core.engagement), so a message sent again after a crash adds none."""
    database, original_id = command.database, command.originalId
    commands: list[RecipientCommand] = []
    bounced = False
    kind = bounce_kind(reply)
    if kind == "hard":
        # ifExists: a bounce arriving after an erase must not recreate the recipient
        commands.append(
            UpsertRecipient(database=database, originalId=original_id, at=at, status="bounced", ifExists=True)
        )
        bounced = True
    elif kind == "soft":
        commands.append(SoftBounce(database=database, originalId=original_id, at=at, action="inc"))
        bounced = recipient.softBounces + 1 >= SOFT_BOUNCE_LIMIT and recipient.status != "bounced"
    elif reply.kind == "sent" and recipient.softBounces:
        commands.append(SoftBounce(database=database, originalId=original_id, at=at, action="reset"))
    if reply.kind == "sent":
        commands.append(sent_record(command, at))
    elif bounced:
        commands.append(
            engagement("mail.bounced", database=database, original_id=original_id, message_id=command.messageId,
                       name=command.name, at=at)
        )  # fmt: skip
    return commands


def bounce_kind(reply: SmtpOutcome) -> Literal["hard", "soft"] | None:
    """A refusal of the recipient (5xx after MAIL) is a hard bounce; a 4xx to RCPT or DATA a soft one;
    connection errors and refusals of the sender are neither (the recipient is not at fault)."""
    if reply.kind == "failed" and reply.recipient_fault:
        return "hard"
    if reply.kind == "deferred" and reply.code is not None and reply.stage in ("rcpt", "data"):
        return "soft"
    return None


def sent_record(command: SendMessage, at: str) -> AppendHistory:
    """The `mail.sent` record of a message accepted at `at` (its ledger row's updatedAt)."""
    return engagement("mail.sent", database=command.database, original_id=command.originalId,
                      message_id=command.messageId, name=command.name, at=at)  # fmt: skip


def _suppression(recipient: Recipient, command: SendMessage) -> str | None:
    if recipient.status == "bounced":
        return "recipient bounced"
    if recipient.status == "unsubscribed" and not command.transactional:
        return "recipient unsubscribed"
    return None


def next_state(
    smtp: SmtpSettings, command: SendMessage, previous: MessageState | None, outcome: Outcome, now: datetime
) -> MessageState:
    """The ledger row after `outcome`: pure, so the retry and expiry rules are unit-tested."""
    attempts = (previous.attempts if previous else 0) + (1 if outcome.reply is not None else 0)
    status, reason, next_at = outcome.status, outcome.reason, None
    created = previous.createdAt if previous else command.enqueuedAt
    late_since = None
    if status == "deferred" and outcome.reply is None:  # recipient not created yet: retried soon, for a while
        late_since = previous.lateSince if previous and previous.lateSince else clock.iso(now)
        if (now - clock.parse_time(late_since)).total_seconds() > LATE_RECIPIENT_LIMIT:
            status, reason = "failed", f"unknown recipient (not created within {LATE_RECIPIENT_LIMIT:.0f} s)"
        else:
            next_at = clock.iso(now + timedelta(seconds=LATE_RECIPIENT_RETRY))
    elif status == "deferred":
        if retry.expired(smtp, created, now):
            status, reason = "failed", f"expired after {attempts} attempt(s): {outcome.reason}"
        else:
            next_at = clock.iso(retry.next_attempt(smtp, attempts, now))
    elif status == "scheduled":
        next_at = command.notBefore
    reply = outcome.reply
    last_reply = SmtpReply(code=reply.code, text=reply.text) if reply else (previous.lastReply if previous else None)
    return MessageState(
        messageId=command.messageId,
        database=command.database,
        originalId=command.originalId,
        priority=command.priority,
        status=status,  # type: ignore[arg-type]
        attempts=attempts,
        lastReply=last_reply,
        reason=reason,
        createdAt=created,
        updatedAt=clock.iso(now),
        nextAttemptAt=next_at,
        batchId=command.batchId,
        lateSince=late_since,
        command=command if status in WAITING_STATUSES else None,
        name=command.name,
        engaged=["bounced"] if status == "failed" and reply is not None and reply.recipient_fault else [],
    )
