"""Tests for streamapp.mail.pipelined against real SMTP servers over loopback.

Peers:
- `Peer`: aiosmtpd in the test's event loop, advertising PIPELINING, PIPELINING + CHUNKING (a
  test-only BDAT implementation after RFC 3030) or neither, with reply rules per address, and a
  log of the bytes of every read, which shows how the client grouped its commands;
- Postfix's smtp-sink in another process (PIPELINING, no CHUNKING; its -f/-r options imply -p,
  no PIPELINING, so they exercise the fallback).

`SmtpPool`'s connections are `PipelinedSMTP` and its transaction `deliver()`, so the pool's
reconnect and retry logic is tested with them, and its outcomes against the pool with
`pipelining=False` (aiosmtplib one command at a time).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from aiosmtplib import SMTPAuthenticationError, SMTPException
from aiosmtplib.protocol import normalize_message_line_endings

from streamapp.mail import pipelined
from streamapp.mail.mime import MimeBuilder
from streamapp.mail.pipelined import Attempt, PipelinedSMTP
from streamapp.mail.smtp import SmtpOutcome, SmtpPool
from tests.mail.fixtures import Peers, needs_smtp_sink

SENDER = "news@example.com"
BUILDER = MimeBuilder(SENDER, "Butik")


@cache  # one build per message: the peer must store these exact bytes
def message(n: int, to: str = "ann@example.org") -> bytes:
    return BUILDER.build(
        message_id=f"m{n}",
        to=to,
        subject=f"Åsa, ditt kvitto \u2013 {n} €",
        text=f"Hej {n}\n.\n..leading dots survive dot-stuffing\n",
        html=f"<p>Hej {n}</p>\n",
        unsubscribe_url=f"https://example.com/u/t{n}",
    )


# --- the aiosmtpd peer ---------------------------------------------------------------------------

DROP = "drop"  # a rule that closes the connection instead of replying
SLOW = "slow"  # a rule that never replies


@dataclass
class Rules:
    """Replies other than the normal ones: MAIL by sender, the rest by recipient."""

    mail: dict[str, str] = field(default_factory=dict)
    rcpt: dict[str, str] = field(default_factory=dict)
    data_command: dict[str, str] = field(default_factory=dict)  # DATA or BDAT, instead of 354 / 250
    final: dict[str, str] = field(default_factory=dict)  # after the message data


@dataclass
class Log:
    """What one peer saw: the bytes of each read, the stored messages, the connections."""

    reads: list[bytes] = field(default_factory=list)
    stored: list[bytes] = field(default_factory=list)
    sessions: list[Peer] = field(default_factory=list)
    accepted: list[tuple[bool, bool]] = field(default_factory=list)  # (over TLS, authenticated) per message

    @property
    def connections(self) -> int:
        return len(self.sessions)

    def text(self) -> bytes:
        return b"".join(self.reads)


class Handler:
    """aiosmtpd hooks applying `Rules`; EHLO advertises the extensions the peer was given."""

    def __init__(self, rules: Rules, log: Log, extensions: tuple[str, ...]) -> None:
        self.rules, self.log, self.extensions = rules, log, extensions

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return responses[:-1] + [f"250-{ext}" for ext in self.extensions] + responses[-1:]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := self.rules.mail.get(address):
            return await _reply_or_drop(server, reply)
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if reply := self.rules.rcpt.get(address):
            return await _reply_or_drop(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for address in envelope.rcpt_tos:
            if reply := self.rules.final.get(address):
                return await _reply_or_drop(server, reply)
        assert envelope.original_content is not None
        self.log.stored.append(envelope.original_content)
        self.log.accepted.append((session.ssl is not None, session.authenticated))
        return "250 2.0.0 Ok: queued"


async def _reply_or_drop(server: SMTP, reply: str) -> str:
    if reply not in (DROP, SLOW):
        return reply
    assert server.transport is not None
    if reply == DROP:
        server.transport.close()
    await asyncio.sleep(30)  # connection_lost cancels the session task first
    raise AssertionError("not cancelled")


class Peer(SMTP):
    """aiosmtpd plus what the tests need: a read log, DATA rules, and BDAT (RFC 3030), for tests only.

    `empty_data`: answer DATA with 354 even when every recipient was refused (RFC 2920 allows
    it; the client must then send a lone dot). `reset_after_bdat_error=False`: keep a refused
    transaction open after a failed BDAT, so a MAIL right behind it gets 503.
    """

    def __init__(self, handler: Handler, *, empty_data: bool = False, reset_after_bdat_error: bool = True, **kw: Any):
        super().__init__(handler, hostname="peer", **kw)
        self.handler, self.log = handler, handler.log
        self.empty_data, self.reset_after_bdat_error = empty_data, reset_after_bdat_error
        self._chunks: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call, after STARTTLS
            self.log.sessions.append(self)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.log.reads.append(data)
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        assert self.envelope is not None
        if reply := self._data_rule():
            await self.push(await _reply_or_drop(self, reply))
        elif self.empty_data and self.envelope.mail_from and not self.envelope.rcpt_tos:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            while await self._reader.readuntil(b"\r\n") != b".\r\n":
                pass
            await self.push("554 5.5.1 Error: no valid recipients")
        else:
            await super().smtp_DATA(arg)

    async def smtp_BDAT(self, arg: str) -> None:
        """`BDAT <size> [LAST]`: the chunk is always read, also when refused (RFC 3030 §2)."""
        size, _, last = (arg or "").partition(" ")
        chunk = await self._reader.readexactly(int(size))
        assert self.envelope is not None
        if reply := self._data_rule():
            await self.push(await _reply_or_drop(self, reply))
        elif not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
        elif not self.envelope.rcpt_tos:
            if self.reset_after_bdat_error:
                self._set_rset_state()
            await self.push("554 5.5.1 Error: no valid recipients")
        elif last.strip().upper() != "LAST":
            self._chunks.append(chunk)
            await self.push(f"250 2.0.0 {len(chunk)} octets received")
        else:
            self.envelope.original_content = self.envelope.content = b"".join([*self._chunks, chunk])
            self._chunks = []
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push(status)

    def _data_rule(self) -> str | None:
        assert self.envelope is not None
        return next(
            (
                self.handler.rules.data_command[a]
                for a in self.envelope.rcpt_tos
                if a in self.handler.rules.data_command
            ),
            None,
        )


EXTENSIONS = {"chunking": ("PIPELINING", "CHUNKING"), "pipelining": ("PIPELINING",), "plain": ()}


@dataclass
class Served:
    port: int
    log: Log


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """`await serve(mode, rules, **peer_options)` starts a `Peer` on a free port; all are closed afterwards."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    logs: list[Log] = []

    async def start(mode: str = "pipelining", rules: Rules | None = None, **options: Any) -> Served:
        log = Log()
        handler = Handler(rules or Rules(), log, EXTENSIONS[mode])

        def protocol() -> Peer:
            return Peer(handler, loop=loop, **options)

        server = await loop.create_server(protocol, "127.0.0.1", 0)
        servers.append(server)
        logs.append(log)
        return Served(int(server.sockets[0].getsockname()[1]), log)

    yield start
    for server in servers:
        server.close()
    for session in (session for log in logs for session in log.sessions):
        if session.transport is not None:
            session.transport.close()
    await asyncio.sleep(0)


