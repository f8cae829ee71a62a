"""Reads and durable writes of the message ledger (table `messages`), and its bookkeeping rows.

A write returns only once Kafka acknowledged the changelog record. That is what bounds the
duplicates after a crash: a sender takes its next message only after the outcome of the last one
is in the changelog, so at most one accepted-but-unrecorded message per sender task can be sent
again by the worker that takes the partition over (docs/sending.md).

Beside the message rows (keyed by message id, which starts with a digit), each partition holds
bookkeeping rows under `~`, kept up to date by every `put` in the same RocksDB write and the same
changelog record batch (streamapp.kafka.ordered), so they never disagree with the rows, on this
worker or on a replica restored from the changelog:

- `~b<batchId>`: how many of the batch's messages in this partition have each status, so a batch's
  status costs one read per partition, not a scan of its rows (`batch_counts`), and how many were
  opened, clicked, bounced, ... (`engaged`, SPEC §8);
- `~c<database>/<campaign>`: the same for every message of a campaign in this partition, for its
  report (`campaign_counts`); kept as long as the ledger (a few bytes per campaign);
- `~d<due ms, 13 digits><messageId>`: the due-time index of the rows that may still be sent
  (scheduled, deferred), read in due order by the schedule a window at a time (`due_entries`);
- `~w`: how many rows of each priority and waiting status wait, keyed `<priority>/<status>` (the
  queue-depth gauge's `scheduled` and `deferred` states);
- `~j`: the partition's bookkeeping is complete (written once, after `prepare` rebuilt it from the
  rows of a ledger older than the bookkeeping; `~i` marked the bookkeeping before `~w` had statuses).

A `put` derives the changes from the row it replaces (old status → new status, engagement marks the
old row lacked), so a status or a mark written twice (a replayed event, a message released twice, a
second open of the same message) counts once. Rows removed by retention
are not uncounted: a batch's counts keep summing to its total for as long as the batch is kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

import msgspec

from streamapp.core import clock
from streamapp.core.ids import batch_prefix
from streamapp.core.models import WAITING_STATUSES, MessageState, Priority, decode_state, encode
from streamapp.kafka.ordered import OrderedWriter
from streamapp.kafka.store import Store

log = logging.getLogger(__name__)

#: Every bookkeeping row's key starts with this (message ids start with a digit).
BOOKKEEPING = b"~"
COUNTS = b"~b"
CAMPAIGNS = b"~c"
DUE = b"~d"
WAITING = b"~w"
COMPLETE = b"~j"
_DUE_DIGITS = 13
#: Clicked URLs a row remembers (their digests); clicks on more links still record their history once each.
MAX_CLICKS = 32


class _Row(msgspec.Struct):
    """What the bookkeeping needs of a ledger row (the command is not decoded)."""

    database: str
    status: str
    priority: str = "campaign"
    nextAttemptAt: str | None = None
    batchId: str | None = None
    #: Undecoded: only whether there is one matters (MessagePack nil, or absent, is none).
    command: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    name: str | None = None
    engaged: list[str] = msgspec.field(default_factory=list)

    @property
    def has_command(self) -> bool:
        return bytes(self.command) not in (b"", b"\xc0")


class _StatusOnly(msgspec.Struct):
    database: str
    status: str


class BatchCounts(msgspec.Struct, omit_defaults=True):
    """A batch's (`~b`) or a campaign's (`~c`) messages in one partition: by status, by engagement mark
    (MessageState.engaged), and when they last changed."""

    database: str
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    updatedAt: str = ""
    engaged: dict[str, int] = msgspec.field(default_factory=dict)


_row = msgspec.msgpack.Decoder(_Row)
_status_only = msgspec.msgpack.Decoder(_StatusOnly)
_batch_counts = msgspec.msgpack.Decoder(BatchCounts)
_waiting = msgspec.msgpack.Decoder(dict[str, int])


def counts_key(batch_id: str) -> bytes:
    return COUNTS + batch_id.encode()


def campaign_key(database: str, campaign: str) -> bytes:
    return CAMPAIGNS + f"{database}/{campaign}".encode()


def _campaign_of(row: _Row | MessageState, name: str | None = None) -> bytes | None:
    """The `~c` row a message counts in: campaign messages that know their campaign (`name`: the row's own,
    else the one its previous row knew, so a scrubbed row keeps counting where it did)."""
    name = row.name or name
    return campaign_key(row.database, name) if row.priority == "campaign" and name else None


def due_key(due_ms: int, message_id: str) -> bytes:
    return DUE + f"{max(0, due_ms):0{_DUE_DIGITS}d}".encode() + message_id.encode()


def due_bound(due_ms: int) -> bytes:
    """The first index key of `due_ms`: keys below it are due earlier."""
    return DUE + f"{max(0, due_ms):0{_DUE_DIGITS}d}".encode()


def due_of(key: bytes) -> tuple[float, str]:
    """(due time in Unix seconds, message id) of an index key."""
    digits = key[len(DUE) : len(DUE) + _DUE_DIGITS]
    return int(digits) / 1000, key[len(DUE) + _DUE_DIGITS :].decode()


def _index_key(row: _Row | MessageState, message_id: str) -> bytes | None:
    """The row's due-index key, None when it will not be sent again."""
    if row.status not in WAITING_STATUSES or not (row.has_command if isinstance(row, _Row) else row.command):
        return None
    due = clock.parse_time(row.nextAttemptAt).timestamp() if row.nextAttemptAt else 0.0
    return due_key(int(due * 1000), message_id)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer = OrderedWriter(store)

    def get(self, partition: int, message_id: str) -> MessageState | None:
        raw = self.store.get(partition, message_id.encode())
        return decode_state(raw) if raw is not None else None

    async def put(self, partition: int, state: MessageState) -> None:
        """Write the row and its bookkeeping locally, then wait for the changelog's acknowledgement."""
        key = state.messageId.encode()
        old_raw = self.store.get(partition, key)
        old = _row.decode(old_raw) if old_raw is not None else None
        rows: dict[bytes, bytes | None] = {key: encode(state)}
        rows.update(self._bookkeeping(partition, state.messageId, old, state))
        await self.writer.write(partition, rows)

    async def engage(self, partition: int, message_id: str, mark: str, click: str | None = None) -> bool:
        """Give the message's row engagement `mark` (and a clicked URL's digest); False when the row is absent
        or has both already. Read and written without a pause, so two hits at once count once."""
        state = self.get(partition, message_id)
        if state is None:
            return False
        marks = state.engaged if mark in state.engaged else [*state.engaged, mark]
        clicks = state.clicks
        if click is not None and click not in clicks and len(clicks) < MAX_CLICKS:
            clicks = [*clicks, click]
        if marks is state.engaged and clicks is state.clicks:
            return False
        await self.put(partition, msgspec.structs.replace(state, engaged=marks, clicks=clicks))
        return True

    def _bookkeeping(
        self, partition: int, message_id: str, old: _Row | None, new: MessageState
    ) -> dict[bytes, bytes | None]:
        """The bookkeeping rows that change when `old` (None: no row yet) becomes `new`."""
        rows: dict[bytes, bytes | None] = {}
        was = old.status if old else None
        marks = [mark for mark in new.engaged if old is None or mark not in old.engaged]
        if was != new.status or marks:
            tallied = [counts_key(new.batchId) if new.batchId else None, _campaign_of(new, old.name if old else None)]
            for key in filter(None, tallied):
                rows[key] = self._count(partition, key, new.database, was, new.status, marks)
        before, after = (_index_key(old, message_id) if old else None), _index_key(new, message_id)
        if before != after:
            if before is not None:
                rows[before] = None
            if after is not None:
                rows[after] = new.priority.encode()
        left = _waiting_key(old) if old and before else None
        joined = _waiting_key(new) if after else None
        if left != joined:
            rows.update(self._wait(partition, left, joined))
        return rows

    def _count(self, partition: int, key: bytes, database: str, old: str | None, new: str, marks: list[str]) -> bytes:
        """The counters row `key` after a message went from status `old` to `new` and got `marks`."""
        raw = self.store.get(partition, key)
        row = _batch_counts.decode(raw) if raw is not None else BatchCounts(database)
        if old != new:
            if old is not None and row.counts.get(old, 0) > 0:
                row.counts[old] -= 1
            row.counts[new] = row.counts.get(new, 0) + 1
            row.counts = {status: n for status, n in row.counts.items() if n}
        for mark in marks:
            row.engaged[mark] = row.engaged.get(mark, 0) + 1
        row.updatedAt = clock.now_iso()
        return encode(row)

    def _wait(self, partition: int, leaves: str | None, joins: str | None) -> dict[bytes, bytes]:
        """The waiting counts when a row stops (`leaves`) or starts (`joins`) waiting, by `<priority>/<status>`."""
        raw = self.store.get(partition, WAITING)
        counts = _waiting.decode(raw) if raw is not None else {}
        if leaves is not None and counts.get(leaves, 0) > 0:
            counts[leaves] -= 1
        if joins is not None:
            counts[joins] = counts.get(joins, 0) + 1
        return {WAITING: encode({key: n for key, n in counts.items() if n})}

    # -- reads of the bookkeeping ---------------------------------------------------------------

    def count_batch(self, partition: int, batch_id: str, database: Callable[[str], bool]) -> Counter[str]:
        """Statuses of a batch's messages in this partition (its `~b` row: one read), if `database(name)`
        holds for the batch's database."""
        raw = self.store.get(partition, counts_key(batch_id))
        if raw is None:
            return Counter()
        row = _batch_counts.decode(raw)
        return Counter(row.counts) if database(row.database) else Counter()

    def engaged_batch(self, partition: int, batch_id: str, database: Callable[[str], bool]) -> Counter[str]:
        """Messages of a batch in this partition with each engagement mark (opened, clicked, ...): one read."""
        raw = self.store.get(partition, counts_key(batch_id))
        if raw is None:
            return Counter()
        row = _batch_counts.decode(raw)
        return Counter(row.engaged) if database(row.database) else Counter()

    def campaign_counts(self, partition: int, database: str, campaign: str) -> BatchCounts | None:
        """A campaign's messages in this partition, by status and by engagement mark (its `~c` row)."""
        raw = self.store.get(partition, campaign_key(database, campaign))
        return _batch_counts.decode(raw) if raw is not None else None

    def scan_batch(self, partition: int, batch_id: str, database: Callable[[str], bool]) -> Counter[str]:
        """The same counted from the batch's rows (one key range): the reference `count_batch` keeps to."""
        counts: Counter[str] = Counter()
        for _, raw in self.store.items(partition, batch_prefix(partition, batch_id)):
            row = _status_only.decode(raw)
            if database(row.database):
                counts[row.status] += 1
        return counts

    def waiting(self, partition: int) -> Counter[tuple[str, str]]:
        """Rows of the partition that may still be sent, by (priority, status: scheduled or deferred)."""
        raw = self.store.get(partition, WAITING)
        counts: Counter[tuple[str, str]] = Counter()
        for key, n in (_waiting.decode(raw) if raw is not None else {}).items():
            priority, _, status = key.partition("/")
            counts[priority, status] += n
        return counts

    def due_entries(self, partition: int, start: bytes, end: bytes, limit: int) -> list[tuple[bytes, Priority]]:
        """Up to `limit` (index key, priority) of the due index from `start` (inclusive) to `end`, in due order."""
        found: list[tuple[bytes, Priority]] = []
        for key, value in self.store.items(partition, DUE, start=start):
            if key >= end or len(found) >= limit:
                break
            found.append((key, value.decode()))  # type: ignore[arg-type]
        return found

    async def drop_due(self, partition: int, key: bytes) -> None:
        """Remove an index entry whose row no longer waits at that time (written by another path)."""
        row = self.store.get(partition, key)
        if row is not None:
            await self.writer.write(partition, {key: None})

    # -- bookkeeping of a ledger older than it --------------------------------------------------

    async def prepare(self, partition: int) -> int:
        """Make the partition's bookkeeping complete: rebuilt from its rows once if `~j` is missing (a
        ledger written before it existed; an empty partition costs one write). Returns the rows read.

        Runs when the partition is taken, before its messages are processed, in one pass on the loop:
        the cost of the scan every assignment made before the due index existed, now paid once.
        """
        if self.store.get(partition, COMPLETE) is not None:
            return 0
        rows, read = _rebuilt(self._rows(partition))
        stale = [k for k, _ in self.store.items(partition, BOOKKEEPING) if k not in rows]
        rows.update(dict.fromkeys(stale))
        rows[COMPLETE] = b"1"
        await self.writer.write(partition, rows)  # one RocksDB write: no put can slip in between
        log.info("partition %d: ledger bookkeeping rebuilt from %d rows", partition, read)
        return read

    def _rows(self, partition: int) -> Iterator[tuple[str, _Row]]:
        for key, raw in self.store.items(partition):
            if key.startswith(BOOKKEEPING):
                break  # every message id sorts before `~`
            try:
                yield key.decode(), _row.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                log.error("undecodable ledger row %r in partition %d", key[:80], partition)


