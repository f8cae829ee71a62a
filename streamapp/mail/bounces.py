"""What comes back to the return path (SPEC §11): a bounce, temporary or permanent, or a complaint.

Bounces: RFC 3464 delivery status notifications and the non-standard forms MTAs still send
(Postfix's older reports, Exim, Exchange, qmail, Yahoo...), read by flufl.bounce, Mailman's
detectors, run most authoritative first. Complaints: ARF abuse reports (RFC 5965), a
multipart/report whose report-type is feedback-report. Anything else is None: junk, an
auto-reply, a delivery notice that reports success; the caller counts and drops it.

The recipient of a bounce is known from the VERP address it was sent to (streamapp.mail.verp);
the addresses read here are a cross-check and serve bounces of mail sent without VERP.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import logging
from dataclasses import dataclass
from email.utils import getaddresses

from flufl.bounce import all_failures

from streamapp.core.models import ReportKind

log = logging.getLogger(__name__)

#: A report's kind, as the notice that carries it to the message's owner has it.
Kind = ReportKind
#: The largest report read: a DSN quotes at most the headers or the start of the message it returns.
MAX_REPORT_BYTES = 1024 * 1024
#: Reasons are kept to this many characters (they end up in history records and logs).
MAX_REASON = 300


@dataclass(frozen=True)
class Report:
    kind: Kind
    #: The original recipients the report names (lower case); may be empty.
    addresses: frozenset[str]
    #: The Diagnostic-Code or Status of a bounce, the Feedback-Type of a complaint.
    reason: str | None


def read_report(raw: bytes) -> Report | None:
    """The bounce or complaint in `raw` (a whole message as received), or None."""
    if len(raw) > MAX_REPORT_BYTES:
        return None
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    feedback = _part(message, "message/feedback-report")
    if feedback is not None:
        return _complaint(message, feedback)
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector tripped on a malformed message: not a bounce it can read
        log.debug("bounce detectors failed on a message", exc_info=True)
        return None
    if not (temporary or permanent):
        return None
    kind: Kind = "hard" if permanent else "soft"
    addresses = frozenset(a.decode("ascii", "replace").lower() for a in (permanent or temporary))
    return Report(kind, addresses, _diagnostic(message))


def _part(message: email.message.Message, content_type: str) -> email.message.Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _fields(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a message/feedback-report or message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, email.message.Message)]
    if isinstance(payload, str):  # some reporters send the fields as text
        return [email.message_from_string(block) for block in payload.split("\n\n") if block.strip()]
    return []


def _complaint(message: email.message.Message, feedback: email.message.Message) -> Report:
    blocks = _fields(feedback)
    recipients = [v for b in blocks for v in b.get_all("Original-Rcpt-To", [])]
    if not recipients:  # the reported message's own To, when the report quotes it
        quoted = _part(message, "message/rfc822") or _part(message, "text/rfc822-headers")
        if quoted is not None:
            inner = quoted.get_payload(0) if quoted.is_multipart() else None
            if isinstance(inner, email.message.Message):
                recipients = inner.get_all("To", [])
    addresses = frozenset(address.lower() for _, address in getaddresses(recipients) if "@" in address)
    kind = next((b["Feedback-Type"] for b in blocks if b["Feedback-Type"]), None)
    return Report("complaint", addresses, _short(kind))


def _diagnostic(message: email.message.Message) -> str | None:
    status = _part(message, "message/delivery-status")
    if status is None:
        return None
    for block in _fields(status):
        for name in ("Diagnostic-Code", "Status"):
            if block[name]:
                return _short(" ".join(str(block[name]).split()))
    return None


def _short(text: str | None) -> str | None:
    return None if text is None else text[:MAX_REASON]
