"""MIME messages built straight to bytes from pre-encoded pieces.

`email.message.EmailMessage` plus its generator caps a process at ~650-950 messages/s (header
objects, policy lookups and folding per message). A send worker builds one message per
recipient, so `MimeBuilder` writes the wire format itself: headers that never change (From,
MIME-Version, List-Unsubscribe-Post) are encoded once, the Date once per second, and the
bodies go through the C codecs of `binascii` (quoted-printable or base64). The result is a
multipart/alternative (text/plain, then text/html) in UTF-8 with CRLF line ends, every line at
most 998 bytes (RFC 5322), which `email.message_from_bytes` reads back without defects
(tests/mail/test_mime.py).

Addresses must be ASCII in the local part (no SMTPUTF8); an internationalised domain is sent
as IDNA ("punycode"). Every header value is checked for CR/LF, so recipient data cannot inject
headers.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from functools import lru_cache

CRLF = "\r\n"
MAX_LINE = 998  # RFC 5322 §2.1.1, without the CRLF
_FOLD = 78  # RFC 5322 SHOULD for header lines
_WORD_BYTES = 39  # UTF-8 bytes per RFC 2047 encoded word: 52 base64 chars + 12 = 64 (≤ 75)
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,127}")
_URL = re.compile(r"[!#-;=?-~]+")  # printable ASCII without space, '<' and '>'
_LONG_LINE = re.compile(rf"[^\r\n]{{{MAX_LINE + 1}}}")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_ASCII = bytes(range(128))


class MimeError(ValueError):
    """A value cannot go into a message (bad address, message id or URL); the message fails."""


#: Control characters (C0 and DEL): never in a header or an address.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Octets that 7bit content may not carry (RFC 2045 §2.7); quoted-printable encodes them.
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_address(address: str) -> str:
    """An ASCII addr-spec for headers and the SMTP envelope: IDNA domain, no CR/LF or brackets."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or any(c in address for c in '<>" ,') or _CONTROL.search(address):
        raise MimeError(f"not a plain e-mail address: {address!r}")
    if not local.isascii():
        raise MimeError(f"non-ASCII local part needs SMTPUTF8, which is not supported: {address!r}")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise MimeError(f"invalid international domain in {address!r}: {exc}") from exc
    return f"{local}@{domain}"


class MimeBuilder:
    """Builds the messages of one sender; safe to share, holds only immutable pre-encoded parts."""

    def __init__(
        self,
        sender: str,
        sender_name: str | None = None,
        unsubscribe_mailto: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        address = normalize_address(sender)
        self.domain = address.rpartition("@")[2]
        self._clock = clock
        self._date_second = -1
        self._date = ""
        self._from = _header("From", formataddr((sender_name or "", address), charset="utf-8"))
        self._mailto = ""
        if unsubscribe_mailto:
            mailbox = normalize_address(unsubscribe_mailto.removeprefix("mailto:"))
            self._mailto = f",{CRLF} <mailto:{mailbox}?subject=unsubscribe>"

    def build(self, *, message_id: str, to: str, subject: str, text: str, html: str, unsubscribe_url: str) -> bytes:
        """The complete message (headers and body) as sent after SMTP DATA."""
        if not _MESSAGE_ID.fullmatch(message_id):
            raise MimeError(f"message id must match {_MESSAGE_ID.pattern}: {message_id!r}")
        if not _URL.fullmatch(unsubscribe_url):
            raise MimeError(f"unsubscribe URL must be printable ASCII without spaces: {unsubscribe_url!r}")
        boundary = "=_" + os.urandom(12).hex()  # "=_" cannot occur in quoted-printable or base64 text
        text_part = _part("text/plain", text)
        html_part = _part("text/html", html)
        return "".join(
            (
                "Date: ",
                self._now(),
                CRLF,
                self._from,
                "To: ",
                normalize_address(to),
                CRLF,
                "Subject: ",
                encode_subject(subject),
                CRLF,
                f"Message-ID: <{message_id}@{self.domain}>{CRLF}",
                "MIME-Version: 1.0\r\n",
                f"List-Unsubscribe: <{unsubscribe_url}>{self._mailto}{CRLF}",
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                f"X-Streamapp-Message-Id: {message_id}{CRLF}",
                f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}{CRLF}',
                f"--{boundary}{CRLF}",
                text_part,
                f"{CRLF}--{boundary}{CRLF}",
                html_part,
                f"{CRLF}--{boundary}--{CRLF}",
            )
        ).encode("ascii")

    def _now(self) -> str:
        """RFC 5322 date in UTC, formatted once per second (format_datetime costs ~5 µs)."""
        now = self._clock()
        second = int(now)
        if second != self._date_second:
            self._date = format_datetime(datetime.fromtimestamp(second, UTC))
            self._date_second = second
        return self._date


def _header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise MimeError(f"{name} must be one line: {value!r}")
    return f"{name}: {value}{CRLF}"


@lru_cache(maxsize=4096)
def encode_subject(subject: str) -> str:
    """The Subject value: folded ASCII, or RFC 2047 base64 encoded words for anything else.

    Cached: a campaign sends the same subject (or a handful of variants) to many recipients.
    """
    subject = " ".join(subject.split())  # no CR/LF can reach the header
    subject = _CONTROL.sub("", subject)  # nor NUL or any other control character
    if subject.isascii() and "=?" not in subject and len(subject) <= 900:
        return _fold_words(subject)
    data = subject.encode("utf-8")
    words, start = [], 0
    while start < len(data):
        end = min(start + _WORD_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # never split a UTF-8 sequence
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return (CRLF + " ").join(words)


def _fold_words(value: str) -> str:
    """Fold an ASCII header value at spaces so lines stay near 78 characters ("Subject: " included)."""
    if len(value) <= _FOLD - len("Subject: "):
        return value
    lines, line = [], ""
    limit = _FOLD - len("Subject: ")
    for word in value.split(" "):
        if line and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line, limit = word, _FOLD - 1
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return (CRLF + " ").join(lines)


def _part(content_type: str, body: str) -> str:
    """One body part's headers and encoded content, CRLF line ends, ending in CRLF."""
    body = _NEWLINES.sub(CRLF, body)
    if not body.endswith(CRLF):
        body += CRLF
    if body.isascii() and not _LONG_LINE.search(body) and "=_" not in body and not _BINARY.search(body):
        # 7bit: ASCII, short lines, no "=_" (so no boundary can occur) and no NUL or other binary octet
        encoding, payload = "7bit", body
    else:
        data = body.encode("utf-8")
        if len(data.translate(None, _ASCII)) * 6 > len(data):  # mostly non-ASCII: base64 is smaller
            encoding, payload = "base64", _base64_lines(data)
        else:
            encoding, payload = "quoted-printable", binascii.b2a_qp(data, istext=True).decode("ascii")
    return (
        f"Content-Type: {content_type}; charset=utf-8{CRLF}Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{payload}"
    )


def _base64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(encoded[i : i + 76] + CRLF for i in range(0, len(encoded), 76))
