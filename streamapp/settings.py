"""Configuration: one TOML file, validated whole, every error named by its place.

Loading never stops at the first problem: an operator fixing a config file
wants the full list at once, each entry naming the file, the table and the
key (``streamapp check-config`` prints them all).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_CONFIG = Path("config/streamapp.toml")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ATTRIBUTE_TYPES = ("string", "int", "float", "bool", "date", "datetime")
SCOPES = ("recipients:read", "recipients:write", "send", "admin")
MAX_HISTORY_TYPES = 20
DEFAULT_HISTORY_TYPES = (
    "purchase",
    "return",
    "booking",
    "subscription",
    "pageview",
    "cart",
    "wishlist",
    "search",
    "review",
    "support",
)
#: Field names a recipient has besides its attributes; an attribute may not shadow them.
RESERVED_ATTRIBUTE_NAMES = frozenset(
    {"originalId", "email", "status", "softBounces", "createdAt", "updatedAt", "attributes"}
)

AttributeType = Literal["string", "int", "float", "bool", "date", "datetime"]
T = TypeVar("T")


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in the configuration, with the place it was found."""

    file: str
    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.place}: {self.message}" if self.place else f"{self.file}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; carries every issue found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True)
class ServiceSettings:
    id: str
    broker: str
    data_dir: Path
    web_host: str
    web_port: int
    partitions: int
    replication_factor: int
    timezone: str
    public_url: str
    advertised_url: str
    max_body_bytes: int
    #: Trigger batch and campaign bodies are spooled to disk, so they may be far larger.
    max_batch_bytes: int = 1 << 30

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    connections: int
    rate_per_second: float
    sender: str
    retry_initial_seconds: float
    retry_max_seconds: float
    expiry_seconds: float
    username: str | None
    password: str | None
    starttls: bool
    unsubscribe_mailto: str | None


@dataclass(frozen=True)
class TokenSettings:
    name: str
    sha256: str
    scopes: frozenset[str]
    databases: frozenset[str] | None  # None: every database

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def allows_database(self, database: str) -> bool:
        return self.databases is None or database in self.databases


@dataclass(frozen=True)
class DatabaseSettings:
    name: str
    auto_create_attributes: bool
    attributes: Mapping[str, AttributeType]


@dataclass(frozen=True)
class ImportSettings:
    name: str
    database: str
    kind: Literal["recipients", "history"]
    watch: str
    settle_seconds: float
    pattern: str
    encoding: str
    delimiter: str
    header: bool
    mode: Literal["upsert", "replace", "unsubscribe"]
    identity: str | None
    columns: Mapping[str, str]
    history_type: str = "purchase"


@dataclass(frozen=True)
class TriggerSettings:
    name: str
    database: str
    template: str
    transactional: bool


@dataclass(frozen=True)
class CampaignSettings:
    name: str
    database: str
    template: str


@dataclass(frozen=True)
class Settings:
    path: Path
    service: ServiceSettings
    smtp: SmtpSettings | None
    tokens: tuple[TokenSettings, ...]
    databases: Mapping[str, DatabaseSettings]
    history_types: tuple[str, ...]
    imports: tuple[ImportSettings, ...] = ()
    triggers: Mapping[str, TriggerSettings] = field(default_factory=dict)
    campaigns: Mapping[str, CampaignSettings] = field(default_factory=dict)

    @property
    def templates_dir(self) -> Path:
        return self.path.parent / "templates"


# --------------------------------------------------------------------------
# Reading: a small checked view over one TOML table.
# --------------------------------------------------------------------------

_REQUIRED: Any = object()


