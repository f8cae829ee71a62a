"""Security defaults (SPEC §13) as a worker process and the Faust app see them.

The configuration checks themselves are in tests/test_settings.py; here: `streamapp
check-config` and `streamapp worker` refuse the documented development tokens and key and a
missing shared key off loopback (real worker processes against the real broker), a worker
off loopback starts with its tokens and keys from files, and Faust's own environment
variables cannot turn its web server back on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamapp.kafka.app import new_faust_app
from streamapp.sending.idempotency import scoped_key
from streamapp.settings import DEVELOPMENT_KEY, is_loopback, load_settings
from tests.fixtures import ROOT, TOKENS, WorkerPool, config_text, sha

DEV_CONFIG = ROOT / "config" / "streamapp.toml"
OFF_LOOPBACK = "(service.web_host is '0.0.0.0', set by STREAMAPP_WEB_HOST)"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.255.0.1", "::1", "localhost", "localhost."])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.1", "fe80::1", "::ffff:127.0.0.1", "myhost", "[::1]"])
def test_hosts_that_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_check_config_refuses_the_shipped_configuration_off_loopback() -> None:
    env = {**os.environ, "STREAMAPP_CONFIG": str(DEV_CONFIG), "STREAMAPP_WEB_HOST": "0.0.0.0"}
    run = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    refusal = "the documented development token 'dev-token' only works on a loopback web_host"
    assert f"{DEV_CONFIG}: tokens[0].sha256: {refusal} {OFF_LOOPBACK}" in lines
    assert lines[-1] == f"3 error(s) in {DEV_CONFIG}"


def test_faust_environment_variables_cannot_turn_its_web_server_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text("kafka://127.0.0.1:1", tmp_path / "data", 1, "envtest", partitions=6))
    settings = load_settings(config, {})
    monkeypatch.setenv("APP_WEB_ENABLED", "true")
    monkeypatch.setenv("APP_WEB_TABLES_ENABLED", "true")
    monkeypatch.setenv("BROKER_URL", "kafka://elsewhere:9092")
    monkeypatch.setenv("TOPIC_PARTITIONS", "3")
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "elsewhere"))
    app = new_faust_app(settings)
    assert app.conf.web_enabled is False
    assert [str(url) for url in app.conf.broker] == ["kafka://127.0.0.1:1"]
    assert app.conf.topic_partitions == 6
    assert Path(app.conf.datadir) == tmp_path / "data" / "state"


def test_idempotency_keys_are_scoped_by_the_token_digest() -> None:
    """Two clients known by one name (a replaced token) never share idempotency keys."""
    before, after = sha("old-crm-token"), sha("new-crm-token")
    assert scoped_key(before, "welcome", "k-1") != scoped_key(after, "welcome", "k-1")
    assert scoped_key(before, "welcome", "k-1").startswith(before.encode())


# -- real worker processes ------------------------------------------------------------------------


def _keys(tmp_path: Path, key: bytes) -> Path:
    path = tmp_path / f"{hashlib.sha256(key).hexdigest()[:8]}.keys"
    path.write_text(f"# test keys\n{key.hex()}\n")
    return path


DEV_TOKEN_TABLE = f'\n[[tokens]]\nname = "dev"\nsha256 = "{sha("dev-token")}"\nscopes = ["admin"]\n'


@pytest.mark.integration
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "dev-token",
            # after the test config's own tokens (tests/fixtures.py TOKENS)
            f"tokens[{len(TOKENS)}].sha256: the documented development token 'dev-token' only works on a loopback web_host",
        ),
        ("no-secret-file", "service.secret_file: required when the API is not on loopback"),
        ("dev-key", "line 2: the documented development key only works on loopback"),
    ],
)
def test_a_worker_off_loopback_refuses_to_start(workers: WorkerPool, tmp_path: Path, case: str, expected: str) -> None:
    keys = {"dev-token": _keys(tmp_path, b"k" * 32), "dev-key": _keys(tmp_path, DEVELOPMENT_KEY)}.get(case)
    worker = workers.create(
        start=False,
        extra=DEV_TOKEN_TABLE if case == "dev-token" else "",
        service=f'secret_file = "{keys}"' if keys else "",
        STREAMAPP_WEB_HOST="0.0.0.0",
    )
    worker.start()
    assert worker.process is not None
    assert worker.process.wait(60) == 2
    log = worker.log.read_text()
    assert expected in log and OFF_LOOPBACK in log, log
    assert "config error: " in log and "Traceback" not in log, log


@pytest.mark.integration
def test_a_worker_off_loopback_starts_with_tokens_and_keys_from_files(workers: WorkerPool, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[tokens]]\nname = "crm"\nsha256 = "{sha("crm-token")}"\nscopes = ["recipients:read"]\n')
    worker = workers.create(
        STREAMAPP_WEB_HOST="0.0.0.0",
        STREAMAPP_TOKENS_FILE=str(tokens),
        STREAMAPP_SECRET_FILE=str(_keys(tmp_path, b"s" * 32)),
    )
    answer = httpx.get(f"{worker.url}/api/v1/databases", headers={"Authorization": "Bearer crm-token"}, timeout=10)
    assert answer.status_code == 200, answer.text
    refused = httpx.get(f"{worker.url}/api/v1/databases", headers={"Authorization": "Bearer dev-token"}, timeout=10)
    assert refused.status_code == 401
