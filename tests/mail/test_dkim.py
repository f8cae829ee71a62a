"""Tests for streamapp.mail.dkim: messages that MimeBuilder builds are signed, then verified by
implementations that share no code with ours: dkimpy (pure Python) and OpenDKIM's libopendkim (C,
the library of Debian's opendkim and opendkim-tools), each given the TXT record generate_key wrote.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import random
import re
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.canonicalization import Relaxed

from streamapp.mail.dkim import (
    DkimConfigError,
    DkimError,
    DkimKey,
    DkimSigner,
    GeneratedKey,
    format_keygen_output,
    generate_key,
    load_keys,
    relaxed_body,
    relaxed_header_block,
    to_crlf,
)
from streamapp.mail.mime import MimeBuilder

CLOCK = 1_700_000_000.0  # in the past: verifiers refuse a t= in the future
REQUIRED = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
]


@dataclass
class Keys:
    folder: Path
    rsa: GeneratedKey
    ed25519: GeneratedKey
    sub_rsa: GeneratedKey  # mail.example.com, a subdomain with its own key

    def load(self, *generated: GeneratedKey) -> tuple[DkimKey, ...]:
        entries = [{"domain": _domain(g), "selector": _selector(g), "private_key": g.key_path.name} for g in generated]
        return load_keys(entries, self.folder)

    def dns(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's DNS lookup, answered from the TXT records generate_key returned."""
        records = {f"{g.dns_name}.".encode(): g.txt_record.encode() for g in (self.rsa, self.ed25519, self.sub_rsa)}
        return records.get(name)


def _selector(key: GeneratedKey) -> str:
    return key.dns_name.partition("._domainkey.")[0]