def connection(port: int, **options: Any) -> PipelinedSMTP:
    defaults: dict[str, Any] = {"local_hostname": "test.example", "start_tls": False, "timeout": 10}
    return PipelinedSMTP(hostname="127.0.0.1", port=port, **(defaults | options))


def pool(port: int, **options: Any) -> SmtpPool:
    """The pool as sending uses it: PipelinedSMTP connections (`pipelining=False`: aiosmtplib's)."""
    return SmtpPool("127.0.0.1", port, 1, rate_per_second=0, helo_name="test.example", **({"timeout": 10} | options))


def summary(attempt: Attempt | SmtpOutcome) -> tuple[Any, ...]:
    outcome = attempt.outcome if isinstance(attempt, Attempt) else attempt
    return (outcome.kind, outcome.code, outcome.reply_class, outcome.recipient_fault, outcome.stage)


SENT = ("sent", 250, "2xx", False, "data")


# --- grouping: what goes in one write -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["chunking", "pipelining", "plain"])
async def test_each_mode_sends_exact_bytes_in_its_groups(serve: Callable[..., Any], mode: str) -> None:
    peer = await serve(mode)
    smtp = connection(peer.port)
    await smtp.connect()
    try:
        assert smtp.mode == mode
        one = await smtp.deliver(SENDER, "ann@example.org", message(1))
        many = await smtp.deliver_many([(SENDER, f"r{n}@example.org", message(n)) for n in (2, 3, 4)])
    finally:
        await smtp.quit()
    assert [summary(a) for a in [one, *many]] == [SENT] * 4
    assert not any(a.dropped_before_data for a in [one, *many])
    assert peer.log.stored == [message(n) for n in (1, 2, 3, 4)]
    assert peer.log.connections == 1
    envelope_reads = [r for r in peer.log.reads if b"MAIL FROM" in r]
    if mode == "chunking":  # MAIL, RCPT, BDAT and the data in one write; a batch is one write
        assert b"BDAT" in envelope_reads[0] and message(1) in envelope_reads[0]
        assert b"DATA" not in peer.log.text()
        assert envelope_reads[1].count(b"MAIL FROM") == 3
    elif mode == "pipelining":  # MAIL, RCPT, DATA together; then a message's dot with the next envelope
        assert envelope_reads[0].endswith(b"RCPT TO:<ann@example.org>\r\nDATA\r\n")
        assert any(
            r.endswith(
                b"\r\n.\r\nMAIL FROM:<news@example.com> SIZE=%d\r\n" % len(message(3))
                + b"RCPT TO:<r3@example.org>\r\nDATA\r\n"
            )
            for r in peer.log.reads
        )
    else:  # one command a read
        assert all(r.count(b"\r\n") == 1 for r in envelope_reads)
        assert not any(b"RCPT" in r for r in envelope_reads)


