"""Reading bounces and complaints (streamapp.mail.bounces) and the VERP return path (streamapp.mail.verp).

The samples follow what the MTAs send: RFC 3464 reports as Postfix and Gmail write them, Exim's own
format (its X-Failed-Recipients header), the RFC 5965 example abuse report; then junk.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamapp.core.ids import new_message_id
from streamapp.mail.bounces import MAX_REPORT_BYTES, read_report
from streamapp.mail.verp import MAX_LOCAL, message_of, return_path
from streamapp.settings import KeyRing


def dsn(action: str, status: str, diagnostic: str, recipient: str = "nils@example.com") -> bytes:
    """A delivery status notification as Postfix writes it (RFC 3464)."""
    return f"""Return-Path: <>
From: MAILER-DAEMON@relay.example.net (Mail Delivery System)
To: news+0001abc@bounces.example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host relay.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

--B1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net
X-Postfix-Queue-ID: 4XyZ1234
Arrival-Date: Tue,  1 Dec 2026 10:00:00 +0100 (CET)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; {diagnostic}

--B1
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: news@example.com
To: {recipient}
Subject: Hello

--B1--
""".replace("\n", "\r\n").encode()


EXIM = b"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: news+0001abc@bounces.example.com
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: karin@example.org
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  karin@example.org
    SMTP error from remote mail server after RCPT TO:<karin@example.org>:
    550 5.1.1 <karin@example.org>: Recipient address rejected: User unknown
"""

#: RFC 5965, appendix B (the minimal report), with the reported message quoted.
ARF = b"""From: <abusedesk@example.com>
Date: Thu, 8 Mar 2005 17:40:36 EDT
Subject: FW: Earn money
To: <abuse@example.net>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Rcpt-To: <Olle@Example.net>

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: <somespammer@example.net>
Received: from mailserver.example.net (mailserver.example.net
     [192.0.2.1]) by example.com with ESMTP id M63d4137594e46;
     Thu, 08 Mar 2005 14:00:00 -0400
To: <Undisclosed Recipients>
Subject: Earn money
MIME-Version: 1.0
Content-type: text/plain
Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net
Date: Thu, 02 Sep 2004 12:31:03 -0500

Spam Spam Spam
--part1_13d.2e68ed54_boundary--
"""


def test_a_permanent_failure_is_a_hard_bounce_with_its_diagnostic() -> None:
    report = read_report(dsn("failed", "5.1.1", "550 5.1.1 <nils@example.com>: User unknown"))
    assert report is not None and report.kind == "hard"
    assert report.addresses == {"nils@example.com"}
    assert report.reason == "smtp; 550 5.1.1 <nils@example.com>: User unknown"


def test_a_delay_is_a_soft_bounce() -> None:
    report = read_report(dsn("delayed", "4.4.1", "454 4.4.1 connection timed out", "Sara@Example.com"))
    assert report is not None and (report.kind, report.addresses) == ("soft", {"sara@example.com"})


def test_a_delivery_report_that_says_delivered_is_not_a_bounce() -> None:
    assert read_report(dsn("delivered", "2.0.0", "250 2.0.0 Ok")) is None


def test_exims_own_format_is_read() -> None:
    report = read_report(EXIM)
    assert report is not None and (report.kind, report.addresses) == ("hard", {"karin@example.org"})


def test_an_abuse_report_is_a_complaint_naming_its_recipient() -> None:
    report = read_report(ARF)
    assert report is not None and report.kind == "complaint"
    assert (report.addresses, report.reason) == ({"olle@example.net"}, "abuse")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"Subject: out of office\r\n\r\nI am away until Monday.\r\n",
        b"\xff\xfe\x00garbage" * 100,
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\n",
        b"Content-Type: message/delivery-status\r\n\r\nAction failed\r\n",
        b"x" * (MAX_REPORT_BYTES + 1),
    ],
    ids=["empty", "auto-reply", "binary", "truncated-report", "fields-without-colons", "oversized"],
)
def test_anything_else_is_none(raw: bytes) -> None:
    assert read_report(raw) is None


@given(st.binary(max_size=4096))
def test_no_input_makes_the_reader_raise(raw: bytes) -> None:
    read_report(raw)


# -- VERP ------------------------------------------------------------------------------------------------

RING = KeyRing.of([b"k" * 32])


def test_the_return_path_names_its_message_and_survives_case_changes() -> None:
    message_id = new_message_id(7)
    address = return_path("b", "bounces.example.com", message_id, RING)
    assert len(address.partition("@")[0]) <= 64
    assert message_of(address, "b", "bounces.example.com", RING) == message_id
    assert message_of(address.upper(), "b", "bounces.example.com", RING) == message_id
    assert message_of(f"<{address}>", "b", "Bounces.Example.com", RING) == message_id


def test_a_rotated_ring_still_reads_return_paths_made_with_the_old_key() -> None:
    message_id = new_message_id(3)
    address = return_path("bounce", "b.example", message_id, RING)
    assert message_of(address, "bounce", "b.example", KeyRing.of([b"n" * 32, b"k" * 32])) == message_id


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.replace("@b.example", "@other.example"),  # another domain
        lambda a: "x" + a,  # another local part
        lambda a: a[:-15] + ("0" if a[-15] != "0" else "1") + a[-14:],  # one MAC digit
        lambda a: a.replace("+", "+9"),  # another message id
        lambda a: a.split("+")[0] + "@b.example",  # no token
        lambda a: "bounce+not-an-id-0123456789@b.example",
    ],
    ids=["domain", "local", "mac", "message-id", "no-token", "junk-token"],
)
def test_an_altered_or_foreign_address_names_no_message(change: object) -> None:
    address = return_path("bounce", "b.example", new_message_id(1), RING)
    assert callable(change)
    altered = change(address)
    assert altered != address
    assert message_of(altered, "bounce", "b.example", RING) is None


def test_a_local_part_too_long_for_rfc_5321_is_refused() -> None:
    assert return_path("a" * MAX_LOCAL, "b.example", new_message_id(1), RING)
    with pytest.raises(ValueError, match="local part"):
        return_path("a" * (MAX_LOCAL + 1), "b.example", new_message_id(1), RING)
