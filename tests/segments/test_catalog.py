"""SegmentCatalog: configured and API definitions, records applied in offset order, requests checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamapp.segments.catalog import (
    MAX_RECORD_BYTES,
    CatalogChange,
    ConfigDefined,
    InvalidDefinition,
    InvalidSegmentName,
    SegmentCatalog,
    SegmentInUse,
    StoredDefinition,
    UnknownDatabase,
    UnknownSegment,
    decode_record,
    encode_record,
    record_key,
    split_key,
)
from streamapp.segments.nodes import AttributeLeaf, Comparison, SegmentLeaf
from streamapp.settings import Settings, load_settings

CONFIG = """
[[databases]]
name = "members"
[databases.attributes]
score = "int"
language = "string"

[[databases]]
name = "other"

[[segments]]
name = "vip"
database = "members"
definition = { attribute = "score", op = "gte", value = 100 }
"""

SWEDISH = {"attribute": "language", "op": "eq", "value": "sv"}
NOW = "2026-03-01T10:00:00.000+00:00"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "streamapp.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_settings(path, {})


class Log:
    """A stand-in for the topic: records with offsets, applied to any number of catalogs."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None, int]] = []

    def write(self, catalog: SegmentCatalog, key: bytes, value: bytes | None) -> list[CatalogChange]:
        offset = len(self.records)
        self.records.append((key, value, offset))
        return catalog.apply(key, value, offset)

    def put(self, catalog: SegmentCatalog, name: str, definition: Any, db: str = "members") -> list[CatalogChange]:
        write = catalog.prepare_put(db, name, definition, NOW)
        return self.write(catalog, write.key, write.value)

    def replay(self, catalog: SegmentCatalog) -> SegmentCatalog:
        for key, value, offset in self.records:
            catalog.apply(key, value, offset)
        return catalog


def raw(definition: Any, version: int = 1) -> bytes:
    return encode_record(StoredDefinition(definition, NOW, version))


def names(catalog: SegmentCatalog, db: str = "members") -> list[tuple[str, str]]:
    return [(entry.name, entry.source) for entry in catalog.segments(db)]


def test_configured_segments_are_there_from_the_start(settings: Settings) -> None:
    catalog = SegmentCatalog(settings)
    vip = catalog.get("members", "vip")
    assert (vip.source, vip.version, vip.offset, vip.updated_at) == ("config", 0, None, None)
    assert vip.definition == {"attribute": "score", "op": "gte", "value": 100}
    assert catalog.definitions("members") == {"vip": AttributeLeaf("score", "int", False, Comparison("gte", 100))}
    assert catalog.segments("other") == [] and catalog.applied_offset == -1


