"""One deployment, one key ring (SPEC §13): a link sent by one worker works on every other one.

Before `[service] secret_file`, each worker signed with a key it created in its own data
folder, so an unsubscribe link was a 404 on every worker but the one that sent it. Here the
worker that verifies the link joins after a key rotation: its ring signs with a new key and
still verifies the old one, so the link sent before the rotation keeps working.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.fixtures import WorkerPool, eventually
from tests.mail.fixtures import Peers
from tests.sending.fixtures import (
    add_recipients,
    maildir_messages,
    message,
    recipient,
    send,
    settings_of,
    smtp_extra,
    wait_statuses,
    write_templates,
)

pytestmark = pytest.mark.integration

OLD, NEW = "0a" * 32, "0b" * 32


def test_a_link_sent_by_one_worker_unsubscribes_on_another_after_a_rotation(
    kafka: str, tmp_path: Path, peers: Peers
) -> None:
    write_templates(tmp_path)
    peer, maildir = peers.streamapp_sink()
    before, rotated = tmp_path / "before.keys", tmp_path / "rotated.keys"
    before.write_text(f"{OLD}\n")
    rotated.write_text(f"# the new key signs, the old one still verifies\n{NEW}\n{OLD}\n")
    pool = WorkerPool(kafka, tmp_path)
    try:
        sender = pool.create(extra=smtp_extra(peer.port), service=f'secret_file = "{before}"')
        settings = settings_of(sender)
        ann = f"ann-{uuid.uuid4().hex[:6]}"
        add_recipients(sender, [ann])
        [sent] = send(settings, [message(settings, ann)])
        wait_statuses(settings, {sent: "sent"})
        [received] = [m for m in maildir_messages(maildir) if m["To"] == f"{ann}@example.com"]
        path = received["List-Unsubscribe"].strip("<>").removeprefix(settings.service.public_url)
        assert path.startswith("/u/")

        other = pool.create(extra=smtp_extra(peer.port), service=f'secret_file = "{rotated}"')
        assert httpx.get(f"{other.url}{path}", timeout=10).status_code == 200
        tampered = path[:-3] + ("A" if path[-3] != "A" else "B") + path[-2:]
        assert (
            httpx.post(f"{other.url}{tampered}", data={"List-Unsubscribe": "One-Click"}, timeout=10).status_code == 404
        )
        click = httpx.post(f"{other.url}{path}", data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert click.status_code == 200 and "Unsubscribed" in click.text
        eventually(lambda: recipient(other, ann)["status"] == "unsubscribed")
        assert not (other.data_dir / "unsubscribe.key").exists() and not (sender.data_dir / "unsubscribe.key").exists()
    finally:
        pool.stop_all()
