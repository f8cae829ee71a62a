"""The return path's SMTP listener over real SMTP on loopback (aiosmtplib as the reporting MTA)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosmtplib
import pytest
import pytest_asyncio

from streamapp.core.ids import new_message_id
from streamapp.mail.bounce_listener import ListenerHandle, ReturnPath, start_listener
from streamapp.mail.bounces import MAX_REPORT_BYTES, Report
from streamapp.mail.verp import return_path
from streamapp.settings import KeyRing
from tests.mail.test_bounces import ARF, dsn

PATH = ReturnPath("b", "bounces.example.com", KeyRing.of([b"r" * 32]))


@dataclass
class Recorded:
    reports: list[tuple[list[str], Report]] = field(default_factory=list)
    junk: int = 0
    fail: bool = False

    async def deliver(self, message_ids: list[str], report: Report) -> None:
        if self.fail:
            raise RuntimeError("the recipient commands topic is down")
        self.reports.append((message_ids, report))

    def count_junk(self) -> None:
        self.junk += 1


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[tuple[ListenerHandle, Recorded]]:
    recorded = Recorded()
    handle = await start_listener("127.0.0.1", 0, PATH, recorded.deliver, recorded.count_junk)
    yield handle, recorded
    await handle.close()


async def send(port: int, recipient: str, data: bytes) -> None:
    """As a reporting MTA sends it: from the null reverse-path `<>`."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as smtp:
        await smtp.sendmail("", [recipient], data)


@pytest.mark.asyncio
async def test_a_bounce_and_a_complaint_reach_their_messages(listener: tuple[ListenerHandle, Recorded]) -> None:
    handle, recorded = listener
    bounced, complained = new_message_id(2), new_message_id(5)
    await send(handle.port, return_path("b", PATH.domain, bounced, PATH.ring), dsn("failed", "5.1.1", "550 no user"))
    await send(handle.port, return_path("b", PATH.domain, complained, PATH.ring), ARF)
    assert [(ids, r.kind) for ids, r in recorded.reports] == [([bounced], "hard"), ([complained], "complaint")]


@pytest.mark.asyncio
async def test_only_return_paths_of_the_bounce_domain_are_accepted(listener: tuple[ListenerHandle, Recorded]) -> None:
    handle, recorded = listener
    forged = return_path("b", PATH.domain, new_message_id(1), KeyRing.of([b"x" * 32]))
    for address in ("postmaster@bounces.example.com", "someone@elsewhere.example", forged):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await send(handle.port, address, dsn("failed", "5.1.1", "550 no user"))
    assert recorded.reports == []


@pytest.mark.asyncio
async def test_junk_is_counted_and_dropped_and_the_listener_keeps_serving(
    listener: tuple[ListenerHandle, Recorded],
) -> None:
    handle, recorded = listener
    address = return_path("b", PATH.domain, new_message_id(3), PATH.ring)
    await send(handle.port, address, b"Subject: out of office\r\n\r\nback on Monday\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)  # a peer that speaks nonsense
    await reader.readline()
    writer.write(b"\x00\xff GARBAGE\r\n" * 50 + b"DATA\r\n")
    await writer.drain()
    writer.close()
    with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:  # at MAIL FROM SIZE=, or after DATA
        await send(handle.port, address, b"Subject: big\r\n\r\n" + b"x" * (MAX_REPORT_BYTES + 10))
    assert too_big.value.code == 552
    await send(handle.port, address, dsn("delayed", "4.4.1", "timeout"))
    assert recorded.junk == 1 and [r.kind for _, r in recorded.reports] == ["soft"]


@pytest.mark.asyncio
async def test_a_report_that_cannot_be_recorded_is_refused_for_now(listener: tuple[ListenerHandle, Recorded]) -> None:
    handle, recorded = listener
    recorded.fail = True
    address = return_path("b", PATH.domain, new_message_id(4), PATH.ring)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await send(handle.port, address, dsn("failed", "5.1.1", "550 no user"))
    assert refused.value.code == 451  # the reporting MTA keeps it and tries again
