"""DKIM in the send path (SPEC §11): a worker with `[[dkim]]` keys signs what it sends, against the real
broker and the streamapp SMTP sink; the received bytes verify with dkimpy, an independent
implementation, and fail once altered. A bad `[[dkim]]` entry is a config error with its place."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dkim as dkimpy
import pytest

from streamapp.mail.dkim import GeneratedKey, generate_key
from tests.fixtures import Worker, WorkerPool, client, eventually
from tests.mail.fixtures import Peers
from tests.sending.fixtures import smtp_extra, write_templates

pytestmark = pytest.mark.integration


def dkim_tables(*keys: GeneratedKey) -> str:
    return "".join(
        f'\n[[dkim]]\ndomain = "example.com"\nselector = "{k.dns_name.partition(".")[0]}"\n'
        f'private_key = "{k.key_path.name}"\n'
        for k in keys
    )


@pytest.fixture
def signing(kafka: str, tmp_path: Path, peers: Peers) -> Iterator[tuple[Worker, Path, dict[bytes, bytes]]]:
    write_templates(tmp_path)
    keys = [generate_key("example.com", s, a, out_dir=tmp_path) for s, a in (("r1", "rsa"), ("e1", "ed25519"))]
    dns = {f"{k.dns_name}.".encode(): k.txt_record.encode() for k in keys}
    sink, maildir = peers.streamapp_sink()
    pool = WorkerPool(kafka, tmp_path)
    try:
        yield pool.create(extra=smtp_extra(sink.port) + dkim_tables(*keys)), maildir, dns
    finally:
        pool.stop_all()


def verify(message: bytes, dns: dict[bytes, bytes], index: int) -> bool:
    try:
        return bool(dkimpy.DKIM(message).verify(idx=index, dnsfunc=lambda name, timeout=5: dns.get(name)))
    except dkimpy.DKIMException:
        return False


def test_sent_mail_carries_an_rsa_and_an_ed25519_signature_that_verify(
    signing: tuple[Worker, Path, dict[bytes, bytes]],
) -> None:
    worker, maildir, dns = signing
    with client(worker) as api:
        answer = api.post("/api/v1/triggers/receipt/messages",
                          json={"originalId": "dk-1", "email": "dk-1@example.org", "properties": {"order": "D1"}})  # fmt: skip
        assert answer.status_code == 202, answer.text

    [path] = eventually(lambda: list((maildir / "new").glob("*")), timeout=60)
    data = path.read_bytes()
    assert data.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in data and b"a=ed25519-sha256" in data
    assert verify(data, dns, 0) and verify(data, dns, 1)
    altered = data.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not verify(altered, dns, 0) and not verify(altered, dns, 1)


def test_a_dkim_entry_whose_key_file_is_missing_is_a_placed_config_error(tmp_path: Path) -> None:
    config = tmp_path / "streamapp.toml"
    config.write_text('[[dkim]]\ndomain = "example.com"\nselector = "s1"\nprivate_key = "absent.pem"\n')
    env = {"STREAMAPP_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "streamapp.cli", "check-config"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1
    assert any(line.startswith(f"{config}: dkim[0].private_key: ") for line in run.stderr.splitlines()), run.stderr
