"""What an SMTP transaction came to (SPEC §6): shared by the pool (streamapp.mail.smtp) and its
pipelining connections (streamapp.mail.pipelined); the table of replies is in streamapp.mail.smtp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeKind = Literal["sent", "deferred", "failed"]
ReplyClass = Literal["2xx", "4xx", "5xx", "connection_error"]
Stage = Literal["connect", "mail", "rcpt", "data"]


@dataclass(frozen=True, slots=True)
class SmtpOutcome:
    kind: OutcomeKind
    code: int | None  # None: no reply (connection lost, timeout, refused)
    text: str
    reply_class: ReplyClass  # the label of streamapp_smtp_replies_total{class}
    recipient_fault: bool = False  # True only for a 5xx on RCPT or DATA: bounce the recipient
    stage: Stage = "data"
