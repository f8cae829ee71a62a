"""Incremental segment membership for the recipients of one database (SPEC §9 "Always current").

The stream agent drives one `SegmentTracker` per database (and partition):

- after an upsert or a history event: `apply(id, view, now)`; after a DELETE: `erase(id, now)`;
- on a timer: `advance(now, views)` fires every flip due at or before `now` (sleep until
  `next_due()`); time-relative leaves flip on their own this way, with no event;
- after each chunk: `take_states()` gives the `SegmentState` of every recipient whose
  memberships or due time changed, to write beside its row (None: delete it);
- a new or changed segment: `define(name, node)` then feed the existing recipients to the
  returned `Build` (`build(...)` does both for one segment).

Every method returns the `MembershipChange`s it caused, in evaluation order, for the
journeys of SPEC §10. A recipient is always evaluated as a whole: every segment of the
database, referenced segments before the segments that read them, at one `now`.

**Due times.** Each recipient has one due time: the soonest `next_flip` of its segments
(conservative, so a due flip may change nothing; it is then rescheduled). By default
(`lazy=False`) every due time is held in a heap. With `lazy=True` only those up to
`held_until` are: after a restart, restore memberships with `restore()`, then call
`hold_until(now + horizon)` and `schedule()` every persisted due time up to that bound
(from an index of states by due time). Repeat before `held_until` comes near:
`previous = hold_until(later)`, then schedule the persisted due times in (previous, later].
Due times computed here after `hold_until` are held when within the bound; others are only
in the states handed out by `take_states()`, for the caller's index. A due time scheduled
twice, or one that became stale, costs one needless re-evaluation, never a wrong result.

**Time** must not run backwards between calls: a flip found at a later `now` is not undone
if the clock steps back (a system clock stepped back by NTP delays the flips in between
until it has caught up).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from streamapp.segments.definition import DefinitionError
from streamapp.segments.evaluate import Compiled, compile_definition
from streamapp.segments.graph import dependency_order, references
from streamapp.segments.nodes import Node
from streamapp.segments.state import SegmentState, SlotTable, mask_from_bytes, mask_to_bytes
from streamapp.segments.times import from_micros, to_micros
from streamapp.segments.view import RecipientView

__all__ = ["Build", "MembershipChange", "SegmentTracker"]

_NEVER = 1 << 62  # "hold every due time"; far past any real date in microseconds


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A recipient entered (or left) a segment at `at`: the event journeys start and end on."""

    recipient_id: str
    segment: str
    entered: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class _Segment:
    name: str
    bit: int
    compiled: Compiled


@dataclass(slots=True)
class _Run:
    """A build under way: its segments' bits, and the recipients evaluated since it started."""

    names: frozenset[str]
    bits: int
    generation: int
    touched: set[str] = field(default_factory=set)


