"""`streamapp dev` without `[smtp]`: a local SMTP sink storing every message in `<data_dir>/outbox/`.

`with_dev_sink` points the settings' SMTP at a free loopback port (or STREAMAPP_DEV_SMTP_PORT)
before the app is built, and `DevSink` runs the sink in the worker's event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from typing import Any

from mode import Service

from streamapp.mail.sink import SinkHandle, start_sink
from streamapp.settings import Settings, SmtpSettings

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_dev_sink(settings: Settings) -> Settings:
    port = int(os.environ.get("STREAMAPP_DEV_SMTP_PORT") or _free_port())
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=port,
        connections=8,
        rate_per_second=0,
        sender="news@example.com",
        retry_initial_seconds=60,
        retry_max_seconds=3600,
        expiry_seconds=86400,
        username=None,
        password=None,
        starttls=False,
        unsubscribe_mailto=None,
    )
    return dataclasses.replace(settings, smtp=smtp)


class DevSink(Service):  # type: ignore[misc]
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert settings.smtp is not None
        self.settings = settings
        self.handle: SinkHandle | None = None

    async def on_start(self) -> None:
        smtp = self.settings.smtp
        assert smtp is not None
        outbox = self.settings.service.data_dir / "outbox"
        self.handle = await start_sink(smtp.host, smtp.port, outbox)
        log.info("dev SMTP sink on %s:%d, Maildir %s", smtp.host, smtp.port, outbox)

    async def on_stop(self) -> None:
        if self.handle is not None:
            await self.handle.close()
