"""What the benchmarks share: a broker, Postfix's smtp-sink and a pool of streamapp workers."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.smtp_raw import wait_listening
from streamapp.devtools import kafka_broker
from tests.fixtures import ROOT, WorkerPool, free_port
from tests.mail.fixtures import postfix_sink_command


@contextmanager
def sink_and_pool(broker: str, prefix: str) -> Iterator[tuple[int, Path, WorkerPool]]:
    """smtp-sink on a free port (accepting everything), a temp folder and an empty worker pool; all stopped after."""
    port = free_port()
    sink = subprocess.Popen(postfix_sink_command(port, ["-m", "1000"]), stdout=subprocess.DEVNULL)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    pool = WorkerPool(broker, base)
    try:
        wait_listening(port)
        yield port, base, pool
    finally:
        pool.stop_all()
        sink.terminate()
        sink.wait(10)


@contextmanager
def broker_and_pool(prefix: str) -> Iterator[WorkerPool]:
    """$STREAMAPP_TEST_BROKER, or a broker started (and stopped) for the run; an empty worker pool, stopped after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        broker = os.environ.get("STREAMAPP_TEST_BROKER")
        data_dir = Path(tmp) / "broker"
        if not broker:
            broker = f"kafka://127.0.0.1:{free_port()}"
            kafka_broker.start(broker, data_dir, ROOT)
        pool = WorkerPool(broker, Path(tmp))
        try:
            yield pool
        finally:
            pool.stop_all()
            if not os.environ.get("STREAMAPP_TEST_BROKER"):
                kafka_broker.stop(data_dir)
