"""The batch-body spool (streamapp.http.bodies.Spool) and the body deadline, over real loopback HTTP.

A real aiohttp server with the worker's error middleware, a client writing raw bytes on a socket: a
body trickled byte by byte is cut with 408 and its spool file removed; bodies that would pass the
spool's quota are 503 with Retry-After and nothing of them is kept. The worker's own limits are
tested end to end in tests/sending/test_bounded_batches.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from streamapp.http.bodies import Spool
from streamapp.http.errors import json_response
from streamapp.http.server import observe
from tests.fixtures import free_port

#: Small enough to be felt within a second.
PACE = {"grace": 0.5, "min_rate": 2000.0}
QUOTA = 10_000


class Server:
    def __init__(self, folder: Path) -> None:
        self.spool = Spool(folder, QUOTA)
        self.hold = asyncio.Event()
        self.held = asyncio.Event()
        self.hold.set()

    async def post(self, request: web.Request) -> web.Response:
        async with self.spool.body(request, 50_000, **PACE) as path:
            size = path.stat().st_size
            self.held.set()
            await self.hold.wait()
        return json_response({"size": size})


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, int]]:
    state = Server(tmp_path / "spool")
    app = web.Application(middlewares=[observe])
    app.router.add_post("/body", state.post)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state, port
    finally:
        await runner.cleanup()


async def open_post(port: int, length: int | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    writer.write(f"POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n{framing}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> tuple[int, str]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split()[1]), head.decode()


async def test_a_trickled_body_is_cut_with_408_and_its_file_removed(server: tuple[Server, int]) -> None:
    state, port = server
    reader, writer = await open_post(port, 5000)
    started = time.monotonic()

    async def trickle() -> None:
        for _ in range(5000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)  # 20 bytes/s: far below the 2,000 required

    feeding = asyncio.create_task(trickle())
    try:
        status, head = await answer(reader)
    finally:
        feeding.cancel()
        writer.close()
    assert status == 408 and "Connection: close" in head
    assert 0.5 <= time.monotonic() - started < 3
    assert list(state.spool.folder.iterdir()) == [] and state.spool.used == 0


async def test_a_body_that_never_starts_is_cut_after_the_grace(server: tuple[Server, int]) -> None:
    state, port = server
    reader, writer = await open_post(port, 100)
    started = time.monotonic()
    status, _ = await answer(reader)
    writer.close()
    assert status == 408 and time.monotonic() - started < 2
    assert state.spool.used == 0


async def test_a_body_at_a_steady_rate_is_taken(server: tuple[Server, int]) -> None:
    state, port = server
    reader, writer = await open_post(port, 6000)
    for _ in range(6):  # 1,000 bytes every 0.2 s: 5,000 bytes/s, for 1.2 s (past the grace)
        writer.write(b"y" * 1000)
        await writer.drain()
        await asyncio.sleep(0.2)
    status, _ = await answer(reader)
    body = await reader.read(100)
    writer.close()
    assert status == 200 and b'"size":6000' in body
    assert list(state.spool.folder.iterdir()) == [] and state.spool.used == 0


async def test_bodies_past_the_quota_are_503_with_retry_after_and_nothing_kept(server: tuple[Server, int]) -> None:
    state, port = server
    state.hold.clear()
    first_reader, first = await open_post(port, 8000)  # holds 8,000 of the 10,000 until released
    first.write(b"a" * 8000)
    await first.drain()
    await asyncio.wait_for(state.held.wait(), 5)
    assert state.spool.used == 8000

    reader, writer = await open_post(port, 3000)  # known from Content-Length: refused before any byte
    status, head = await answer(reader)
    writer.close()
    assert status == 503 and "Retry-After: 5" in head

    reader, writer = await open_post(port, None)  # chunked: refused once its bytes pass the quota
    writer.write(b"bb8\r\n" + b"c" * 3000 + b"\r\n")
    await writer.drain()
    status, _ = await answer(reader)
    writer.close()
    assert status == 503
    assert len(list(state.spool.folder.iterdir())) == 1 and state.spool.used == 8000  # only the first body

    state.hold.set()
    assert (await answer(first_reader))[0] == 200
    first.close()
    assert state.spool.used == 0 and list(state.spool.folder.iterdir()) == []
    reader, writer = await open_post(port, 3000)
    writer.write(b"d" * 3000)
    assert (await answer(reader))[0] == 200
    writer.close()
