"""Real SMTP peers in other processes: streamapp's own sink and Postfix's smtp-sink.

Both listen on a free loopback port; `start()` returns once the port accepts connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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
        process = self.process

        def running() -> None:
            if process.poll() is not None:
                raise AssertionError(f"{self.command[0]} exited with {process.returncode}:\n{self.tail()}")

        if wait_listening(self.port, timeout, running):
            return self
        raise AssertionError(f"{self.command} not listening after {timeout}s:\n{self.tail()}")


def wait_listening(port: int, timeout: float, check: Callable[[], None] = lambda: None) -> bool:
    """Whether 127.0.0.1:`port` accepts a connection within `timeout`; `check` runs before each try (it
    raises when the server is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


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


POSTFIX = "/usr/sbin/postfix"

needs_postfix = pytest.mark.skipif(
    shutil.which(POSTFIX) is None or os.geteuid() != 0,
    reason="a private Postfix instance needs /usr/sbin/postfix (the Makefile installs it) and root (it starts as root)",
)


class PostfixRelay:
    """A private Postfix instance (its own main.cf, queue and data directories, log file) relaying from
    127.0.0.1:`port`: mail for each domain of `routes` goes to 127.0.0.1:<its port>, the rest to
    `default`, without DNS. Its queue is retried every second and gives up after `lifetime`, so bounces
    and give-ups come back within seconds (RFC 3464 DSNs to the envelope sender, as in production).

    Postfix runs as root and drops to the `postfix` user, so its directory lives outside pytest's
    private (0700) temporary tree.
    """

    def __init__(self, routes: dict[str, int], default: int, lifetime: str = "8s") -> None:
        self.home = Path(tempfile.mkdtemp(prefix="streamapp-postfix-"))
        self.home.chmod(0o755)
        self.port = free_port()
        self.config = self.home / "etc"
        self.log = self.home / "maillog"
        for name in ("etc", "spool", "data"):
            (self.home / name).mkdir()
        shutil.chown(self.home / "data", "postfix")
        transports = ", ".join(f"{domain}=smtp:[127.0.0.1]:{port}" for domain, port in routes.items())
        (self.config / "main.cf").write_text(f"""compatibility_level = 3.6
myhostname = relay.test
mydomain = test
myorigin = relay.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
queue_directory = {self.home}/spool
data_directory = {self.home}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {self.home}
maillog_file = {self.log}
disable_dns_lookups = yes
smtp_dns_support_level = disabled
default_transport = smtp:[127.0.0.1]:{default}
transport_maps = inline:{{ {transports} }}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 1s
maximal_queue_lifetime = {lifetime}
bounce_queue_lifetime = {lifetime}
alias_maps =
alias_database =
smtputf8_enable = no
""")
        (self.config / "master.cf").write_text(_master_cf(Path("/etc/postfix/master.cf").read_text(), self.port))

    def start(self) -> PostfixRelay:
        self._postfix("start")
        if wait_listening(self.port, 30):
            return self
        raise AssertionError(f"Postfix not listening on {self.port}:\n{self.tail()}")

    def stop(self) -> None:
        self._postfix("stop", check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _postfix(self, command: str, check: bool = True) -> None:
        env = {**os.environ, "MAIL_CONFIG": str(self.config)}
        run = subprocess.run([POSTFIX, command], env=env, capture_output=True, text=True, timeout=60)
        if check and run.returncode != 0:
            raise AssertionError(f"postfix {command} failed ({run.returncode}): {run.stderr}\n{self.tail()}")


def _master_cf(debian: str, port: int) -> str:
    """Debian's master.cf with smtpd on 127.0.0.1:`port` and no service chrooted (a chroot needs copies of
    /etc files inside the queue directory)."""
    lines = []
    for line in debian.splitlines():
        fields = line.split()
        if line[:1].isspace() or line.startswith("#") or len(fields) < 8:
            lines.append(line)
            continue
        if fields[:2] == ["smtp", "inet"]:
            fields[0] = f"127.0.0.1:{port}"
        fields[4] = "n"
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"