class SegmentTracker:
    """Memberships (a bitmask per recipient) and pending flips (a heap) of one database's segments."""

    def __init__(
        self,
        definitions: Mapping[str, Node],
        tz: tzinfo,
        *,
        slots: SlotTable | None = None,
        lazy: bool = False,
    ) -> None:
        self._tz = tz
        self._definitions: dict[str, Node] = {}
        self._compiled: dict[str, tuple[Node, Compiled]] = {}
        self._table = slots or SlotTable()
        self._order: list[_Segment] = []
        self._masks: dict[str, int] = {}  # recipients in no segment are absent
        self._counts: dict[str, int] = {}
        self._due: dict[str, int] = {}  # held due times, microseconds
        self._heap: list[tuple[int, str]] = []
        self._held_until = -1 if lazy else _NEVER
        self._lazy = lazy
        self._dirty: dict[str, SegmentState | None] = {}
        self._run: _Run | None = None
        self._generation = 0
        self._valid_bits: dict[int, int] = {}
        self._install(dict(definitions))

    # -- definitions ------------------------------------------------------------------------

    @property
    def slots(self) -> SlotTable:
        """Which bit of `SegmentState.members` is which segment: store it once, pass it back on restart."""
        return self._table

    @property
    def definitions(self) -> dict[str, Node]:
        return dict(self._definitions)

    @property
    def building(self) -> frozenset[str]:
        return self._run.names if self._run else frozenset()

    def define(self, name: str, node: Node) -> Build:
        """Add or replace a segment; returns the build to feed with every existing recipient."""
        self._install({**self._definitions, name: node})
        return self.start_build([name])

    def remove(self, name: str) -> None:
        """Drop a segment (no change events: nobody leaves a segment that no longer exists).

        Stored states keep its bit until rewritten; `layout` keeps a later owner of the slot
        from inheriting it.
        """
        users = sorted(other for other, node in self._definitions.items() if name in references(node))
        if users:
            raise DefinitionError([("", f"segment {name!r} is used by {', '.join(users)}")])
        bit = self._bit(name)
        for rid in [rid for rid, mask in self._masks.items() if mask & bit]:
            self._set_mask(rid, self._masks[rid] & ~bit)
        if self._run and name in self._run.names:
            self._run.names -= {name}
            self._run.bits &= ~bit
        self._install({k: v for k, v in self._definitions.items() if k != name})
        self._counts.pop(name, None)

    def redefine(self, definitions: Mapping[str, Node], changed: Iterable[str]) -> Build | None:
        """Take a database's whole catalog at once: drop the segments it no longer has (no change
        events, as `remove`), add or replace the rest, and rebuild `changed` (None when none)."""
        wanted = dict(definitions)
        for name in self._definitions.keys() - wanted.keys():
            bit = self._bit(name)
            for rid in [rid for rid, mask in self._masks.items() if mask & bit]:
                self._set_mask(rid, self._masks[rid] & ~bit)
            if self._run and name in self._run.names:
                self._run.names -= {name}
                self._run.bits &= ~bit
            self._counts.pop(name, None)
        self._install(wanted)
        rebuild = [name for name in changed if name in wanted]
        return self.start_build(rebuild) if rebuild else None

    def _install(self, definitions: dict[str, Node]) -> None:
        for node in definitions.values():
            missing = references(node) - definitions.keys()
            if missing:
                raise DefinitionError([("", f"unknown segment {sorted(missing)[0]!r} of this database")])
        order = dependency_order(definitions)
        self._table = _assign_slots(self._table, definitions.keys())
        self._valid_bits.clear()
        for name, node in definitions.items():
            known = self._compiled.get(name)
            if known is None or known[0] is not node:
                self._compiled[name] = (node, compile_definition(node, self._tz))
        for name in self._compiled.keys() - definitions.keys():
            del self._compiled[name]
        self._definitions = definitions
        self._order = [_Segment(name, self._bit(name), self._compiled[name][1]) for name in order]
        self._steps = [(s.bit, s.compiled.test, s.compiled.flip if s.compiled.timed else None) for s in self._order]
        self._refs = any(references(node) for node in definitions.values())
        for name in definitions:
            self._counts.setdefault(name, 0)

    def _bit(self, name: str) -> int:
        return 1 << self._table.slots[name][0]

    # -- queries ----------------------------------------------------------------------------

    @property
    def held_until(self) -> datetime | None:
        """Due times up to this are held (lazy trackers; None before the first `hold_until`)."""
        if self._held_until < 0 or not self._lazy:
            return None
        return from_micros(self._held_until)

    def count(self, segment: str) -> int | None:
        """Members of a ready segment; None while it is building."""
        if segment not in self._definitions:
            raise KeyError(segment)
        return None if segment in self.building else self._counts[segment]

    def members(self, segment: str) -> list[str]:
        """Member ids, in no particular order (partial while the segment is building)."""
        bit = self._bit(segment)
        return [rid for rid, mask in self._masks.items() if mask & bit]

    def segments_of(self, recipient_id: str) -> frozenset[str]:
        """The ready segments the recipient is a member of."""
        mask = self._masks.get(recipient_id, 0)
        building = self.building
        return frozenset(s.name for s in self._order if mask & s.bit and s.name not in building)

    def is_member(self, recipient_id: str, segment: str) -> bool:
        return bool(self._masks.get(recipient_id, 0) & self._bit(segment))

    def next_due(self) -> datetime | None:
        """The soonest held due time, for the caller's timer."""
        while self._heap:
            due, rid = self._heap[0]
            if self._due.get(rid) == due:
                return from_micros(due)
            heapq.heappop(self._heap)
        return None

    # -- events -----------------------------------------------------------------------------

    def apply(self, recipient_id: str, view: RecipientView, now: datetime) -> list[MembershipChange]:
        """Re-evaluate a recipient after an upsert or a history event (its view already has it)."""
        moment = _utc(now)
        if self._run:
            self._run.touched.add(recipient_id)
        mask, due = self._evaluate(view, moment)
        return self._store(recipient_id, mask, due, now)

    def erase(self, recipient_id: str, now: datetime) -> list[MembershipChange]:
        """Forget a recipient (DELETE): it leaves every segment it was in."""
        if self._run:
            self._run.touched.add(recipient_id)
        old = self._masks.get(recipient_id, 0)
        changes = self._changes(recipient_id, old, 0, now)
        self._set_mask(recipient_id, 0)
        self._due.pop(recipient_id, None)
        self._dirty[recipient_id] = None
        return changes

    def advance(
        self,
        now: datetime,
        views: Callable[[str], RecipientView | None],
        *,
        limit: int | None = None,
        late: Callable[[float], None] | None = None,
    ) -> list[MembershipChange]:
        """Re-evaluate every recipient due at or before `now` (at most `limit` of them; call again for more).

        `views(id)` gives the recipient's retained view; None means it is gone, and it is erased.
        `late(seconds)` is told how long after its due time each one was re-evaluated.
        """
        moment = _utc(now)
        horizon = to_micros(moment)
        changes: list[MembershipChange] = []
        done = 0
        while self._heap and self._heap[0][0] <= horizon and (limit is None or done < limit):
            due, rid = heapq.heappop(self._heap)
            if self._due.get(rid) != due:
                continue  # stale: the recipient was re-evaluated since
            done += 1
            if late is not None:
                late((horizon - due) / 1_000_000)
            view = views(rid)
            if view is None:
                changes += self.erase(rid, now)
                continue
            if self._run:
                self._run.touched.add(rid)
            mask, next_due = self._evaluate(view, moment)
            changes += self._store(rid, mask, next_due, now)
        return changes

    # -- persistence ------------------------------------------------------------------------

    def take_states(self) -> dict[str, SegmentState | None]:
        """States changed since the last call, to store beside the rows (None: delete the state)."""
        dirty, self._dirty = self._dirty, {}
        return dirty

    def state_of(self, recipient_id: str) -> SegmentState | None:
        """The recipient's state as it would be stored now (None: in no segment, nothing due held)."""
        mask = self._masks.get(recipient_id, 0)
        due = self._due.get(recipient_id)
        if not mask and due is None:
            return None
        return SegmentState(_mask_bytes(mask), self._table.version, due or 0)

    def restore(self, recipient_id: str, state: SegmentState) -> None:
        """Load a stored state after a restart (bits of removed segments, or older than their slot, are dropped)."""
        self._set_mask(recipient_id, mask_from_bytes(state.members) & self._valid(state.layout))
        if state.due and state.due <= self._held_until:
            self.schedule(recipient_id, from_micros(state.due))

    def _valid(self, layout: int) -> int:
        """Bits whose slot already belonged to its segment when a state of this layout was written."""
        bits = self._valid_bits.get(layout)
        if bits is None:
            bits = sum(1 << slot for slot, since in self._table.slots.values() if since <= layout)
            self._valid_bits[layout] = bits
        return bits

    def hold_until(self, until: datetime) -> datetime | None:
        """Hold due times up to `until` from now on; returns the previous bound (None: nothing held yet).

        Store the states from `take_states()` first, then `schedule()` the stored due times
        in (previous, until]. Only for `lazy` trackers.
        """
        if not self._lazy:
            raise RuntimeError("hold_until is for lazy trackers; this one holds every due time")
        previous = self._held_until
        self._held_until = max(previous, to_micros(_utc(until)))
        return None if previous < 0 else from_micros(previous)

    def schedule(self, recipient_id: str, due: datetime) -> None:
        """Hold a stored due time (the earlier one wins when the recipient already has one)."""
        micros = to_micros(_utc(due))
        held = self._due.get(recipient_id)
        if held is None or micros < held:
            self._hold(recipient_id, micros)

    # -- builds -----------------------------------------------------------------------------

    def start_build(self, names: Iterable[str]) -> Build:
        """Rebuild segments (and the segments that read them) over every recipient.

        Until `Build.finish()` they count None and emit no changes: a build sets the
        baseline. A build started while another runs replaces it, covering both: feed
        every recipient again.
        """
        wanted = set(names) | (self._run.names if self._run else set())
        unknown = wanted - self._definitions.keys()
        if unknown:
            raise KeyError(sorted(unknown)[0])
        grown = True
        while grown:
            readers = {n for n, node in self._definitions.items() if references(node) & wanted}
            grown = not readers <= wanted
            wanted |= readers
        self._generation += 1
        bits = sum(self._bit(name) for name in wanted)
        self._run = _Run(frozenset(wanted), bits, self._generation)
        return Build(self, self._generation)

    def build(self, segment: str, views: Iterable[tuple[str, RecipientView]], now: datetime) -> int:
        """Evaluate every existing recipient for a defined segment; its count once ready."""
        run = self.start_build([segment])
        run.feed(views, now)
        return run.finish()[segment]

    def _feed(self, generation: int, views: Iterable[tuple[str, RecipientView]], now: datetime) -> None:
        run = self._current(generation)
        moment = _utc(now)
        touched, masks, bits, evaluate, store = run.touched, self._masks, run.bits, self._evaluate, self._store
        for rid, view in views:
            if rid in touched:
                continue  # applied during the build: its memberships are already current
            old = masks.get(rid, 0)
            mask, due = evaluate(view, moment)
            if (old ^ mask) & ~bits:
                due = to_micros(moment)  # a ready segment's flip was pending: let advance() report it
            store(rid, old & ~bits | mask & bits, due, now)

    def _finish(self, generation: int) -> dict[str, int]:
        run = self._current(generation)
        for segment in self._order:
            if segment.name in run.names:
                self._counts[segment.name] = sum(1 for mask in self._masks.values() if mask & segment.bit)
        self._run = None
        return {name: self._counts[name] for name in sorted(run.names)}

    def _current(self, generation: int) -> _Run:
        if self._run is None or self._run.generation != generation:
            raise RuntimeError("this build was finished or replaced by a newer one")
        return self._run

    # -- internals --------------------------------------------------------------------------

    def _evaluate(self, view: RecipientView, now: datetime) -> tuple[int, int | None]:
        """(mask, due in microseconds) of every segment, dependencies first."""
        mask = 0
        soonest: datetime | None = None
        member = _no_references
        if self._refs:
            slots = self._table.slots

            def member(name: str) -> bool:
                return bool(mask >> slots[name][0] & 1)

        for bit, test, flip in self._steps:
            if flip is None:
                if test(view, now, member):
                    mask |= bit
                continue
            value, due = flip(view, now, member)
            if value:
                mask |= bit
            if due is not None and (soonest is None or due < soonest):
                soonest = due
        if soonest is None:
            return mask, None
        return mask, max(to_micros(soonest), to_micros(now) + 1)  # strictly later, so advance() terminates

    def _store(self, rid: str, mask: int, due: int | None, now: datetime) -> list[MembershipChange]:
        old = self._masks.get(rid, 0)
        held = self._due.get(rid)
        if old == mask and due == held and (held is not None or not self._lazy):
            return []  # the common case of a build or an event that changes nothing
        changes = self._changes(rid, old, mask, now) if old != mask else []
        self._set_mask(rid, mask)
        if due != held:
            self._due.pop(rid, None)
            if due is not None and due <= self._held_until:
                self._hold(rid, due)
        self._dirty[rid] = SegmentState(_mask_bytes(mask), self._table.version, due or 0)
        return changes

    def _changes(self, rid: str, old: int, new: int, now: datetime) -> list[MembershipChange]:
        building = self._run.bits if self._run else 0
        diff = (old ^ new) & ~building
        return [MembershipChange(rid, s.name, bool(new & s.bit), now) for s in self._order if diff & s.bit]

    def _set_mask(self, rid: str, mask: int) -> None:
        """Store a mask, keeping the counts of ready segments."""
        old = self._masks.get(rid, 0)
        if old == mask:
            return
        diff = (old ^ mask) & ~(self._run.bits if self._run else 0)
        if diff:
            for segment in self._order:
                if diff & segment.bit:
                    self._counts[segment.name] += 1 if mask & segment.bit else -1
        if mask:
            self._masks[rid] = mask
        else:
            self._masks.pop(rid, None)

    def _hold(self, rid: str, due: int) -> None:
        self._due[rid] = due
        heapq.heappush(self._heap, (due, rid))
        if len(self._heap) > 2 * len(self._due) + 1024:  # drop stale entries now and then
            self._heap = [(d, r) for r, d in self._due.items()]
            heapq.heapify(self._heap)


