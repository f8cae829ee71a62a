"""Every database's segment definitions: the configuration's and the API's, as one worker sees them.

API definitions live in a compacted, single-partition Kafka topic (`streamapp.kafka.catalog_topic`
reads it; docs/segments.md says why). Each record is keyed `database/segment`; its value is the
JSON object `{"definition", "updatedAt", "version"}`, and a tombstone (no value) deletes. Every
worker applies the same records in the same order, so every worker computes the same catalog:

- `apply(key, value, offset)` (`apply_all` for a whole fetch) is idempotent: an offset at or below
  the last one applied is a replay and changes nothing; otherwise the record replaces whatever the
  key held (last writer by offset).
- A stored definition is re-validated whenever its database's catalog changes. One that no longer
  parses (an attribute left the schema, a referenced segment was deleted, a configured segment took
  its name, two concurrent PUTs closed a loop) is *rejected*: kept, reported by `rejected()` and the
  log, but not evaluated, until a later record or configuration makes it valid again. In a loop the
  record with the highest offset is rejected, so every worker rejects the same one.
- `prepare_put` / `prepare_delete` check a request against the current catalog and return the record
  to write; they raise `ConfigDefined` or `SegmentInUse` (409), `InvalidDefinition` (422, with the
  JSON Pointer of every problem), `UnknownDatabase` / `UnknownSegment` (404), `InvalidSegmentName`.
- `subscribe(listener)`: called with the `CatalogChange`s of each apply, for the tracker
  (define or remove a segment, start a build). Only changes of meaning are reported: a PUT of an
  equal definition bumps `version` and `updatedAt` but starts no build.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from graphlib import CycleError as GraphCycleError
from graphlib import TopologicalSorter
from typing import Any, Literal

from streamapp.core.clock import now_iso
from streamapp.segments.config import config_definitions, database_catalog
from streamapp.segments.definition import DefinitionError, parse_definition, to_json
from streamapp.segments.graph import CycleError, leaves, references
from streamapp.segments.nodes import Node, SegmentLeaf
from streamapp.settings import NAME_RE, Settings

__all__ = [
    "MAX_RECORD_BYTES",
    "CatalogChange",
    "CatalogError",
    "ConfigDefined",
    "InvalidDefinition",
    "InvalidSegmentName",
    "PreparedWrite",
    "Rejected",
    "SegmentCatalog",
    "SegmentEntry",
    "SegmentInUse",
    "StoredDefinition",
    "UnknownDatabase",
    "UnknownSegment",
    "decode_record",
    "encode_record",
    "record_key",
    "split_key",
]

log = logging.getLogger(__name__)

#: The largest record value, as for a stored recipient row (SPEC §3); Kafka's own limit is 1 MB.
MAX_RECORD_BYTES = 512 * 1024

Source = Literal["config", "api"]
Errors = list[tuple[str, str]]


class CatalogError(Exception):
    """A request the catalog refuses; the subclass says which HTTP status fits."""


class UnknownDatabase(CatalogError):
    """404: no such database in the configuration."""


class UnknownSegment(CatalogError):
    """404: no such segment in the database."""


class InvalidSegmentName(CatalogError):
    """The segment name of the path is not [A-Za-z0-9_-]{1,64}."""


class ConfigDefined(CatalogError):
    """409: the segment is defined in the configuration, which the API cannot change."""


class SegmentInUse(CatalogError):
    """409: other segments reference the one to delete."""

    def __init__(self, message: str, users: list[str]) -> None:
        self.users = users
        super().__init__(message)


class InvalidDefinition(CatalogError):
    """422: every problem of the body, as (JSON Pointer, message) pairs."""

    def __init__(self, errors: Errors) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{path or '/'}: {message}" for path, message in errors))


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredDefinition:
    """The value of one record: the definition as the client sent it, when, and its revision."""

    definition: Any
    updated_at: str
    version: int


def record_key(database: str, segment: str) -> bytes:
    return f"{database}/{segment}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    """(database, segment) of a record key; ValueError if it is not `database/segment`."""
    database, slash, segment = key.decode("utf-8").partition("/")
    if not slash or not NAME_RE.match(database) or not NAME_RE.match(segment):
        raise ValueError(f"not a database/segment key: {key[:200]!r}")
    return database, segment


def encode_record(record: StoredDefinition) -> bytes:
    body = {"definition": record.definition, "updatedAt": record.updated_at, "version": record.version}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def decode_record(value: bytes) -> StoredDefinition:
    """The record of `value`; ValueError naming what is wrong."""
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"record is not JSON: {exc}") from None
    if not isinstance(body, dict) or "definition" not in body:
        raise ValueError("record is not an object with a definition")
    updated, version = body.get("updatedAt"), body.get("version")
    if not isinstance(updated, str) or not isinstance(version, int) or isinstance(version, bool):
        raise ValueError("record lacks a string updatedAt or an integer version")
    return StoredDefinition(body["definition"], updated, version)


# -- what the catalog answers -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One segment in force.

    `definition` is its JSON form (an API one as stored; a configured one as `to_json` gives it,
    TOML dates being no JSON). `offset` is the record's offset (None: configuration): unique and
    stable across compaction, so it identifies a revision cluster-wide. `fingerprint` changes
    exactly when the meaning does: tag built membership state with it. `reads`: the segments
    its definition references (evaluate them first).
    """

    database: str
    name: str
    source: Source
    definition: Any
    node: Node
    updated_at: str | None
    version: int
    offset: int | None
    fingerprint: str
    reads: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rejected:
    """A stored API definition not in force, and why."""

    database: str
    name: str
    offset: int
    errors: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """A segment appeared (`before` None), disappeared (`after` None) or changed meaning."""

    database: str
    name: str
    before: SegmentEntry | None
    after: SegmentEntry | None


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """The record to produce for a PUT (`value`) or a DELETE (`value` None, a tombstone)."""

    key: bytes
    value: bytes | None


