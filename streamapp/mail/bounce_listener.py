"""The inbound SMTP listener of the return path (SPEC §11 `[bounces] listen`).

It accepts mail only for return-path addresses of the bounce domain that name a message
(streamapp.mail.verp): RCPT of anything else is refused (550), so it is no open relay and no
mailbox for spam. DATA is capped at MAX_REPORT_BYTES (552 beyond). Each accepted message is read
(streamapp.mail.bounces) and handed, with the message id its address names, to `deliver`; a
message that is no bounce or complaint is counted as junk and dropped with a 250 (refusing it
would only make the reporting MTA bounce the bounce). Nothing a peer sends raises out of a
hook: aiosmtpd would answer 500 and keep serving, but the report would be lost.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session

from streamapp.mail.bounces import MAX_REPORT_BYTES, Report, read_report
from streamapp.mail.verp import message_of
from streamapp.settings import KeyRing

log = logging.getLogger(__name__)

#: Called for each bounce or complaint: the message ids its addresses name, and the report.
Deliver = Callable[[list[str], Report], Awaitable[None]]
#: Called for each message that is neither (counted by the caller).
Junk = Callable[[], None]


@dataclass(frozen=True)
class ReturnPath:
    local: str
    domain: str
    ring: KeyRing


class _Handler:
    def __init__(self, path: ReturnPath, deliver: Deliver, junk: Junk) -> None:
        self.path = path
        self.deliver = deliver
        self.junk = junk

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if message_of(address, self.path.local, self.path.domain, self.path.ring) is None:
            return "550 5.1.1 no such return path"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        path = self.path
        message_ids = [m for a in envelope.rcpt_tos if (m := message_of(a, path.local, path.domain, path.ring))]
        try:
            report = read_report(envelope.original_content or b"")
            if report is None:
                self.junk()
            else:
                await self.deliver(message_ids, report)
        except Exception:  # a failure to record must not look like a refusal of the report
            log.exception("bounce report for %s not recorded", message_ids)
            return "451 4.3.0 not recorded, try again later"
        return "250 2.0.0 Ok"


@dataclass
class ListenerHandle:
    server: asyncio.Server
    port: int
    _connections: weakref.WeakSet[SMTP]

    async def close(self) -> None:
        self.server.close()
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        await self.server.wait_closed()


async def start_listener(host: str, port: int, path: ReturnPath, deliver: Deliver, junk: Junk) -> ListenerHandle:
    """Listen on host:port in the running loop (port 0: any free port, see `ListenerHandle.port`)."""
    handler = _Handler(path, deliver, junk)
    loop = asyncio.get_running_loop()
    connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def protocol() -> SMTP:
        smtp = SMTP(
            handler, hostname=path.domain, ident="streamapp bounces", data_size_limit=MAX_REPORT_BYTES, loop=loop
        )
        connections.add(smtp)
        return smtp

    server = await loop.create_server(protocol, host, port)
    return ListenerHandle(server, int(server.sockets[0].getsockname()[1]), connections)
