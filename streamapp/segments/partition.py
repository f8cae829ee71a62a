"""One partition's segment state on this worker: a tracker per database, its builds, its bookkeeping.

The recipient-commands agent is the only writer of a partition's segment state, as it is of the
partition's rows: it re-evaluates the recipients an event wrote (`evaluate`), fires the flips that
are due and feeds a slice of a build when a `SegmentTick` tells it to (`advance`, `build_step`),
and stages the states that changed in the event's own segments transaction (`stage`), flushed with
the rows. Everything here is synchronous between the agent's awaits, so a build slice and an event
never interleave halfway.

**Loading** (`load`): after the partition is assigned and its tables recovered, every stored state
of the partition is read back (in slices, so the event loop is never held long) into a tracker
that holds every due time: the due-time heap is rebuilt from the persisted states, so a flip that
was pending on a worker killed with -9 fires on the worker that took the partition over, at its
time. A segment whose bits were built for another definition (its fingerprint differs from the
`\\x00built/` row), or never built here, is rebuilt.

**Builds** scan the partition's recipient rows in key order, `BUILD_SLICE` at a time, one slice per
tick, while events keep being applied in between: the tracker skips a recipient an event evaluated
since the build started (its memberships are already current), so no recipient is missed or counted
twice; the build's segments answer `count` None until the last slice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from itertools import islice
from typing import TypeVar, cast

import msgspec

from streamapp.core.clock import iso
from streamapp.core.keys import recipient_key
from streamapp.core.models import Recipient, decode_history, decode_recipient
from streamapp.kafka.store import PartitionTransaction, Store
from streamapp.segments.catalog import SegmentEntry
from streamapp.segments.events import SegmentChange
from streamapp.segments.graph import leaves
from streamapp.segments.nodes import HistoryLeaf, Node
from streamapp.segments.state import SegmentState, SlotTable, decode_state, encode_state
from streamapp.segments.stored import StoredView
from streamapp.segments.tracker import Build, MembershipChange, SegmentTracker
from streamapp.segments.view import RecipientView
from streamapp.tables.segments import built_key, slots_key

__all__ = ["BUILD_SLICE", "FLIP_SLICE", "PartitionSegments", "reads_history"]

log = logging.getLogger(__name__)

#: Recipients fed to a build per tick: about 50 ms of evaluation for attribute-only definitions.
BUILD_SLICE = 5_000
#: Due recipients re-evaluated per tick; more wait for the next tick, sent at once.
FLIP_SLICE = 2_000
#: Stored states read per step while loading, between yields to the event loop.
RESTORE_SLICE = 20_000

_recipients = msgspec.msgpack.Decoder(Recipient)
_slots = msgspec.msgpack.Decoder(SlotTable)
_built = msgspec.msgpack.Decoder(dict[str, str])
_encoder = msgspec.msgpack.Encoder()

T = TypeVar("T")

#: Called with how late (seconds) each due flip was re-evaluated.
Lateness = Callable[[float], None]


def reads_history(definitions: Iterable[Node]) -> bool:
    """Whether any definition has a history leaf (then evaluation needs the recipient's history)."""
    return any(isinstance(leaf, HistoryLeaf) for node in definitions for _, leaf in leaves(node))


@dataclass(slots=True)
class _Database:
    """One database's tracker in this partition, and what its bookkeeping rows say."""

    name: str
    tracker: SegmentTracker
    fingerprints: dict[str, str]
    built: dict[str, str]
    history: bool
    build: Build | None = None
    building: dict[str, str] = field(default_factory=dict)
    cursor: bytes | None = None  # the key the build's next slice starts at (None: the first)
    meta_dirty: bool = False

    @property
    def prefix(self) -> bytes:
        return f"{self.name}/".encode()

    def start(self, build: Build) -> None:
        """A new build (replacing one under way: it covers both, from the first key again)."""
        self.build = build
        self.building = {name: self.fingerprints[name] for name in self.tracker.building}
        self.cursor = None


class PartitionSegments:
    """The segment state of one partition this worker holds."""

    def __init__(self, partition: int, tz: tzinfo) -> None:
        self.partition = partition
        self._tz = tz
        self._dbs: dict[str, _Database] = {}

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    async def load(
        cls, partition: int, catalog: Mapping[str, list[SegmentEntry]], store: Store, tz: tzinfo
    ) -> PartitionSegments:
        """The partition's trackers, restored from its stored states (slices with yields in between)."""
        part = cls(partition, tz)
        for database, entries in catalog.items():
            part._dbs[database] = await part._load(database, entries, store)
        return part

    async def _load(self, database: str, entries: list[SegmentEntry], store: Store) -> _Database:
        p = self.partition
        raw_slots, raw_built = store.get(p, slots_key(database)), store.get(p, built_key(database))
        slots = _decode(_slots, raw_slots, SlotTable(), f"{database} slots[{p}]")
        built = _decode(_built, raw_built, {}, f"{database} builds[{p}]")
        if slots is None or built is None:  # no telling which bit is which: build everything again
            slots, built = SlotTable(), {}
        definitions = {e.name: e.node for e in entries}
        tracker = SegmentTracker(definitions, self._tz, slots=slots)
        prefix = f"{database}/".encode()
        start: bytes | None = None
        while True:
            for count, (key, value) in enumerate(store.items(p, prefix, start), 1):
                try:
                    tracker.restore(key[len(prefix) :].decode(), decode_state(value))
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    log.error("segments[%d]: state of %r unreadable, dropped: %s", p, key[:300], exc)
                if count >= RESTORE_SLICE:
                    start = key + b"\x00"
                    break
            else:
                break
            await asyncio.sleep(0)
        fingerprints = {e.name: e.fingerprint for e in entries}
        kept = {name: fp for name, fp in built.items() if name in fingerprints}
        db = _Database(database, tracker, fingerprints, kept, reads_history(definitions.values()))
        db.meta_dirty = tracker.slots != slots or kept != built
        stale = [name for name, fp in fingerprints.items() if built.get(name) != fp]
        if stale:
            db.start(tracker.start_build(stale))
        return db

    # -- definitions ---------------------------------------------------------------------------

    def redefine(self, database: str, entries: list[SegmentEntry]) -> None:
        """The database's catalog changed: drop removed segments, build new and changed ones."""
        db = self._dbs.get(database)
        if db is None:
            return
        fingerprints = {e.name: e.fingerprint for e in entries}
        changed = [name for name, fp in fingerprints.items() if db.fingerprints.get(name) != fp]
        removed = db.fingerprints.keys() - fingerprints.keys()
        if not changed and not removed:
            return
        definitions = {e.name: e.node for e in entries}
        db.fingerprints = fingerprints
        build = db.tracker.redefine(definitions, changed)
        for name in removed:
            db.built.pop(name, None)
        db.history = reads_history(definitions.values())
        if build is not None:
            db.start(build)
        elif db.build is not None:
            db.building = {name: fingerprints[name] for name in db.tracker.building}
        db.meta_dirty = True

    # -- the agent's work ----------------------------------------------------------------------

    def evaluate(
        self, recipients: PartitionTransaction, history: PartitionTransaction, keys: Iterable[bytes], now: datetime
    ) -> list[SegmentChange]:
        """Re-evaluate the recipients an event wrote (staged rows included); an absent row is an erase."""
        changes: list[SegmentChange] = []
        for key in keys:
            database, _, rest = key.partition(b"/")
            db = self._dbs.get(database.decode())
            if db is None or not db.fingerprints:
                continue
            original_id = rest.decode()
            raw = recipients.get(key)
            if raw is None:
                found = db.tracker.erase(original_id, now)
            else:
                view = self._view(db, raw, history.get(key) if db.history else None)
                found = db.tracker.apply(original_id, view, now)
            changes += _events(db.name, found)
        return changes

    def advance(
        self, recipients: PartitionTransaction, history: PartitionTransaction, now: datetime, late: Lateness
    ) -> list[SegmentChange]:
        """Fire the flips due at `now` (at most FLIP_SLICE per database; `has_work` says if more are)."""
        changes: list[SegmentChange] = []
        for db in self._dbs.values():

            def view(original_id: str, db: _Database = db) -> RecipientView | None:
                key = recipient_key(db.name, original_id)
                raw = recipients.get(key)
                return None if raw is None else self._view(db, raw, history.get(key) if db.history else None)

            changes += _events(db.name, db.tracker.advance(now, view, limit=FLIP_SLICE, late=late))
        return changes

    def build_step(self, recipients: Store, history: Store, now: datetime) -> bool:
        """Feed one slice of the first build under way; True when a build is still under way after it."""
        db = next((db for db in self._dbs.values() if db.build is not None), None)
        if db is None or db.build is None:
            return False
        prefix = db.prefix
        rows = list(islice(recipients.items(self.partition, prefix, db.cursor), BUILD_SLICE))
        histories: Mapping[bytes, bytes | None] = {}
        if db.history and rows:
            reads = history.transaction(self.partition)
            reads.prefetch([key for key, _ in rows])
            histories = reads.loaded
        width = len(prefix)
        if db.history:
            views = [(key[width:].decode(), self._view(db, raw, histories.get(key))) for key, raw in rows]
        else:  # the bulk case, inlined: a Recipient is its own view (see _view)
            decode = _recipients.decode
            views = [(key[width:].decode(), cast(RecipientView, decode(raw))) for key, raw in rows]
        db.build.feed(views, now)
        if len(rows) == BUILD_SLICE:
            db.cursor = rows[-1][0] + b"\x00"
        else:
            counts = db.build.finish()
            log.info("segments[%d]: %s built: %s", self.partition, db.name, counts)
            db.built.update(db.building)
            db.build, db.building, db.cursor = None, {}, None
            db.meta_dirty = True
        return any(d.build is not None for d in self._dbs.values())

    def stage(self, states: PartitionTransaction, replayed: Iterable[bytes] = ()) -> None:
        """Stage every state that changed (and the bookkeeping rows) on the event's segments transaction.

        `replayed`: recipients a command left unchanged (a replay after a crash): their state is
        written again even if unchanged, as their row is, since a worker killed between the RocksDB
        write and the changelog's ack kept it only on its own disk.
        """
        for db in self._dbs.values():
            if db.meta_dirty:
                states.set(slots_key(db.name), _encoder.encode(db.tracker.slots))
                states.set(built_key(db.name), _encoder.encode(db.built))
                db.meta_dirty = False
            for original_id, state in db.tracker.take_states().items():
                states.set(recipient_key(db.name, original_id), _stored(state))
        for key in replayed:
            if key in states.pending:
                continue
            database, _, rest = key.partition(b"/")
            owner = self._dbs.get(database.decode())
            if owner is not None and owner.fingerprints:
                states.set(key, _stored(owner.tracker.state_of(rest.decode())))

    def _view(self, db: _Database, raw: bytes, history: bytes | None) -> RecipientView:
        if not db.history:
            # A Recipient has every field an attribute-only evaluation reads; no wrapper to build.
            return cast(RecipientView, decode_recipient(raw))
        return StoredView(decode_recipient(raw), decode_history(history) if history else None)

    # -- queries -------------------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        dues = [due for db in self._dbs.values() if (due := db.tracker.next_due()) is not None]
        return min(dues) if dues else None

    @property
    def building(self) -> bool:
        return any(db.build is not None for db in self._dbs.values())

    def count(self, database: str, segment: str) -> int | None:
        """Members in this partition; None while building here or unknown here."""
        db = self._dbs.get(database)
        if db is None or segment not in db.fingerprints:
            return None
        return db.tracker.count(segment)

    def members(self, database: str, segment: str) -> list[str]:
        """Sorted member originalIds (empty while building)."""
        db = self._dbs.get(database)
        if db is None or segment not in db.fingerprints or segment in db.tracker.building:
            return []
        return sorted(db.tracker.members(segment))

    def segments_of(self, database: str, original_id: str) -> list[str]:
        db = self._dbs.get(database)
        return sorted(db.tracker.segments_of(original_id)) if db is not None else []

    def is_member(self, database: str, original_id: str, segment: str) -> bool:
        db = self._dbs.get(database)
        return db is not None and segment in db.fingerprints and db.tracker.is_member(original_id, segment)

    def counts(self) -> dict[tuple[str, str], int | None]:
        """(database, segment) -> members here, None while building."""
        return {(db.name, name): db.tracker.count(name) for db in self._dbs.values() for name in db.fingerprints}


def _stored(state: SegmentState | None) -> bytes | None:
    """The row of a state; None (no row) for a recipient in no segment with nothing due."""
    return None if state is None or (not state.members.strip(b"\x00") and not state.due) else encode_state(state)


def _events(database: str, changes: list[MembershipChange]) -> list[SegmentChange]:
    return [SegmentChange(database=database, originalId=c.recipient_id, segment=c.segment, entered=c.entered,
                          at=iso(c.at)) for c in changes]  # fmt: skip


def _decode(decoder: msgspec.msgpack.Decoder[T], raw: bytes | None, default: T, what: str) -> T | None:
    """The stored value, `default` if there is none, None if it is unreadable (logged)."""
    if raw is None:
        return default
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        log.error("segments: %s unreadable, every segment is rebuilt: %s", what, exc)
        return None