class _Reader:
    """Collects issues while reading keys of nested TOML tables."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[ConfigIssue] = []

    def error(self, place: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, place, message))

    @contextmanager
    def table(self, data: Any, place: str) -> Iterator[_Table]:
        view = _Table(self, data if isinstance(data, dict) else {}, place)
        if not isinstance(data, dict):
            self.error(place, f"expected a table, got {_kind(data)}")
        yield view
        view.report_unknown()


class _Table:
    def __init__(self, reader: _Reader, data: dict[str, Any], place: str) -> None:
        self.reader = reader
        self.data = data
        self.place = place
        self.seen: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.place}.{key}" if self.place else key

    def get(
        self,
        key: str,
        kind: type[T] | tuple[type, ...],
        default: Any = _REQUIRED,
        check: Callable[[Any], str | None] | None = None,
    ) -> T:
        """Return the key's value (or default); record an issue if it is wrong."""
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.reader.error(self.at(key), "required key is missing")
            return default  # type: ignore[no-any-return]
        value = self.data[key]
        if not _is_kind(value, kind):
            self.reader.error(self.at(key), f"expected {_kind_name(kind)}, got {_kind(value)}")
            return default if default is not _REQUIRED else value  # type: ignore[no-any-return]
        problem = check(value) if check else None
        if problem:
            self.reader.error(self.at(key), problem)
        return value  # type: ignore[no-any-return]

    def report_unknown(self) -> None:
        for key in self.data:
            if key not in self.seen:
                self.reader.error(self.at(key), "unknown key")


def _is_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # TOML true is not an int
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------
# Checks shared by several keys.
# --------------------------------------------------------------------------


def _name_check(value: str) -> str | None:
    return None if NAME_RE.match(value) else "must match [A-Za-z0-9_-]{1,64}"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a TCP port (1-65535)"


def _one_of(*allowed: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(map(repr, allowed))}"

    return check


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r}"
    return None


