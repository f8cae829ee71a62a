"""`[[segments]]` of the configuration (SPEC §9): parsed, cross-checked, reported by place.

`streamapp.settings` keeps each definition raw (it sits below this package); here every one is
parsed against its database's schema and the other configured segments of that database, and
the reference graph is checked for loops. Problems become `ConfigIssue`s naming the entry and
the JSON Pointer inside its definition (`segments[2].definition/all/3/within`), so
`streamapp check-config` and a worker's start-up report them like any other configuration error.

A configured segment may reference configured segments only: whether a file is valid must not
depend on what the API stored at run time. API definitions may reference both (`catalog.py`).
"""

from __future__ import annotations

from collections.abc import Container

from streamapp.segments.definition import Catalog, DefinitionError, parse_definition
from streamapp.segments.graph import CycleError, check_acyclic
from streamapp.segments.nodes import Node
from streamapp.settings import ConfigError, ConfigIssue, Settings

__all__ = ["check_segments", "config_definitions", "database_catalog"]


def database_catalog(settings: Settings, database: str, segments: Container[str]) -> Catalog:
    """What a definition of `database` may name, with `segments` as the referable segment names."""
    db = settings.databases[database]
    return Catalog(db.attributes, settings.history_types, segments, db.auto_create_attributes)


def check_segments(settings: Settings) -> list[ConfigIssue]:
    """Every problem of every configured definition, each naming `segments[i].definition<pointer>`."""
    return _parse_all(settings)[1]


def config_definitions(settings: Settings) -> dict[str, dict[str, Node]]:
    """The configured segments, parsed, by database then name; ConfigError if any is wrong."""
    definitions, issues = _parse_all(settings)
    if issues:
        raise ConfigError(issues)
    return definitions


def _parse_all(settings: Settings) -> tuple[dict[str, dict[str, Node]], list[ConfigIssue]]:
    file = str(settings.path)
    issues: list[ConfigIssue] = []
    definitions: dict[str, dict[str, Node]] = {name: {} for name in settings.databases}
    index: dict[tuple[str, str], int] = {}
    for i, segment in enumerate(settings.segments):
        if segment.database not in settings.databases:
            continue  # reported by load_settings
        names = {s.name for s in settings.segments if s.database == segment.database}
        try:
            node = parse_definition(segment.definition, database_catalog(settings, segment.database, names))
        except DefinitionError as exc:
            issues.extend(ConfigIssue(file, _place(i, path), message) for path, message in exc.errors)
            continue
        definitions[segment.database][segment.name] = node
        index[(segment.database, segment.name)] = i
    for database, nodes in definitions.items():
        issues.extend(_cycle_issues(file, database, nodes, index))
    return definitions, issues


def _cycle_issues(
    file: str, database: str, nodes: dict[str, Node], index: dict[tuple[str, str], int]
) -> list[ConfigIssue]:
    """One issue per reference loop; the segments of each loop are dropped from `nodes`."""
    issues: list[ConfigIssue] = []
    while True:
        try:
            check_acyclic(nodes)
        except CycleError as exc:
            i = index[(database, exc.cycle[0])]
            issues.extend(ConfigIssue(file, _place(i, path), message) for path, message in exc.errors)
            for name in exc.cycle:
                nodes.pop(name, None)
        else:
            return issues


def _place(i: int, pointer: str) -> str:
    return f"segments[{i}].definition{pointer}"
