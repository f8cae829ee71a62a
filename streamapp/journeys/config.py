"""`[[journeys]]` of the configuration (SPEC §10): each file read, parsed and reported by place.

`streamapp.settings` keeps only each journey's name and file (it sits below this package). Here
each file is read and parsed against the configuration: its database, the history types, the
database's *configured* segments (whether a file is valid must not depend on what the API stored
at run time) and the templates that exist. A problem inside a file is a `ConfigIssue` naming that
file and the JSON Pointer (`config/journeys/welcome.json: /steps/3/timeout: ...`); a missing or
unreadable file names the TOML entry (`journeys[0].file`). `streamapp check-config` and a worker's
start-up report them like every other configuration error.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamapp.journeys.definition import JourneyCatalog, JourneyError, parse_journey
from streamapp.journeys.nodes import Journey
from streamapp.settings import ConfigError, ConfigIssue, JourneySettings, Settings

__all__ = ["MAX_FILE_BYTES", "check_journeys", "config_journeys", "journey_catalog"]

#: A definition file larger than this is refused unread: a journey is a few KiB of JSON.
MAX_FILE_BYTES = 1 << 20
_TEMPLATE_FILES = ("subject.txt", "body.html")


class _Templates:
    """The template names whose folder has the files a send needs, looked up on the disk once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.known: dict[str, bool] = {}

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            return False
        if name not in self.known:
            self.known[name] = all((self.root / name / part).is_file() for part in _TEMPLATE_FILES)
        return self.known[name]


def journey_catalog(settings: Settings) -> JourneyCatalog:
    """What the configured journeys may name."""
    segments: dict[str, set[str]] = {name: set() for name in settings.databases}
    for segment in settings.segments:
        segments.setdefault(segment.database, set()).add(segment.name)
    return JourneyCatalog(
        settings.databases,
        settings.history_types,
        segments,
        _Templates(settings.templates_dir),
        settings.service.zone,
    )


def check_journeys(settings: Settings) -> list[ConfigIssue]:
    """Every problem of every configured journey."""
    return _parse_all(settings)[1]


def config_journeys(settings: Settings) -> dict[str, Journey]:
    """The configured journeys, parsed, by name; ConfigError if any is wrong."""
    journeys, issues = _parse_all(settings)
    if issues:
        raise ConfigError(issues)
    return journeys


def _parse_all(settings: Settings) -> tuple[dict[str, Journey], list[ConfigIssue]]:
    catalog = journey_catalog(settings)
    journeys: dict[str, Journey] = {}
    issues: list[ConfigIssue] = []
    for i, entry in enumerate(settings.journeys):
        raw, problem = _read(entry)
        if problem is not None:
            issues.append(ConfigIssue(str(settings.path), f"journeys[{i}].file", problem))
            continue
        try:
            journeys[entry.name] = parse_journey(entry.name, raw, catalog)
        except JourneyError as exc:
            issues.extend(ConfigIssue(str(entry.file), path or "/", message) for path, message in exc.errors)
    return journeys, issues


def _read(entry: JourneySettings) -> tuple[object, str | None]:
    """(decoded JSON, None) or (None, why the file cannot be used)."""
    path = entry.file
    try:
        if not path.is_file():
            return None, f"journey file {path} does not exist"
        if path.stat().st_size > MAX_FILE_BYTES:
            return None, f"journey file {path} is larger than {MAX_FILE_BYTES // 1024} KiB"
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"journey file {path} cannot be read: {exc}"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"journey file {path} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    except RecursionError:
        return None, f"journey file {path} is nested too deep"