Listener = Callable[[list[CatalogChange]], None]


def fingerprint(node: Node) -> str:
    canonical = json.dumps(to_json(node), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Record:
    """A stored record, parsed once: `entry` if it parses with every segment name allowed, else `errors`.

    Whether its referenced segments are in force is decided per recompute, by set operations only,
    so catching up with N records costs N parses rather than N².
    """

    offset: int
    entry: SegmentEntry | None
    errors: tuple[tuple[str, str], ...] = ()
    version: int = 0  # of a record that decoded, even if it does not parse


class _AnyName:
    """A `Catalog.segments` that contains every name: references are resolved afterwards."""

    def __contains__(self, name: object) -> bool:
        return True


class SegmentCatalog:
    """The configured segments plus the API records applied so far, per database."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._config = {db: _config_entries(db, nodes) for db, nodes in config_definitions(settings).items()}
        self._records: dict[str, dict[str, _Record]] = {}
        self._effective: dict[str, dict[str, SegmentEntry]] = {db: dict(e) for db, e in self._config.items()}
        self._rejected: dict[str, dict[str, Rejected]] = {db: {} for db in self._config}
        self._applied = -1
        self._listeners: list[Listener] = []

    # -- reading ------------------------------------------------------------------------------

    @property
    def applied_offset(self) -> int:
        """The offset of the last record applied (-1: none yet)."""
        return self._applied

    def segments(self, database: str) -> list[SegmentEntry]:
        """The segments in force, by name."""
        return sorted(self._database(database).values(), key=lambda e: e.name)

    def get(self, database: str, name: str) -> SegmentEntry:
        entry = self._database(database).get(name)
        if entry is None:
            raise UnknownSegment(f"no segment {name!r} in database {database!r}")
        return entry

    def definitions(self, database: str) -> dict[str, Node]:
        """The parsed definitions in force: what `SegmentTracker` takes."""
        return {name: entry.node for name, entry in self._database(database).items()}

    def rejected(self, database: str) -> list[Rejected]:
        self._database(database)
        return sorted(self._rejected[database].values(), key=lambda r: r.name)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _database(self, database: str) -> dict[str, SegmentEntry]:
        found = self._effective.get(database)
        if found is None:
            raise UnknownDatabase(f"no database {database!r}")
        return found

    # -- requests -----------------------------------------------------------------------------

    def validate(self, database: str, raw: object, name: str | None = None) -> Node:
        """`raw` parsed against the database's segments in force; InvalidDefinition names every problem.

        `name`: the segment it would be stored as (so a reference back to it is a loop); None for
        a preview.
        """
        effective = self._database(database)
        names = effective.keys() | ({name} if name else set())
        try:
            node = parse_definition(raw, database_catalog(self._settings, database, names))
        except DefinitionError as exc:
            raise InvalidDefinition(exc.errors) from None
        if name is not None:
            _refuse_loop(name, node, effective)
        return node

    def prepare_put(self, database: str, name: str, raw: object, now: str | None = None) -> PreparedWrite:
        """The record storing `raw` as segment `name`, checked against the catalog in force."""
        self._writable(database, name)
        self.validate(database, raw, name)
        previous = self._records.get(database, {}).get(name)
        version = previous.version + 1 if previous else 1
        value = encode_record(StoredDefinition(raw, now or now_iso(), version))
        if len(value) > MAX_RECORD_BYTES:
            raise InvalidDefinition([("", f"is {len(value):,} bytes stored; at most {MAX_RECORD_BYTES:,}")])
        return PreparedWrite(record_key(database, name), value)

    def prepare_delete(self, database: str, name: str) -> PreparedWrite:
        """The tombstone deleting API segment `name` (one rejected for now included)."""
        self._writable(database, name)
        if name not in self._records.get(database, {}):
            raise UnknownSegment(f"no segment {name!r} in database {database!r}")
        users = sorted(entry.name for entry in self._database(database).values() if name in entry.reads)
        if users:
            raise SegmentInUse(f"segment {name!r} is referenced by {', '.join(users)}", users)
        return PreparedWrite(record_key(database, name), None)

    def _writable(self, database: str, name: str) -> None:
        self._database(database)
        if not NAME_RE.match(name):
            raise InvalidSegmentName("a segment name must match [A-Za-z0-9_-]{1,64}")
        if name in self._config[database]:
            raise ConfigDefined(f"segment {name!r} is defined in the configuration; change it there")

    # -- records ------------------------------------------------------------------------------

    def apply(self, key: bytes, value: bytes | None, offset: int) -> list[CatalogChange]:
        """Apply one record of the definitions topic; the changes of meaning it caused."""
        return self.apply_all([(key, value, offset)])

    def apply_all(self, records: Iterable[tuple[bytes, bytes | None, int]]) -> list[CatalogChange]:
        """Apply records in offset order, re-validating each database once: the net changes of meaning.

        A reader catching up hands over whole fetches, so reading N records costs N parses, not N².
        """
        touched: set[str] = set()
        for key, value, offset in records:
            database = self._store(key, value, offset)
            if database is not None:
                touched.add(database)
        changes = [change for database in sorted(touched) for change in self._recompute(database)]
        self._notify(changes)
        return changes

    def _store(self, key: bytes, value: bytes | None, offset: int) -> str | None:
        """Keep one record; the database whose catalog it may change, if any."""
        if offset <= self._applied:
            return None
        self._applied = offset
        try:
            database, name = split_key(key)
        except (UnicodeDecodeError, ValueError) as exc:
            log.warning("segment definitions offset %d skipped: %s", offset, exc)
            return None
        records = self._records.setdefault(database, {})
        if value is None:
            records.pop(name, None)
        else:
            records[name] = self._parsed(database, name, offset, value)
        if database not in self._config:
            log.warning("segment definition %s/%s kept for a database not configured", database, name)
            return None
        return database

    def _parsed(self, database: str, name: str, offset: int, value: bytes) -> _Record:
        if database not in self._config:
            return _Record(offset, None, (("", "the database is not configured"),))
        try:
            stored = decode_record(value)
        except ValueError as exc:
            return _Record(offset, None, (("", str(exc)),))
        try:
            node = parse_definition(stored.definition, database_catalog(self._settings, database, _AnyName()))
        except DefinitionError as exc:
            return _Record(offset, None, tuple(exc.errors), stored.version)
        entry = SegmentEntry(
            database,
            name,
            "api",
            stored.definition,
            node,
            stored.updated_at,
            stored.version,
            offset,
            fingerprint(node),
            references(node),
        )
        return _Record(offset, entry, version=stored.version)

    def _recompute(self, database: str) -> list[CatalogChange]:
        before = self._effective[database]
        api, rejected = _resolve(database, self._config[database], self._records.get(database, {}))
        for name, problem in rejected.items():
            old = self._rejected[database].get(name)
            if old is None or old.offset != problem.offset:
                log.warning(
                    "segment %s/%s (offset %d) not in force: %s", database, name, problem.offset, problem.errors
                )
        self._rejected[database] = rejected
        after = {**self._config[database], **api}
        self._effective[database] = after
        return [
            CatalogChange(database, name, before.get(name), after.get(name))
            for name in sorted(before.keys() | after.keys())
            if _meaning(before.get(name)) != _meaning(after.get(name))
        ]

    def _notify(self, changes: list[CatalogChange]) -> None:
        if not changes:
            return
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:  # one broken listener must not stop the catalog or the others
                log.exception("segment catalog listener %r failed", listener)


def _config_entries(database: str, nodes: Mapping[str, Node]) -> dict[str, SegmentEntry]:
    return {
        name: SegmentEntry(
            database, name, "config", to_json(node), node, None, 0, None, fingerprint(node), references(node)
        )
        for name, node in nodes.items()
    }


def _meaning(entry: SegmentEntry | None) -> str | None:
    return entry.fingerprint if entry else None


def _resolve(
    database: str, config: Mapping[str, SegmentEntry], records: Mapping[str, _Record]
) -> tuple[dict[str, SegmentEntry], dict[str, Rejected]]:
    """The API entries in force and the rejected ones, the same on every worker for the same records.

    Rejecting one definition can leave those that reference it dangling, so this repeats until
    nothing more is rejected; loops are broken at their newest record, then it repeats again.
    """
    rejected: dict[str, Rejected] = {}
    pending: dict[str, SegmentEntry] = {}
    for name, record in records.items():
        if name in config:
            rejected[name] = Rejected(database, name, record.offset, (("", "a configured segment has this name"),))
        elif record.entry is None:
            rejected[name] = Rejected(database, name, record.offset, record.errors)
        else:
            pending[name] = record.entry
    while True:
        known = config.keys() | pending.keys()
        dangling = {name: missing for name, e in pending.items() if (missing := e.reads - known)}
        for name, missing in dangling.items():
            entry = pending.pop(name)
            rejected[name] = Rejected(database, name, _offset(entry), _unknown(entry.node, missing))
        if dangling:
            continue
        cycle = _find_loop({name: e.reads for name, e in (*config.items(), *pending.items())})
        if cycle is None:
            return pending, rejected
        newest = max((n for n in cycle if n in pending), key=lambda n: _offset(pending[n]))
        entry = pending.pop(newest)
        loop = tuple(_loop_error(cycle, newest, entry.node).errors)
        rejected[newest] = Rejected(database, newest, _offset(entry), loop)


def _offset(entry: SegmentEntry) -> int:
    return entry.offset if entry.offset is not None else -1


def _unknown(node: Node, missing: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The parser's own error for each reference to a segment not in force."""
    return tuple(
        (f"{path}/segment", f"unknown segment {leaf.segment!r} of this database")
        for path, leaf in leaves(node)
        if isinstance(leaf, SegmentLeaf) and leaf.segment in missing
    )


def _refuse_loop(name: str, node: Node, others: Mapping[str, SegmentEntry]) -> None:
    """InvalidDefinition naming the reference, in `node`, that closes a loop through `name`."""
    cycle = _find_loop({**{n: e.reads for n, e in others.items()}, name: references(node)})
    if cycle is not None:
        raise InvalidDefinition(_loop_error(cycle, name, node).errors)


def _find_loop(reads: Mapping[str, frozenset[str]]) -> list[str] | None:
    """A reference loop (`["a", "b", "a"]`: a reads b, b reads a), or None; the same for the same graph."""
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name in sorted(n for n, targets in reads.items() if targets):  # a segment that reads none closes no loop
        sorter.add(name, *sorted(reads[name] & reads.keys()))
    try:
        sorter.prepare()
    except GraphCycleError as exc:
        return list(reversed(exc.args[1]))  # graphlib lists each node before the ones that read it
    return None


def _loop_error(cycle: list[str], name: str, node: Node) -> CycleError:
    """The loop told from `name`'s point of view, at the place in `node` of its reference onward."""
    ring = cycle[:-1]
    start = ring.index(name) if name in ring else 0
    turned = [*ring[start:], *ring[:start]]
    turned.append(turned[0])
    target = turned[1]
    path = next(p for p, leaf in leaves(node) if isinstance(leaf, SegmentLeaf) and leaf.segment == target)
    return CycleError(turned, f"{path}/segment")