def _domain(key: GeneratedKey) -> str:
    return key.dns_name.partition("._domainkey.")[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("dkim")
    return Keys(
        folder,
        generate_key("example.com", "r2026", "rsa", out_dir=folder),
        generate_key("example.com", "e2026", "ed25519", out_dir=folder),
        generate_key("mail.example.com", "sub", "rsa", out_dir=folder),
    )


def build(sender: str = "news@example.com", **overrides: str) -> bytes:
    fields = {
        "message_id": "01JD5Z3N8K",
        "to": "ann@example.org",
        "subject": "Åsa, ditt kvitto \u2013 100 €",
        "text": "Hej Åsa,\n\nditt  kvitto\t\u2013 100 €.  \nTack!\n\n\n",
        "html": "<p>Hej Åsa,</p>\n<p>ditt kvitto &ndash; 100 &euro;.</p>\n",
        "unsubscribe_url": "https://mail.example.com/u/AbC-123_xyz",
    }
    builder = MimeBuilder(sender, "Butik Åsa", unsubscribe_mailto="unsubscribe@example.com", clock=lambda: CLOCK)
    return builder.build(**(fields | overrides))


def signer(keys: tuple[DkimKey, ...]) -> DkimSigner:
    return DkimSigner(keys, clock=lambda: CLOCK)


def dkimpy_verify(message: bytes, keys: Keys, index: int = 0) -> bool:
    try:
        return bool(dkimpy.DKIM(message).verify(idx=index, dnsfunc=keys.dns))
    except dkimpy.DKIMException:  # a body hash mismatch, say
        return False


def signature_fields(message: bytes) -> list[bytes]:
    head = message[: message.find(b"\r\n\r\n") + 2]
    return re.findall(rb"^DKIM-Signature:.*?\r\n(?! )", head, re.M | re.S)


def tags(field: bytes) -> dict[str, str]:
    value = field.decode().partition(":")[2]
    pairs = (part.split("=", 1) for part in re.sub(r"\s+", "", value).split(";") if part)
    return {name: val for name, val in pairs}


# --- independent verification ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_signed_mime_message_verifies_with_dkimpy(keys: Keys, algorithm: str) -> None:
    message = build()
    signed = signer(keys.load(getattr(keys, algorithm))).sign(message)

    assert signed.endswith(message)
    (field,) = signature_fields(signed)
    found = tags(field)
    assert found["a"] == f"{algorithm}-sha256" and found["c"] == "relaxed/relaxed"
    assert found["d"] == "example.com" and found["t"] == str(int(CLOCK))
    assert dkimpy_verify(signed, keys)


def test_both_keys_add_two_signatures_that_each_verify(keys: Keys) -> None:
    signed = signer(keys.load(keys.ed25519, keys.rsa)).sign(build())

    fields = signature_fields(signed)
    assert [tags(f)["a"] for f in fields] == ["rsa-sha256", "ed25519-sha256"]  # RSA on top
    assert tags(fields[0])["bh"] == tags(fields[1])["bh"]
    assert dkimpy_verify(signed, keys, 0) and dkimpy_verify(signed, keys, 1)


def test_h_covers_the_required_fields_and_over_signs_from(keys: Keys) -> None:
    signed = signer(keys.load(keys.rsa)).sign(build())

    listed = tags(signature_fields(signed)[0])["h"].split(":")
    assert set(REQUIRED) <= set(listed)
    assert listed.count("from") == 2 and listed.count("subject") == 2
    assert listed.count("list-unsubscribe") == 2 and listed.count("list-unsubscribe-post") == 2
    assert "x-streamapp-message-id" not in listed


def test_signature_lines_stay_within_78_characters(keys: Keys) -> None:
    signed = signer(keys.load(keys.rsa, keys.ed25519)).sign(build())

    for field in signature_fields(signed):
        assert all(len(line) <= 78 for line in field.split(b"\r\n"))


MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "subject": lambda m: re.sub(rb"\r\nSubject: [^\r]*", b"\r\nSubject: =?utf-8?q?Vinst!?=", m, count=1),
    "from": lambda m: m.replace(b"<news@example.com>", b"<news@example.net>", 1),
    "second from": lambda m: m.replace(b"\r\nDate:", b"\r\nFrom: boss@example.com\r\nDate:", 1),
    "second subject": lambda m: m.replace(b"\r\nDate:", b"\r\nSubject: Vinst!\r\nDate:", 1),
    "body byte": lambda m: m[:-40] + bytes([m[-40] ^ 1]) + m[-39:],
    "to": lambda m: m.replace(b"To: ann@example.org", b"To: eve@example.org", 1),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_changed_header_or_body_byte_fails_verification(keys: Keys, algorithm: str, mutation: str) -> None:
    signed = signer(keys.load(getattr(keys, algorithm))).sign(build())
    changed = MUTATIONS[mutation](signed)

    assert changed != signed
    assert not dkimpy_verify(changed, keys)


RELAXED_CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "header name case": lambda m: m.replace(b"\r\nSubject:", b"\r\nSUBJECT:", 1),
    "space after colon": lambda m: m.replace(b"\r\nTo: ", b"\r\nTo:  \t", 1),
    "refolded header": lambda m: m.replace(
        b"Content-Type: multipart/alternative;\r\n ", b"Content-Type: multipart/alternative; ", 1
    ),
    "trailing blank lines": lambda m: m + b"\r\n\r\n",
    "trailing line spaces": lambda m: m.replace(b"Tack!", b"Tack! \t", 1),
}


@pytest.mark.parametrize("change", RELAXED_CHANGES)
def test_relaxed_canonicalization_tolerates_whitespace_and_case(keys: Keys, change: str) -> None:
    signed = signer(keys.load(keys.ed25519)).sign(build(html="<p>x</p>", text="Tack!\n"))
    changed = RELAXED_CHANGES[change](signed)

    assert changed != signed
    assert dkimpy_verify(changed, keys)


