"""What the sending benchmarks share: Postfix's smtp-sink and a pool of streamapp workers."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.smtp_raw import wait_listening
from tests.fixtures import WorkerPool, free_port
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
