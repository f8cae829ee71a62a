"""SMTP throughput benchmark: raw aiosmtplib vs `SmtpPool`, over 1 and 8 connections.

Starts Postfix's `smtp-sink` (apt-get install postfix) on a free loopback port and sends one
pre-built ~7 KB message again and again, so the figures measure the SMTP client, not MIME
building or the server. Every send must be accepted. Prints one JSON object.
Run: `.venv/bin/python bench/smtp_raw.py`.
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

import aiosmtplib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamapp.mail.mime import MimeBuilder
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


async def timed(total: int, workers: int, send: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """`workers` tasks share `total` sends; messages/s over the whole run."""
    counter = iter(range(total))

    async def worker() -> None:
        for _ in counter:
            await send()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    seconds = time.perf_counter() - started
    return {"messages": total, "seconds": round(seconds, 3), "messages_per_s": round(total / seconds)}


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


async def run(port: int, total: int) -> dict[str, dict[str, float]]:
    data = message()
    results = {}
    for connections in (1, 8):
        results[f"raw_{connections}"] = await raw(port, connections, total, data)
        results[f"pool_{connections}"] = await pooled(port, connections, total, data)
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
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen(postfix_sink_command(port, ["-m", "1000"]), stdout=subprocess.DEVNULL)
    try:
        wait_listening(port)
        print(json.dumps(asyncio.run(run(port, args.messages))))
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