class Build:
    """Feeds existing recipients to a (re)defined segment; `finish()` makes it ready and gives the counts."""

    def __init__(self, tracker: SegmentTracker, generation: int) -> None:
        self._tracker = tracker
        self._generation = generation

    def feed(self, views: Iterable[tuple[str, RecipientView]], now: datetime) -> None:
        """Evaluate some recipients (in chunks between events if needed); a recipient fed twice counts once."""
        self._tracker._feed(self._generation, views, now)

    def finish(self) -> dict[str, int]:
        """Counts of every rebuilt segment, now ready."""
        return self._tracker._finish(self._generation)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("times must be aware datetimes")
    return now.astimezone(UTC)


def _no_references(name: str) -> bool:
    raise AssertionError("no segment of this database reads another")


_SMALL_MASKS = [mask_to_bytes(mask) for mask in range(256)]


def _mask_bytes(mask: int) -> bytes:
    return _SMALL_MASKS[mask] if mask < 256 else mask_to_bytes(mask)


def _assign_slots(table: SlotTable, names: Iterable[str]) -> SlotTable:
    """Keep the slots of known names, free those of removed ones, give new names the lowest free slot."""
    wanted = set(names)
    slots = {name: entry for name, entry in table.slots.items() if name in wanted}
    version = table.version
    for name in sorted(wanted - slots.keys()):
        used = {slot for slot, _ in slots.values()}
        version += 1
        slots[name] = (next(slot for slot in range(len(used) + 1) if slot not in used), version)
    return table if slots == table.slots else SlotTable(version, slots)