@pytest.mark.parametrize("mode", ["chunking", "pipelining", "plain"])
async def test_line_ends_and_dots_arrive_as_aiosmtplib_sends_them(serve: Callable[..., Any], mode: str) -> None:
    peer = await serve(mode)
    raw = b".a leading dot\nbare LF\rbare CR\r\n.\r\n..two\r\nno final line end"
    smtp = connection(peer.port)
    await smtp.connect()
    assert summary(await smtp.deliver(SENDER, "ann@example.org", raw)) == SENT
    await smtp.quit()
    assert peer.log.stored == [normalize_message_line_endings(raw)]


@needs_smtp_sink
async def test_smtp_sink_offers_pipelining_and_the_fallback_works_without_it(peers: Peers) -> None:
    for options, mode in (((), "pipelining"), (("-p",), "plain")):
        sink = peers.postfix_sink(options)
        smtp = connection(sink.port)
        await smtp.connect()
        try:
            assert smtp.mode == mode
            attempts = [await smtp.deliver(SENDER, "ann@example.org", message(n)) for n in (1, 2)]
            attempts += await smtp.deliver_many([(SENDER, "bo@example.org", message(n)) for n in (3, 4, 5)])
        finally:
            await smtp.quit()
        assert [summary(a) for a in attempts] == [SENT] * 5


async def test_pipelining_can_be_turned_off(serve: Callable[..., Any]) -> None:
    peer = await serve("chunking")
    for options, mode in (({"chunking": False}, "pipelining"), ({"pipelining": False}, "plain")):
        smtp = connection(peer.port, **options)
        await smtp.connect()
        assert smtp.mode == mode
        assert summary(await smtp.deliver(SENDER, "ann@example.org", message(1))) == SENT
        await smtp.quit()


# --- refusals: one transaction's failure never leaks into the next ------------------------------