def whitespace_variants(count: int) -> list[bytes]:
    """Messages with folding, tabs and runs of spaces anywhere, in headers and body."""
    rng = random.Random(6376)
    messages = []
    for _ in range(count):
        words = ["".join(rng.choices("abcÅ ", k=rng.randint(1, 6))) for _ in range(rng.randint(1, 30))]
        spaced = "".join(w + rng.choice([" ", "  ", "\t", " \t ", "\n", " \n", "\t\n\n"]) for w in words)
        head, _, body = build(subject=spaced, text=spaced, html=spaced).partition(b"\r\n\r\n")
        head = head.replace(b"\r\nTo: ", b"\r\nTo:" + rng.choice([b"", b" ", b"\t", b"  \t"]), 1)
        head = head.replace(b"\r\nMIME-Version: 1.0", b"\r\nMIME-Version: 1.0" + rng.choice([b"", b" ", b"\t "]), 1)
        messages.append(head + b"\r\n\r\n" + body + rng.choice([b"", b"\r\n", b"  \r\n\t\r\n"]))
    return messages


def test_random_whitespace_in_headers_and_body_verifies(keys: Keys) -> None:
    """What we hash must be what a verifier hashes, whatever the whitespace."""
    sign = signer(keys.load(keys.ed25519)).sign
    for n, message in enumerate(whitespace_variants(60)):
        assert dkimpy_verify(sign(message), keys), n


def with_second_to(message: bytes) -> bytes:
    return message.replace(b"\r\nTo: ann@example.org\r\n", b"\r\nTo: ann@example.org\r\nTo: bo@example.org\r\n", 1)


def test_repeated_fields_are_signed_bottom_up(keys: Keys) -> None:
    signed = signer(keys.load(keys.rsa)).sign(with_second_to(build()))

    assert tags(signature_fields(signed)[0])["h"].split(":").count("to") == 3  # two fields, over-signed once
    assert dkimpy_verify(signed, keys)
    assert not dkimpy_verify(signed.replace(b"To: bo@", b"To: eve@"), keys)


def test_signing_from_many_threads_gives_valid_signatures(keys: Keys) -> None:
    sign = signer(keys.load(keys.rsa, keys.ed25519)).sign
    messages = [build(message_id=f"m{n}", to=f"r{n}@example.org", text=f"Hej {n}") for n in range(24)]

    with ThreadPoolExecutor(4) as pool:
        signed = list(pool.map(sign, messages))

    assert all(dkimpy_verify(s, keys, 0) and dkimpy_verify(s, keys, 1) for s in signed)


# --- OpenDKIM ----------------------------------------------------------------------------------