def _url(value: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+", value) else "must be an http:// or https:// URL"


def _broker(value: str) -> str | None:
    ok = re.match(r"^(kafka://)?[^\s:/]+:\d+(,[^\s:/]+:\d+)*$", value)
    return None if ok else "must look like kafka://host:port"


# --------------------------------------------------------------------------
# Sections.
# --------------------------------------------------------------------------


def _read_service(r: _Reader, data: Any, base: Path) -> ServiceSettings:
    with r.table(data, "service") as t:
        web_host = t.get("web_host", str, "127.0.0.1")
        web_port = t.get("web_port", int, 6066, _port)
        reachable_host = socket.gethostname() if web_host in ("0.0.0.0", "::", "") else web_host
        default_url = f"http://{reachable_host}:{web_port}"
        return ServiceSettings(
            id=t.get("id", str, "streamapp", _name_check),
            broker=t.get("broker", str, "kafka://127.0.0.1:9092", _broker),
            data_dir=(base / t.get("data_dir", str, "../var")).resolve(),
            web_host=web_host,
            web_port=web_port,
            partitions=t.get("partitions", int, 8, _positive),
            replication_factor=t.get("replication_factor", int, 1, _positive),
            timezone=t.get("timezone", str, "Europe/Stockholm", _timezone),
            public_url=t.get("public_url", str, default_url, _url).rstrip("/"),
            advertised_url=t.get("advertised_url", str, default_url, _url).rstrip("/"),
            max_body_bytes=t.get("max_body_bytes", int, 16 * 1024 * 1024, _positive),
            max_batch_bytes=t.get("max_batch_bytes", int, 1 << 30, _positive),
        )


def _read_smtp(r: _Reader, data: Any) -> SmtpSettings:
    with r.table(data, "smtp") as t:
        return SmtpSettings(
            host=t.get("host", str, "127.0.0.1"),
            port=t.get("port", int, 25, _port),
            connections=t.get("connections", int, 8, _positive),
            rate_per_second=float(t.get("rate_per_second", float, 0, _non_negative)),
            sender=t.get("sender", str, "news@example.com"),
            retry_initial_seconds=float(t.get("retry_initial_seconds", float, 60, _positive)),
            retry_max_seconds=float(t.get("retry_max_seconds", float, 3600, _positive)),
            expiry_seconds=float(t.get("expiry_seconds", float, 86400, _positive)),
            username=t.get("username", str, None),
            password=t.get("password", str, None),
            starttls=t.get("starttls", bool, False),
            unsubscribe_mailto=t.get("unsubscribe_mailto", str, None),
        )


def _sha256_check(value: str) -> str | None:
    ok = re.fullmatch(r"[0-9a-fA-F]{64}", value)
    return None if ok else "must be the 64 hex digits of the token's SHA-256"


def _read_tokens(r: _Reader, data: Any) -> tuple[TokenSettings, ...]:
    tokens = []
    for i, item in enumerate(_array(r, data, "tokens")):
        with r.table(item, f"tokens[{i}]") as t:
            scopes = t.get("scopes", list, [])
            for scope in scopes:
                if scope not in SCOPES:
                    r.error(t.at("scopes"), f"unknown scope {scope!r} (known: {', '.join(SCOPES)})")
            databases = t.get("databases", list, None)
            tokens.append(
                TokenSettings(
                    name=t.get("name", str, f"token{i}"),
                    sha256=t.get("sha256", str, "", _sha256_check).lower(),
                    scopes=frozenset(scopes),
                    databases=frozenset(databases) if databases is not None else None,
                )
            )
    return tuple(tokens)


def _read_databases(r: _Reader, data: Any) -> dict[str, DatabaseSettings]:
    databases: dict[str, DatabaseSettings] = {}
    for i, item in enumerate(_array(r, data, "databases")):
        with r.table(item, f"databases[{i}]") as t:
            name = t.get("name", str, f"#{i}", _name_check)
            if name in databases:
                r.error(t.at("name"), f"database {name!r} is defined twice")
            auto = t.get("auto_create_attributes", bool, False)
            attributes = _read_attributes(r, t.get("attributes", dict, {}), t.at("attributes"))
            databases[name] = DatabaseSettings(name, auto, attributes)
    return databases


def _read_attributes(r: _Reader, data: dict[str, Any], place: str) -> dict[str, AttributeType]:
    attributes: dict[str, AttributeType] = {}
    for name, kind in data.items():
        where = f"{place}.{name}"
        if name in RESERVED_ATTRIBUTE_NAMES:
            r.error(where, "is a recipient field, not an attribute name")
        elif not NAME_RE.match(name):
            r.error(where, "attribute names must match [A-Za-z0-9_-]{1,64}")
        elif kind not in ATTRIBUTE_TYPES:
            r.error(where, f"unknown type {kind!r} (one of {', '.join(ATTRIBUTE_TYPES)})")
        else:
            attributes[name] = kind
    return attributes


def _read_history_types(r: _Reader, data: Any) -> tuple[str, ...]:
    if data is None:
        return DEFAULT_HISTORY_TYPES
    names: list[str] = []
    for i, item in enumerate(_array(r, data, "history_types")):
        with r.table(item, f"history_types[{i}]") as t:
            name = t.get("name", str, "", _name_check)
            if name in names:
                r.error(t.at("name"), f"history type {name!r} is defined twice")
            names.append(name)
    if len(names) > MAX_HISTORY_TYPES:
        r.error("history_types", f"at most {MAX_HISTORY_TYPES} history types, got {len(names)}")
    return tuple(names)


ENCODINGS = ("utf-8", "windows-1252", "iso-8859-1")
#: Python codec for each configured encoding ("utf-8-sig" tolerates a BOM).
CODECS = {"utf-8": "utf-8-sig", "windows-1252": "cp1252", "iso-8859-1": "latin-1"}
DELIMITERS = (",", ";", "\t", "|")


def _read_imports(
    r: _Reader, data: Any, databases: Mapping[str, DatabaseSettings], history_types: tuple[str, ...]
) -> tuple[ImportSettings, ...]:
    imports: list[ImportSettings] = []
    for i, item in enumerate(_array(r, data, "imports")):
        with r.table(item, f"imports[{i}]") as t:
            name = t.get("name", str, f"#{i}", _name_check)
            if any(existing.name == name for existing in imports):
                r.error(t.at("name"), f"import {name!r} is defined twice")
            if name in SEND_FOLDERS:
                r.error(t.at("name"), f"{name!r} is reserved for the send folder drop/{name}/")
            database = t.get("database", str, "")
            _check_reference(r, t.at("database"), "database", database, databases)
            kind = t.get("kind", str, "recipients", _one_of("recipients", "history"))
            watch = t.get("watch", str, name, _import_folder)
            if any(existing.watch == watch for existing in imports):
                r.error(t.at("watch"), f"folder {watch!r} is watched by another import")
            columns = t.get("columns", dict, {})
            _check_columns(r, t.at("columns"), columns, databases.get(database))
            imports.append(
                ImportSettings(
                    name=name,
                    database=database,
                    kind=kind,  # type: ignore[arg-type]
                    watch=watch,
                    settle_seconds=float(t.get("settle_seconds", float, 2, _non_negative)),
                    pattern=t.get("pattern", str, "*.csv", _pattern_check),
                    encoding=t.get("encoding", str, "utf-8", _one_of(*ENCODINGS)),
                    delimiter=t.get("delimiter", str, ";", _one_of(*DELIMITERS)),
                    header=t.get("header", bool, kind != "history"),
                    mode=t.get("mode", str, "upsert", _one_of("upsert", "replace", "unsubscribe")),  # type: ignore[arg-type]
                    identity=t.get("identity", str, None if kind == "history" else _REQUIRED),
                    columns=columns,
                    history_type=t.get("history_type", str, "purchase", _one_of(*history_types)),
                )
            )
    return tuple(imports)


def _pattern_check(value: str) -> str | None:
    if not value.endswith((".csv", ".txt", "*")) or "/" in value:
        return "must be a file name pattern for .csv or .txt files, e.g. '*.csv'"
    return None


def _check_columns(r: _Reader, place: str, columns: dict[str, Any], db: DatabaseSettings | None) -> None:
    for column, target in columns.items():
        if not isinstance(target, str):
            r.error(f"{place}.{column}", "must name email, originalId or an attribute")
        elif db and target not in ("email", "originalId", *db.attributes) and not db.auto_create_attributes:
            r.error(f"{place}.{column}", f"{target!r} is not an attribute of database {db.name!r}")


#: Folders under drop/ that belong to batch transactional and campaign files (SPEC §5).
SEND_FOLDERS = ("triggers", "campaigns")


def _import_folder(value: str) -> str | None:
    problem = _relative_folder(value)
    if problem is None and Path(value).parts[0] in SEND_FOLDERS:
        return f"drop/{Path(value).parts[0]}/ is reserved for send files (triggers and campaigns)"
    return problem


def _relative_folder(value: str) -> str | None:
    parts = Path(value).parts
    if not value or Path(value).is_absolute() or ".." in parts:
        return "must be a folder below <data_dir>/drop/ (relative, no '..')"
    return None


def _read_messages(
    r: _Reader, data: Any, table: str, databases: Mapping[str, DatabaseSettings], templates: Path
) -> list[tuple[str, str, str, bool]]:
    """Read [[triggers]] or [[campaigns]] as (name, database, template, transactional)."""
    items = []
    for i, item in enumerate(_array(r, data, table)):
        with r.table(item, f"{table}[{i}]") as t:
            name = t.get("name", str, f"#{i}", _name_check)
            database = t.get("database", str, "")
            _check_reference(r, t.at("database"), "database", database, databases)
            template = t.get("template", str, name, _name_check)
            _check_template(r, t.at("template"), templates / template)
            transactional = t.get("transactional", bool, False) if table == "triggers" else False
            items.append((name, database, template, transactional))
    return items


def _check_template(r: _Reader, place: str, folder: Path) -> None:
    for part in ("subject.txt", "body.html"):
        if not (folder / part).is_file():
            r.error(place, f"template file {folder / part} does not exist")


def _check_reference(r: _Reader, place: str, what: str, name: str, known: Mapping[str, Any]) -> None:
    if name and name not in known:
        r.error(place, f"unknown {what} {name!r} (defined: {', '.join(sorted(known)) or 'none'})")


def _array(r: _Reader, data: Any, place: str) -> list[Any]:
    if data is None:
        return []
    if not isinstance(data, list):
        r.error(place, f"expected an array of tables ([[{place}]]), got {_kind(data)}")
        return []
    return data


# --------------------------------------------------------------------------
# Entry points.
# --------------------------------------------------------------------------

TOP_LEVEL = ("service", "smtp", "tokens", "databases", "history_types", "imports", "triggers", "campaigns")


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("STREAMAPP_CONFIG", str(DEFAULT_CONFIG)))