REFUSALS = [
    # rule kind, key, reply, expected (kind, code, reply_class, recipient_fault, stage)
    ("rcpt", "gone@example.org", "550 5.1.1 no such user", ("failed", 550, "5xx", True, "rcpt")),
    ("rcpt", "gone@example.org", "450 4.2.0 try later", ("deferred", 450, "4xx", False, "rcpt")),
    ("mail", "bad@example.com", "553 5.7.1 sender refused", ("failed", 553, "5xx", False, "mail")),
    ("mail", "bad@example.com", "451 4.3.0 sender later", ("deferred", 451, "4xx", False, "mail")),
    ("data_command", "gone@example.org", "451 4.3.0 not now", ("deferred", 451, "4xx", False, "data")),
    ("data_command", "gone@example.org", "554 5.6.0 no data", ("failed", 554, "5xx", True, "data")),
    ("final", "gone@example.org", "552 5.3.4 too big", ("failed", 552, "5xx", True, "data")),
    ("final", "gone@example.org", "452 4.3.1 disk full", ("deferred", 452, "4xx", False, "data")),
]


@pytest.mark.parametrize("mode", ["chunking", "pipelining", "plain"])
@pytest.mark.parametrize(("where", "key", "reply", "expected"), REFUSALS)
async def test_refusal_then_next_message_on_the_same_connection(
    serve: Callable[..., Any], mode: str, where: str, key: str, reply: str, expected: tuple[Any, ...]
) -> None:
    rules = Rules(**{where: {key: reply}})
    peer = await serve(mode, rules)
    bad = ("bad@example.com" if where == "mail" else SENDER, "gone@example.org", message(9, "gone@example.org"))
    smtp = connection(peer.port)
    await smtp.connect()
    try:
        first = await smtp.deliver(*bad)
        second = await smtp.deliver(SENDER, "ann@example.org", message(1))
        batch = await smtp.deliver_many(
            [(SENDER, "bo@example.org", message(2)), bad, (SENDER, "cy@example.org", message(3))]
        )
    finally:
        await smtp.quit()
    assert summary(first) == expected and summary(batch[1]) == expected
    assert first.outcome.text == reply[4:]
    assert [summary(a) for a in (second, batch[0], batch[2])] == [SENT] * 3
    assert not any(a.dropped_before_data for a in (first, second, *batch))
    assert peer.log.stored == [message(1), message(2), message(3)]
    assert peer.log.connections == 1
    if expected[4] != "data" or where == "data_command":  # the transaction was left open: RSET follows
        assert peer.log.text().count(b"RSET\r\n") >= (1 if mode == "chunking" else 2)


async def test_pipelined_refused_recipient_when_data_gets_354_anyway(serve: Callable[..., Any]) -> None:
    """RFC 2920 §3.1: DATA accepted though no recipient was: a lone dot ends the empty message, then RSET."""
    peer = await serve("pipelining", Rules(rcpt={"gone@example.org": "550 5.1.1 no such user"}), empty_data=True)
    smtp = connection(peer.port)
    await smtp.connect()
    try:
        gone = await smtp.deliver(SENDER, "gone@example.org", message(9, "gone@example.org"))
        ann = await smtp.deliver(SENDER, "ann@example.org", message(1))
    finally:
        await smtp.quit()
    assert summary(gone) == ("failed", 550, "5xx", True, "rcpt")
    assert summary(ann) == SENT
    assert any(r.startswith(b".\r\nRSET\r\n") for r in peer.log.reads)
    assert message(9, "gone@example.org") not in peer.log.text()
    assert peer.log.stored == [message(1)]


async def test_chunking_starts_each_transaction_clean(serve: Callable[..., Any]) -> None:
    """A server may keep a refused BDAT transaction open: RSET before each next one keeps them apart."""
    rules = Rules(rcpt={"gone@example.org": "550 5.1.1 no such user"})
    peer = await serve("chunking", rules, reset_after_bdat_error=False)
    smtp = connection(peer.port)
    await smtp.connect()
    try:
        attempts = await smtp.deliver_many(
            [
                (SENDER, "gone@example.org", message(9, "gone@example.org")),
                (SENDER, "ann@example.org", message(1)),
                (SENDER, "bo@example.org", message(2)),
            ]
        )
    finally:
        await smtp.quit()
    assert [summary(a) for a in attempts] == [("failed", 550, "5xx", True, "rcpt"), SENT, SENT]
    assert b"503" not in b"".join(peer.log.stored)
    assert peer.log.stored == [message(1), message(2)]
    [write] = [r for r in peer.log.reads if b"MAIL FROM" in r]
    assert write.count(b"RSET\r\nMAIL FROM") == 2 and not write.startswith(b"RSET")


