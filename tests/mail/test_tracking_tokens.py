"""Open and click tokens (streamapp.mail.tracking) and the prefetcher rule (streamapp.mail.prefetch)."""

from __future__ import annotations

import pytest

from streamapp.mail import tokens
from streamapp.mail.prefetch import client_addresses, is_prefetcher
from streamapp.mail.tracking import TrackedMessage, make_token, read_token
from streamapp.mail.unsubscribe import make_token as unsubscribe_token
from streamapp.settings import KeyRing

OLD, NEW = b"o" * 32, b"n" * 32
MESSAGE = TrackedMessage("members", "CUST-9 åäö", "0001" + "b" * 28 + "01234567", "newsletter")
URL = "https://shop.example/p?id=1&ref=mail#x"


def test_open_and_click_tokens_carry_what_they_were_made_with() -> None:
    ring = KeyRing.of([NEW])
    opened = read_token(ring, "open", make_token(NEW, "open", MESSAGE, issued_at=1_800_000_000))
    assert opened is not None and opened.message == MESSAGE and opened.url is None and opened.issued == 1_800_000_000
    clicked = read_token(ring, "click", make_token(NEW, "click", MESSAGE, URL))
    assert clicked is not None and clicked.url == URL and clicked.kind == "click"


def test_every_altered_character_makes_the_token_unknown() -> None:
    ring = KeyRing.of([NEW])
    token = make_token(NEW, "click", MESSAGE, URL)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, ch in enumerate(token):
        other = alphabet[(alphabet.index(ch) + 1) % len(alphabet)]
        assert read_token(ring, "click", token[:i] + other + token[i + 1 :]) is None, i
    assert read_token(ring, "click", token[:-1]) is None
    assert read_token(ring, "click", token + "A") is None


def test_unsigned_foreign_and_cross_kind_tokens_are_refused() -> None:
    ring = KeyRing.of([NEW])
    assert read_token(ring, "click", make_token(b"x" * 32, "click", MESSAGE, URL)) is None  # another key
    assert read_token(ring, "open", make_token(NEW, "click", MESSAGE, URL)) is None  # a click is not an open
    assert read_token(ring, "click", make_token(NEW, "open", MESSAGE)) is None
    assert read_token(ring, "open", unsubscribe_token(NEW, "members", "42", MESSAGE.message_id)) is None
    unsigned = tokens.b64(b"c\x01" + b"\0" * 4 + tokens.pack_fields(["members", "1", "m", "n", URL]))
    assert read_token(ring, "click", unsigned) is None
    for junk in ("", "a", "not a token!", "%2e%2e", "A" * 5000):
        assert read_token(ring, "open", junk) is None


def test_a_signed_token_never_redirects_outside_http() -> None:
    ring = KeyRing.of([NEW])
    assert read_token(ring, "click", make_token(NEW, "click", MESSAGE, "javascript:alert(1)")) is None
    assert read_token(ring, "click", make_token(NEW, "click", MESSAGE, "https://a.example/\r\nSet-Cookie: x")) is None


def test_links_sent_before_a_rotation_keep_working() -> None:
    before = make_token(OLD, "click", MESSAGE, URL)
    rotated = KeyRing.of([NEW, OLD])
    assert read_token(rotated, "click", before) is not None
    assert read_token(rotated, "click", make_token(rotated.signing, "click", MESSAGE, URL)) is not None
    assert read_token(KeyRing.of([NEW]), "click", before) is None  # the old key removed: the old link is gone


def test_a_click_token_needs_its_url() -> None:
    with pytest.raises(ValueError):
        make_token(NEW, "click", MESSAGE)
    with pytest.raises(ValueError):
        make_token(NEW, "open", MESSAGE, URL)


@pytest.mark.parametrize(
    ("agent", "addresses", "expected"),
    [
        ("Mozilla/5.0", ["203.0.113.9"], True),  # Apple Mail Privacy Protection
        ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", [None], True),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", [], True),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15", ["17.58.1.2"], True),
        ("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", ["66.249.84.10"], True),
        ("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", ["::ffff:17.1.2.3"], True),
        ("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", ["203.0.113.9"], False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)", ["not an address", "198.51.100.1"], False),
        (None, [None, None], False),
    ],
)
def test_prefetchers(agent: str | None, addresses: list[str | None], expected: bool) -> None:
    assert is_prefetcher(agent, addresses) is expected


def test_the_client_named_by_a_proxy_comes_first() -> None:
    assert client_addresses("17.0.0.1, 10.0.0.1", "127.0.0.1") == ["17.0.0.1", "127.0.0.1"]
    assert client_addresses(None, "127.0.0.1") == [None, "127.0.0.1"]
