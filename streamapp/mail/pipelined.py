"""An SMTP connection that sends a message in one or two round trips: PIPELINING and CHUNKING.

aiosmtplib waits for the reply to every command (MAIL, RCPT, DATA, the data), runs each address
through the `email` header parser and the data through two regular expressions: four writes,
four wakeups and about three times the CPU of this module a message (bench/smtp_raw.py).
`PipelinedSMTP` keeps aiosmtplib for everything around the transactions (connect, EHLO,
STARTTLS, AUTH, RSET, QUIT) and writes each transaction in as few groups as the server allows:

| server offers           | one write                                    | replies read together |
|-------------------------|----------------------------------------------|-----------------------|
| PIPELINING and CHUNKING | MAIL, RCPT, `BDAT <n> LAST` and the message  | 3                     |
| PIPELINING (RFC 2920)   | MAIL, RCPT, DATA; then the dot-stuffed data  | 3, then 1             |
| neither                 | one command at a time                        | 1                     |

`deliver_many` chains several transactions on one connection: with PIPELINING the data of one
message, its final dot and the next MAIL, RCPT, DATA go in one write (DATA ends a group, RFC
2920 §3.1), so a message costs one round trip; with CHUNKING the whole batch is one write.

Replies map to `SmtpOutcome` exactly as in `streamapp.mail.smtp` (its module docstring has the
table): each transaction's outcome is its first reply that is not the expected one. Every reply
of a group is read, also after a refusal: when the server still answers DATA with 354 after the
envelope was refused, a lone dot ends that empty message (RFC 2920 §3.1). A refused envelope is
followed by RSET, sent in front of the next group (a refused dot needs none: RFC 5321 ends the
transaction there). A lost connection or a timeout defers every transaction that has no final
2xx reply yet; a transaction counts as sent only on that reply. `dropped_before_data` says that
none of its data had been written, so a retry on a fresh connection cannot deliver it twice.

With CHUNKING the data goes out before the envelope replies are back. RFC 3030 does not say that
a refused BDAT ends the transaction, and a server that kept it open would take the next message
of the same write into it (a 503 to its MAIL, then its recipient and data added to the refused
one). So within one write every transaction after the first starts with RSET.

Credentials are only ever sent over TLS: `connect()` refuses AUTH on a plaintext connection.
"""

from __future__ import annotations

import asyncio
import re
import select
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPHeloError,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    MAX_LINE_LENGTH,
    MAX_RESPONSE_LENGTH,
    SMTPProtocol,
    normalize_message_line_endings,
)

from streamapp.mail.outcome import SmtpOutcome, Stage

Envelope = tuple[str, str, bytes]  # sender, recipient, message bytes
Mode = Literal["chunking", "pipelining", "plain"]
Role = Literal["mail", "rcpt", "data", "bdat", "final", "dot", "rset"]

_DATA, _DOT, _RSET = b"DATA\r\n", b".\r\n", b"RSET\r\n"
_STAGE: dict[Role, Stage] = {"mail": "mail", "rcpt": "rcpt", "data": "data", "bdat": "data", "final": "data"}
_ATOMS = r"[^\x00-\x20\x7f-\U0010ffff<>()\[\]\\,;:\"@]+"  # printable ASCII but specials and space
_PLAIN_ADDRESS = re.compile(f"{_ATOMS}@{_ATOMS}")
_IDLE_CHECK = 1.0  # seconds idle after which a chunking write first checks that the server is still there
_KNOWN_LINES = 64  # distinct reply lines remembered per connection (servers repeat "250 2.1.0 Ok")


