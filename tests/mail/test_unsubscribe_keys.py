"""Unsubscribe tokens under a key ring: rotation, the 90-day lifetime, tampering, the shared key.

SPEC §13: the first key of `[service] secret_file` signs and every key verifies, so a link sent
before a rotation keeps working; SPEC §6/§10: a link is valid for 90 days after it was issued.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamapp.mail.unsubscribe import UnsubscribeTarget, make_token, read_token, unsubscribe_keys
from streamapp.settings import KeyRing, load_settings

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32
ISSUED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TARGET = UnsubscribeTarget("members", "C1001", "01JD5Z3N8K")


def token(key: bytes = OLD, issued_at: datetime = ISSUED) -> str:
    return make_token(key, TARGET.database, TARGET.original_id, TARGET.message_id, issued_at=issued_at)


def read(keys: KeyRing, value: str, now: datetime = ISSUED + timedelta(hours=1)) -> UnsubscribeTarget | None:
    return read_token(keys, value, now=now)


def test_a_link_signed_before_a_rotation_is_verified_by_the_old_key() -> None:
    rotated = KeyRing.of([NEW, OLD])
    assert rotated.signing == NEW
    assert read(rotated, token(OLD)) == TARGET
    assert read(rotated, token(rotated.signing)) == TARGET
    assert read(KeyRing.of([OLD]), token(rotated.signing)) is None  # the new key signs
    assert read(KeyRing.of([NEW]), token(OLD)) is None  # once the old key is dropped, its links are gone
    assert read(KeyRing.of([OTHER, NEW, OLD]), token(OLD)) == TARGET  # whatever its place in the ring


@pytest.mark.parametrize(
    ("age", "valid"),
    [
        (timedelta(0), True),
        (timedelta(days=89, hours=23), True),
        (timedelta(days=90), True),
        (timedelta(days=90, seconds=1), False),
        (timedelta(days=365), False),
        (-timedelta(hours=2), True),  # a signer's clock a little ahead
        (-timedelta(days=2), False),
    ],
)
def test_a_link_is_valid_for_90_days(age: timedelta, valid: bool) -> None:
    result = read(KeyRing.of([OLD]), token(), now=ISSUED + age)
    assert result == (TARGET if valid else None)


def test_a_token_whose_issue_time_was_moved_is_rejected() -> None:
    raw = bytearray(base64.urlsafe_b64decode(token() + "=" * (-len(token()) % 4)))
    assert raw[0] == 2
    raw[1:5] = struct.pack(">I", int((ISSUED + timedelta(days=60)).timestamp()))  # younger, same MAC
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert read(KeyRing.of([OLD]), tampered, now=ISSUED + timedelta(days=100)) is None
    assert read(KeyRing.of([OLD]), token(), now=ISSUED + timedelta(days=100)) is None


def test_a_token_of_format_1_is_no_longer_accepted() -> None:
    """Format 1 had no issue time (it could never expire) and was signed with a per-worker key."""
    payload = b"\x01" + b"".join(struct.pack(">H", len(v)) + v for v in (b"members", b"C1001", b"m1"))
    mac = hmac.new(OLD, b"streamapp-unsubscribe\0" + payload, hashlib.sha256).digest()[:16]
    legacy = base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()
    assert read(KeyRing.of([OLD]), legacy) is None


def test_key_ring_needs_a_signing_key_among_the_verifying_ones() -> None:
    with pytest.raises(ValueError):
        KeyRing.of([])
    with pytest.raises(ValueError):
        KeyRing(NEW, (OLD,))
    assert "o" * 8 not in repr(KeyRing.of([OLD]))


def _config(tmp_path: Path, service: str) -> Path:
    path = tmp_path / "streamapp.toml"
    path.write_text(f'[service]\ndata_dir = "{tmp_path / "data"}"\n{service}\n', encoding="utf-8")
    return path


def test_workers_with_one_secret_file_share_their_keys(tmp_path: Path) -> None:
    keys = tmp_path / "streamapp.keys"
    keys.write_text(f"{NEW.hex()}\n{OLD.hex()}\n")
    settings = load_settings(_config(tmp_path, f'secret_file = "{keys}"\nweb_host = "0.0.0.0"'), {})
    ring = unsubscribe_keys(settings)
    assert ring == KeyRing.of([NEW, OLD])
    assert not (tmp_path / "data").exists(), "no per-worker key beside a shared one"


def test_loopback_development_without_secret_file_keeps_its_data_dir_key(tmp_path: Path) -> None:
    settings = load_settings(_config(tmp_path, ""), {})
    first = unsubscribe_keys(settings)
    assert (tmp_path / "data" / "unsubscribe.key").read_bytes() == first.signing
    assert unsubscribe_keys(settings) == first
