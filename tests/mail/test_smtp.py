"""Tests for streamapp.mail.smtp against real SMTP servers in other processes, over loopback.

Peers: streamapp's own sink (`python -m streamapp.mail.sink`, with RCPT reply rules) and
Postfix's smtp-sink, whose -r/-f/-q options soft-reject, hard-reject or hang up on chosen
commands.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from streamapp.mail.mime import MimeBuilder
from streamapp.mail.smtp import SmtpOutcome, SmtpPool
from tests.mail.fixtures import Peers, needs_smtp_sink

SENDER = "news@example.com"
BUILDER = MimeBuilder(SENDER, "Butik")


@cache  # one build per message: every build has its own boundary, and the sink must store these exact bytes
def message(n: int, to: str = "ann@example.org") -> bytes:
    return BUILDER.build(
        message_id=f"m{n}",
        to=to,
        subject=f"Åsa, ditt kvitto \u2013 {n} €",
        text=f"Hej {n}\n.\n..leading dots survive dot-stuffing\n",
        html=f"<p>Hej {n}</p>\n",
        unsubscribe_url=f"https://example.com/u/t{n}",
    )


def stored(maildir: Path) -> list[bytes]:
    return sorted(path.read_bytes() for path in (maildir / "new").iterdir())


def pool(port: int, connections: int = 1) -> SmtpPool:
    return SmtpPool("127.0.0.1", port, connections, rate_per_second=0, timeout=10, helo_name="test.example")


async def test_sink_stores_exact_bytes_and_applies_reply_rules(peers: Peers) -> None:
    rules = {"later@example.org": "450 4.2.0 try later", "gone@example.org": "550 5.1.1 no such user"}
    sink, maildir = peers.streamapp_sink(rules)
    smtp = pool(sink.port)  # one connection: each failure must leave it usable for the next message
    try:
        first = await smtp.send(SENDER, "ann@example.org", message(1))
        later = await smtp.send(SENDER, "later@example.org", message(2, "later@example.org"))
        gone = await smtp.send(SENDER, "gone@example.org", message(3, "gone@example.org"))
        last = await smtp.send(SENDER, "bo@example.org", message(4, "bo@example.org"))
    finally:
        await smtp.close()
    assert (first.kind, first.code, first.reply_class) == ("sent", 250, "2xx")
    assert later == SmtpOutcome("deferred", 450, "4.2.0 try later", "4xx", recipient_fault=False, stage="rcpt")
    assert gone == SmtpOutcome("failed", 550, "5.1.1 no such user", "5xx", recipient_fault=True, stage="rcpt")
    assert last.kind == "sent"
    assert stored(maildir) == sorted([message(1), message(4, "bo@example.org")])


async def test_concurrent_sends_share_the_connections(peers: Peers) -> None:
    sink, maildir = peers.streamapp_sink()
    smtp = pool(sink.port, connections=4)
    try:
        outcomes = await asyncio.gather(*(smtp.send(SENDER, f"r{n}@example.org", message(n)) for n in range(40)))
    finally:
        await smtp.close()
    assert {o.kind for o in outcomes} == {"sent"}
    assert stored(maildir) == sorted(message(n) for n in range(40))


async def test_peer_killed_defers_then_restarted_peer_gets_the_mail(peers: Peers) -> None:
    sink, maildir = peers.streamapp_sink()
    smtp = pool(sink.port, connections=2)
    try:
        assert (await smtp.send(SENDER, "ann@example.org", message(1))).kind == "sent"
        sink.kill()
        down = await smtp.send(SENDER, "ann@example.org", message(2))
        assert (down.kind, down.code, down.reply_class, down.recipient_fault) == (
            "deferred",
            None,
            "connection_error",
            False,
        )
        sink.start()
        assert (await smtp.send(SENDER, "ann@example.org", message(3))).kind == "sent"
        # Killed and restarted while the pool held an open connection it has not yet seen drop:
        # the stale connection is replaced and the message goes out, not deferred.
        sink.kill()
        sink.start()
        assert (await smtp.send(SENDER, "ann@example.org", message(4))).kind == "sent"
    finally:
        await smtp.close()
    assert stored(maildir) == sorted([message(1), message(3), message(4)])


async def test_nothing_listening_is_a_connection_error(peers: Peers) -> None:
    sink, _ = peers.streamapp_sink()
    sink.kill()
    smtp = pool(sink.port)
    outcome = await smtp.send(SENDER, "ann@example.org", message(1))
    await smtp.close()
    assert (outcome.kind, outcome.reply_class, outcome.stage) == ("deferred", "connection_error", "connect")


@needs_smtp_sink
@pytest.mark.parametrize(
    ("options", "kind", "code", "reply_class", "recipient_fault", "stage"),
    [
        ((), "sent", 250, "2xx", False, "data"),
        (("-r", "rcpt"), "deferred", 450, "4xx", False, "rcpt"),
        (("-f", "rcpt"), "failed", 500, "5xx", True, "rcpt"),
        (("-f", "data"), "failed", 500, "5xx", True, "data"),
        (("-f", "."), "failed", 500, "5xx", True, "data"),
        (("-f", "mail"), "failed", 500, "5xx", False, "mail"),
        (("-r", "mail"), "deferred", 450, "4xx", False, "mail"),
        (("-Q", "rcpt"), "deferred", 421, "4xx", False, "rcpt"),
        (("-q", "rcpt"), "deferred", None, "connection_error", False, "rcpt"),
    ],
)
async def test_postfix_smtp_sink_replies(
    peers: Peers,
    options: tuple[str, ...],
    kind: str,
    code: int | None,
    reply_class: str,
    recipient_fault: bool,
    stage: str,
) -> None:
    sink = peers.postfix_sink(options)
    smtp = pool(sink.port)
    try:
        outcomes = [await smtp.send(SENDER, "ann@example.org", message(n)) for n in range(3)]
    finally:
        await smtp.close()
    for outcome in outcomes:  # the same on a reused, a reset or a reopened connection
        assert (outcome.kind, outcome.code, outcome.reply_class) == (kind, code, reply_class)
        assert (outcome.recipient_fault, outcome.stage) == (recipient_fault, stage)


async def test_closed_pool_refuses_to_send(peers: Peers) -> None:
    sink, _ = peers.streamapp_sink()
    smtp = pool(sink.port)
    assert (await smtp.send(SENDER, "ann@example.org", message(1))).kind == "sent"
    await smtp.close()
    with pytest.raises(RuntimeError, match="closed"):
        await smtp.send(SENDER, "ann@example.org", message(2))


@dataclass
class Recorder:
    """aiosmtpd handler of the TLS/AUTH peer: what each accepted transaction looked like."""

    accepted: list[tuple[bool, bool, bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None
        self.accepted.append((session.ssl is not None, session.authenticated, envelope.original_content))
        return "250 2.0.0 Ok"


def check_password(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"app", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself


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


@pytest.fixture
async def tls_peer(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[int, Recorder]]:
    """An aiosmtpd server on loopback that requires STARTTLS, then AUTH (user app, password s3cret)."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(*certificate)
    recorder = Recorder()
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            recorder,
            hostname="tls-peer",
            tls_context=server_tls,
            require_starttls=True,
            auth_required=True,
            authenticator=check_password,
            loop=loop,
        )

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), recorder
    server.close()
    await server.wait_closed()