def load_settings(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Load, apply environment overrides, validate; raise ConfigError listing every issue."""
    path = (path or config_path(environ)).resolve()
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(file, "", "file not found (set STREAMAPP_CONFIG)")]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, "", f"not valid TOML: {exc}")]) from None
    r = _Reader(file)
    _apply_environment(r, raw, environ)
    for key in raw:
        if key not in TOP_LEVEL:
            r.error(key, f"unknown table (known: {', '.join(TOP_LEVEL)})")
    settings = _read_all(r, raw, path)
    if r.issues:
        raise ConfigError(r.issues)
    return settings


def _read_all(r: _Reader, raw: dict[str, Any], path: Path) -> Settings:
    base = path.parent
    databases = _read_databases(r, raw.get("databases"))
    tokens = _read_tokens(r, raw.get("tokens"))
    for i, token in enumerate(tokens):
        for name in sorted(token.databases or ()):
            _check_reference(r, f"tokens[{i}].databases", "database", name, databases)
    templates = base / "templates"
    triggers = {
        name: TriggerSettings(name, db, template, transactional)
        for name, db, template, transactional in _read_messages(
            r, raw.get("triggers"), "triggers", databases, templates
        )
    }
    campaigns = {
        name: CampaignSettings(name, db, template)
        for name, db, template, _ in _read_messages(r, raw.get("campaigns"), "campaigns", databases, templates)
    }
    history_types = _read_history_types(r, raw.get("history_types"))
    return Settings(
        path=path,
        service=_read_service(r, raw.get("service", {}), base),
        smtp=_read_smtp(r, raw["smtp"]) if "smtp" in raw else None,
        tokens=tokens,
        databases=databases,
        history_types=history_types,
        imports=_read_imports(r, raw.get("imports"), databases, history_types),
        triggers=triggers,
        campaigns=campaigns,
    )


def _apply_environment(r: _Reader, raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Environment overrides win over the file (SPEC §1)."""
    service = raw.setdefault("service", {})
    if not isinstance(service, dict):
        return
    for var, key in (
        ("STREAMAPP_BROKER", "broker"),
        ("STREAMAPP_DATA_DIR", "data_dir"),
        ("STREAMAPP_WEB_HOST", "web_host"),
        ("STREAMAPP_ADVERTISED_URL", "advertised_url"),
        ("STREAMAPP_PUBLIC_URL", "public_url"),
    ):
        if environ.get(var):
            service[key] = environ[var] if key != "data_dir" else str(Path(environ[var]).resolve())
    if environ.get("STREAMAPP_WEB_PORT"):
        try:
            service["web_port"] = int(environ["STREAMAPP_WEB_PORT"])
        except ValueError:
            r.issues.append(ConfigIssue("environment", "STREAMAPP_WEB_PORT", "must be an integer"))
    if environ.get("STREAMAPP_SMTP"):
        host, _, port = environ["STREAMAPP_SMTP"].rpartition(":")
        if not host or not port.isdigit():
            r.issues.append(ConfigIssue("environment", "STREAMAPP_SMTP", "must be host:port"))
        else:
            smtp = raw.setdefault("smtp", {})
            if isinstance(smtp, dict):
                smtp.update(host=host, port=int(port))