class Attempt(NamedTuple):
    """One transaction's outcome, shaped like `SmtpPool._attempt`'s result."""

    outcome: SmtpOutcome
    dropped_before_data: bool  # connection lost (or 421) before any message data was written: retry at once


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, made to keep every reply of a pipelined group.

    The stock one parses a reply only while a command awaits it and drops bytes that arrive while
    a parsed reply is unread, which pipelining makes the rule. Here `read_replies(n)` wakes its
    caller once, when n replies are in or the connection ended. Bytes are parsed only while a read
    waits, and replies parsed before a STARTTLS handshake are dropped after it (RFC 3207 §4.2).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, lost: Callable[[SMTPProtocol], None]) -> None:
        super().__init__(loop=loop, connection_lost_callback=lost)
        self.failure: SMTPException | None = None  # why no more replies will come
        self.last_used = loop.time()
        self._replies: deque[SMTPResponse] = deque()
        self._lines: list[str] = []  # the lines so far of a multi-line reply
        self._partial = 0  # their bytes
        self._known: dict[bytes, tuple[SMTPResponse, bool]] = {}
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0  # of the read in progress
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def unread(self) -> bool:
        """Bytes or replies nobody asked for: the connection is out of step."""
        return bool(self._buffer or self._replies or self._lines)

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        if self._waiter is not None:
            self._parse()
            if len(self._replies) >= self._wanted:
                self._wake()
        elif len(self._buffer) > MAX_RESPONSE_LENGTH:
            self._fail(SMTPResponseException(-1, "Response too long"))

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._fail(SMTPServerDisconnected("Connection lost"))
        super().connection_lost(exc)

    async def read_replies(self, count: int, timeout: float | None) -> list[SMTPResponse]:  # noqa: ASYNC109
        """The next `count` replies in order; fewer if the connection ended or timed out (`failure` says why).

        The timeout is a deadline that one timer per connection checks, not `asyncio.timeout`
        (a timer made, a cancel scope entered and a timer cancelled for every read).
        """
        if len(self._replies) < count and self.failure is None:
            self._parse()
        if len(self._replies) < count and self.failure is None:
            await self._wait(count, timeout)
        self.last_used = self._loop.time()
        take = min(count, len(self._replies))
        return [self._replies.popleft() for _ in range(take)]

    async def read_response(self, timeout: float | None = None) -> SMTPResponse:  # noqa: ASYNC109 (aiosmtplib's)
        """One reply, for aiosmtplib's own commands (EHLO, AUTH, RSET, QUIT)."""
        replies = await self.read_replies(1, timeout)
        if replies:
            return replies[0]
        if self._quit_sent and isinstance(self.failure, SMTPServerDisconnected):
            return SMTPResponse(221, "")
        raise self.failure or SMTPServerDisconnected("Connection lost")

    async def start_tls(
        self,
        tls_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (aiosmtplib's signature)
    ) -> SMTPResponse:
        """The stock upgrade; then nothing that came in plaintext with its 220 passes for a reply."""
        response = await super().start_tls(tls_context, server_hostname=server_hostname, timeout=timeout)
        self._replies.clear()
        self._lines, self._partial = [], 0
        return response

    async def _wait(self, count: int, timeout: float | None) -> None:  # noqa: ASYNC109
        self._wanted, self._waiter = count, self._loop.create_future()
        if timeout:
            self._deadline = self._loop.time() + timeout
            if self._watchdog is None or self._watchdog.when() > self._deadline:
                self._arm(self._deadline)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _check_deadline(self) -> None:
        """One timer per connection, moved on lazily: no timer made and cancelled for every read."""
        self._watchdog = None
        if self._waiter is None or self._waiter.done():
            return
        if self._loop.time() >= self._deadline:
            self._fail(SMTPReadTimeoutError("Timed out waiting for server response"))
        else:
            self._arm(self._deadline)

    def _arm(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = self._loop.call_at(when, self._check_deadline)

    def _parse(self) -> None:
        """Move every complete reply from the buffer to the queue (one split, remembered lines)."""
        buffer = self._buffer
        end = buffer.rfind(b"\n") + 1
        if end:
            chunk = bytes(buffer[:end])
            del buffer[:end]
            try:
                for line in chunk.split(b"\n")[:-1]:
                    self._take(line)
            except SMTPResponseException as exc:
                self._fail(exc)
        if len(buffer) > MAX_LINE_LENGTH or self._partial > MAX_RESPONSE_LENGTH:
            self._fail(SMTPResponseException(-1, "Response too long"))

    def _take(self, line: bytes) -> None:
        known = self._known.get(line)
        if known is None:
            known = _reply_line(line)
            if len(self._known) < _KNOWN_LINES:
                self._known[line] = known
        reply, more = known
        if more:
            self._lines.append(reply.message)
            self._partial += len(line)
        elif self._lines:
            self._replies.append(SMTPResponse(reply.code, "\n".join([*self._lines, reply.message])))
            self._lines, self._partial = [], 0
        else:
            self._replies.append(reply)

    def _fail(self, exc: SMTPException) -> None:
        """No more replies: the connection ended, timed out or is out of step (then close it)."""
        if self.failure is None:
            self.failure = exc
            if self.transport is not None and not isinstance(exc, SMTPServerDisconnected):
                self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _reply_line(line: bytes) -> tuple[SMTPResponse, bool]:
    """A reply line as (code, text) and whether more lines follow; aiosmtplib's rules."""
    if len(line) > MAX_LINE_LENGTH:
        raise SMTPResponseException(-1, "Response too long")
    try:
        code = int(line[:3])
    except ValueError:
        text = line.decode("utf-8", errors="ignore")
        raise SMTPResponseException(-1, f"Malformed SMTP response line: {text}") from None
    text = line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape")
    return SMTPResponse(code, text), line[3:4] == b"-"


@dataclass(slots=True, eq=False)
class _Txn:
    """One message on its way: its command lines, its data as it goes on the wire, what happened."""

    mail: bytes
    rcpt: bytes
    data: bytes  # dot-stuffed (DATA) or with its BDAT line in front (CHUNKING)
    outcome: SmtpOutcome | None = None
    data_written: bool = False
    go: bool = False  # DATA got 354 on an accepted envelope: the data follows
    open_data: bool = False  # DATA got 354 after a refusal: a lone dot must end it

    def attempt(self, failure: BaseException) -> Attempt:
        outcome = self.outcome or _lost(failure, "mail")
        dropped = not self.data_written and (outcome.reply_class == "connection_error" or outcome.code == 421)
        return Attempt(outcome, dropped)


Tag = tuple[_Txn | None, Role]  # whose reply, to which command


class PipelinedSMTP(aiosmtplib.SMTP):
    """`aiosmtplib.SMTP` plus `deliver()`: one message per call, in as few round trips as the server allows.

    A drop-in for the pool's connections: the same constructor keywords, `connect()`, `close()`,
    `quit()`; `deliver()` returns what `SmtpPool._attempt` returns. `pipelining=False` or
    `chunking=False` turn the extensions off (to compare, or for a server that misreports them).
    """

    def __init__(
        self,
        *,
        hostname: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        local_hostname: str | None = None,
        timeout: float | None = 60,
        use_tls: bool = False,
        start_tls: bool | None = None,
        validate_certs: bool = True,
        tls_context: ssl.SSLContext | None = None,
        cert_bundle: str | None = None,
        pipelining: bool = True,
        chunking: bool = True,
    ) -> None:
        super().__init__(
            hostname=hostname,
            port=port,
            local_hostname=local_hostname,
            timeout=timeout,
            use_tls=use_tls,
            start_tls=start_tls,
            validate_certs=validate_certs,
            tls_context=tls_context,
            cert_bundle=cert_bundle,
        )
        self._credentials = (username, password or "") if username is not None else None
        self._allow: set[Mode] = {"plain"}
        if pipelining:
            self._allow |= {"pipelining", "chunking"} if chunking else {"pipelining"}
        self._rset_due = False

    async def connect(self, **kwargs: Any) -> SMTPResponse:
        """Connect (and STARTTLS) as aiosmtplib does, then EHLO and AUTH, which only goes over TLS."""
        if "username" in kwargs or "password" in kwargs:
            self._credentials = (kwargs.pop("username", None), kwargs.pop("password", None) or "")
        response = await super().connect(**kwargs)
        try:
            self._adopt_transport()
            await self._greet()
            await self._authenticate()
        except BaseException:
            self.close()
            raise
        self._rset_due = False
        return response

    async def deliver(self, sender: str, recipient: str, data: bytes) -> Attempt:
        """Send one message to one recipient; never raises for SMTP trouble (ValueError for a bad address)."""
        return (await self.deliver_many([(sender, recipient, data)]))[0]

    async def deliver_many(self, envelopes: Sequence[Envelope]) -> list[Attempt]:
        """Send several messages back to back on this connection; one `Attempt` each, in order."""
        wire = await self._usable_wire()
        mode, size = self.mode, self.supports_extension("size")
        txns = [_prepare(sender, recipient, data, mode, size) for sender, recipient, data in envelopes]
        if wire is not None and wire._command_lock is not None:
            async with wire._command_lock:
                await self._run(wire, txns, mode)
        failure = (wire.failure if wire is not None else None) or SMTPServerDisconnected("Server not connected")
        return [txn.attempt(failure) for txn in txns]

    async def _run(self, wire: PipeliningProtocol, txns: list[_Txn], mode: Mode) -> None:
        if mode == "chunking":
            await self._run_chunking(wire, txns)
        elif mode == "pipelining":
            await self._run_pipelining(wire, txns)
        else:
            await self._run_plain(wire, txns)

    async def _run_pipelining(self, wire: PipeliningProtocol, txns: list[_Txn]) -> None:
        """Each group: the previous message's data and dot (or RSET), then MAIL, RCPT, DATA of the next."""
        pending, current = deque(txns), None
        while True:
            chunks: list[bytes] = []
            tags: list[Tag] = []
            if current is not None and current.go:
                chunks += (current.data, _DOT)
                tags.append((current, "final"))
            elif current is not None:
                self._end_refused(current, chunks, tags)
            current = pending.popleft() if pending else None
            if current is not None:
                self._add_rset(chunks, tags)
                chunks += (current.mail, current.rcpt, _DATA)
                tags += ((current, "mail"), (current, "rcpt"), (current, "data"))
            if not tags or not await self._exchange(wire, chunks, tags):
                return

    async def _run_chunking(self, wire: PipeliningProtocol, txns: list[_Txn]) -> None:
        """The whole batch in one write, RSET between transactions: each starts clean whatever the one before did."""
        chunks: list[bytes] = []
        tags: list[Tag] = []
        for txn in txns:
            self._add_rset(chunks, tags)
            chunks += (txn.mail, txn.rcpt, txn.data)
            tags += ((txn, "mail"), (txn, "rcpt"), (txn, "bdat"))
            self._rset_due = True
        self._rset_due = False
        if tags and await self._exchange(wire, chunks, tags):
            self._rset_due = any(txn.outcome is None or txn.outcome.kind != "sent" for txn in txns)

    async def _run_plain(self, wire: PipeliningProtocol, txns: list[_Txn]) -> None:
        """No PIPELINING: one command, one reply, as RFC 5321 has it."""
        for txn in txns:
            if self._rset_due and not await self._exchange(wire, [_RSET], [(None, "rset")]):
                return
            self._rset_due = False
            steps: tuple[tuple[bytes, Role], ...] = ((txn.mail, "mail"), (txn.rcpt, "rcpt"), (_DATA, "data"))
            for chunk, role in steps:
                if not await self._exchange(wire, [chunk], [(txn, role)]):
                    return
                if txn.outcome is not None:
                    self._rset_due = True
                    break
            if txn.go and not await self._exchange(wire, [txn.data, _DOT], [(txn, "final")]):
                return

    def _end_refused(self, txn: _Txn, chunks: list[bytes], tags: list[Tag]) -> None:
        """After a refused envelope: a lone dot now if DATA was accepted anyway; RSET with the next group."""
        self._rset_due = True
        if txn.open_data:
            chunks.append(_DOT)
            tags.append((None, "dot"))
            self._add_rset(chunks, tags)

    def _add_rset(self, chunks: list[bytes], tags: list[Tag]) -> None:
        if self._rset_due:
            chunks.append(_RSET)
            tags.append((None, "rset"))
            self._rset_due = False

    async def _exchange(self, wire: PipeliningProtocol, chunks: list[bytes], tags: list[Tag]) -> bool:
        """Write one group, read its replies into the transactions; False once the connection is gone."""
        try:
            wire.write(b"".join(chunks))
        except SMTPServerDisconnected as exc:
            wire.failure = wire.failure or exc
            return self._lose(wire, tags)
        for txn, role in tags:
            if txn is not None and role in ("final", "bdat"):
                txn.data_written = True
        try:
            replies = await wire.read_replies(len(tags), self.timeout)
        except BaseException:  # cancelled: these replies would pass for the next group's
            self.close()
            raise
        healthy = True
        for (txn, role), reply in zip(tags, replies, strict=False):
            healthy = _apply(txn, role, reply) and healthy
        if len(replies) < len(tags):
            return self._lose(wire, tags[len(replies) :])
        if not healthy:
            self.close()
        return healthy

    def _lose(self, wire: PipeliningProtocol, unanswered: list[Tag]) -> bool:
        """The connection ended: every transaction still waiting for a reply is deferred."""
        failure = wire.failure or SMTPServerDisconnected("Connection lost")
        for txn, role in unanswered:
            if txn is not None and txn.outcome is None:
                txn.outcome = _lost(failure, _STAGE[role])
        self.close()
        return False

    async def _usable_wire(self) -> PipeliningProtocol | None:
        """The open connection, if it is still in step; a stale one is closed."""
        wire = self.protocol
        if not isinstance(wire, PipeliningProtocol) or not self.is_connected:
            return None
        if self.is_ehlo_or_helo_needed and not await self._regreet():
            return None
        if self.mode == "chunking" and self._looks_dropped(wire):
            for _ in range(2):  # one loop iteration runs this task before the read callback; two see the EOF
                await asyncio.sleep(0)
        if self.protocol is not wire or not self.is_connected or wire.unread:
            self.close()
            return None
        return wire

    def _looks_dropped(self, wire: PipeliningProtocol) -> bool:
        """Idle a while and readable: the server may have closed it, and the data must not go out blind."""
        if wire._loop.time() - wire.last_used < _IDLE_CHECK:
            return False
        sock = self.get_transport_info("socket")
        return sock is not None and bool(select.select([sock.fileno()], [], [], 0)[0])

    def _adopt_transport(self) -> None:
        """Put a `PipeliningProtocol` on the open transport; bytes already received stay in order."""
        old = self.protocol
        if old is None or old.transport is None or self.loop is None:
            raise SMTPServerDisconnected("Connection lost")
        transport = old.transport
        wire = PipeliningProtocol(self.loop, self._on_connection_lost)
        wire._buffer = old._buffer
        transport.set_protocol(wire)
        wire.connection_made(transport)
        old.transport = None
        self.protocol = wire

    async def _regreet(self) -> bool:
        """EHLO again, as aiosmtplib's `mail()` would, after a `starttls()` or `rset()` made by hand."""
        try:
            await self._greet()
        except (SMTPException, OSError):
            self.close()
            return False
        return True

    async def _greet(self) -> None:
        """EHLO now (HELO if refused), so the extensions are known before the first message."""
        if not self.is_ehlo_or_helo_needed:
            return
        try:
            await self.ehlo()
        except SMTPHeloError:
            if not self.is_connected:
                raise
            await self.helo()

    async def _authenticate(self) -> None:
        if self._credentials is None:
            return
        if self.get_transport_info("sslcontext") is None:
            raise SMTPException("refusing to send SMTP credentials over a connection without TLS")
        await self.login(*self._credentials)

    @property
    def mode(self) -> Mode:
        """How transactions go to this server, from its last EHLO and what the constructor allowed."""
        if "chunking" in self._allow and self.supports_extension("pipelining") and self.supports_extension("chunking"):
            return "chunking"
        if "pipelining" in self._allow and self.supports_extension("pipelining"):
            return "pipelining"
        return "plain"


def _apply(txn: _Txn | None, role: Role, reply: SMTPResponse) -> bool:
    """Record one reply; False when the connection must be closed (421, or RSET refused)."""
    code = reply.code
    if txn is None:
        return code != 421 and (role != "rset" or code == 250)
    if txn.outcome is not None:  # already refused: this reply only has to be read
        txn.open_data = txn.open_data or (role == "data" and code == 354)
    elif role == "data" and code == 354:
        txn.go = True
    elif code == 250 and role in ("final", "bdat"):
        txn.outcome = SmtpOutcome("sent", code, reply.message, "2xx", stage="data")
    elif not (code == 250 and role == "mail") and not (code in (250, 251) and role == "rcpt"):
        txn.outcome = _refused(code, reply.message, _STAGE[role])
    return code != 421


def _prepare(sender: str, recipient: str, data: bytes, mode: Mode, size: bool) -> _Txn:
    """Command lines and wire data of one message; ValueError for an address that cannot go on a command line."""
    mail = b"MAIL FROM:" + _address(sender) + (b" SIZE=%d\r\n" % len(data) if size else b"\r\n")
    rcpt = b"RCPT TO:" + _address(recipient) + b"\r\n"
    data = _canonical(data)
    if mode == "chunking":
        return _Txn(mail, rcpt, b"BDAT %d LAST\r\n" % len(data) + data)
    return _Txn(mail, rcpt, _dot_stuffed(data))


def _address(address: str) -> bytes:
    """`<address>` as aiosmtplib quotes it (23 µs in the `email` parser), at once for a plain addr-spec."""
    quoted = f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else quote_address(address)
    line = quoted.encode("ascii")
    if COMMAND_INJECTION_REGEX.search(line):
        raise ValueError("Command arg contains a prohibited control character")
    return line


def _dot_stuffed(data: bytes) -> bytes:
    """A dot doubled at every line start (RFC 5321 §4.5.2), as aiosmtplib's regex does, in C at memchr speed."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\n.", b"\n..")


def _canonical(data: bytes) -> bytes:
    """CRLF line ends and a final CRLF, as aiosmtplib sends it; counted first, as built messages already are."""
    crlf = data.count(b"\r\n")
    if crlf == data.count(b"\n") == data.count(b"\r") and data.endswith(b"\r\n"):
        return data
    return normalize_message_line_endings(data)


def _refused(code: int, text: str, stage: Stage) -> SmtpOutcome:
    """An error reply as smtp.py maps it: 5xx fails (the recipient's fault after MAIL), anything else defers."""
    if code // 100 == 5:
        return SmtpOutcome("failed", code, text, "5xx", recipient_fault=stage != "mail", stage=stage)
    return SmtpOutcome("deferred", code, text, "2xx" if code // 100 == 2 else "4xx", stage=stage)


def _lost(exc: BaseException, stage: Stage) -> SmtpOutcome:
    text = str(exc) or type(exc).__name__
    return SmtpOutcome("deferred", None, f"{type(exc).__name__}: {text}", "connection_error", stage=stage)
