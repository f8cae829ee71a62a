"""TLS and SASL (SCRAM) to the broker: a worker against a local broker that only speaks SASL_SSL.

The module starts a broker of its own (`kafka_broker.start(..., sasl_ssl=...)`: a throwaway CA,
SCRAM-SHA-512 user created at format time), separate from the session's plaintext one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streamapp.devtools import kafka_broker
from streamapp.devtools.broker_tls import ensure_tls
from streamapp.kafka.security import client_options, faust_credentials
from streamapp.settings import Settings, load_settings
from tests.fixtures import ROOT, Worker, client, config_text, free_port, get_when

SASL = kafka_broker.SaslSsl()


@dataclass(frozen=True)
class SaslBroker:
    url: str
    data_dir: Path

    @property
    def address(self) -> str:
        return self.url.removeprefix("kafka://")

    @property
    def log(self) -> str:
        return (self.data_dir / "kafka" / "broker.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[SaslBroker]:
    base = Path(os.environ.get("STREAMAPP_TEST_DATA", ROOT / ".cache" / "test-broker"))
    data_dir = base / f"sasl-{uuid.uuid4().hex[:8]}"
    url = f"kafka://127.0.0.1:{free_port()}"
    kafka_broker.start(url, data_dir, ROOT, sasl_ssl=SASL)
    try:
        yield SaslBroker(url, data_dir)
    finally:
        kafka_broker.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def sasl_service(ca: Path, password_file: Path) -> str:
    return (
        'kafka_security_protocol = "SASL_SSL"\n'
        f'kafka_username = "{SASL.username}"\n'
        f'kafka_password_file = "{password_file}"\n'
        f'kafka_ca_file = "{ca}"\n'
    )


def sasl_worker(broker: SaslBroker, base: Path, **env: str) -> Worker:
    """A worker configured with the broker's CA, its user and the right password (env may override it)."""
    password = base / "kafka.password"
    password.write_text(f"{SASL.password}\n")
    service = sasl_service(kafka_broker.ca_file(broker.data_dir), password)
    port, data_dir = free_port(), base / "data"
    config = base / "worker.toml"
    config.write_text(config_text(broker.url, data_dir, port, f"t{uuid.uuid4().hex[:10]}", 2, service=service))
    return Worker(config=config, port=port, log=base / "worker.log", data_dir=data_dir, env=env)


# -- against the SASL_SSL broker ----------------------------------------------------------------


@pytest.mark.integration
def test_a_worker_over_sasl_ssl_serves_upserts(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    worker = sasl_worker(sasl_broker, tmp_path).start()
    try:
        worker.wait_ready(timeout=120)
        with client(worker) as api:
            response = api.put("/api/v1/databases/members/recipients/S-1", json={"email": "tls@example.com"})
            assert response.status_code == 202, response.text
        recipient = get_when(worker, "/api/v1/databases/members/recipients/S-1")
        assert recipient["email"] == "tls@example.com"
    finally:
        worker.stop()


@pytest.mark.integration
def test_a_wrong_password_stops_the_worker_naming_the_broker_login(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    worker = sasl_worker(sasl_broker, tmp_path, STREAMAPP_KAFKA_PASSWORD_FILE=str(wrong)).start()
    try:
        assert worker.process is not None and worker.process.wait(30) == 2, worker.tail()
    finally:
        worker.kill()
    assert (
        f"the broker {sasl_broker.address} (SASL_SSL) refused SASL authentication (SCRAM-SHA-512 as 'streamapp'): "
        "check service.kafka_username and service.kafka_password_file"
    ) in worker.tail()
    assert "Traceback" not in worker.tail()
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in sasl_broker.log


@pytest.mark.integration
async def test_a_plaintext_client_is_turned_away(sasl_broker: SaslBroker) -> None:
    plain = AIOKafkaClient(bootstrap_servers=sasl_broker.address, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await plain.bootstrap()
    await plain.close()
    # The same client with the broker's CA and SCRAM user gets in: the protocol made the difference.
    secure = AIOKafkaClient(
        bootstrap_servers=sasl_broker.address, **kafka_broker.client_security(sasl_broker.data_dir, SASL)
    )
    try:
        await secure.bootstrap()
        assert secure.cluster.brokers()
    finally:
        await secure.close()


@pytest.mark.integration
def test_a_plaintext_worker_is_told_to_check_the_protocol(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "plain.toml"
    config.write_text(config_text(sasl_broker.url, tmp_path / "data", port, f"t{uuid.uuid4().hex[:10]}", 2))
    worker = Worker(config=config, port=port, log=tmp_path / "worker.log", data_dir=tmp_path / "data").start()
    try:
        assert worker.process is not None and worker.process.wait(60) == 2, worker.tail()
    finally:
        worker.kill()
    assert (
        f"the broker {sasl_broker.address} (PLAINTEXT) closed the connection: does that listener speak PLAINTEXT?"
        in (worker.tail())
    )


# -- the client options, without a broker -------------------------------------------------------


def settings_with(tmp_path: Path, service: str) -> Settings:
    config = tmp_path / "streamapp.toml"
    config.write_text(f'[service]\nbroker = "kafka://127.0.0.1:9093"\n{service}')
    return load_settings(config, {})


def test_plaintext_by_default(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, "")
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings.service.kafka) is None


def test_faust_and_aiokafka_clients_get_the_same_sasl_ssl_options(tmp_path: Path) -> None:
    ca = ensure_tls(tmp_path / "tls", "127.0.0.1").ca_file
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    settings = settings_with(tmp_path, sasl_service(ca, password) + 'kafka_sasl_mechanism = "SCRAM-SHA-256"\n')
    ours = client_options(settings)
    faust_side = dict(credentials_to_aiokafka_auth(faust_credentials(settings.service.kafka)))
    for options in (ours, faust_side):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-256"
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("streamapp", "s3cret")
        assert options["ssl_context"].check_hostname
        assert options["ssl_context"].get_ca_certs()[0]["subject"] == (
            (("commonName", "streamapp local broker CA (throwaway)"),),
        )
    assert "s3cret" not in repr(settings)


def test_tls_without_sasl_and_without_hostname_check(tmp_path: Path) -> None:
    ca = ensure_tls(tmp_path / "tls", "127.0.0.1").ca_file
    settings = settings_with(
        tmp_path, f'kafka_security_protocol = "SSL"\nkafka_ca_file = "{ca}"\nkafka_check_hostname = false\n'
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert not options["ssl_context"].check_hostname
    faust_side = credentials_to_aiokafka_auth(faust_credentials(settings.service.kafka))
    assert faust_side["security_protocol"] == "SSL" and not faust_side["ssl_context"].check_hostname
