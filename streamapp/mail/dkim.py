"""DKIM signatures (RFC 6376; Ed25519-SHA256 per RFC 8463) added to finished messages.

Signing must cost about what the signature itself costs, so this module does not use dkimpy's
signer: its RSA is pure Python (~10x slower than OpenSSL here) and it parses, canonicalizes and
refolds every header through regexes and per-field Python objects. The signature here is
OpenSSL's, through `cryptography`, which releases the GIL while it signs. The rest is a few C-level
bytes operations per message: relaxed canonicalization (RFC 6376 §3.4.2, §3.4.4) of the whole
header block and of the body with `bytes.replace` and one regex search (whose substitution runs
only for the rare runs of whitespace), one split and a short loop over the header lines; the
per-key and per-header-list parts of the DKIM-Signature field are encoded once, the body hash
once for all keys of a message. Nothing is cached per body: personalised bodies differ.

`DkimSigner.sign` is a pure function of bytes in, bytes out (no I/O, no asyncio; its caches are
safe to share between threads), so a send worker can run it in a thread off the event loop.
Messages are what follows SMTP DATA, with the CRLF line ends `mime.MimeBuilder` writes; the
receiver verifies the wire form, so anything with bare CR or LF goes through `to_crlf` first
(a scan that would otherwise cost more than the rest of the signing).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from streamapp.settings import ConfigError, ConfigIssue, Settings

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
T = TypeVar("T")

MIN_RSA_BITS = 2048  # RFC 8301 requires ≥ 1024; receivers such as Gmail expect 2048
MAX_RSA_BITS = 4096  # RFC 8301: verifiers need not handle larger keys

#: Header fields signed when present (RFC 6376 §5.4.1), in lower case.
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
)
#: Header fields signed once more than they occur, so that none can be added (RFC 6376 §8.15).
OVERSIGNED_HEADERS = ("from", "reply-to", "to", "cc", "subject", "list-unsubscribe", "list-unsubscribe-post")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_WSP_RUNS = re.compile(rb"[ \t]{2,}|\t")  # every WSP run that relaxed canonicalization changes
_SPACES = re.compile(rb" [ \r]")  # two spaces, or one before CRLF: one regex pass beats two `in` scans
_NEWLINES = re.compile(rb"\r\n|\r|\n")
_CACHE_LIMIT = 4096
_FOLD = 76
_PKCS1 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def check_dkim(settings: Settings) -> list[ConfigIssue]:
    """Every problem of the `[[dkim]]` entries (unreadable or weak keys, duplicates), placed in the file."""
    try:
        configured_signer(settings)
    except ConfigError as exc:
        return list(exc.issues)
    return []


def configured_signer(settings: Settings) -> DkimSigner | None:
    """The signer of the configured keys (relative paths against the config file's folder); None without
    `[[dkim]]`; ConfigError naming the place of every bad entry."""
    try:
        keys = load_keys(list(settings.dkim), settings.path.parent)
    except DkimConfigError as exc:
        raise ConfigError([ConfigIssue(str(settings.path), place, reason) for place, reason in exc.issues]) from None
    return DkimSigner(keys) if keys else None


class DkimError(ValueError):
    """A DKIM key, domain or selector cannot be used; the message says why."""


class DkimConfigError(DkimError):
    """The `[[dkim]]` configuration is invalid; `issues` holds every (place, reason) found."""

    def __init__(self, issues: Sequence[tuple[str, str]]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(f"{place}: {reason}" for place, reason in self.issues))


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One signing key: the d= domain and s= selector it signs as, and its private key."""

    domain: str
    selector: str
    private_key: PrivateKey = field(repr=False)
    path: Path | None = None

    @property
    def algorithm(self) -> Algorithm:
        return "rsa-sha256" if isinstance(self.private_key, rsa.RSAPrivateKey) else "ed25519-sha256"

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def txt_record(self) -> str:
        """The DNS TXT record that publishes this key's public half (RFC 6376 §3.6.1, RFC 8463)."""
        return txt_record(self.private_key)


class GeneratedKey(NamedTuple):
    key_path: Path
    dns_name: str
    txt_record: str


# --- keys and configuration -------------------------------------------------------------------


def normalize_domain(domain: str) -> str:
    """The lower-case ASCII (IDNA) form of a signing domain; DkimError if it is not a host name."""
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DkimError(f"invalid international domain {domain!r}: {exc}") from exc
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise DkimError(f"not a domain name: {domain!r}")
    return name


def normalize_selector(selector: str) -> str:
    """A selector is one or more DNS labels (RFC 6376 §3.1); DkimError otherwise."""
    name = selector.strip().lower()
    if len(name) > 63 or not _DOMAIN.fullmatch(name):
        raise DkimError(f"not a DKIM selector (DNS labels of letters, digits and '-'): {selector!r}")
    return name


def load_private_key(path: Path) -> PrivateKey:
    """Read an unencrypted PEM private key: RSA of 2048 to 4096 bits, or Ed25519."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DkimError(f"file not found: {path}") from None
    except OSError as exc:
        raise DkimError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DkimError(f"{path} is encrypted; give an unencrypted PEM key (keep the file mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise DkimError(f"{path} is not a PEM private key") from None
    return check_private_key(key)


def check_private_key(key: object) -> PrivateKey:
    """The key itself if DKIM can sign with it (RSA 2048-4096 bits or Ed25519), else DkimError."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__.removesuffix("PrivateKey")
        raise DkimError(f"{kind} key not supported: DKIM signs with RSA (at least {MIN_RSA_BITS} bits) or Ed25519")
    if key.key_size < MIN_RSA_BITS:
        raise DkimError(f"RSA key of {key.key_size} bits, at least {MIN_RSA_BITS} required")
    if key.key_size > MAX_RSA_BITS:
        raise DkimError(f"RSA key of {key.key_size} bits, verifiers need only handle up to {MAX_RSA_BITS} (RFC 8301)")
    return key


def load_keys(entries: object, config_dir: Path) -> tuple[DkimKey, ...]:
    """Typed keys from the raw `[[dkim]]` TOML list; relative key paths resolve against config_dir.

    Every problem is collected and raised together as DkimConfigError, each named by its place
    (`dkim[1].private_key`), the way `streamapp check-config` reports the rest of the file.
    """
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise DkimConfigError([("dkim", f"expected an array of tables ([[dkim]]), got {type(entries).__name__}")])
    issues: list[tuple[str, str]] = []
    keys: list[tuple[int, DkimKey]] = []
    for index, entry in enumerate(entries):
        key = _load_entry(f"dkim[{index}]", entry, config_dir, issues)
        if key is not None:
            _check_unique(index, key, keys, issues)
            keys.append((index, key))
    if issues:
        raise DkimConfigError(issues)
    return tuple(key for _, key in keys)


def _load_entry(place: str, entry: object, config_dir: Path, issues: list[tuple[str, str]]) -> DkimKey | None:
    if not isinstance(entry, Mapping):
        issues.append((place, f"expected a table, got {type(entry).__name__}"))
        return None
    known = ("domain", "selector", "private_key")
    issues.extend((f"{place}.{name}", "unknown key") for name in entry if name not in known)
    domain = _field(issues, f"{place}.domain", entry.get("domain"), normalize_domain)
    selector = _field(issues, f"{place}.selector", entry.get("selector"), normalize_selector)
    path = _field(issues, f"{place}.private_key", entry.get("private_key"), lambda v: config_dir / Path(v).expanduser())
    key = _field(issues, f"{place}.private_key", path, load_private_key) if path else None
    return DkimKey(domain, selector, key, path) if domain and selector and path and key else None


def _field(issues: list[tuple[str, str]], place: str, value: object, convert: Callable[[Any], T]) -> T | None:
    """convert(value) for a non-empty string (or a Path already converted), or None with the reason recorded."""
    if value is None:
        issues.append((place, "required key is missing"))
        return None
    if not isinstance(value, Path) and (not isinstance(value, str) or not value.strip()):
        issues.append((place, f"expected a non-empty string, got {value!r}"))
        return None
    try:
        return convert(value)
    except DkimError as exc:
        issues.append((place, str(exc)))
        return None


def _check_unique(index: int, key: DkimKey, earlier: list[tuple[int, DkimKey]], issues: list[tuple[str, str]]) -> None:
    """One key per algorithm and domain; one key per DNS name (a name holds one TXT record)."""
    for other_index, other in earlier:
        if other.dns_name == key.dns_name:
            issues.append(
                (
                    f"dkim[{index}].selector",
                    f"{key.dns_name} is already used by dkim[{other_index}]; each key needs its own selector",
                )
            )
        elif other.domain == key.domain and other.algorithm == key.algorithm:
            issues.append(
                (f"dkim[{index}]", f"a second {key.algorithm} key for {key.domain} (the first is dkim[{other_index}])")
            )


def txt_record(key: PrivateKey) -> str:
    """`v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>` or `v=DKIM1; k=ed25519; p=<32 raw bytes>`, base64."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def generate_key(
    domain: str,
    selector: str,
    algorithm: Literal["rsa", "ed25519"] = "rsa",
    bits: int = 2048,
    out_dir: Path | str = ".",
) -> GeneratedKey:
    """Write a new private key as `<out_dir>/<domain>.<selector>.pem` (mode 0600, never over an existing
    file, whose key may already be in DNS) and return its path, DNS name and TXT record."""
    domain, selector = normalize_domain(domain), normalize_selector(selector)
    key: PrivateKey
    if algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise DkimError(f"RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported, not {bits}")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise DkimError(f"algorithm must be 'rsa' or 'ed25519', not {algorithm!r}")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    folder = Path(out_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{domain}.{selector}.pem"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DkimError(f"{path} already exists; choose another selector or remove the file") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return GeneratedKey(path, f"{selector}._domainkey.{domain}", txt_record(key))


def format_keygen_output(key: GeneratedKey) -> str:
    """What `streamapp dkim keygen` prints: the config entry, and the TXT record in zone-file form
    (split into strings of at most 255 bytes, RFC 1035 §3.3.14) and as one value for web forms."""
    selector, _, domain = key.dns_name.partition("._domainkey.")
    record = key.txt_record
    strings = "\n    ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
    return (
        f"Private key written to {key.key_path} (mode 0600).\n\n"
        "Configuration:\n\n"
        f'[[dkim]]\ndomain = "{domain}"\nselector = "{selector}"\nprivate_key = "{key.key_path}"\n\n'
        "DNS record (zone file):\n\n"
        f"{key.dns_name}. 3600 IN TXT (\n    {strings} )\n\n"
        "DNS record value (one string, for a DNS provider's web form):\n\n"
        f"{record}\n"
    )


# --- signing ----------------------------------------------------------------------------------


class _SigningKey:
    """A key with the constant parts of its DKIM-Signature field encoded once."""

    __slots__ = ("canonical_prefix", "key", "sign", "wire_prefix")

    def __init__(self, key: DkimKey) -> None:
        self.key = key
        first, second = f"v=1; a={key.algorithm}; c=relaxed/relaxed;", f"d={key.domain}; s={key.selector}; t="
        self.wire_prefix = f"DKIM-Signature: {first}\r\n {second}".encode("ascii")
        # the CRLF ends the last signed field; the DKIM-Signature field is hashed without one
        self.canonical_prefix = f"\r\ndkim-signature:{first} {second}".encode("ascii")
        private = key.private_key
        if isinstance(private, rsa.RSAPrivateKey):
            self.sign: Callable[[bytes], bytes] = lambda data: private.sign(data, _PKCS1, _SHA256)
        else:  # RFC 8463 §3: PureEdDSA over the SHA-256 hash of the header data
            self.sign = lambda data: private.sign(hashlib.sha256(data).digest())

    def signature_field(self, tail: bytes, signature: bytes) -> bytes:
        """The DKIM-Signature field: constant prefix, per-message tail, b= folded."""
        encoded = base64.b64encode(signature)
        return self.wire_prefix + tail + b"\r\n ".join([encoded[a:b] for a, b in _fold_slices(len(encoded))]) + b"\r\n"


class DkimSigner:
    """Adds a DKIM-Signature per key of the From domain (or its nearest parent that has keys).

    Safe to share between threads; holds the prepared keys and small bounded caches (header name ->
    canonical name, From value -> keys, header list -> h= tag) whose races only ever cost a recompute.
    """

    def __init__(
        self,
        keys: Iterable[DkimKey],
        *,
        signed_headers: Iterable[str] = SIGNED_HEADERS,
        oversigned_headers: Iterable[str] = OVERSIGNED_HEADERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        by_domain: dict[str, list[_SigningKey]] = {}
        for key in keys:
            by_domain.setdefault(key.domain, []).append(_SigningKey(key))
        # RSA on top: the first signature is the one every verifier understands
        self._by_domain = {
            d: tuple(sorted(ks, key=lambda k: k.key.algorithm != "rsa-sha256")) for d, ks in by_domain.items()
        }
        self._signed = frozenset(name.lower().encode("ascii") for name in (*signed_headers, "from"))  # From: MUST
        self._oversigned = tuple(dict.fromkeys(name.lower().encode("ascii") for name in oversigned_headers))
        self._clock = clock
        self._names: dict[bytes, bytes | None] = {}
        self._from_keys: dict[bytes, tuple[_SigningKey, ...]] = {}
        self._h_tags: dict[bytes, tuple[bytes, bytes]] = {}

    def keys_for(self, domain: str) -> tuple[DkimKey, ...]:
        """The keys that sign mail from `domain`: its own, else those of its nearest parent domain."""
        try:
            return tuple(k.key for k in self._signing_keys(normalize_domain(domain)))
        except DkimError:
            return ()

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature field(s) prepended; the same object if no key applies.

        `message` is what follows SMTP DATA, with CRLF line ends as `MimeBuilder` writes them; pass
        anything else through `to_crlf` first (the wire form is what the receiver verifies).
        """
        fields = self.signature_fields(message)
        return fields + message if fields else message

    def signature_fields(self, message: bytes) -> bytes:
        """Only the DKIM-Signature field(s), CRLF-terminated, to write before the message; b"" if none."""
        end = message.find(b"\r\n\r\n")
        head, body = (message[: end + 2], message[end + 4 :]) if end >= 0 else (message, b"")
        names, lines, keys = self._select(relaxed_header_block(head))
        if not keys:
            return b""
        h_wire, h_canonical = self._h_tag(names)
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        timestamp = b"%d" % self._clock()
        signed = b"\r\n".join(lines)
        tail_canonical = b"%s; h=%s; bh=%s; b=" % (timestamp, h_canonical, body_hash)
        tail_wire = b"%s;\r\n h=%s;\r\n bh=%s;\r\n b=" % (timestamp, h_wire, body_hash)
        return b"".join(
            [key.signature_field(tail_wire, key.sign(signed + key.canonical_prefix + tail_canonical)) for key in keys]
        )

    def _select(self, block: bytes) -> tuple[list[bytes], list[bytes], tuple[_SigningKey, ...]]:
        """From relaxed header lines: the names to list in h= and their canonical lines, in h= order,
        and the keys of the From domain."""
        names: list[bytes] = []
        lines: list[bytes] = []
        keys: tuple[_SigningKey, ...] = ()
        cache = self._names
        for line in block.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            canonical = cache.get(name, b"") if colon else None
            if canonical == b"":
                canonical = self._canonical_name(name)
            if canonical is None:
                continue
            value = value.lstrip(b" ")
            if canonical == b"from:" and not keys:
                keys = self._keys_for_from(value)
            names.append(canonical)
            lines.append(canonical + value)
        if len(set(names)) < len(names):
            names, lines = _bottom_up(names, lines)
        return names, lines, keys

    def _canonical_name(self, name: bytes) -> bytes | None:
        """The lower-case name with its colon if the field is signed, else None."""
        canonical = name.rstrip(b" ").lower()
        result = canonical + b":" if canonical in self._signed else None
        if len(self._names) < _CACHE_LIMIT:
            self._names[name] = result
        return result

    def _h_tag(self, names: list[bytes]) -> tuple[bytes, bytes]:
        """The h= value, wire and canonical form, with each over-signed name present listed once more:
        that entry matches no field, so no field of that name can be added (RFC 6376 §8.15)."""
        listed = b"".join(names)  # each name ends in its colon
        tag = self._h_tags.get(listed)
        if tag is None:
            present = [name[:-1] for name in names]
            tag = _fold_h([*present, *(name for name in self._oversigned if name in present)])
            if len(self._h_tags) < _CACHE_LIMIT:
                self._h_tags[listed] = tag
        return tag

    def _keys_for_from(self, value: bytes) -> tuple[_SigningKey, ...]:
        keys = self._from_keys.get(value)
        if keys is None:
            keys = self._signing_keys(from_domain(value))
            if len(self._from_keys) < _CACHE_LIMIT:
                self._from_keys[value] = keys
        return keys

    def _signing_keys(self, domain: str) -> tuple[_SigningKey, ...]:
        while domain:
            keys = self._by_domain.get(domain)
            if keys:
                return keys
            domain = domain.partition(".")[2]
        return ()


def _bottom_up(names: list[bytes], lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A name that occurs n times is listed n times in h= and matches its fields from the bottom up
    (RFC 6376 §5.4.2): group each name's lines, last first, at the place of its first occurrence."""
    groups: dict[bytes, list[bytes]] = {}
    for name, line in zip(names, lines, strict=True):
        groups.setdefault(name, []).append(line)
    ordered_names = [name for name, group in groups.items() for _ in group]
    ordered_lines = [line for group in groups.values() for line in reversed(group)]
    return ordered_names, ordered_lines


def from_domain(value: bytes) -> str:
    """The lower-case domain of the (first) address in a From field value; "" if there is none."""
    start = value.rfind(b"<")
    if start >= 0:
        end = value.find(b">", start)
        address = value[start + 1 : end if end >= 0 else len(value)]
    else:
        address = value.split(b"(", 1)[0].split(b",", 1)[0]
    if b"@" not in address:
        return ""
    return address.rpartition(b"@")[2].strip(b" \t").rstrip(b".").lower().decode("ascii", "replace")


def relaxed_header_block(head: bytes) -> bytes:
    """Header fields (each ending in CRLF) relaxed (RFC 6376 §3.4.2) as a whole block, in a few C-level
    passes instead of a Python loop per field: unfolded, each run of WSP one space, none before a CRLF.
    Left for the caller, per signed line: lower-case names and no space around the colon."""
    head = head.replace(b"\r\n ", b" ")
    if b"\t" in head:
        head = head.replace(b"\r\n\t", b"\t")
    elif not _SPACES.search(head):
        return head
    return _WSP_RUNS.sub(b" ", head).replace(b" \r\n", b"\r\n")


def relaxed_body(body: bytes) -> bytes:
    """A CRLF body in relaxed form (RFC 6376 §3.4.4): each run of WSP one space, none at the end of a
    line, no empty lines at the end; a non-empty body ends in exactly one CRLF."""
    if b"\t" in body or (b" " in body and _SPACES.search(body)):  # base64 parts have no space at all
        body = _WSP_RUNS.sub(b" ", body).replace(b" \r\n", b"\r\n")  # at most one space is left before a CRLF
    if len(body) > 2 and body.endswith(b"\r\n") and not body.endswith(b"\r\n\r\n"):
        return body  # the usual case: no copy
    body = body.rstrip(b"\r\n")  # only CRLF pairs there in a CRLF message
    if body.endswith(b" "):  # a last line without CRLF
        body = body[:-1].rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def to_crlf(message: bytes) -> bytes:
    """CRLF line ends, as aiosmtplib sends them: bare CR and LF become CRLF (MimeBuilder never needs it)."""
    pairs = message.count(b"\r\n")
    if message.count(b"\n") == pairs and message.count(b"\r") == pairs:
        return message
    return _NEWLINES.sub(b"\r\n", message)


def _fold_h(names: list[bytes]) -> tuple[bytes, bytes]:
    """The h= value (wire and canonical form), folded after a colon before a line passes 76 characters."""
    lines: list[bytes] = []
    line, width = b"", len(b" h=")
    for name in names:
        if line and width + len(line) + len(name) + 1 > _FOLD:
            lines.append(line)
            line, width = b"", 1  # continuation lines start with one space
        line += name + b":"
    lines.append(line)
    wire = b"\r\n ".join(lines)[:-1]  # no colon after the last name
    return wire, wire.replace(b"\r\n", b"")


@lru_cache(maxsize=16)
def _fold_slices(length: int) -> list[tuple[int, int]]:
    """Where to cut a b= value of this length: 73 characters after " b=", then 75 a line (76 with the space)."""
    cuts = [0, *range(_FOLD - 3, length, _FOLD - 1), length]
    return list(itertools.pairwise(cuts))
