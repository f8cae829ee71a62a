"""Tests for streamapp.mail.mime: hand-built bytes must parse back as the message we meant."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from streamapp.mail.mime import MAX_LINE, MimeBuilder, MimeError, normalize_address

SUBJECT = "Åsa, ditt kvitto \u2013 100 €"
TEXT = "Hej Åsa,\n\nditt kvitto \u2013 100 €.\nTack!\n"
HTML = '<p>Hej Åsa,</p><p>ditt kvitto &ndash; 100 &euro;. <a href="https://x.example/?a=1&amp;b=2">Se</a></p>\n'
URL = "https://mail.example.com/u/AbC-123_xyz"
CLOCK = datetime(2026, 11, 27, 8, 30, 15, tzinfo=UTC).timestamp()


def build(builder: MimeBuilder | None = None, **overrides: str) -> bytes:
    fields = {"message_id": "01JD5Z3N8K", "to": "ann@example.org", "subject": SUBJECT, "text": TEXT, "html": HTML}
    fields |= {"unsubscribe_url": URL, **overrides}
    return (builder or MimeBuilder("news@example.com", "Butik Åsa", clock=lambda: CLOCK)).build(**fields)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def content(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def assert_wire_format(data: bytes) -> None:
    """CRLF line ends only, no line over 998 bytes, ASCII only (8-bit data would need 8BITMIME)."""
    assert data.endswith(b"\r\n")
    lines = data[:-2].split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert max(len(line) for line in lines) <= MAX_LINE
    assert data.isascii()


def test_headers_parse_back() -> None:
    message = parse(build())
    assert message["Subject"] == SUBJECT
    assert message["From"].addresses[0].display_name == "Butik Åsa"
    assert message["From"].addresses[0].addr_spec == "news@example.com"
    assert message["To"] == "ann@example.org"
    assert message["Message-ID"] == "<01JD5Z3N8K@example.com>"
    assert message["X-Streamapp-Message-Id"] == "01JD5Z3N8K"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == f"<{URL}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Date"].datetime == datetime(2026, 11, 27, 8, 30, 15, tzinfo=UTC)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_both_parts_decode_to_the_original_text() -> None:
    data = build()
    assert_wire_format(data)
    message = parse(data)
    assert content(message, "plain") == TEXT
    assert content(message, "html") == HTML


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Plain ASCII, = and all.\n", "7bit"),
        ("Mostly ASCII with one Å in a long enough sentence to stay readable.\n", "quoted-printable"),
        ("Åäö€\u2013" * 30 + "\n", "base64"),
        ("--=_ looks like a boundary but is ASCII\n", "quoted-printable"),
    ],
)
def test_transfer_encoding_fits_the_content(text: str, encoding: str) -> None:
    message = parse(build(text=text))
    part = message.get_body(("plain",))
    assert part is not None
    assert part["Content-Transfer-Encoding"] == encoding
    assert content(message, "plain") == text


def test_long_lines_are_wrapped_and_restored() -> None:
    html = "<p>" + "x" * 5000 + "</p>\n" + "<div>" + "ö" * 2000 + "</div>\n"
    text = "a " * 1500 + "\n" + "é" * 1200 + "\n"
    subject = "Weekly news " + "about everything " * 40
    data = build(html=html, text=text, subject=subject)
    assert_wire_format(data)
    message = parse(data)
    assert content(message, "html") == html
    assert content(message, "plain") == text
    assert message["Subject"] == subject.strip()
    headers = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert max(len(line) for line in headers) <= 78


def test_long_non_ascii_subject_is_split_into_encoded_words() -> None:
    subject = "Ditt kvitto \u2013 100 € för Åsa Öberg " * 8
    data = build(subject=subject)
    assert_wire_format(data)
    assert parse(data)["Subject"] == " ".join(subject.split())
    subject_lines = [line for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if b"=?utf-8?b?" in line]
    assert len(subject_lines) > 1
    assert all(len(line) <= 78 for line in subject_lines)


def test_recipient_data_cannot_inject_headers() -> None:
    message = parse(build(subject="Hi\r\nBcc: victim@example.org"))
    assert message["Bcc"] is None
    assert message["Subject"] == "Hi Bcc: victim@example.org"
    with pytest.raises(MimeError):
        build(to="ann@example.org\r\nBcc: victim@example.org")
    with pytest.raises(MimeError):
        build(message_id="id>\r\nBcc: x")
    with pytest.raises(MimeError):
        build(unsubscribe_url="https://x.example/u/a> <https://evil.example")


def test_mailto_unsubscribe_and_idn_domains() -> None:
    builder = MimeBuilder("news@exämple.com", unsubscribe_mailto="mailto:unsub@example.com", clock=lambda: CLOCK)
    message = parse(build(builder, to="bo@bücher.example"))
    assert message["List-Unsubscribe"] == f"<{URL}>, <mailto:unsub@example.com?subject=unsubscribe>"
    assert message["To"] == "bo@xn--bcher-kva.example"
    assert message["Message-ID"] == "<01JD5Z3N8K@xn--exmple-cua.com>"
    assert message["From"] == "news@xn--exmple-cua.com"


@pytest.mark.parametrize("address", ["", "ann", "@example.org", "ann@", "a b@example.org", "åsa@example.org"])
def test_unusable_addresses_are_refused(address: str) -> None:
    with pytest.raises(MimeError):
        normalize_address(address)


def test_date_follows_the_clock_and_boundaries_differ() -> None:
    now = [CLOCK]
    builder = MimeBuilder("news@example.com", clock=lambda: now[0])
    first = parse(build(builder))
    now[0] += 61
    second = parse(build(builder))
    assert (second["Date"].datetime - first["Date"].datetime).total_seconds() == 61
    assert first.get_boundary() != second.get_boundary()


def test_control_characters_never_reach_headers_and_binary_bodies_are_encoded() -> None:
    """Rows stored before the door checks may still carry NUL or CR/LF (SPEC §3 hardening)."""
    builder = MimeBuilder("news@example.com")
    data = builder.build(
        to="ann@example.com", subject="Hi\x00 there\r\nBcc: x@y.z", html="<p>a\x00b</p>", text="a",
        message_id="m1", unsubscribe_url="https://x/u/t",
    )  # fmt: skip
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\x00" not in data and not any(line.startswith(b"Bcc:") for line in head.split(b"\r\n"))
    assert b"Subject: Hi there Bcc: x@y.z" in head
    assert b"quoted-printable" in data and b"=00" in body
    with pytest.raises(MimeError):
        normalize_address("a\x00@example.com")