class OpenDkim:
    """libopendkim (OpenDKIM 2.11, C) through ctypes, with keys looked up in a file instead of DNS:
    DKIM_QUERY_FILE, the mechanism behind opendkim's `TestPublicKeys` setting. opendkim-testmsg
    itself only verifies against live DNS, so it cannot be pointed at the test keys."""

    SETOPT, OPTS_QUERYMETHOD, OPTS_QUERYINFO, QUERY_FILE = 1, 6, 7, 1
    SIGFLAG_PASSED, SIGBH_MATCH = 0x04, 0

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        p, n = ctypes.c_void_p, ctypes.c_int
        for name, restype, argtypes in (
            ("dkim_init", p, [p, p]),
            ("dkim_close", None, [p]),
            ("dkim_options", n, [p, n, n, p, ctypes.c_size_t]),
            ("dkim_verify", p, [p, ctypes.c_char_p, p, ctypes.POINTER(n)]),
            ("dkim_chunk", n, [p, ctypes.c_char_p, ctypes.c_size_t]),
            ("dkim_eom", n, [p, p]),
            ("dkim_getsiglist", n, [p, ctypes.POINTER(ctypes.POINTER(p)), ctypes.POINTER(n)]),
            ("dkim_sig_getflags", ctypes.c_uint, [p]),
            ("dkim_sig_getbh", n, [p]),
            ("dkim_sig_getselector", ctypes.c_char_p, [p]),
            ("dkim_free", n, [p]),
        ):
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        self.lib = lib

    def verify(self, message: bytes, key_file: Path) -> dict[str, bool]:
        """Selector -> whether that signature passed (signature and body hash)."""
        lib = self.lib
        handle = lib.dkim_init(None, None)
        try:
            method = ctypes.c_int(self.QUERY_FILE)
            assert lib.dkim_options(handle, self.SETOPT, self.OPTS_QUERYMETHOD, ctypes.byref(method), 4) == 0
            path = ctypes.create_string_buffer(str(key_file).encode())
            assert lib.dkim_options(handle, self.SETOPT, self.OPTS_QUERYINFO, path, len(path.value)) == 0
            return self._verify(handle, message)
        finally:
            lib.dkim_close(handle)

    def _verify(self, handle: int, message: bytes) -> dict[str, bool]:
        lib, status = self.lib, ctypes.c_int()
        dkim = lib.dkim_verify(handle, b"test", None, ctypes.byref(status))
        assert dkim, status.value
        try:
            assert lib.dkim_chunk(dkim, message, len(message)) == 0
            assert lib.dkim_chunk(dkim, None, 0) == 0
            lib.dkim_eom(dkim, None)
            sigs, count = ctypes.POINTER(ctypes.c_void_p)(), ctypes.c_int()
            assert lib.dkim_getsiglist(dkim, ctypes.byref(sigs), ctypes.byref(count)) == 0
            return {
                lib.dkim_sig_getselector(sig).decode(): bool(lib.dkim_sig_getflags(sig) & self.SIGFLAG_PASSED)
                and lib.dkim_sig_getbh(sig) == self.SIGBH_MATCH
                for sig in (sigs[i] for i in range(count.value))
            }
        finally:
            lib.dkim_free(dkim)


@pytest.fixture(scope="module")
def opendkim() -> OpenDkim:
    path = ctypes.util.find_library("opendkim")
    if path is None:
        pytest.skip("libopendkim not installed (Debian: apt-get install opendkim-tools, which brings libopendkim11)")
    return OpenDkim(path)


@pytest.fixture(scope="module")
def key_file(keys: Keys) -> Path:
    """The TXT records in the file format of libopendkim's DKIM_QUERY_FILE: `<name> <record>` per line."""
    path = keys.folder / "public-keys"
    path.write_text("".join(f"{g.dns_name} {g.txt_record}\n" for g in (keys.rsa, keys.ed25519, keys.sub_rsa)))
    return path


def test_opendkim_verifies_rsa_and_ed25519_signatures(keys: Keys, opendkim: OpenDkim, key_file: Path) -> None:
    sign = signer(keys.load(keys.rsa, keys.ed25519)).sign
    message = sign(build())

    assert opendkim.verify(message, key_file) == {"r2026": True, "e2026": True}
    subdomain = signer(keys.load(keys.rsa, keys.sub_rsa)).sign(build("news@mail.example.com"))
    assert opendkim.verify(subdomain, key_file) == {"sub": True}
    for mutation in MUTATIONS:  # "second from/subject": OpenDKIM, unlike dkimpy, relies on our over-signing
        assert opendkim.verify(MUTATIONS[mutation](message), key_file) == {"r2026": False, "e2026": False}, mutation
    for n, variant in enumerate([with_second_to(build()), *whitespace_variants(20)]):
        assert opendkim.verify(sign(variant), key_file) == {"r2026": True, "e2026": True}, n


# --- key choice ---------------------------------------------------------------------------------


def test_a_parent_domain_key_signs_a_subdomain_from(keys: Keys) -> None:
    signed = signer(keys.load(keys.rsa)).sign(build("news@news.eu.example.com"))

    assert tags(signature_fields(signed)[0])["d"] == "example.com"
    assert dkimpy_verify(signed, keys)