# --- lost connections: nothing counts as sent without its 2xx after the data ---------------------


@pytest.mark.parametrize("mode", ["chunking", "pipelining", "plain"])
async def test_connection_dropped_at_rcpt_defers_before_data(serve: Callable[..., Any], mode: str) -> None:
    peer = await serve(mode, Rules(rcpt={"drop@example.org": DROP}))
    smtp = connection(peer.port)
    await smtp.connect()
    attempt = await smtp.deliver(SENDER, "drop@example.org", message(1, "drop@example.org"))
    assert summary(attempt) == ("deferred", None, "connection_error", False, "rcpt")
    assert attempt.dropped_before_data is (mode != "chunking")  # with CHUNKING the data was already written
    assert not smtp.is_connected
    assert peer.log.stored == []


@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
async def test_connection_dropped_mid_batch(serve: Callable[..., Any], mode: str) -> None:
    """Acknowledged messages are sent; the one whose data went unanswered and those behind it are deferred."""
    peer = await serve(mode, Rules(final={"drop@example.org": DROP}))
    smtp = connection(peer.port)
    await smtp.connect()
    envelopes = [
        (SENDER, "ann@example.org", message(1)),
        (SENDER, "drop@example.org", message(2, "drop@example.org")),
        (SENDER, "bo@example.org", message(3)),
        (SENDER, "cy@example.org", message(4)),
    ]
    attempts = await smtp.deliver_many(envelopes)
    lost = ("deferred", None, "connection_error", False, "data")
    assert [summary(a) for a in attempts[:2]] == [SENT, lost]
    assert not attempts[1].dropped_before_data  # its data was written: it may have been delivered
    assert all(a.outcome.kind == "deferred" and a.outcome.reply_class == "connection_error" for a in attempts[2:])
    if mode == "pipelining":  # bo's envelope went with drop's data, cy's never left: no data of theirs written
        assert [summary(a)[4] for a in attempts[2:]] == ["mail", "mail"]
        assert all(a.dropped_before_data for a in attempts[2:])
    assert peer.log.stored == [message(1)]
    assert not smtp.is_connected


@needs_smtp_sink
@pytest.mark.parametrize(
    ("options", "expected", "dropped"),
    [
        (("-q", "."), ("deferred", None, "connection_error", False, "data"), False),
        (("-Q", "."), ("deferred", 421, "4xx", False, "data"), False),
        (("-q", "mail"), ("deferred", None, "connection_error", False, "mail"), True),
        (("-Q", "data"), ("deferred", 421, "4xx", False, "data"), True),
    ],
)
async def test_smtp_sink_hangs_up_mid_pipeline(
    peers: Peers, options: tuple[str, ...], expected: tuple[Any, ...], dropped: bool
) -> None:
    sink = peers.postfix_sink(options)
    smtp = connection(sink.port)
    await smtp.connect()
    assert smtp.mode == "pipelining"
    attempts = await smtp.deliver_many([(SENDER, "ann@example.org", message(n)) for n in (1, 2)])
    assert summary(attempts[0]) == expected
    assert attempts[0].dropped_before_data is dropped
    assert attempts[1].outcome.kind == "deferred" and attempts[1].dropped_before_data
    assert not smtp.is_connected


async def test_timeout_defers_and_closes(serve: Callable[..., Any]) -> None:
    peer = await serve("pipelining", Rules(rcpt={"slow@example.org": SLOW}))
    smtp = connection(peer.port, timeout=0.3)
    await smtp.connect()
    attempt = await smtp.deliver(SENDER, "slow@example.org", message(1))
    assert summary(attempt) == ("deferred", None, "connection_error", False, "rcpt")
    assert attempt.outcome.text == "SMTPReadTimeoutError: Timed out waiting for server response"
    assert attempt.dropped_before_data and not smtp.is_connected
    await smtp.connect()  # a new connection works as before
    assert summary(await smtp.deliver(SENDER, "ann@example.org", message(2))) == SENT
    await smtp.quit()


