"""Tests for streamapp.mail.unsubscribe: tokens that cannot be forged or altered."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from streamapp.mail.unsubscribe import UnsubscribeTarget, load_or_create_secret, make_token, read_token
from streamapp.settings import KeyRing

SECRET = b"s" * 32
RING = KeyRing.of([SECRET])
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def test_round_trip() -> None:
    token = make_token(SECRET, "members", "Åsa/1001 ü", "01JD5Z3N8K")
    assert read_token(RING, token) == UnsubscribeTarget("members", "Åsa/1001 ü", "01JD5Z3N8K")
    assert token.replace("-", "").replace("_", "").isalnum()
    assert len(token) < 100


@pytest.mark.parametrize("original_id", ["C1", "C10", "C100", "C1001"])  # every length mod 4: spare bits too
def test_every_single_character_change_is_rejected(original_id: str) -> None:
    token = make_token(SECRET, "members", original_id, "01JD5Z3N8K")
    for i, char in enumerate(token):
        flipped = ALPHABET[ALPHABET.index(char) ^ 1]  # lowest bit: a spare bit in the last character
        altered = token[:i] + flipped + token[i + 1 :]
        assert read_token(RING, altered) is None, i


def test_token_of_another_secret_is_rejected() -> None:
    assert read_token(RING, make_token(b"t" * 32, "members", "C1001", "m1")) is None


@pytest.mark.parametrize(
    "garbage",
    ["", "A", "AA", "!!!!", "abc=", "a.b", "x" * 5000, base64.urlsafe_b64encode(b"\x01" * 40).decode().rstrip("=")],
)
def test_garbage_is_rejected(garbage: str) -> None:
    assert read_token(RING, garbage) is None


def test_truncated_or_extended_token_is_rejected() -> None:
    token = make_token(SECRET, "members", "C1001", "m1")
    assert read_token(RING, token[:-1]) is None
    assert read_token(RING, token[:-4]) is None
    assert read_token(RING, token + "AAAA") is None


def test_secret_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "unsubscribe.key"
    first = load_or_create_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["unsubscribe.key"]


def test_existing_secret_is_used_and_a_short_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"k" * 40)
    assert load_or_create_secret(path) == b"k" * 40
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_or_create_secret(path)