def test_the_nearest_parent_domain_with_keys_is_chosen(keys: Keys) -> None:
    dkim_signer = signer(keys.load(keys.rsa, keys.ed25519, keys.sub_rsa))
    signed = dkim_signer.sign(build("news@eu.mail.example.com"))

    assert [tags(f)["d"] for f in signature_fields(signed)] == ["mail.example.com"]
    assert dkimpy_verify(signed, keys)
    assert [k.selector for k in dkim_signer.keys_for("Example.COM.")] == ["r2026", "e2026"]
    assert dkim_signer.keys_for("example.org") == ()


@pytest.mark.parametrize("sender", ["news@example.org", "news@notexample.com"])
def test_a_message_whose_from_domain_has_no_key_passes_unchanged(keys: Keys, sender: str) -> None:
    message = build(sender)

    assert signer(keys.load(keys.rsa)).sign(message) is message
    assert DkimSigner([]).sign(message) is message


# --- canonicalization ---------------------------------------------------------------------------


def test_relaxed_canonicalization_matches_the_rfc_example() -> None:
    """RFC 6376 §3.4.6."""
    assert relaxed_header_block(b"A: X\r\nB : Y\t\r\n\tZ  \r\n") == b"A: X\r\nB : Y Z\r\n"
    assert relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b"", b""),
        (b"\r\n", b""),
        (b"\r\n\r\n", b""),
        (b"a", b"a\r\n"),
        (b"a \t", b"a\r\n"),
        (b"a\r\n \r\n\t", b"a\r\n"),
        (b"a\r\n\r\nb\r\n", b"a\r\n\r\nb\r\n"),
        (b"YWJj\r\nZGVm\r\n", b"YWJj\r\nZGVm\r\n"),
    ],
)
def test_relaxed_body_edges(body: bytes, canonical: bytes) -> None:
    assert relaxed_body(body) == canonical


def test_relaxed_body_matches_dkimpy_on_random_bodies() -> None:
    rng = random.Random(3)
    for _ in range(500):
        lines = ["".join(rng.choices("ab \t", k=rng.randint(0, 12))) for _ in range(rng.randint(0, 6))]
        body = "".join(line + "\r\n" for line in lines).encode()
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


def test_mime_messages_have_only_crlf_line_ends_and_to_crlf_fixes_others(keys: Keys) -> None:
    """The signer relies on it: the receiver verifies the CRLF wire form."""
    message = build()
    assert message.count(b"\n") == message.count(b"\r") == message.count(b"\r\n")
    assert to_crlf(message) is message

    bare = message.replace(b"\r\n", b"\n")
    signed = signer(keys.load(keys.rsa)).sign(to_crlf(bare))
    assert dkimpy_verify(signed, keys)


# --- keys and configuration ---------------------------------------------------------------------


def test_generate_key_writes_a_private_pem_and_returns_the_dns_record(keys: Keys) -> None:
    for generated, kind in ((keys.rsa, "rsa"), (keys.ed25519, "ed25519")):
        assert stat.S_IMODE(generated.key_path.stat().st_mode) == 0o600
        assert generated.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert generated.dns_name == f"{_selector(generated)}._domainkey.example.com"
        assert generated.txt_record.startswith(f"v=DKIM1; k={kind}; p=")
    (ed_key,) = keys.load(keys.ed25519)
    raw = base64.b64decode(keys.ed25519.txt_record.rpartition("p=")[2])
    public = ed_key.private_key.public_key()
    assert raw == public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    rsa_public = serialization.load_der_public_key(base64.b64decode(keys.rsa.txt_record.rpartition("p=")[2]))
    assert isinstance(rsa_public, rsa.RSAPublicKey) and rsa_public.key_size == 2048


def test_generate_key_refuses_to_overwrite_and_small_rsa(keys: Keys) -> None:
    with pytest.raises(DkimError, match="already exists"):
        generate_key("example.com", "r2026", out_dir=keys.folder)
    with pytest.raises(DkimError, match="2048 to 4096 bits"):
        generate_key("example.com", "small", bits=1024, out_dir=keys.folder)
    with pytest.raises(DkimError, match="not a domain name"):
        generate_key("exa mple.com", "s", out_dir=keys.folder)