async def test_bad_address_raises_before_anything_is_written(serve: Callable[..., Any]) -> None:
    peer = await serve("pipelining")
    smtp = connection(peer.port)
    await smtp.connect()
    for sender, recipient in (
        (SENDER, "ann bo@example.org"),
        ("a@b\x00", "ann@example.org"),
        (SENDER, "åsa@example.org"),
    ):
        with pytest.raises(ValueError):  # as aiosmtplib: not allowed on a command line, or not ASCII
            await smtp.deliver_many([(SENDER, "bo@example.org", message(1)), (sender, recipient, message(2))])
    assert summary(await smtp.deliver(SENDER, "Ann <ann@example.org>\r\n", message(3))) == SENT  # as aiosmtplib
    assert b"RCPT TO:<ann@example.org>\r\n" in peer.log.text()
    await smtp.quit()
    assert peer.log.text().count(b"MAIL FROM") == 1
    assert peer.log.stored == [message(3)]


# --- the pool, with PipelinedSMTP as its connections ---------------------------------------------


@needs_smtp_sink
@pytest.mark.parametrize(
    "options",
    [
        (),
        ("-r", "rcpt"),
        ("-f", "rcpt"),
        ("-f", "data"),
        ("-f", "."),
        ("-f", "mail"),
        ("-r", "mail"),
        ("-Q", "rcpt"),
        ("-q", "rcpt"),
        ("-r", "."),
        ("-q", "."),
        ("-Q", "mail"),
    ],
)
async def test_pool_outcomes_match_the_stock_pool(peers: Peers, options: tuple[str, ...]) -> None:
    sink = peers.postfix_sink(options)
    outcomes: dict[bool, list[SmtpOutcome]] = {}
    for pipelining in (False, True):
        smtp = pool(sink.port, pipelining=pipelining)
        try:
            outcomes[pipelining] = [await smtp.send(SENDER, "ann@example.org", message(n)) for n in range(3)]
        finally:
            await smtp.close()
    assert outcomes[True] == outcomes[False]


@needs_smtp_sink
async def test_pool_replaces_a_connection_the_server_dropped_while_idle(peers: Peers) -> None:
    sink = peers.postfix_sink()
    smtp = pool(sink.port)
    try:
        assert (await smtp.send(SENDER, "ann@example.org", message(1))).kind == "sent"
        sink.kill()  # the pool's connection is dead but the loop has not seen it yet
        sink.start()
        assert (await smtp.send(SENDER, "ann@example.org", message(2))).kind == "sent"
        sink.kill()
        down = await smtp.send(SENDER, "ann@example.org", message(3))
        assert summary(down) == ("deferred", None, "connection_error", False, "connect")
    finally:
        await smtp.close()


