"""Tests for streamapp.devtools.kafka_broker against a real local Kafka broker."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)

from streamapp.devtools import kafka_broker
from streamapp.devtools.kafka_broker import BrokerError

TOPIC = "broker-lifecycle"
GROUP = "broker-lifecycle-group"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _produce(address: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=address)
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, value, key=b"k")
    finally:
        await producer.stop()


async def _read_all(address: str, *, commit: bool = False) -> list[bytes]:
    """Read the topic from the start; optionally commit as GROUP."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=address,
        group_id=GROUP if commit else None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    tp = TopicPartition(TOPIC, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=5000)
            values += [msg.value for msg in batch.get(tp, [])]
        if commit:
            await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def _committed(address: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=address, group_id=GROUP)
    await consumer.start()
    try:
        result: int | None = await consumer.committed(TopicPartition(TOPIC, 0))
        return result
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def project_root() -> Path:
    root = kafka_broker.find_project_root()
    kafka_broker.ensure_jars(root)
    return root


@pytest.fixture
def broker_env(tmp_path: Path, project_root: Path) -> Iterator[tuple[str, Path, Path]]:
    """A free broker URL and data dir; the broker is always stopped after."""
    data_dir = tmp_path / "data"
    yield f"kafka://127.0.0.1:{_free_port()}", data_dir, project_root
    kafka_broker.stop(data_dir, timeout=10)


def test_lifecycle_persistence_and_kill9(broker_env: tuple[str, Path, Path]) -> None:
    url, data_dir, root = broker_env
    address = url.removeprefix("kafka://")
    assert not kafka_broker.status(url, data_dir).running

    first = kafka_broker.start(url, data_dir, root, timeout=60)
    assert first.running and first.managed and first.pid is not None
    assert kafka_broker.status(url, data_dir) == first
    assert kafka_broker.start(url, data_dir, root).pid == first.pid  # no-op

    kafka_dir = data_dir / "kafka"
    for name in ("server.properties", "broker.pid", "broker.log", "log4j2.properties"):
        assert (kafka_dir / name).is_file(), name
    assert (kafka_dir / "log" / "meta.properties").is_file()

    asyncio.run(_produce(address, b"hello"))
    assert asyncio.run(_read_all(address, commit=True)) == [b"hello"]

    assert kafka_broker.stop(data_dir) is True
    assert kafka_broker.stop(data_dir) is False
    stopped = kafka_broker.status(url, data_dir)
    assert not stopped.running and not stopped.managed and stopped.pid is None
    assert not (kafka_dir / "broker.pid").exists()

    props_before = (kafka_dir / "server.properties").read_text()
    second = kafka_broker.start(url, data_dir, root, timeout=60)
    assert second.pid != first.pid
    assert (kafka_dir / "server.properties").read_text() == props_before
    assert asyncio.run(_read_all(address)) == [b"hello"]
    assert asyncio.run(_committed(address)) == 1

    assert second.pid is not None
    os.kill(second.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while kafka_broker.status(url, data_dir).managed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not kafka_broker.status(url, data_dir).managed  # stale pid dropped

    third = kafka_broker.start(url, data_dir, root, timeout=60)
    assert third.running and third.managed and third.pid not in (first.pid, second.pid)
    asyncio.run(_produce(address, b"after-kill"))
    assert asyncio.run(_read_all(address)) == [b"hello", b"after-kill"]


def test_foreign_listener_is_not_started_or_managed(tmp_path: Path, project_root: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"127.0.0.1:{server.getsockname()[1]}"
        result = kafka_broker.start(url, tmp_path, project_root)
        assert result.running and not result.managed and result.pid is None
        assert not (tmp_path / "kafka" / "broker.pid").exists()
        assert kafka_broker.stop(tmp_path) is False


def test_stale_pid_file_is_dropped(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid_file = tmp_path / "kafka" / "broker.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(proc.stdout)
    result = kafka_broker.status(f"127.0.0.1:{_free_port()}", tmp_path)
    assert result == kafka_broker.BrokerStatus(running=False, pid=None, address=result.address, managed=False)
    assert not pid_file.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("localhost:19092", ("localhost", 19092)),
        ("kafka://a:1,kafka://b:2", ("a", 1)),
        (" kafka://h:3 , kafka://i:4", ("h", 3)),
    ],
)
def test_parse_address(url: str, expected: tuple[str, int]) -> None:
    assert kafka_broker.parse_address(url) == expected


@pytest.mark.parametrize("url", ["kafka://nohost", "", "kafka://h:port"])
def test_parse_address_rejects_garbage(url: str) -> None:
    with pytest.raises(BrokerError, match="Cannot parse broker address"):
        kafka_broker.parse_address(url)


def test_ensure_jars_without_java(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"`java` was not found on PATH.*Java 17"):
        kafka_broker.ensure_jars(kafka_broker.find_project_root())


def test_ensure_jars_without_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh checkout (empty jar cache) needs mvn, and says so."""
    pom = kafka_broker.find_project_root() / "deploy" / "kafka" / "pom.xml"
    (tmp_path / "deploy" / "kafka").mkdir(parents=True)
    shutil.copy(pom, tmp_path / "deploy" / "kafka" / "pom.xml")
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "mvn" else real_which(name))
    with pytest.raises(BrokerError, match=r"`mvn` was not found on PATH.*Maven"):
        kafka_broker.ensure_jars(tmp_path)


def test_cluster_ids_never_look_like_an_option() -> None:
    """A random id starting with '-' made the storage tool fail (one start in 64)."""
    from streamapp.devtools.kafka_broker import _random_cluster_id

    ids = [_random_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
