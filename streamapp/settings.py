"""Configuration: one TOML file, validated whole, every error named by its place.

Loading never stops at the first problem: an operator fixing a config file
wants the full list at once, each entry naming the file, the table and the
key (``streamapp check-config`` prints them all).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import ssl
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamapp.durations import parse_duration

DEFAULT_CONFIG = Path("config/streamapp.toml")
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ATTRIBUTE_TYPES = ("string", "int", "float", "bool", "date", "datetime")
SCOPES = ("recipients:read", "recipients:write", "send", "admin")
#: History types of a deployment in all, the defaults included (SPEC §3); engagement types do not count.
MAX_HISTORY_TYPES = 20
#: The history types every deployment has; `[[history_types]]` adds to them (SPEC §3).
DEFAULT_HISTORY_TYPES = (
    "purchase",
    "return",
    "visit",
    "view",
    "cart",
    "signup",
    "login",
    "download",
    "form",
    "custom",
)
#: History types streamapp records itself (SPEC §8): never posted by clients, never configured.
ENGAGEMENT_TYPES = (
    "mail.sent",
    "mail.opened",
    "mail.clicked",
    "mail.bounced",
    "mail.complained",
    "mail.unsubscribed",
)
#: The prefix of the engagement types: a configured name cannot take it.
ENGAGEMENT_PREFIX = "mail."
#: Field names a recipient has besides its attributes; an attribute may not shadow them.
RESERVED_ATTRIBUTE_NAMES = frozenset(
    {"originalId", "email", "status", "softBounces", "createdAt", "updatedAt", "attributes"}
)

#: The bearer tokens documented for development (config/streamapp.toml, README), by SHA-256.
#: Everybody knows them, so they only work while the API listens on loopback (SPEC §13).
DEVELOPMENT_TOKENS = {hashlib.sha256(t.encode()).hexdigest(): t for t in ("dev-token", "dev-readonly-token")}
#: The HMAC key of config/secrets/dev.keys: public as well, and refused off loopback like the tokens.
DEVELOPMENT_KEY = b"streamapp-development-key-not-secret"
#: The shortest HMAC key accepted in `[service] secret_file` (SHA-256's output size).
MIN_KEY_BYTES = 32

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


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The HMAC keys every worker shares (SPEC §13): `signing` signs, each of `verifying` verifies.

    Rotation: the new key goes first and the old ones stay after it, so links already sent keep
    working. The repr never shows a key (settings get logged).
    """

    signing: bytes
    verifying: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.signing not in self.verifying:
            raise ValueError("the signing key must be one of the verifying keys")

    @classmethod
    def of(cls, keys: Sequence[bytes]) -> KeyRing:
        """The ring of a key file's keys in order: the first signs, all verify."""
        if not keys:
            raise ValueError("a key ring needs at least one key")
        return cls(keys[0], tuple(keys))

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self.verifying)} key(s)>)"


KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every client reaches the broker (`[service] kafka_*`): TLS, SASL, or neither.

    The password comes from `password_file` (never inline) and is read at load time, so a
    missing file stops `check-config` rather than the first connection. The repr hides it.
    """

    protocol: KafkaProtocol = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    #: PEM CA bundle the broker's certificate must chain to; None: the system CAs.
    ca_file: Path | None = None
    #: A client certificate and its key, for brokers that require mutual TLS.
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


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
    #: A TOML file of more [[tokens]] (`tokens_file`, STREAMAPP_TOKENS_FILE), kept out of the main file.
    tokens_file: Path | None = None
    #: The key file of `keys` (`secret_file`, STREAMAPP_SECRET_FILE).
    secret_file: Path | None = None
    #: None only on a loopback web_host without secret_file: development's per-data-dir key.
    keys: KeyRing | None = None
    #: Where upstream systems drop files (`drop_dir`, default <data_dir>/drop); may be shared by every worker.
    drop_dir: Path | None = None
    #: Claims, in-flight files, locks, duplicate markers (`claims_dir`, default <drop_dir>/../.streamapp-claims):
    #: outside drop_dir, never reachable by uploaders, on its file system so a claim is one rename (SPEC §13).
    claims_dir: Path | None = None
    #: How long ledger, batch and idempotency records are kept (`retention`, ISO 8601, SPEC §3).
    retention: timedelta = timedelta(days=90)
    #: TLS and SASL to the broker (`kafka_security_protocol` and the other `kafka_*` keys).
    kafka: KafkaSecurity = KafkaSecurity()

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
    password: str | None = field(repr=False)  # settings may be logged
    starttls: bool
    unsubscribe_mailto: str | None
    #: ESMTP PIPELINING and CHUNKING where the server offers them (streamapp.mail.pipelined); false: one
    #: command at a time, for a relay that advertises them but mishandles them.
    pipelining: bool = True


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
class DeclaredProperty:
    """A property a trigger's or campaign's template needs (`properties = { code = "string?" }`, SPEC §2)."""

    type: AttributeType
    required: bool


@dataclass(frozen=True)
class TriggerSettings:
    name: str
    database: str
    template: str
    transactional: bool
    #: None: properties are not declared, any are accepted (and templates may use any name).
    properties: Mapping[str, DeclaredProperty] | None = None
    #: `track`: opens and clicks are tracked (SPEC §8); off by default for transactional triggers.
    track: bool = True


@dataclass(frozen=True)
class CampaignSettings:
    name: str
    database: str
    template: str
    properties: Mapping[str, DeclaredProperty] | None = None
    track: bool = True


@dataclass(frozen=True)
class TrackingSettings:
    """`[tracking]` (SPEC §8): the open pixel and the click redirects, each switched off here for all."""

    opens: bool = True
    clicks: bool = True
    #: An open this soon after delivery is a machine's (a prefetcher or a scanner), not a reader's.
    machine_seconds: float = 60.0


@dataclass(frozen=True)
class BounceSettings:
    """`[bounces]` (SPEC §11): the VERP return path `<local>+<token>@<domain>` of every message, and the
    inbound SMTP listener for that domain (`listen`, host and port; None: this worker runs none)."""

    domain: str | None = None
    local: str = "bounce"
    listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class SegmentSettings:
    """A `[[segments]]` entry (SPEC §9). `definition` stays raw here: settings sits below
    `streamapp.segments`, which parses it (`streamapp.segments.config.check_segments`)."""

    name: str
    database: str
    definition: Mapping[str, Any]


@dataclass(frozen=True)
class JourneySettings:
    """A `[[journeys]]` entry (SPEC §10). `file` (resolved against the config file's folder) stays
    unread here: `streamapp.journeys.config` reads and checks it, as segments parse their definitions."""

    name: str
    file: Path


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
    #: In configuration order: `segments[i]` of the file is `segments[i]` here.
    segments: tuple[SegmentSettings, ...] = ()
    tracking: TrackingSettings = TrackingSettings()
    #: In configuration order: `journeys[i]` of the file is `journeys[i]` here.
    journeys: tuple[JourneySettings, ...] = ()
    #: The `[[dkim]]` tables as written (SPEC §11); streamapp.mail.dkim checks and loads their keys.
    dkim: tuple[Mapping[str, Any], ...] = ()
    bounces: BounceSettings = BounceSettings()

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
        #: Places whose value an environment variable set, so an error there names the variable.
        self.from_env: dict[str, str] = {}

    def error(self, place: str, message: str, file: str | None = None) -> None:
        """Record an issue at `place` of the main file, or of `file` (a tokens or key file)."""
        if file is None and place in self.from_env:
            message = f"{message} (set by {self.from_env[place]})"
        self.issues.append(ConfigIssue(file or self.file, place, message))

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
        secret_file = _path(base, t.get("secret_file", str, None, _non_empty))
        data_dir = (base / t.get("data_dir", str, "../var")).resolve()
        drop_dir = _path(base, t.get("drop_dir", str, None, _non_empty)) or data_dir / "drop"
        claims_dir = _path(base, t.get("claims_dir", str, None, _non_empty)) or _default_claims_dir(drop_dir)
        _check_claims_dir(r, t.at("claims_dir"), drop_dir, claims_dir)
        broker = t.get("broker", str, "kafka://127.0.0.1:9092", _broker)
        return ServiceSettings(
            id=t.get("id", str, "streamapp", _name_check),
            broker=broker,
            data_dir=data_dir,
            web_host=web_host,
            web_port=web_port,
            partitions=t.get("partitions", int, 8, _positive),
            replication_factor=t.get("replication_factor", int, 1, _positive),
            timezone=t.get("timezone", str, "Europe/Stockholm", _timezone),
            public_url=t.get("public_url", str, default_url, _url).rstrip("/"),
            advertised_url=t.get("advertised_url", str, default_url, _url).rstrip("/"),
            max_body_bytes=t.get("max_body_bytes", int, 16 * 1024 * 1024, _positive),
            max_batch_bytes=t.get("max_batch_bytes", int, 1 << 30, _positive),
            tokens_file=_path(base, t.get("tokens_file", str, None, _non_empty)),
            secret_file=secret_file,
            keys=_read_key_ring(r, secret_file, t.at("secret_file"), web_host),
            drop_dir=drop_dir,
            claims_dir=claims_dir,
            retention=_read_retention(t),
            kafka=_read_kafka_security(t, base, broker),
        )


#: Idempotency records protect retries for 24 h (SPEC §4), so retention may not be shorter (SPEC §3).
MIN_RETENTION = timedelta(hours=24)


def _read_retention(t: _Table) -> timedelta:
    text = t.get("retention", str, "P90D")
    try:
        return parse_duration(text, minimum=MIN_RETENTION, maximum=timedelta(days=3650))
    except ValueError as exc:
        t.reader.error(t.at("retention"), str(exc))
        return timedelta(days=90)


def _read_kafka_security(t: _Table, base: Path, broker: str) -> KafkaSecurity:
    """The `kafka_*` keys; a key that the chosen protocol would ignore is an error, not a silent no-op."""
    protocol = t.get("kafka_security_protocol", str, "PLAINTEXT", _one_of(*KAFKA_PROTOCOLS))
    security = KafkaSecurity(
        protocol=cast(KafkaProtocol, protocol),
        sasl_mechanism=t.get("kafka_sasl_mechanism", str, "SCRAM-SHA-512", _one_of(*KAFKA_SASL_MECHANISMS)),
        username=t.get("kafka_username", str, None, _non_empty),
        password_file=_path(base, t.get("kafka_password_file", str, None, _non_empty)),
        ca_file=_path(base, t.get("kafka_ca_file", str, None, _non_empty)),
        cert_file=_path(base, t.get("kafka_cert_file", str, None, _non_empty)),
        key_file=_path(base, t.get("kafka_key_file", str, None, _non_empty)),
        check_hostname=t.get("kafka_check_hostname", bool, True),
    )
    _check_kafka_keys_apply(t, security)
    if security.sasl:
        security = replace(security, password=_read_kafka_password(t, security))
        _check_kafka_sasl_transport(t, security, broker)
    if security.tls:
        _check_kafka_tls_files(t, security)
    return security


#: The keys each half of the protocol uses: set with a protocol that ignores them, they are a mistake.
_KAFKA_SASL_KEYS = ("kafka_sasl_mechanism", "kafka_username", "kafka_password_file")
_KAFKA_TLS_KEYS = ("kafka_ca_file", "kafka_cert_file", "kafka_key_file", "kafka_check_hostname")


def _check_kafka_keys_apply(t: _Table, security: KafkaSecurity) -> None:
    unused = [(key, "SASL_PLAINTEXT or SASL_SSL") for key in _KAFKA_SASL_KEYS if not security.sasl] + [
        (key, "SSL or SASL_SSL") for key in _KAFKA_TLS_KEYS if not security.tls
    ]
    for key, protocols in unused:
        if key in t.data:
            t.reader.error(t.at(key), f"only used with kafka_security_protocol {protocols}, not {security.protocol!r}")


def _read_kafka_password(t: _Table, security: KafkaSecurity) -> str | None:
    """The SASL password: the file's content without its line ending (a secret never sits in the main file)."""
    if security.username is None and "kafka_username" not in t.data:
        t.reader.error(t.at("kafka_username"), f"required with kafka_security_protocol {security.protocol!r}")
    path, place = security.password_file, t.at("kafka_password_file")
    if path is None:
        t.reader.error(place, f"required with kafka_security_protocol {security.protocol!r} (the password, in a file)")
        return None
    try:
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        t.reader.error(place, f"cannot read the password file {path}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        t.reader.error(place, f"the password file {path} is not UTF-8 text")
        return None
    if not password:
        t.reader.error(place, f"the password file {path} is empty")
    return password or None


def _check_kafka_sasl_transport(t: _Table, security: KafkaSecurity, broker: str) -> None:
    """SPEC §13's rule for credentials: over TLS only; SCRAM without TLS to a loopback broker (development)."""
    if security.tls:
        return
    place = t.at("kafka_security_protocol")
    if security.sasl_mechanism == "PLAIN":
        t.reader.error(place, "must be 'SASL_SSL' with kafka_sasl_mechanism 'PLAIN': PLAIN sends the password as it is")
        return
    remote = [host for host in _broker_hosts(broker) if not is_loopback(host)]
    if remote:
        source = t.reader.from_env.get("service.broker")
        where = ", ".join(remote) + (f", set by {source}" if source else "")
        t.reader.error(place, f"must be 'SASL_SSL' for a broker off loopback ({where}): credentials only go over TLS")


def _broker_hosts(broker: str) -> list[str]:
    """The host of each `host:port` in a (possibly kafka://) broker list."""
    return [address.rpartition(":")[0] for address in broker.removeprefix("kafka://").split(",")]


def _check_kafka_tls_files(t: _Table, security: KafkaSecurity) -> None:
    """Load the CA, certificate and key once now, so a bad file is named by its key, not by a failed connect."""
    if security.key_file is not None and security.cert_file is None:
        t.reader.error(t.at("kafka_cert_file"), "required with kafka_key_file")
    try:
        context = ssl.create_default_context(cafile=security.ca_file)
    except (OSError, ssl.SSLError) as exc:
        t.reader.error(t.at("kafka_ca_file"), f"cannot load the CA file {security.ca_file}: {_tls_reason(exc)}")
        return
    if security.cert_file is not None:
        try:
            context.load_cert_chain(security.cert_file, security.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = " and ".join(str(f) for f in (security.cert_file, security.key_file) if f is not None)
            t.reader.error(t.at("kafka_cert_file"), f"cannot load the certificate {files}: {_tls_reason(exc)}")


def _tls_reason(exc: OSError) -> str:
    """OpenSSL's reason (`NO_CERTIFICATE_OR_CRL_FOUND`, …) or the OS's (`No such file or directory`)."""
    if isinstance(exc, ssl.SSLError):
        return f"{exc.library}: {exc.reason}" if exc.reason else str(exc)
    return exc.strerror or str(exc)


def _default_claims_dir(drop_dir: Path) -> Path:
    """`<drop_dir>/../.streamapp-claims`, `..` taken as the kernel does (after resolving a linked drop_dir)."""
    return (drop_dir / "..").resolve() / ".streamapp-claims"


def _check_claims_dir(r: _Reader, place: str, drop_dir: Path, claims_dir: Path) -> None:
    """SPEC §13: uploaders never reach the claims, and a claim is an atomic rename out of drop_dir."""
    drop, claims = drop_dir.resolve(), claims_dir.resolve()
    if claims.is_relative_to(drop):
        r.error(place, f"{claims} is inside drop_dir {drop}: whoever can upload files could write claims")
    elif _device(drop) != _device(claims):
        r.error(place, f"{claims} is not on the file system of drop_dir {drop}: a claim is a rename between them")


def _device(path: Path) -> int:
    """st_dev of `path`, or of its nearest existing parent (the folders may not exist before the first start)."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except FileNotFoundError:
            continue
    return -1


def _path(base: Path, value: str | None) -> Path | None:
    """A configured file, relative to the configuration's folder (an absolute one stays as it is)."""
    return (base / value).resolve() if value else None


def _non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


# --------------------------------------------------------------------------
# Security defaults (SPEC §13): what is safe on loopback only, and the shared keys.
# --------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether an API listening on `host` is reachable from this machine only.

    Only `localhost` and literal loopback addresses count. Other names are not resolved (what a
    name resolves to can change after start-up), and "", 0.0.0.0 and :: mean every interface.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _web_host_note(r: _Reader, web_host: str) -> str:
    """How an error explains that the API is not on loopback, naming the variable that said so."""
    source = r.from_env.get("service.web_host")
    return f"service.web_host is {web_host!r}" + (f", set by {source}" if source else "")


def _read_key_ring(r: _Reader, path: Path | None, place: str, web_host: str) -> KeyRing | None:
    """The keys of `[service] secret_file`; None without one, which only loopback development may do.

    Without a shared file each worker would sign with a key of its own, and a link one worker
    sent would be a 404 on the others.
    """
    if path is None:
        if not is_loopback(web_host):
            note = _web_host_note(r, web_host)
            r.error(place, f"required when the API is not on loopback ({note}): every worker must use the same keys")
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        r.error(place, f"cannot read the key file {path}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:  # e.g. a raw <data_dir>/unsubscribe.key: its bytes stay out of the message
        r.error(place, f"the key file {path} is not text: write each key in hex, one per line")
        return None
    keys = _keys_of(r, lines, str(path), web_host)
    if not keys and not any(issue.file == str(path) for issue in r.issues):
        r.error(place, f"the key file {path} holds no key (one per line, in hex: `openssl rand -hex 32`)")
    return KeyRing.of(keys) if keys else None


def _keys_of(r: _Reader, lines: list[str], file: str, web_host: str) -> list[bytes]:
    """One key per line, in hex (at least MIN_KEY_BYTES); blank lines and `#` comments are skipped.

    Errors name the line, never its content: that would print a key into a log.
    """
    keys: list[bytes] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if not re.fullmatch(rf"(?:[0-9a-fA-F]{{2}}){{{MIN_KEY_BYTES},}}", text):
            problem = f"must be a key of at least {MIN_KEY_BYTES} bytes in hex (`openssl rand -hex 32` makes one)"
            r.error(f"line {number}", problem, file=file)
        elif bytes.fromhex(text) == DEVELOPMENT_KEY and not is_loopback(web_host):
            note = _web_host_note(r, web_host)
            r.error(f"line {number}", f"the documented development key only works on loopback ({note})", file=file)
        else:
            keys.append(bytes.fromhex(text))
    return keys


def _read_smtp(r: _Reader, data: Any) -> SmtpSettings:
    with r.table(data, "smtp") as t:
        username, password = t.get("username", str, None), t.get("password", str, None)
        starttls = t.get("starttls", bool, False)
        _check_credentials_tls(r, t, username, password, starttls)
        return SmtpSettings(
            host=t.get("host", str, "127.0.0.1"),
            port=t.get("port", int, 25, _port),
            connections=t.get("connections", int, 8, _positive),
            rate_per_second=float(t.get("rate_per_second", float, 0, _non_negative)),
            sender=t.get("sender", str, "news@example.com"),
            retry_initial_seconds=float(t.get("retry_initial_seconds", float, 60, _positive)),
            retry_max_seconds=float(t.get("retry_max_seconds", float, 3600, _positive)),
            expiry_seconds=float(t.get("expiry_seconds", float, 86400, _positive)),
            username=username,
            password=password,
            starttls=starttls,
            unsubscribe_mailto=t.get("unsubscribe_mailto", str, None),
            pipelining=t.get("pipelining", bool, True),
        )


def _check_credentials_tls(r: _Reader, t: _Table, username: str | None, password: str | None, starttls: bool) -> None:
    """SPEC §13: SMTP credentials are only ever sent over TLS.

    STARTTLS is the only TLS the pool speaks (mail/smtp.py has no implicit-TLS mode yet), and
    with `starttls = true` aiosmtplib refuses a server that does not offer it instead of
    falling back to plain text. A username without a password (or the reverse) is a typo.
    """
    if (username is None) != (password is None):
        given, missing = ("username", "password") if password is None else ("password", "username")
        r.error(t.at(missing), f"required with smtp.{given}")
    if (username is not None or password is not None) and not starttls:
        r.error(t.at("starttls"), "must be true when username/password are set: credentials are only sent over TLS")


def _sha256_check(value: str) -> str | None:
    ok = re.fullmatch(r"[0-9a-fA-F]{64}", value)
    return None if ok else "must be the 64 hex digits of the token's SHA-256"


@dataclass(frozen=True)
class _PlacedToken:
    """A token and where it is configured: checks compare tokens across the main and tokens files."""

    file: str
    place: str
    token: TokenSettings

    def where(self, file: str) -> str:
        """This token's place, as seen from an error in `file`."""
        return self.place if self.file == file else f"{self.place} in {self.file}"


def _read_tokens(r: _Reader, data: Any, databases: Mapping[str, DatabaseSettings]) -> list[_PlacedToken]:
    tokens = []
    for i, item in enumerate(_array(r, data, "tokens")):
        with r.table(item, f"tokens[{i}]") as t:
            scopes = t.get("scopes", list, [])
            for scope in scopes:
                if scope not in SCOPES:
                    r.error(t.at("scopes"), f"unknown scope {scope!r} (known: {', '.join(SCOPES)})")
            databases_of = t.get("databases", list, None)
            for name in sorted(databases_of or ()):
                _check_reference(r, t.at("databases"), "database", name, databases)
            token = TokenSettings(
                name=t.get("name", str, f"token{i}"),
                sha256=t.get("sha256", str, "", _sha256_check).lower(),
                scopes=frozenset(scopes),
                databases=frozenset(databases_of) if databases_of is not None else None,
            )
            tokens.append(_PlacedToken(r.file, t.place, token))
    return tokens


def _read_tokens_file(r: _Reader, path: Path | None, databases: Mapping[str, DatabaseSettings]) -> list[_PlacedToken]:
    """The [[tokens]] of `[service] tokens_file`: API clients kept out of the main file and the image."""
    if path is None:
        return []
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        r.error("service.tokens_file", f"cannot read the tokens file {path}: {exc.strerror or exc}")
        return []
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        r.error("", f"not valid TOML: {exc}", file=str(path))
        return []
    reader = _Reader(str(path))
    for key in raw:
        if key != "tokens":
            reader.error(key, "unknown table (a tokens file holds [[tokens]] only)")
    tokens = _read_tokens(reader, raw.get("tokens"), databases)
    r.issues.extend(reader.issues)
    return tokens


def _check_tokens(r: _Reader, tokens: list[_PlacedToken], web_host: str) -> None:
    """One token per client, across every file; the documented development tokens on loopback only.

    Names and digests must be unique: idempotency keys are scoped by a token's digest, and
    errors and logs name it, so two clients sharing either would be mistaken for each other.
    """
    by_name: dict[str, _PlacedToken] = {}
    by_digest: dict[str, _PlacedToken] = {}
    for placed in tokens:
        token, file, place = placed.token, placed.file, placed.place
        first = by_name.setdefault(token.name, placed)
        if first is not placed:
            r.error(f"{place}.name", f"token name {token.name!r} is already used by {first.where(file)}", file=file)
        if _sha256_check(token.sha256) is None:
            first = by_digest.setdefault(token.sha256, placed)
            if first is not placed:
                message = f"the same token as {first.where(file)}: give each client a token of its own"
                r.error(f"{place}.sha256", message, file=file)
        development = DEVELOPMENT_TOKENS.get(token.sha256)
        if development is not None and not is_loopback(web_host):
            message = f"the documented development token {development!r} only works on a loopback web_host"
            r.error(f"{place}.sha256", f"{message} ({_web_host_note(r, web_host)})", file=file)


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
    """The ten defaults, then the configured names that are not among them (listing a default is allowed:
    SPEC §2's own example does), at most MAX_HISTORY_TYPES in all."""
    if data is None:
        return DEFAULT_HISTORY_TYPES
    names: list[str] = []
    for i, item in enumerate(_array(r, data, "history_types")):
        with r.table(item, f"history_types[{i}]") as t:
            name = t.get("name", str, "", _history_type_check)
            if name in names:
                r.error(t.at("name"), f"history type {name!r} is defined twice")
            names.append(name)
    added = [name for name in dict.fromkeys(names) if name not in DEFAULT_HISTORY_TYPES]
    total = len(DEFAULT_HISTORY_TYPES) + len(added)
    if total > MAX_HISTORY_TYPES:
        r.error(
            "history_types",
            f"at most {MAX_HISTORY_TYPES} history types in all, the {len(DEFAULT_HISTORY_TYPES)} defaults included:"
            f" {len(added)} added make {total} (add at most {MAX_HISTORY_TYPES - len(DEFAULT_HISTORY_TYPES)})",
        )
    return DEFAULT_HISTORY_TYPES + tuple(added)


def _history_type_check(value: str) -> str | None:
    return _engagement_problem(value) or _name_check(value)


def _engagement_problem(value: str) -> str | None:
    if value.startswith(ENGAGEMENT_PREFIX):
        return f"{value!r} is reserved: streamapp records the {ENGAGEMENT_PREFIX}* engagement types itself"
    return None


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
                    history_type=t.get("history_type", str, "purchase", _import_history_type(history_types)),
                )
            )
    return tuple(imports)


def _import_history_type(history_types: tuple[str, ...]) -> Callable[[str], str | None]:
    """A history import's type: a configured one; an engagement type is streamapp's own (SPEC §8)."""
    configured = _one_of(*history_types)

    def check(value: str) -> str | None:
        return _engagement_problem(value) or configured(value)

    return check


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
) -> list[TriggerSettings]:
    """Read [[triggers]] or [[campaigns]] (a campaign is read as a trigger that is never transactional)."""
    items = []
    for i, item in enumerate(_array(r, data, table)):
        with r.table(item, f"{table}[{i}]") as t:
            name = t.get("name", str, f"#{i}", _name_check)
            database = t.get("database", str, "")
            _check_reference(r, t.at("database"), "database", database, databases)
            template = t.get("template", str, name, _name_check)
            _check_template(r, t.at("template"), templates / template)
            transactional = t.get("transactional", bool, False) if table == "triggers" else False
            properties = _read_properties(r, t.get("properties", dict, None), t.at("properties"))
            track = t.get("track", bool, not transactional)  # transactional mail is not tracked unless asked
            items.append(TriggerSettings(name, database, template, transactional, properties, track))
    return items


def _read_tracking(r: _Reader, data: Any) -> TrackingSettings:
    """`[tracking] opens = true, clicks = true`: both on when the table is absent."""
    if data is None:
        return TrackingSettings()
    with r.table(data, "tracking") as t:
        return TrackingSettings(
            opens=t.get("opens", bool, True),
            clicks=t.get("clicks", bool, True),
            machine_seconds=t.get("machine_seconds", float, 60.0, _non_negative),
        )


_HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
#: The VERP local part: short enough that local + "+" + the longest token is RFC 5321's 64 octets.
_VERP_LOCAL = re.compile(r"[a-z0-9._-]{1,12}")


def _read_bounces(r: _Reader, data: Any) -> BounceSettings:
    """`[bounces] domain = "bounces.example.com", local = "bounce", listen = "127.0.0.1:2526"`."""
    if data is None:
        return BounceSettings()
    with r.table(data, "bounces") as t:
        domain = t.get("domain", str, None, lambda v: None if _HOST_NAME.fullmatch(v) else "must be a domain name")
        local = t.get("local", str, "bounce", lambda v: None if _VERP_LOCAL.fullmatch(v) else
                      "must be 1 to 12 of a-z 0-9 . _ - (the return path's local part, before +token)")  # fmt: skip
        listen = t.get("listen", str, None, lambda v: None if _split_host_port(v) else
                       "must be host:port, e.g. 127.0.0.1:2526")  # fmt: skip
        if listen is not None and domain is None:
            r.error(t.at("listen"), "needs bounces.domain: the listener accepts mail for that domain only")
        return BounceSettings(domain.lower() if domain else None, local, _split_host_port(listen) if listen else None)


def _split_host_port(value: str) -> tuple[str, int] | None:
    """`host:port` (an IPv6 host in brackets) as (host, port); None when it is not one."""
    host, _, port = value.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() and 0 < int(port) < 65536 else None


def _read_properties(r: _Reader, data: dict[str, Any] | None, place: str) -> dict[str, DeclaredProperty] | None:
    """`{ code = "string", amount = "float?" }`: the attribute types, `?` marking an optional property."""
    if data is None:
        return None
    declared: dict[str, DeclaredProperty] = {}
    for name, value in data.items():
        where = f"{place}.{name}"
        if not isinstance(value, str) or value.rstrip("?") not in ATTRIBUTE_TYPES or value.count("?") > 1:
            r.error(where, f"expected one of {', '.join(ATTRIBUTE_TYPES)}, optionally ending in '?', got {value!r}")
            continue
        if problem := _property_name_check(name):
            r.error(where, problem)
            continue
        kind = cast(AttributeType, value.rstrip("?"))
        declared[name] = DeclaredProperty(kind, required=not value.endswith("?"))
    if len(declared) > MAX_DECLARED_PROPERTIES:
        r.error(place, f"at most {MAX_DECLARED_PROPERTIES} properties, not {len(declared)}")
    return declared


#: SPEC §3: at most 256 properties.
MAX_DECLARED_PROPERTIES = 256


def _property_name_check(name: str) -> str | None:
    """A name a template can write as `properties.name`."""
    return None if name.isidentifier() else "a property name must be an identifier (letters, digits, _)"


def _check_template(r: _Reader, place: str, folder: Path) -> None:
    for part in ("subject.txt", "body.html"):
        if not (folder / part).is_file():
            r.error(place, f"template file {folder / part} does not exist")


def _check_reference(r: _Reader, place: str, what: str, name: str, known: Mapping[str, Any]) -> None:
    if name and name not in known:
        r.error(place, f"unknown {what} {name!r} (defined: {', '.join(sorted(known)) or 'none'})")


def _read_segments(r: _Reader, data: Any, databases: Mapping[str, DatabaseSettings]) -> tuple[SegmentSettings, ...]:
    """Every `[[segments]]` entry, kept in order even when wrong (so `segments[i]` stays the file's i)."""
    segments: list[SegmentSettings] = []
    for i, item in enumerate(_array(r, data, "segments")):
        with r.table(item, f"segments[{i}]") as t:
            name = t.get("name", str, f"#{i}", _name_check)
            database = t.get("database", str, "")
            _check_reference(r, t.at("database"), "database", database, databases)
            if any(s.name == name and s.database == database for s in segments):
                r.error(t.at("name"), f"segment {name!r} of database {database!r} is defined twice")
            definition = t.get("definition", dict)  # required: the issue is recorded, the entry kept
            segments.append(SegmentSettings(name, database, definition if isinstance(definition, dict) else {}))
    return tuple(segments)


def _read_journeys(r: _Reader, data: Any, base: Path) -> tuple[JourneySettings, ...]:
    """Every `[[journeys]]` entry: a unique name and its definition file (checked by streamapp.journeys.config)."""
    journeys: list[JourneySettings] = []
    for i, item in enumerate(_array(r, data, "journeys")):
        with r.table(item, f"journeys[{i}]") as t:
            name = t.get("name", str, f"#{i}", _name_check)
            if any(j.name == name for j in journeys):
                r.error(t.at("name"), f"journey {name!r} is defined twice")
            file = t.get("file", str, check=_non_empty)  # required: the issue is recorded, the entry kept
            journeys.append(JourneySettings(name, base / file if isinstance(file, str) else base))
    return tuple(journeys)


def _read_dkim(r: _Reader, data: Any) -> tuple[Mapping[str, Any], ...]:
    """`[[dkim]]` entries, each a table; their keys and files are checked by streamapp.mail.dkim.check_dkim."""
    tables: list[Mapping[str, Any]] = []
    for i, item in enumerate(_array(r, data, "dkim")):
        if isinstance(item, dict):
            tables.append(dict(item))
        else:
            r.error(f"dkim[{i}]", f"expected a table, got {_kind(item)}")
    return tuple(tables)


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

TOP_LEVEL = (
    "service", "smtp", "tokens", "databases", "history_types", "imports", "triggers", "campaigns", "segments",
    "tracking", "journeys", "dkim", "bounces",
)  # fmt: skip


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
    service = _read_service(r, raw.get("service", {}), base)
    databases = _read_databases(r, raw.get("databases"))
    tokens = _read_tokens(r, raw.get("tokens"), databases) + _read_tokens_file(r, service.tokens_file, databases)
    _check_tokens(r, tokens, service.web_host)
    templates = base / "templates"
    triggers = {t.name: t for t in _read_messages(r, raw.get("triggers"), "triggers", databases, templates)}
    campaigns = {
        c.name: CampaignSettings(c.name, c.database, c.template, c.properties, c.track)
        for c in _read_messages(r, raw.get("campaigns"), "campaigns", databases, templates)
    }
    history_types = _read_history_types(r, raw.get("history_types"))
    return Settings(
        path=path,
        service=service,
        smtp=_read_smtp(r, raw["smtp"]) if "smtp" in raw else None,
        tokens=tuple(placed.token for placed in tokens),
        databases=databases,
        history_types=history_types,
        imports=_read_imports(r, raw.get("imports"), databases, history_types),
        triggers=triggers,
        campaigns=campaigns,
        segments=_read_segments(r, raw.get("segments"), databases),
        tracking=_read_tracking(r, raw.get("tracking")),
        journeys=_read_journeys(r, raw.get("journeys"), base),
        dkim=_read_dkim(r, raw.get("dkim")),
        bounces=_read_bounces(r, raw.get("bounces")),
    )


#: Keys of [service] naming a path: one from the environment is relative to the working directory.
PATH_KEYS = ("data_dir", "tokens_file", "secret_file", "kafka_password_file")


def _apply_environment(r: _Reader, raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Environment overrides win over the file (SPEC §1)."""
    service = raw.setdefault("service", {})
    if not isinstance(service, dict):
        return
    for var, key in (
        ("STREAMAPP_BROKER", "broker"),
        ("STREAMAPP_DATA_DIR", "data_dir"),
        ("STREAMAPP_DROP_DIR", "drop_dir"),
        ("STREAMAPP_CLAIMS_DIR", "claims_dir"),
        ("STREAMAPP_WEB_HOST", "web_host"),
        ("STREAMAPP_ADVERTISED_URL", "advertised_url"),
        ("STREAMAPP_PUBLIC_URL", "public_url"),
        ("STREAMAPP_TOKENS_FILE", "tokens_file"),
        ("STREAMAPP_SECRET_FILE", "secret_file"),
        ("STREAMAPP_KAFKA_PASSWORD_FILE", "kafka_password_file"),
    ):
        if environ.get(var):
            service[key] = str(Path(environ[var]).resolve()) if key in PATH_KEYS else environ[var]
            r.from_env[f"service.{key}"] = var
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
