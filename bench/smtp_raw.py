"""SMTP throughput benchmark: raw aiosmtplib vs `SmtpPool` vs `PipelinedSMTP`.

Starts Postfix's `smtp-sink` (apt-get install postfix) on a free loopback port and sends one
pre-built message again and again, so the figures measure the SMTP client, not MIME building
or the server. Every send must be accepted. Prints one JSON object; each figure has msg/s and
the client's CPU time per message (`cpu_us_per_msg`: this process only, user + system, so it
includes the kernel's share of the loopback writes; smtp-sink's CPU is not in it).

- `raw_1`, `pool_1`, `raw_8`, `pool_8`: aiosmtplib `sendmail` and `SmtpPool.send` on 1 and 8
  connections with the 8.4 KB message.
- `ceiling`: on 8 connections, for a 0.77 KB and the 8.4 KB message, aiosmtplib `sendmail`
  (`aiosmtplib`), `PipelinedSMTP.deliver` one message per call (`pipelined`), the same with
  PIPELINING turned off (`pipelined_plain`: the fallback), and `deliver_many` with `--batch`
  messages per call (`pipelined_batch`: one round trip a message, chained); with `--repeat N`
  the fastest of N interleaved rounds.

Run: `.venv/bin/python bench/smtp_raw.py` (about a minute on an idle machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamapp.mail.mime import MimeBuilder
from streamapp.mail.pipelined import PipelinedSMTP
from streamapp.mail.smtp import SmtpPool
from tests.fixtures import free_port
from tests.mail.fixtures import postfix_sink_command

SENDER = "news@example.com"
RECIPIENT = "ann@example.org"


def message() -> bytes:
    text = "Tack för ditt köp \u2013 vi hoppas att du blir nöjd med varorna.\n" * 30
    html = "<p>" + "Tack för ditt köp \u2013 vi hoppas att du blir nöjd med varorna. " * 60 + "</p>\n"
    return MimeBuilder(SENDER).build(
        message_id="01JD5Z3N8K",
        to=RECIPIENT,
        subject="Ditt kvitto",
        text=text,
        html=html,
        unsubscribe_url="https://x/u/t",
    )


def small_message() -> bytes:
    """A short receipt, about 770 bytes on the wire."""
    text = "Tack för köpet \u2013 vi hoppas att du blir nöjd.\n"
    html = "<p>Tack för köpet \u2013 vi hoppas att du blir nöjd.</p>\n"
    return MimeBuilder(SENDER).build(
        message_id="01JD5Z3N8K",
        to=RECIPIENT,
        subject="Ditt kvitto",
        text=text,
        html=html,
        unsubscribe_url="https://x/u/t",
    )


async def timed(total: int, workers: int, send: Callable[[], Awaitable[None]], per_send: int = 1) -> dict[str, float]:
    """`workers` tasks share `total` messages, `per_send` a call; messages/s and client CPU µs per message."""
    counter = iter(range(total // per_send))

    async def worker() -> None:
        for _ in counter:
            await send()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(workers)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    sent = total // per_send * per_send
    return {
        "messages": sent,
        "seconds": round(seconds, 3),
        "messages_per_s": round(sent / seconds),
        "cpu_us_per_msg": round(cpu / sent * 1e6, 1),
    }


async def raw(port: int, connections: int, total: int, data: bytes) -> dict[str, float]:
    """aiosmtplib.SMTP.sendmail on `connections` persistent connections, one sender task each."""
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench", start_tls=False)
        for _ in range(connections)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for client in clients:
        free.put_nowait(client)

    async def send() -> None:
        client = await free.get()
        errors, _ = await client.sendmail(SENDER, [RECIPIENT], data)
        assert not errors, errors
        free.put_nowait(client)

    try:
        return await timed(total, connections, send)
    finally:
        await asyncio.gather(*(c.quit() for c in clients))


async def pooled(port: int, connections: int, total: int, data: bytes) -> dict[str, float]:
    """SmtpPool.send with twice as many sender tasks as connections, as a send agent would have."""
    pool = SmtpPool("127.0.0.1", port, connections, rate_per_second=0, helo_name="bench")

    async def send() -> None:
        outcome = await pool.send(SENDER, RECIPIENT, data)
        assert outcome.kind == "sent", outcome

    try:
        return await timed(total, connections * 2, send)
    finally:
        await pool.close()


async def pipelined(
    port: int, connections: int, total: int, data: bytes, batch: int = 1, pipelining: bool = True
) -> dict[str, float]:
    """`PipelinedSMTP` on `connections` connections, one sender task each, `batch` messages a call."""
    clients = [
        PipelinedSMTP(hostname="127.0.0.1", port=port, local_hostname="bench", start_tls=False, pipelining=pipelining)
        for _ in range(connections)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    free: asyncio.Queue[PipelinedSMTP] = asyncio.Queue()
    for client in clients:
        free.put_nowait(client)
    envelopes = [(SENDER, RECIPIENT, data)] * batch

    async def send() -> None:
        client = await free.get()
        attempts = await client.deliver_many(envelopes) if batch > 1 else [await client.deliver(*envelopes[0])]
        assert all(a.outcome.kind == "sent" for a in attempts), attempts
        free.put_nowait(client)

    try:
        return await timed(total, connections, send, per_send=batch)
    finally:
        await asyncio.gather(*(c.quit() for c in clients))


async def ceiling(port: int, total: int, batch: int, data: bytes, repeat: int = 1) -> dict[str, dict[str, float]]:
    """The clients side by side on 8 connections with one message; the fastest of `repeat` rounds each.

    Rounds are interleaved, so a burst of other load on the machine hits every client alike.
    """
    variants: dict[str, Callable[[], Awaitable[dict[str, float]]]] = {
        "aiosmtplib": lambda: raw(port, 8, total, data),
        "pipelined": lambda: pipelined(port, 8, total, data),
        "pipelined_plain": lambda: pipelined(port, 8, total, data, pipelining=False),
        "pipelined_batch": lambda: pipelined(port, 8, total, data, batch=batch),
    }
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeat):
        for name, measure in variants.items():
            result = await measure()
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    best["pipelined_batch"]["batch"] = batch
    return best


async def run(port: int, total: int, batch: int = 16, repeat: int = 1) -> dict[str, Any]:
    data = message()
    results: dict[str, Any] = {}
    for connections in (1, 8):
        results[f"raw_{connections}"] = await raw(port, connections, total, data)
        results[f"pool_{connections}"] = await pooled(port, connections, total, data)
    results["ceiling"] = {
        f"{len(body)}_bytes": await ceiling(port, total, batch, body, repeat) for body in (small_message(), data)
    }
    return results | {"message_bytes": {"size": len(data)}}


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000, help="per measurement")
    parser.add_argument("--batch", type=int, default=16, help="messages per deliver_many call")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the ceiling figures (the fastest is kept)")
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(postfix_sink_command(port, ["-m", "1000"]), stdout=subprocess.DEVNULL)
    try:
        wait_listening(port)
        print(json.dumps(asyncio.run(run(port, args.messages, args.batch, args.repeat))))
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