def tls_pool(port: int, cert: Path, password: str, starttls: bool = True) -> SmtpPool:
    context = ssl.create_default_context(cafile=str(cert))
    return SmtpPool(
        "127.0.0.1", port, 1, 0, username="app", password=password, starttls=starttls, tls_context=context, timeout=10
    )


async def test_starttls_and_auth(tls_peer: tuple[int, Recorder], certificate: tuple[Path, Path]) -> None:
    port, recorder = tls_peer
    smtp = tls_pool(port, certificate[0], "s3cret")
    try:
        outcomes = [await smtp.send(SENDER, "ann@example.org", message(n)) for n in (1, 2)]
    finally:
        await smtp.close()
    assert [o.kind for o in outcomes] == ["sent", "sent"]
    assert recorder.accepted == [(True, True, message(1)), (True, True, message(2))]


async def test_rejected_login_defers_without_blaming_the_recipient(
    tls_peer: tuple[int, Recorder], certificate: tuple[Path, Path]
) -> None:
    port, recorder = tls_peer
    smtp = tls_pool(port, certificate[0], "wrong")
    outcome = await smtp.send(SENDER, "ann@example.org", message(1))
    await smtp.close()
    assert (outcome.kind, outcome.code, outcome.reply_class) == ("deferred", 535, "5xx")
    assert (outcome.recipient_fault, outcome.stage) == (False, "connect")
    assert recorder.accepted == []
