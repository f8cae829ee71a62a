"""Records that travel on topics and live in tables.

msgspec structs encoded as MessagePack: about ten times cheaper per event
than faust.Record on the hot paths (batch upserts, imports), and one codec for
events, table values and API bodies.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

Status = Literal["active", "inactive", "unsubscribed", "bounced"]
#: The values of `Status`, for checks and schemas (the Literal is the one place they are spelled).
STATUSES: tuple[str, ...] = get_args(Status)
Priority = Literal["transactional", "batch", "campaign"]
PRIORITIES: tuple[Priority, ...] = ("transactional", "batch", "campaign")
#: Statuses an upsert without an explicit status never leaves.
STICKY_STATUSES: frozenset[str] = frozenset({"unsubscribed", "bounced"})


class Recipient(msgspec.Struct, kw_only=True):
    """One recipient of one database, as stored in the recipients table."""

    originalId: str
    email: str | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
    status: Status = "active"
    softBounces: int = 0
    createdAt: str
    updatedAt: str
    #: Position of the last command applied (partition offset and index in its
    #: chunk). After a crash, commands after the committed offset are replayed
    #: over a table that may already hold their effects; an older command is
    #: then skipped instead of undoing a newer one. Not shown by the API.
    seq: int = 0

    def public(self) -> dict[str, Any]:
        """The recipient as the API shows it."""
        view = msgspec.structs.asdict(self)
        del view["seq"]
        return view


class HistoryRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One typed activity of a recipient; a negative quantity is a credit.

    `id` is given at ingress (random for the API, derived from file and line
    for imports), so a command applied twice after a crash adds it once.
    """

    id: str
    type: str
    time: str
    sku: str | None = None
    price: float | None = None
    quantity: float | None = None
    total: float | None = None
    fields: dict[str, str] = msgspec.field(default_factory=dict)


class UpsertRecipient(msgspec.Struct, tag="upsert", kw_only=True, omit_defaults=True):
    """Create or update; only the fields carried are touched (UNSET = not carried)."""

    database: str
    originalId: str
    at: str  # ingress time: replaying the command gives the same result
    email: str | msgspec.UnsetType | None = msgspec.UNSET
    attributes: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET
    status: Status | msgspec.UnsetType = msgspec.UNSET
    #: Replace imports: an `inactive` recipient present in the file is active again.
    reactivate: bool = False
    #: Trigger messages: the address a recipient created by this command gets; an existing
    #: recipient keeps its own (the message itself goes to this address).
    emailIfNew: str | None = None
    #: Trigger messages without saveProps: create an unknown recipient, change nothing else.
    createOnly: bool = False
    #: Unsubscribe links: change an existing recipient only; an absent one (erased, or never created)
    #: stays absent. Checked where the command is applied, so no erase can slip in between.
    ifExists: bool = False


class SweepInactive(msgspec.Struct, tag="sweep", kw_only=True):
    """After a replace import: active recipients of the database not written
    since `before` (the import's time) become inactive. Sent to every partition,
    after the import's upserts, so it runs once they are applied."""

    database: str
    before: str


class DeleteRecipient(msgspec.Struct, tag="delete", kw_only=True):
    """Erase the recipient and its history."""

    database: str
    originalId: str


class AppendHistory(msgspec.Struct, tag="history", kw_only=True):
    """Add activity records to one recipient's history."""

    database: str
    originalId: str
    records: list[HistoryRecord]
    #: Engagement records (streamapp.core.engagement): only for a recipient that exists where the command is
    #: applied, so a send, bounce or unsubscribe link after an erase leaves no history behind.
    ifExists: bool = False


class EraseIdempotency(msgspec.Struct, tag="eraseidem", kw_only=True):
    """Erase a recipient's idempotency records kept in one partition (SPEC §3): the API sends it to
    every partition with the recipient's DeleteRecipient, since a record lives in its key's partition."""

    database: str
    originalId: str


class SoftBounce(msgspec.Struct, tag="softbounce", kw_only=True):
    """Sending outcome for a recipient: a soft bounce ("inc") or a delivery after some ("reset").

    Published by the send engine to the recipient-commands topic, so the one writer of the
    recipients table keeps counting in order; five in a row make the recipient bounced
    (streamapp.core.rules.apply_soft_bounce).
    """

    database: str
    originalId: str
    at: str
    action: Literal["inc", "reset"]