def test_keygen_output_has_the_config_entry_and_zone_strings_of_at_most_255_bytes(keys: Keys) -> None:
    text = format_keygen_output(keys.rsa)

    assert f'private_key = "{keys.rsa.key_path}"' in text and 'selector = "r2026"' in text
    assert "r2026._domainkey.example.com. 3600 IN TXT (" in text
    strings = re.findall(r'^ *"([^"]+)"', text, re.M)
    assert "".join(strings) == keys.rsa.txt_record and all(len(s) <= 255 for s in strings)
    assert keys.rsa.txt_record in text.splitlines()


def write_pem(path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def config_errors(entries: object, folder: Path) -> list[str]:
    with pytest.raises(DkimConfigError) as raised:
        load_keys(entries, folder)
    return str(raised.value).splitlines()


def test_an_rsa_1024_key_is_refused_naming_its_place(tmp_path: Path) -> None:
    write_pem(tmp_path / "small.pem", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    good = generate_key("example.com", "good", out_dir=tmp_path).key_path.name
    entries = [
        {"domain": "example.com", "selector": "good", "private_key": good},
        {"domain": "example.com", "selector": "small", "private_key": "small.pem"},
    ]

    assert config_errors(entries, tmp_path) == ["dkim[1].private_key: RSA key of 1024 bits, at least 2048 required"]


def test_key_errors_name_the_place(tmp_path: Path) -> None:
    write_pem(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "junk.pem").write_text("not a key\n")
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    (tmp_path / "locked.pem").write_bytes(encrypted)
    entries = [
        {"domain": "example.com", "selector": "a", "private_key": "missing.pem"},
        {"domain": "example.com", "private_key": "junk.pem"},
        {"domain": "bad domain", "selector": "c", "private_key": "ec.pem", "algo": "rsa"},
        {"domain": "example.com", "selector": "d", "private_key": "locked.pem"},
        "example.com",
    ]

    errors = config_errors(entries, tmp_path)

    assert errors == [
        f"dkim[0].private_key: file not found: {tmp_path / 'missing.pem'}",
        "dkim[1].selector: required key is missing",
        f"dkim[1].private_key: {tmp_path / 'junk.pem'} is not a PEM private key",
        "dkim[2].algo: unknown key",
        "dkim[2].domain: not a domain name: 'bad domain'",
        "dkim[2].private_key: EC key not supported: DKIM signs with RSA (at least 2048 bits) or Ed25519",
        f"dkim[3].private_key: {tmp_path / 'locked.pem'} is encrypted; give an unencrypted PEM key (keep the file mode 0600)",
        "dkim[4]: expected a table, got str",
    ]
    assert config_errors({"domain": "example.com"}, tmp_path) == [
        "dkim: expected an array of tables ([[dkim]]), got dict"
    ]


def test_keys_load_relative_to_the_config_folder_and_clash_checks(keys: Keys) -> None:
    rsa_entry = {"domain": "Example.COM", "selector": "r2026", "private_key": keys.rsa.key_path.name}
    ed_entry = {"domain": "example.com", "selector": "e2026", "private_key": str(keys.ed25519.key_path)}

    loaded = load_keys([rsa_entry, ed_entry], keys.folder)
    assert [(k.domain, k.selector, k.algorithm) for k in loaded] == [
        ("example.com", "r2026", "rsa-sha256"),
        ("example.com", "e2026", "ed25519-sha256"),
    ]
    assert loaded[0].path == keys.rsa.key_path and loaded[0].txt_record() == keys.rsa.txt_record
    assert load_keys(None, keys.folder) == ()
    assert config_errors(
        [rsa_entry, rsa_entry | {"selector": "other"}, ed_entry | {"selector": "r2026"}], keys.folder
    ) == [
        "dkim[1]: a second rsa-sha256 key for example.com (the first is dkim[0])",
        "dkim[2].selector: r2026._domainkey.example.com is already used by dkim[0]; each key needs its own selector",
    ]
