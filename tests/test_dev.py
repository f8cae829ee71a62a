"""`streamapp dev` without [smtp]: the worker sends to a local sink that fills var/outbox/."""

from __future__ import annotations

import asyncio
import email
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamapp.settings import load_settings
from tests.fixtures import ROOT, TOKENS, config_text, eventually, free_port
from tests.sending.fixtures import message, write_templates

pytestmark = pytest.mark.integration


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_dev_delivers_to_the_outbox_maildir_and_stops_on_ctrl_c(kafka: str, tmp_path: Path) -> None:
    write_templates(tmp_path)
    port = free_port()
    config = tmp_path / "dev.toml"
    extra = '\n[[campaigns]]\nname = "newsletter"\ndatabase = "members"\ntemplate = "news"\n'
    config.write_text(config_text(kafka, tmp_path / "var", port, f"dev{port}", 4, extra))
    env = {**os.environ, "STREAMAPP_CONFIG": str(config)}
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "streamapp.cli", "dev"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: healthy(url), timeout=90, interval=0.3)
        headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
        assert (
            httpx.put(
                f"{url}/api/v1/databases/members/recipients/dev1", json={"email": "dev1@example.com"}, headers=headers
            ).status_code
            == 202
        )
        eventually(
            lambda: httpx.get(f"{url}/api/v1/databases/members/recipients/dev1", headers=headers).status_code == 200
        )
        settings = load_settings(config, {})
        sent = message(settings, "dev1")
        from streamapp.sending.enqueue import enqueue

        asyncio.run(enqueue(settings, [sent]))
        outbox = tmp_path / "var" / "outbox" / "new"
        [path] = eventually(lambda: list(outbox.glob("*")) if outbox.exists() else None, timeout=30)
        mail = email.message_from_bytes(path.read_bytes())
        assert mail["To"] == "dev1@example.com" and mail["Subject"] == "News for dev1"
        assert sent.messageId in mail["Message-ID"]
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(60)
        log.close()
    assert code == 0, (tmp_path / "dev.log").read_text()[-3000:]
