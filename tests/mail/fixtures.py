"""Real SMTP peers in other processes: streamapp's own sink and Postfix's smtp-sink.

Both listen on a free loopback port; `start()` returns once the port accepts connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures import ROOT, ChildProcess, free_port

SMTP_SINK = "/usr/sbin/smtp-sink"


@dataclass
class PeerProcess(ChildProcess):
    """An SMTP server subprocess on 127.0.0.1:`port` that can be killed and restarted on the same port."""

    command: list[str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    stop_timeout: float = 10.0

    def start(self, timeout: float = 15.0) -> PeerProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.command[0]} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.command} not listening after {timeout}s:\n{self.tail()}")


@dataclass
class Peers:
    """Starts peers for one test and stops all of them afterwards."""

    base: Path
    started: list[PeerProcess] = field(default_factory=list)

    def streamapp_sink(self, rules: dict[str, str] | None = None) -> tuple[PeerProcess, Path]:
        """`python -m streamapp.mail.sink` with RCPT reply rules; returns the peer and its Maildir."""
        port, maildir = free_port(), self.base / f"maildir{len(self.started)}"
        command = [sys.executable, "-m", "streamapp.mail.sink", "--port", str(port), "--maildir", str(maildir)]
        for address, reply in (rules or {}).items():
            command += ["--rule", f"{address}={reply}"]
        return self._start(command, port), maildir

    def postfix_sink(self, options: Sequence[str] = ()) -> PeerProcess:
        """Postfix's smtp-sink, e.g. options ("-r", "rcpt") to soft-reject RCPT (see `man smtp-sink`)."""
        port = free_port()
        return self._start(postfix_sink_command(port, options), port)

    def _start(self, command: list[str], port: int) -> PeerProcess:
        peer = PeerProcess(command, port, self.base / f"peer{len(self.started)}.log")
        self.started.append(peer)
        return peer.start()

    def stop_all(self) -> None:
        for peer in self.started:
            peer.stop()


def postfix_sink_command(port: int, options: Sequence[str] = ()) -> list[str]:
    """smtp-sink refuses to run as root without -u; it drops to `nobody` after binding."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [SMTP_SINK, *user, *options, f"127.0.0.1:{port}", "64"]


needs_smtp_sink = pytest.mark.skipif(
    shutil.which(SMTP_SINK) is None,
    reason=f"{SMTP_SINK} missing: apt-get install postfix (the Makefile installs it for `make test`)",
)


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    registry = Peers(tmp_path)
    yield registry
    registry.stop_all()


@pytest.fixture(scope="module")
def peers_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    """Peers shared by a test module (one sink for several tests)."""
    registry = Peers(tmp_path_factory.mktemp("peers"))
    yield registry
    registry.stop_all()