def _rebuilt(rows: Iterable[tuple[str, _Row]]) -> tuple[dict[bytes, bytes | None], int]:
    """Every bookkeeping row, computed from the ledger rows."""
    counts: dict[bytes, BatchCounts] = {}
    waiting: Counter[str] = Counter()
    out: dict[bytes, bytes | None] = {}
    read = 0
    for message_id, row in rows:
        read += 1
        for key in filter(None, (counts_key(row.batchId) if row.batchId else None, _campaign_of(row))):
            entry = counts.setdefault(key, BatchCounts(row.database))
            entry.counts[row.status] = entry.counts.get(row.status, 0) + 1
            for mark in row.engaged:
                entry.engaged[mark] = entry.engaged.get(mark, 0) + 1
        index = _index_key(row, message_id)
        if index is not None:
            out[index] = row.priority.encode()
            waiting[_waiting_key(row)] += 1
    now = clock.now_iso()
    for entry in counts.values():
        entry.updatedAt = now
    out.update({key: encode(entry) for key, entry in counts.items()})
    out[WAITING] = encode(dict(waiting))
    return out, read


def is_bookkeeping(key: bytes) -> bool:
    """Rows of the messages table that are not a message's (retention and scans leave them alone)."""
    return key.startswith(BOOKKEEPING)


def counts_expired(key: bytes, raw: bytes, expired: Callable[[datetime], bool]) -> bool:
    """Whether retention removes a bookkeeping row: only a batch's counters, once none of its messages
    here waits and they last changed `expired` ago (as its final rows go: `retention` after their
    last update). The index and the totals stay."""
    if not key.startswith(COUNTS):
        return False
    row = _batch_counts.decode(raw)
    waiting = any(row.counts.get(status) for status in WAITING_STATUSES)
    return not waiting and bool(row.updatedAt) and expired(clock.parse_time(row.updatedAt))


def _waiting_key(row: _Row | MessageState) -> str:
    return f"{row.priority}/{row.status}"


def waiting_counts(ledger: Ledger, partitions: Iterable[int]) -> Counter[tuple[str, str]]:
    """Waiting rows by (priority, status) over `partitions` (one read each)."""
    total: Counter[tuple[str, str]] = Counter()
    for partition in partitions:
        total.update(ledger.waiting(partition))
    return total
