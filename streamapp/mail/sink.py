"""The development SMTP sink: accepts every message and keeps it as a file in a Maildir.

`streamapp dev` runs it inside its own event loop (no aiosmtpd `Controller`, which wants a
thread of its own); tests run it as another process with `python -m streamapp.mail.sink`.

Each message is stored byte for byte as received after DATA (CRLF line ends, dots
unstuffed), written into `tmp/` and renamed into `new/` with a unique Maildir name, so a
reader never sees half a message. Files are not fsync'ed: it is a development tool.

`reply_rules` maps a recipient address to the reply its RCPT gets ("450 4.2.0 try later",
"550 5.1.1 no such user"), to exercise deferrals and bounces against a real SMTP peer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import signal
import socket
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_REPLY = re.compile(r"[2-5]\d\d( .*)?")
_counter = itertools.count()


class Maildir:
    """The writing half of Maildir: unique names, tmp/ then an atomic rename into new/."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    def add(self, data: bytes) -> str:
        """Store one message; returns its file name in new/."""
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{self._host}"
        tmp = self.path / "tmp" / name
        with open(tmp, "wb") as out:  # a small local file: the page cache absorbs it
            out.write(data)
        os.rename(tmp, self.path / "new" / name)
        return name


class _Handler:
    """aiosmtpd hooks: RCPT applies the reply rules, DATA stores the message."""

    def __init__(self, maildir: Maildir, reply_rules: Mapping[str, str]) -> None:
        self.maildir = maildir
        self.rules = {address.lower(): reply for address, reply in reply_rules.items()}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        rule = self.rules.get(address.lower())
        if rule is not None:
            return rule
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        assert content is not None
        name = self.maildir.add(content)
        return f"250 2.0.0 Ok: queued as {name}"


@dataclass
class SinkHandle:
    """A running sink; `port` is the bound port (useful when started with port 0)."""

    server: asyncio.Server
    port: int
    maildir: Path
    _connections: weakref.WeakSet[SMTP]

    async def close(self) -> None:
        """Stop listening and drop open client connections."""
        self.server.close()
        for protocol in list(self._connections):
            if protocol.transport is not None:
                protocol.transport.close()
        await self.server.wait_closed()


async def start_sink(host: str, port: int, maildir: Path, reply_rules: Mapping[str, str] | None = None) -> SinkHandle:
    """Listen on host:port in the running loop and store every accepted message in `maildir`."""
    rules = dict(reply_rules or {})
    for address, reply in rules.items():
        if not _REPLY.fullmatch(reply):
            raise ValueError(f"reply rule for {address!r} must start with an SMTP code: {reply!r}")
    handler = _Handler(Maildir(maildir), rules)
    loop = asyncio.get_running_loop()
    connections: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def protocol() -> SMTP:
        smtp = SMTP(handler, hostname="streamapp-sink", ident="streamapp sink", data_size_limit=None, loop=loop)
        connections.add(smtp)
        return smtp

    server = await loop.create_server(protocol, host, port)
    bound = int(server.sockets[0].getsockname()[1])
    return SinkHandle(server=server, port=bound, maildir=maildir, _connections=connections)


def parse_rule(text: str) -> tuple[str, str]:
    """ "addr=CODE text" as given to --rule."""
    address, sep, reply = text.partition("=")
    if not sep or not address.strip() or not _REPLY.fullmatch(reply.strip()):
        raise argparse.ArgumentTypeError(f"expected ADDRESS=CODE text, e.g. a@x.org=550 5.1.1 no such user: {text!r}")
    return address.strip(), reply.strip()


async def _serve(args: Any) -> None:
    sink = await start_sink(args.host, args.port, args.maildir, dict(args.rule))
    print(f"streamapp sink listening on {args.host}:{sink.port}, maildir {args.maildir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sink.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamapp.mail.sink", description="Development SMTP sink storing messages in a Maildir."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--rule", type=parse_rule, action="append", default=[], help="ADDRESS=CODE text, repeatable")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
