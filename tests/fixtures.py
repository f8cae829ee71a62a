"""Shared fixtures: one real Kafka broker per test session, worker processes, configs.

Integration tests run `streamapp worker` as a real subprocess against the
broker that `streamapp.devtools.kafka_broker` starts; each test isolates itself with
its own service id (Faust app id, consumer group, topic prefix) and data dir.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamapp.devtools import kafka_broker

ROOT = Path(__file__).resolve().parents[1]

TOKENS = {
    "admin": "test-admin-token",
    "reader": "test-reader-token",
    "sender": "test-sender-token",
    "campaigner": "test-campaigner-token",
    "other": "test-other-db-token",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config_text(
    broker: str, data_dir: Path, port: int, service_id: str, partitions: int = 4, extra: str = "", service: str = ""
) -> str:
    """A worker's configuration; `service` adds keys to [service], `extra` tables at the end."""
    return f"""
[service]
id = "{service_id}"
broker = "{broker}"
data_dir = "{data_dir}"
web_host = "127.0.0.1"
web_port = {port}
partitions = {partitions}
timezone = "Europe/Stockholm"
{service}

[[tokens]]
name = "admin"
sha256 = "{sha(TOKENS["admin"])}"
scopes = ["admin"]

[[tokens]]
name = "reader"
sha256 = "{sha(TOKENS["reader"])}"
scopes = ["recipients:read"]

[[tokens]]
name = "sender"
sha256 = "{sha(TOKENS["sender"])}"
scopes = ["send"]

[[tokens]]
name = "campaigner"
sha256 = "{sha(TOKENS["campaigner"])}"
scopes = ["send", "recipients:write"]

[[tokens]]
name = "other"
sha256 = "{sha(TOKENS["other"])}"
scopes = ["recipients:read", "recipients:write"]
databases = ["other"]

[[databases]]
name = "members"
[databases.attributes]
firstname = "string"
lastname = "string"
zipcode = "string"
score = "int"
ratio = "float"
vip = "bool"
birthday = "date"
lastSeen = "datetime"

[[databases]]
name = "other"
auto_create_attributes = true
{extra}
"""


class ChildProcess:
    """A server the tests run as a real subprocess: killed (-9) or stopped (SIGTERM) like in production."""

    process: subprocess.Popen[bytes] | None
    log: Path
    stop_timeout: float = 30.0

    def kill(self) -> None:
        """kill -9: no clean shutdown, no offset commit, no flush."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Worker(ChildProcess):
    """A `streamapp worker` subprocess with its own config, data dir and port."""

    config: Path
    port: int
    log: Path
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Worker:
        env = {**os.environ, "STREAMAPP_CONFIG": str(self.config), **self.env}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamapp.cli", "worker", "--loglevel", "info"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        return self

    def wait_ready(self, timeout: float = 90.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """The broker URL: $STREAMAPP_TEST_BROKER, or a real local broker started for the session."""
    if os.environ.get("STREAMAPP_TEST_BROKER"):
        yield os.environ["STREAMAPP_TEST_BROKER"]
        return
    data_dir = Path(os.environ.get("STREAMAPP_TEST_DATA", ROOT / ".cache" / "test-broker")) / uuid.uuid4().hex[:8]
    url = f"kafka://127.0.0.1:{free_port()}"
    kafka_broker.start(url, data_dir, ROOT)
    try:
        yield url
    finally:
        kafka_broker.stop(data_dir)


class WorkerPool:
    """Workers sharing one service id (so they share the work), each with its own data dir."""

    def __init__(self, broker: str, base: Path) -> None:
        self.broker = broker
        self.base = base
        self.service_id = f"t{uuid.uuid4().hex[:10]}"
        self.workers: list[Worker] = []

    def create(
        self,
        partitions: int = 4,
        extra: str = "",
        start: bool = True,
        data_dir: Path | None = None,
        service: str = "",
        **env: str,
    ) -> Worker:
        n = len(self.workers)
        port = free_port()
        config = self.base / f"worker{n}.toml"
        data_dir = data_dir or self.base / f"worker{n}"
        config.write_text(config_text(self.broker, data_dir, port, self.service_id, partitions, extra, service))
        worker = Worker(config=config, port=port, log=self.base / f"worker{n}.log", data_dir=data_dir, env=env)
        self.workers.append(worker)
        return worker.start().wait_ready() if start else worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def workers(kafka: str, tmp_path: Path) -> Iterator[WorkerPool]:
    pool = WorkerPool(kafka, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def worker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker shared by a test module that only needs the API."""
    pool = WorkerPool(kafka, tmp_path_factory.mktemp("worker"))
    yield pool.create()
    pool.stop_all()


def metric_value(url: str, sample: str, **labels: str) -> float:
    """The sum of a worker's `sample` values (e.g. `streamapp_messages_total`) whose labels include `labels`;
    0 if it has none or the worker is unreachable."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def applied_commands(url: str) -> float:
    """Recipient commands a worker's agent has applied (its streamapp_recipient_commands_total), 0 if unreachable."""
    return metric_value(url, "streamapp_recipient_commands_total", outcome="applied")


def client(worker: Worker, token: str | None = "admin") -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKENS[token]}"} if token else {}
    return httpx.Client(base_url=worker.url, headers=headers, timeout=30)


def get_when(worker: Worker, path: str, check: Callable[[Any], Any] = lambda body: True, timeout: float = 30) -> Any:
    """GET until 200 and `check(body)` holds (writes apply asynchronously); a server error fails at once."""
    with client(worker) as api:

        def attempt() -> Any:
            response = api.get(path)
            if response.status_code not in (200, 404, 503):
                pytest.fail(f"GET {path}: {response.status_code} {response.text}")
            if response.status_code == 200 and check(response.json()):
                return response.json()
            return None

        return eventually(attempt, timeout=timeout)


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Retry `check` until it returns a truthy value without raising (writes apply asynchronously)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    if last:
        raise last
    raise AssertionError(f"condition not met within {timeout}s")
