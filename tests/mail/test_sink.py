"""Tests for streamapp.mail.sink run inside the test's own event loop (as `streamapp dev` runs it)."""

from __future__ import annotations

import argparse
import mailbox
from pathlib import Path

import pytest

from streamapp.mail.sink import parse_rule, start_sink
from streamapp.mail.smtp import SmtpPool

DATA = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nline\r\n.dot\r\n"


async def test_in_process_sink_writes_a_readable_maildir(tmp_path: Path) -> None:
    sink = await start_sink("127.0.0.1", 0, tmp_path / "outbox", {"no@example.org": "550 5.1.1 no such user"})
    smtp = SmtpPool("127.0.0.1", sink.port, 1, 0, helo_name="test.example")
    try:
        sent = await smtp.send("a@example.com", "b@example.org", DATA)
        refused = await smtp.send("a@example.com", "NO@example.org", DATA)
    finally:
        await smtp.close()
        await sink.close()
    assert (sent.kind, refused.kind, refused.code) == ("sent", "failed", 550)
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []
    [stored] = (tmp_path / "outbox" / "new").iterdir()
    assert stored.read_bytes() == DATA
    assert sent.text.endswith(stored.name)
    [message] = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    assert message["Subject"] == "hi"


async def test_closed_sink_drops_its_connections(tmp_path: Path) -> None:
    sink = await start_sink("127.0.0.1", 0, tmp_path / "outbox")
    smtp = SmtpPool("127.0.0.1", sink.port, 1, 0, helo_name="test.example")
    assert (await smtp.send("a@example.com", "b@example.org", DATA)).kind == "sent"
    await sink.close()
    outcome = await smtp.send("a@example.com", "b@example.org", DATA)
    await smtp.close()
    assert (outcome.kind, outcome.reply_class) == ("deferred", "connection_error")


async def test_reply_rules_must_be_smtp_replies(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must start with an SMTP code"):
        await start_sink("127.0.0.1", 0, tmp_path, {"a@example.org": "no such user"})


def test_cli_rule_syntax() -> None:
    assert parse_rule("a@example.org=450 4.2.0 try later") == ("a@example.org", "450 4.2.0 try later")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rule("a@example.org 550 no")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_rule("a@example.org=oops")