def test_a_put_record_is_in_force_once_applied(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    write = catalog.prepare_put("members", "swedes", SWEDISH, NOW)
    assert write.key == b"members/swedes"
    assert json.loads(write.value or b"") == {"definition": SWEDISH, "updatedAt": NOW, "version": 1}
    with pytest.raises(UnknownSegment):
        catalog.get("members", "swedes")  # preparing writes nothing
    changes = log.write(catalog, write.key, write.value)
    entry = catalog.get("members", "swedes")
    assert (entry.source, entry.definition, entry.updated_at, entry.version, entry.offset) == (
        "api",
        SWEDISH,
        NOW,
        1,
        0,
    )
    assert changes == [CatalogChange("members", "swedes", None, entry)]
    assert names(catalog) == [("swedes", "api"), ("vip", "config")]


def test_a_new_revision_counts_up_and_only_a_new_meaning_is_a_change(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "swedes", SWEDISH)
    first = catalog.get("members", "swedes")
    assert log.put(catalog, "swedes", SWEDISH) == []  # same meaning: no build needed
    again = catalog.get("members", "swedes")
    assert (again.version, again.offset, again.fingerprint) == (2, 1, first.fingerprint)
    finns = {**SWEDISH, "value": "fi"}
    [change] = log.put(catalog, "swedes", finns)
    assert change.before == again and change.after == catalog.get("members", "swedes")
    assert change.after.version == 3 and change.after.fingerprint != first.fingerprint


def test_a_tombstone_deletes(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "swedes", SWEDISH)
    entry = catalog.get("members", "swedes")
    delete = catalog.prepare_delete("members", "swedes")
    assert (delete.key, delete.value) == (b"members/swedes", None)
    assert log.write(catalog, delete.key, None) == [CatalogChange("members", "swedes", entry, None)]
    with pytest.raises(UnknownSegment):
        catalog.get("members", "swedes")
    with pytest.raises(UnknownSegment):
        catalog.prepare_delete("members", "swedes")


def test_replays_change_nothing_and_a_fresh_reader_rebuilds_the_same(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "swedes", SWEDISH)
    log.put(catalog, "fans", {"segment": "swedes"})
    log.put(catalog, "swedes", {**SWEDISH, "value": "fi"})
    tomb = catalog.prepare_delete("members", "fans")
    log.write(catalog, tomb.key, tomb.value)
    before = catalog.segments("members")
    for key, value, offset in log.records:  # the same records again, as after a reconnect
        assert catalog.apply(key, value, offset) == []
    key, _, offset = log.records[0]
    assert catalog.apply(key, raw({"attribute": "score", "op": "lt", "value": 0}), offset) == []  # an old offset
    assert catalog.segments("members") == before
    assert log.replay(SegmentCatalog(settings)).segments("members") == before
    assert catalog.get("members", "swedes").definition == {**SWEDISH, "value": "fi"}


def test_configured_names_are_read_only(settings: Settings) -> None:
    catalog = SegmentCatalog(settings)
    with pytest.raises(ConfigDefined, match="defined in the configuration"):
        catalog.prepare_put("members", "vip", SWEDISH)
    with pytest.raises(ConfigDefined):
        catalog.prepare_delete("members", "vip")


def test_a_bad_body_is_refused_with_every_path(settings: Settings) -> None:
    catalog = SegmentCatalog(settings)
    body = {"all": [{"attribute": "shoe", "op": "eq", "value": 1}, {"history": "purchase", "within": "P9999D"}]}
    with pytest.raises(InvalidDefinition) as info:
        catalog.prepare_put("members", "x", body)
    assert [path for path, _ in info.value.errors] == ["/all/0/attribute", "/all/1/within"]
    with pytest.raises(InvalidDefinition) as info:
        catalog.prepare_put("members", "x", ["not", "an", "object"])
    assert info.value.errors[0][0] == ""
    with pytest.raises(InvalidDefinition) as info:
        catalog.prepare_put("members", "x", {"segment": "nobody"})
    assert info.value.errors == [("/segment", "unknown segment 'nobody' of this database")]


def test_a_reference_loop_is_refused_at_its_place_in_the_body(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    with pytest.raises(InvalidDefinition) as info:
        catalog.prepare_put("members", "me", {"any": [SWEDISH, {"segment": "me"}]})
    assert info.value.errors == [("/any/1/segment", "segment cycle: me -> me")]
    log.put(catalog, "a", {"segment": "vip"})
    log.put(catalog, "b", {"not": {"segment": "a"}})
    with pytest.raises(InvalidDefinition) as info:
        catalog.prepare_put("members", "a", {"all": [SWEDISH, {"segment": "b"}]})
    assert info.value.errors == [("/all/1/segment", "segment cycle: a -> b -> a")]


def test_deleting_a_referenced_segment_is_refused(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "a", SWEDISH)
    log.put(catalog, "b", {"segment": "a"})
    log.put(catalog, "c", {"not": {"segment": "a"}})
    with pytest.raises(SegmentInUse, match="referenced by b, c") as info:
        catalog.prepare_delete("members", "a")
    assert info.value.users == ["b", "c"]


def test_api_definitions_may_read_configured_ones(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "vip-swedes", {"all": [{"segment": "vip"}, SWEDISH]})
    assert catalog.definitions("members")["vip-swedes"].children[0] == SegmentLeaf("vip")  # type: ignore[union-attr]


def test_wrong_database_or_name(settings: Settings) -> None:
    catalog = SegmentCatalog(settings)
    with pytest.raises(UnknownDatabase):
        catalog.prepare_put("nowhere", "x", SWEDISH)
    with pytest.raises(UnknownDatabase):
        catalog.segments("nowhere")
    with pytest.raises(InvalidSegmentName):
        catalog.prepare_put("members", "a/b", SWEDISH)
    with pytest.raises(InvalidDefinition, match="bytes stored"):
        catalog.prepare_put("members", "big", {"attribute": "language", "op": "in", "value": ["x" * 1000] * 600})
    assert MAX_RECORD_BYTES < 1_000_000  # below Kafka's default message size


def test_concurrent_puts_closing_a_loop_reject_the_newer_on_every_worker(settings: Settings) -> None:
    """Two workers accept a -> b and b -> a at once: both records land; every reader rejects the later one.

    The later record replaced b's earlier one (last writer wins, and compaction keeps no history), so
    b has no definition in force, and a, which reads b, is rejected as dangling until b is fixed.
    """
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "a", SWEDISH)
    log.put(catalog, "b", SWEDISH)
    log.write(catalog, record_key("members", "a"), raw({"segment": "b"}, 2))
    changes = log.write(catalog, record_key("members", "b"), raw({"any": [{"segment": "a"}]}, 2))
    assert [(c.name, c.after) for c in changes] == [("a", None), ("b", None)]
    loop, dangling = catalog.rejected("members")[::-1]
    assert (loop.name, loop.offset, loop.errors) == ("b", 3, (("/any/0/segment", "segment cycle: b -> a -> b"),))
    assert (dangling.name, dangling.errors) == ("a", (("/segment", "unknown segment 'b' of this database"),))
    assert names(catalog) == [("vip", "config")]
    assert log.replay(SegmentCatalog(settings)).rejected("members") == [dangling, loop]
    log.put(catalog, "b", SWEDISH)  # fixing b brings a back
    assert names(catalog) == [("a", "api"), ("b", "api"), ("vip", "config")]


def test_a_definition_left_dangling_comes_back_with_its_target(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    log.put(catalog, "a", SWEDISH)
    log.put(catalog, "b", {"segment": "a"})
    log.write(catalog, record_key("members", "a"), None)  # a concurrent DELETE got through
    assert names(catalog) == [("vip", "config")]
    assert [r.name for r in catalog.rejected("members")] == ["b"]
    changes = log.put(catalog, "a", SWEDISH)
    assert [(c.name, c.before is None, c.after is not None) for c in changes] == [("a", True, True), ("b", True, True)]
    assert catalog.rejected("members") == []


def test_records_the_catalog_cannot_use_never_stop_it(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    assert log.write(catalog, b"no slash", raw(SWEDISH)) == []
    assert log.write(catalog, b"\xff/x", raw(SWEDISH)) == []
    assert log.write(catalog, b"members/junk", b"{not json") == []
    assert log.write(catalog, record_key("members", "vip"), raw(SWEDISH)) == []  # the configuration wins
    assert log.write(catalog, record_key("gone", "x"), raw(SWEDISH)) == []  # a database no longer configured
    assert log.write(catalog, record_key("members", "stale"), raw({"attribute": "removed", "op": "exists"})) == []
    reasons = {r.name: r.errors[0][1] for r in catalog.rejected("members")}
    assert reasons["junk"].startswith("record is not JSON")
    assert reasons["vip"] == "a configured segment has this name"
    assert reasons["stale"].startswith("unknown attribute 'removed'")
    assert catalog.get("members", "vip").source == "config"
    assert catalog.applied_offset == 5
    log.put(catalog, "fine", SWEDISH)
    assert catalog.get("members", "fine").offset == 6
    log.put(catalog, "stale", SWEDISH)  # a PUT repairs it, one revision on
    assert catalog.get("members", "stale").version == 2


def test_listeners_hear_every_change_and_one_failing_stops_nobody(settings: Settings) -> None:
    catalog, log = SegmentCatalog(settings), Log()
    heard: list[CatalogChange] = []

    def broken(changes: list[CatalogChange]) -> None:
        raise RuntimeError("listener bug")

    catalog.subscribe(broken)
    catalog.subscribe(heard.extend)
    log.put(catalog, "a", SWEDISH)
    log.write(catalog, record_key("members", "a"), None)
    assert [(c.name, c.after is None) for c in heard] == [("a", False), ("a", True)]


def test_record_codec_round_trips_and_checks(settings: Settings) -> None:
    record = StoredDefinition({"attribute": "language", "op": "eq", "value": "å"}, NOW, 7)
    assert decode_record(encode_record(record)) == record
    assert split_key(record_key("members", "x-1")) == ("members", "x-1")
    for bad in (b"[]", b'{"definition": 1, "updatedAt": 3, "version": 1}', b'{"definition": 1, "version": true}'):
        with pytest.raises(ValueError):
            decode_record(bad)
    with pytest.raises(ValueError):
        split_key(b"members/")


def test_a_whole_fetch_gives_the_net_changes_and_the_same_catalog(settings: Settings) -> None:
    one, log = SegmentCatalog(settings), Log()
    log.put(one, "a", SWEDISH)
    log.put(one, "b", {"segment": "a"})
    log.put(one, "gone", SWEDISH)
    log.write(one, *_tombstone(one, "gone"))
    log.put(one, "a", {**SWEDISH, "value": "fi"})
    fetched = SegmentCatalog(settings)
    changes = fetched.apply_all(log.records)
    assert [(c.name, c.before, c.after) for c in changes] == [
        ("a", None, one.get("members", "a")),
        ("b", None, one.get("members", "b")),
    ]  # "gone" came and went inside the fetch: nothing to build
    assert fetched.segments("members") == one.segments("members")
    assert fetched.apply_all(log.records) == []


def _tombstone(catalog: SegmentCatalog, name: str) -> tuple[bytes, bytes | None]:
    write = catalog.prepare_delete("members", name)
    return write.key, write.value
