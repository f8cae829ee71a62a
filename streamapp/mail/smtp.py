"""A pool of persistent SMTP connections that turns every reply into a delivery outcome.

One transaction carries one recipient (MAIL, RCPT, DATA), so a reply always belongs to exactly
one message and partial acceptance cannot pass for success. How replies map to outcomes
(SPEC §6):

| where                         | reply                    | outcome                                 |
|-------------------------------|--------------------------|-----------------------------------------|
| after DATA                    | 2xx                      | sent                                    |
| any stage                     | 4xx (or unexpected)      | deferred                                |
| any stage                     | lost connection, timeout | deferred, reply_class connection_error  |
| RCPT or DATA                  | 5xx                      | failed, recipient_fault (hard bounce)   |
| MAIL FROM                     | 5xx                      | failed, not the recipient's fault       |
| connect, EHLO, STARTTLS, AUTH | any error                | deferred: server or configuration fault |

A timeout or lost connection *after* the message data was written may hide a delivery the
server completed; that message is deferred and may be sent twice (the in-flight bound).

Connections are streamapp.mail.pipelined's PipelinedSMTP: MAIL, RCPT and DATA (or BDAT and the
data) go in one write where the server offers PIPELINING (CHUNKING), with the same outcomes
(`pipelining=False`: aiosmtplib, one command at a time). Each connection has a loop that takes
every message waiting for a connection, up to MAX_BATCH, into one `deliver_many`: the data of one
message and the next envelope share a write (with CHUNKING the whole batch is one), so a busy pool
pays one round trip, and few system calls, a message. Batching does not widen the in-flight bound:
each caller still has one message in the pool. Connections are opened lazily (a quiet pool holds
few: parked loops are woken most recent first) and reconnected when the server dropped them.
A failed transaction is followed by RSET; if that fails the connection is closed, so one bad
transaction never poisons the next. A reused connection that turns out to be dead before any
message data was written (the server timed it out while idle) is reconnected and the message
retried once at once, instead of being deferred for minutes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)

from streamapp.mail.outcome import OutcomeKind, ReplyClass, SmtpOutcome, Stage
from streamapp.mail.pipelined import PipelinedSMTP

__all__ = ["OutcomeKind", "ReplyClass", "SmtpOutcome", "SmtpPool", "Stage", "TokenBucket"]


class TokenBucket:
    """Rate limiter: `rate` tokens a second, at most `burst` saved up.

    `reserve()` hands out tokens in call order and returns how long the caller must wait for
    its token, so concurrent senders queue fairly and the long-run rate is exact. The clock is
    injectable so the arithmetic is tested without sleeping.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def reserve(self) -> float:
        """Take one token (possibly borrowed from the future); seconds to wait before using it."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class _Failure(Exception):
    """A transaction ended without delivery; carries the outcome."""

    def __init__(self, outcome: SmtpOutcome, before_data: bool = False) -> None:
        super().__init__(outcome.text)
        self.outcome = outcome
        self.before_data = before_data  # nothing of the message reached the server: safe to retry


#: Messages one connection takes into one `deliver_many` at most (bench/smtp_raw.py: 16 a call more than
#: doubles the msg/s of one a call, at half the CPU a message).
MAX_BATCH = 16


@dataclass(slots=True)
class _Job:
    sender: str
    recipient: str
    data: bytes
    done: asyncio.Future[SmtpOutcome]


def _resolve(job: _Job, outcome: SmtpOutcome) -> None:
    if not job.done.done():
        job.done.set_result(outcome)


class SmtpPool:
    """Up to `connections` persistent connections to one SMTP server, shared by concurrent senders."""

    def __init__(
        self,
        host: str,
        port: int,
        connections: int,
        rate_per_second: float,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 30,
        helo_name: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        pipelining: bool = True,
    ) -> None:
        """`pipelining`: connections are PipelinedSMTP (PIPELINING and CHUNKING where the server offers
        them: one round trip a message); False: aiosmtplib's one command at a time."""
        if connections < 1:
            raise ValueError("connections must be >= 1")
        self.host, self.port = host, port
        self._username, self._password = username, password
        self._starttls, self._timeout, self._tls_context = starttls, timeout, tls_context
        self._helo_name = helo_name
        self._pipelining = pipelining
        self._bucket = TokenBucket(rate_per_second) if rate_per_second > 0 else None
        self._clients = [self._client() for _ in range(connections)]
        #: One delivery loop per connection (started at the first send), parked LIFO when there is no work,
        #: so a quiet pool keeps using, and keeping open, the same few connections.
        self._batch = MAX_BATCH if pipelining else 1
        self._pending: deque[_Job] = deque()
        self._parked: list[asyncio.Event] = []
        self._loops: list[asyncio.Task[None]] = []
        self._closed = False

    async def send(self, sender: str, recipient: str, data: bytes) -> SmtpOutcome:
        """Deliver `data` from `sender` to the single `recipient`; never raises for SMTP trouble.

        The message waits in the pool's queue for a connection's loop, which takes every waiting message
        (up to MAX_BATCH) into one `deliver_many`: with PIPELINING their transactions share writes and
        round trips. A caller cancelled before its message was taken sends nothing.
        """
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        if self._bucket is not None:
            await self._bucket.acquire()
        if self._closed:
            raise RuntimeError("SmtpPool is closed")
        self._start()
        job = _Job(sender, recipient, data, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        if self._parked:
            self._parked.pop().set()  # the most recently used connection
        return await job.done

    async def close(self) -> None:
        """Let the loops deliver what is queued, then QUIT every open connection."""
        self._closed = True
        for wake in self._parked:
            wake.set()
        self._parked.clear()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await asyncio.gather(*(_quit(c) for c in self._clients))

    def _start(self) -> None:
        if not self._loops:
            self._loops = [asyncio.create_task(self._serve(client)) for client in reversed(self._clients)]

    async def _serve(self, client: aiosmtplib.SMTP) -> None:
        """A connection's loop: deliver queued messages a batch at a time; park when there are none."""
        wake = asyncio.Event()
        while True:
            while batch := self._take():
                await self._deliver(client, batch)
            if self._closed:
                return
            wake.clear()
            self._parked.append(wake)
            await wake.wait()

    def _take(self) -> list[_Job]:
        """Up to a batch of queued messages whose callers still wait, oldest first."""
        batch: list[_Job] = []
        while self._pending and len(batch) < self._batch:
            job = self._pending.popleft()
            if not job.done.done():  # cancelled callers' messages are not sent
                batch.append(job)
        return batch

    async def _deliver(self, client: aiosmtplib.SMTP, batch: list[_Job]) -> None:
        """Send a batch and give each caller its outcome; a message dropped before any of its data was
        written, on a connection that was open before (the server closed it while idle), is tried again once
        on a new connection."""
        try:
            reused = client.is_connected
            attempts = await self._attempt_many(client, batch)
            again = [job for job, (_, dropped) in zip(batch, attempts, strict=True) if reused and dropped]
            for job, (outcome, dropped) in zip(batch, attempts, strict=True):
                if not (reused and dropped):
                    _resolve(job, outcome)
            if again:
                for job, (outcome, _) in zip(again, await self._attempt_many(client, again), strict=True):
                    _resolve(job, outcome)
        except BaseException as exc:  # the connection's state is unknown: closed; its callers get the error
            client.close()
            for job in batch:
                if not job.done.done():
                    job.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("pool stopped"))
            if not isinstance(exc, Exception):
                raise

    async def _attempt_many(self, client: aiosmtplib.SMTP, jobs: list[_Job]) -> list[tuple[SmtpOutcome, bool]]:
        if len(jobs) == 1 or not isinstance(client, PipelinedSMTP):
            return [await self._attempt(client, job.sender, job.recipient, job.data) for job in jobs]
        try:
            await self._ensure_connected(client)
        except _Failure as failure:
            return [(failure.outcome, failure.before_data and not client.is_connected)] * len(jobs)
        try:
            return list(await client.deliver_many([(job.sender, job.recipient, job.data) for job in jobs]))
        except ValueError:  # a malformed address refuses the whole write: each alone, that one raises
            return [await self._attempt(client, job.sender, job.recipient, job.data) for job in jobs]

    def _client(self) -> aiosmtplib.SMTP:
        kind = PipelinedSMTP if self._pipelining else aiosmtplib.SMTP
        return kind(
            hostname=self.host,
            port=self.port,
            timeout=self._timeout,
            start_tls=self._starttls,
            tls_context=self._tls_context,
            username=self._username,
            password=self._password,
        )

    async def _attempt(
        self, client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes
    ) -> tuple[SmtpOutcome, bool]:
        """The outcome, and whether the connection was lost before any message data was sent."""
        try:
            await self._ensure_connected(client)
            if isinstance(client, PipelinedSMTP):
                return await client.deliver(sender, recipient, data)
            return await _transaction(client, sender, recipient, data), False
        except _Failure as failure:
            return failure.outcome, failure.before_data and not client.is_connected

    async def _ensure_connected(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            return
        client.close()  # drop any half-closed transport state before reconnecting
        if client.local_hostname is None:
            client.local_hostname = await self._local_hostname()
        try:
            await client.connect()
        except SMTPResponseException as exc:
            client.close()
            raise _Failure(_reply("deferred", exc.code, exc.message, "connect"), before_data=True) from exc
        except (SMTPException, OSError, TimeoutError) as exc:
            client.close()
            raise _Failure(_lost(exc, "connect"), before_data=True) from exc

    async def _local_hostname(self) -> str:
        """The EHLO name, resolved once off the event loop (getfqdn may wait on DNS)."""
        if self._helo_name is None:
            self._helo_name = await asyncio.get_running_loop().run_in_executor(None, socket.getfqdn)
        return self._helo_name


async def _transaction(client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes) -> SmtpOutcome:
    stage: Stage = "mail"
    try:
        size = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
        await client.mail(sender, options=size)
        stage = "rcpt"
        await client.rcpt(recipient)
        stage = "data"
        reply = await client.data(data)
    except SMTPResponseException as exc:
        await _reset(client)
        raise _Failure(_refused(exc, stage), before_data=stage != "data") from exc
    except (SMTPException, OSError, TimeoutError) as exc:
        client.close()
        raise _Failure(_lost(exc, stage), before_data=stage != "data") from exc
    return SmtpOutcome("sent", reply.code, reply.message, "2xx", stage="data")


def _refused(exc: SMTPResponseException, stage: Stage) -> SmtpOutcome:
    """Classify an error reply: 5xx fails the message, anything else defers it."""
    if exc.code // 100 != 5:
        return _reply("deferred", exc.code, exc.message, stage)
    on_recipient = isinstance(exc, SMTPRecipientRefused) or (stage == "data" and not isinstance(exc, SMTPSenderRefused))
    return SmtpOutcome("failed", exc.code, exc.message, "5xx", recipient_fault=on_recipient, stage=stage)


def _reply(kind: OutcomeKind, code: int, text: str, stage: Stage) -> SmtpOutcome:
    reply_class: ReplyClass = "5xx" if code // 100 == 5 else "2xx" if code // 100 == 2 else "4xx"
    return SmtpOutcome(kind, code, text, reply_class, stage=stage)


def _lost(exc: BaseException, stage: Stage) -> SmtpOutcome:
    text = str(exc) or type(exc).__name__
    return SmtpOutcome("deferred", None, f"{type(exc).__name__}: {text}", "connection_error", stage=stage)


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a failed transaction; a connection that cannot even do that is closed."""
    if not client.is_connected:
        return
    try:
        await client.rset()
    except (SMTPException, OSError, TimeoutError):
        client.close()


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await asyncio.wait_for(client.quit(), timeout=5)
    except (SMTPException, OSError, TimeoutError):
        pass
    finally:
        client.close()