async def test_chunking_checks_an_idle_connection_before_writing_data_blind(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With BDAT the data leaves with the envelope: a stale connection is caught before, so the retry is safe."""
    monkeypatch.setattr(pipelined, "_IDLE_CHECK", 0.0)
    peer = await serve("chunking")
    smtp = pool(peer.port)
    try:
        assert (await smtp.send(SENDER, "ann@example.org", message(1))).kind == "sent"
        await asyncio.sleep(0.05)  # the first session is idle in the peer
        transport = peer.log.sessions[0].transport
        assert transport is not None
        transport.close()
        await asyncio.sleep(0)  # the peer's FIN is sent; the client's loop has not read it
        assert (await smtp.send(SENDER, "ann@example.org", message(2))).kind == "sent"
    finally:
        await smtp.close()
    assert peer.log.stored == [message(1), message(2)]
    assert peer.log.connections == 2


# --- STARTTLS and AUTH ---------------------------------------------------------------------------


def check_password(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"app", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI missing: cannot make a certificate for the STARTTLS peer")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1"
    command += f" -addext subjectAltName=IP:127.0.0.1 -keyout {key} -out {cert}"
    subprocess.run(command.split(), check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("mode", ["chunking", "pipelining"])
async def test_starttls_and_auth(serve: Callable[..., Any], certificate: tuple[Path, Path], mode: str) -> None:
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(*certificate)
    secured = {
        "tls_context": server_tls,
        "require_starttls": True,
        "auth_required": True,
        "authenticator": check_password,
    }
    peer = await serve(mode, **secured)
    client_tls = ssl.create_default_context(cafile=str(certificate[0]))
    smtp = pool(peer.port, username="app", password="s3cret", starttls=True, tls_context=client_tls)
    try:
        outcomes = [await smtp.send(SENDER, "ann@example.org", message(n)) for n in (1, 2)]
        wrong = pool(peer.port, username="app", password="wrong", starttls=True, tls_context=client_tls)
        refused = await wrong.send(SENDER, "ann@example.org", message(3))
        await wrong.close()
    finally:
        await smtp.close()
    assert [o.kind for o in outcomes] == ["sent", "sent"]
    assert peer.log.accepted == [(True, True), (True, True)]
    assert peer.log.stored == [message(1), message(2)]
    assert summary(refused) == ("deferred", 535, "5xx", False, "connect")

    direct = connection(peer.port, start_tls=True, tls_context=client_tls, username="app", password="wrong")
    with pytest.raises(SMTPAuthenticationError):
        await direct.connect()
    assert not direct.is_connected

    by_hand = connection(peer.port, tls_context=client_tls)  # EHLO in plaintext, then STARTTLS and AUTH by hand
    await by_hand.connect()
    await by_hand.starttls()
    await by_hand.login("app", "s3cret")
    assert by_hand.mode == mode
    assert summary(await by_hand.deliver(SENDER, "ann@example.org", message(4))) == SENT
    await by_hand.quit()
    assert peer.log.accepted[-1] == (True, True)


async def test_credentials_never_go_over_plaintext(serve: Callable[..., Any]) -> None:
    peer = await serve("pipelining", auth_require_tls=False, authenticator=check_password)
    smtp = connection(peer.port, username="app", password="s3cret")
    with pytest.raises(SMTPException, match="without TLS"):
        await smtp.connect()
    assert not smtp.is_connected
    assert b"AUTH" not in peer.log.text()
    assert b"EHLO" in peer.log.text()


@pytest.mark.parametrize("mode", ["pipelining", "chunking"])
async def test_the_pool_chains_the_messages_waiting_for_a_connection_into_shared_writes(
    serve: Callable[..., Any], mode: str
) -> None:
    """Thirty-two callers at once on one connection: each gets its own outcome (one refused recipient
    among them), every accepted message is stored once, and the transactions shared writes: with
    PIPELINING a message's data, its dot and the next envelope; with CHUNKING whole batches."""
    peer = await serve(mode, Rules(rcpt={"bad@example.org": "550 5.1.1 no such user"}))
    smtp = pool(peer.port)
    recipients = [f"r{n}@example.org" if n != 7 else "bad@example.org" for n in range(32)]
    try:
        outcomes = await asyncio.gather(*(smtp.send(SENDER, r, message(n)) for n, r in enumerate(recipients)))
    finally:
        await smtp.close()
    assert [o.kind for o in outcomes] == ["failed" if n == 7 else "sent" for n in range(32)]
    assert outcomes[7].recipient_fault and outcomes[7].code == 550
    assert len(peer.log.stored) == 31 and peer.log.connections == 1
    if mode == "pipelining":
        assert sum(b".\r\nMAIL FROM" in r for r in peer.log.reads) >= 16, "no data chained with the next envelope"
    else:
        assert max(r.count(b"MAIL FROM") for r in peer.log.reads) > 4, "no write carried several transactions"


async def test_a_caller_cancelled_while_its_message_waits_sends_nothing(serve: Callable[..., Any]) -> None:
    peer = await serve("pipelining", Rules(final={"slow@example.org": SLOW}))
    smtp = pool(peer.port, timeout=2)
    try:
        slow = asyncio.create_task(smtp.send(SENDER, "slow@example.org", message(0)))  # holds the one connection
        await asyncio.sleep(0.2)
        waiting = asyncio.create_task(smtp.send(SENDER, "later@example.org", message(1)))
        await asyncio.sleep(0.05)
        waiting.cancel()
        assert (await slow).kind == "deferred"  # the peer never answered its data: timed out
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (await smtp.send(SENDER, "next@example.org", message(2))).kind == "sent"
    finally:
        await smtp.close()
    assert [b"later@example.org" in m for m in peer.log.stored] == [False]