class RowError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A row of a batch that was not sent: where it is (line of NDJSON/CSV, item of a JSON array) and why."""

    reason: str
    line: int | None = None
    item: int | None = None


class BatchInfo(msgspec.Struct, tag="batch", kw_only=True, omit_defaults=True):
    """What a batch send (trigger batch, campaign) accepted; stored in the `batches` table.

    Published once every row's messages are acknowledged, to the partition its id names
    (streamapp.core.ids), and stored there by the recipient-commands agent. Its messages'
    outcomes are counted from the ledger (their ids start with the batch id).
    """

    batchId: str
    database: str
    kind: Literal["trigger", "campaign"]
    name: str
    priority: Priority
    source: str  # "api" or the file name
    total: int  # messages accepted
    rejected: int = 0
    errors: list[RowError] = msgspec.field(default_factory=list)
    errorsNotListed: int = 0
    ignoredColumns: list[str] = msgspec.field(default_factory=list)
    sendTime: str | None = None
    createdAt: str
    #: An audience send (SPEC §9): to this segment's active members as of `sendTime`; `total` is unknown
    #: (0 here) until every partition evaluated it (streamapp.sending.audience).
    segment: str | None = None

    def public(self) -> dict[str, Any]:
        """The batch as GET /api/v1/batches/{batchId} shows it (without the command tag)."""
        view: dict[str, Any] = msgspec.to_builtins(self)
        view.pop("type", None)
        return view


class SegmentTick(msgspec.Struct, tag="segtick", kw_only=True):
    """Segment work is due in this partition (flips, a build slice): the timer publishes it to the
    partition so the agent, the partition's one writer, does the work (streamapp.segments.engine).
    It carries nothing to apply: a replayed tick does what is due when it is read again."""

    at: str


RecipientCommand = UpsertRecipient | DeleteRecipient | AppendHistory | SoftBounce
Command = RecipientCommand | SweepInactive | BatchInfo | EraseIdempotency | SegmentTick


class CommandBatch(msgspec.Struct):
    """Commands for recipients of one partition, applied in order.

    One Kafka event carries many rows so that a batch upsert or an import
    costs one event per partition, not one per row.
    """

    commands: list[Command]


_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(CommandBatch)
_recipient_decoder = msgspec.msgpack.Decoder(Recipient)
_history_decoder = msgspec.msgpack.Decoder(list[HistoryRecord])


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_batch(data: bytes) -> CommandBatch:
    return _batch_decoder.decode(data)


def decode_recipient(data: bytes) -> Recipient:
    return _recipient_decoder.decode(data)


def decode_history(data: bytes) -> list[HistoryRecord]:
    return _history_decoder.decode(data)


# -- sending (streamapp.sending) ------------------------------------------------

MessageStatus = Literal["scheduled", "queued", "sent", "deferred", "failed", "suppressed", "bounced"]
MESSAGE_STATUSES: tuple[str, ...] = get_args(MessageStatus)
#: A message in one of these states is never sent again (`bounced`: sent, then a bounce report came back).
FINAL_STATUSES: frozenset[str] = frozenset({"sent", "failed", "suppressed", "bounced"})
#: A message in one of these states keeps its command in the ledger, waiting for the schedule.
WAITING_STATUSES: frozenset[str] = frozenset({"scheduled", "deferred"})


ReportKind = Literal["hard", "soft", "complaint"]
ReportSource = Literal["dsn", "webhook"]


class BounceNotice(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A bounce or complaint about a message that was sent (SPEC §11), learnt after the relay's 250."""

    kind: ReportKind
    source: ReportSource
    at: str
    reason: str | None = None


class SendMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Command: send one e-mail to one recipient (topic <id>-messages-<priority>).

    `messageId` carries the partition it was sent to (streamapp.core.ids), which is the
    recipient's partition, so the ledger row and the recipient live on the same worker.
    """

    messageId: str
    database: str
    originalId: str
    priority: Priority
    template: str
    #: The trigger or campaign that sent it: the `sku` of its engagement history (SPEC §8). None in
    #: messages enqueued before the field existed.
    name: str | None = None
    #: The trigger's flag: may reach an unsubscribed recipient (never a bounced one).
    transactional: bool = False
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    email: str | None = None  # overrides the recipient's address
    #: Values the same request wrote to the recipient (batch rows, saveProps): rendered even if
    #: the recipient's upsert, on another topic, is applied after this message is read.
    attributes: dict[str, Any] | None = None
    batchId: str | None = None
    notBefore: str | None = None  # UTC ISO 8601: not sent earlier
    #: The request published an upsert of the recipient before this message: a missing
    #: recipient is late (its upsert not applied yet), never unknown.
    upserted: bool = False
    enqueuedAt: str
    #: Not an e-mail: the audience send of `batchId` for this partition, to this segment's members
    #: (streamapp.sending.audience); the other fields are what each member's message gets.
    audience: str | None = None
    #: Not an e-mail: a bounce or complaint about message `messageId`, for the owner of its ledger row
    #: (streamapp.sending.reports); `database` and `originalId` are empty, the row has them.
    report: BounceNotice | None = None


class SmtpReply(msgspec.Struct, kw_only=True):
    code: int | None
    text: str


class MessageState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Ledger row of one message (table `messages`, keyed by messageId).

    `command` is kept while the message may still be sent (scheduled, deferred) so the retry
    timer can send it again after a restart, and dropped once the status is final.
    """

    messageId: str
    database: str
    originalId: str
    priority: Priority
    status: MessageStatus
    attempts: int = 0
    lastReply: SmtpReply | None = None
    reason: str | None = None
    createdAt: str
    updatedAt: str
    nextAttemptAt: str | None = None
    batchId: str | None = None
    #: When the message first found its recipient not created yet (streamapp.sending.pipeline).
    lateSince: str | None = None
    command: SendMessage | None = None
    #: The trigger or campaign that sent it (SendMessage.name): whose campaign report counts it.
    name: str | None = None
    #: What became of it after the relay took it (SPEC §8), each at most once: `opened` (a human open),
    #: `machine` (an open by a prefetcher), `clicked`, `bounced`, `complained`, `unsubscribed`. The
    #: batch and campaign counts follow it (streamapp.sending.ledger), so a repeat counts nothing.
    engaged: list[str] = msgspec.field(default_factory=list)
    #: Digests of the URLs clicked (streamapp.sending.tracking): a click on another link is recorded too.
    clicks: list[str] = msgspec.field(default_factory=list)

    def waiting(self) -> bool:
        """Still to be sent by the schedule (scheduled or deferred, command kept)."""
        return self.status in WAITING_STATUSES and self.command is not None

    def public(self) -> dict[str, Any]:
        """The message as GET /api/v1/messages/{messageId} shows it."""
        view = msgspec.to_builtins(self)
        view.pop("command", None)
        return view  # type: ignore[no-any-return]


class IdempotencyRecord(msgspec.Struct, kw_only=True):
    """A single trigger message sent with an idempotency key (table `idempotency`).

    Written before the message is published and marked `published` after Kafka acknowledged
    it: a retry after a crash in between publishes the same message (same id) again, which the
    ledger makes harmless, instead of losing it or sending a second one.
    """

    bodyHash: str
    messageId: str
    createdAt: str
    published: bool = False
    upsert: UpsertRecipient
    message: SendMessage


_send_decoder = msgspec.msgpack.Decoder(SendMessage)
_idempotency_decoder = msgspec.msgpack.Decoder(IdempotencyRecord)
_batch_info_decoder = msgspec.msgpack.Decoder(BatchInfo)
_state_decoder = msgspec.msgpack.Decoder(MessageState)


def decode_send(data: bytes) -> SendMessage:
    return _send_decoder.decode(data)


def decode_state(data: bytes) -> MessageState:
    return _state_decoder.decode(data)


def decode_idempotency(data: bytes) -> IdempotencyRecord:
    return _idempotency_decoder.decode(data)


def decode_batch_info(data: bytes) -> BatchInfo:
    return _batch_info_decoder.decode(data)
