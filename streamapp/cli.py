"""The `streamapp` command (SPEC §1)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from streamapp.core import clock
from streamapp.settings import ConfigError, Settings, config_path, load_settings

log = logging.getLogger("streamapp")


def _checked_settings() -> Settings:
    """The configuration, templates linted, segments and journeys parsed too (SPEC §2, §9, §10): ConfigError
    lists every issue."""
    from streamapp.journeys.config import check_journeys
    from streamapp.mail.dkim import check_dkim
    from streamapp.mail.template_lint import check_templates
    from streamapp.segments.config import check_segments

    settings = load_settings()
    issues = check_templates(settings) + check_segments(settings) + check_journeys(settings) + check_dkim(settings)
    if issues:
        raise ConfigError(issues)
    return settings


def _settings_or_exit(templates: bool = False) -> Settings:
    """The configuration or exit 2; `templates`: a worker's start-up, so templates and segments are checked."""
    try:
        return _checked_settings() if templates else load_settings()
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"config error: {issue}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = _checked_settings()
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} error(s) in {config_path()}", file=sys.stderr)
        return 1
    print(
        f"{settings.path}: OK ({len(settings.databases)} database(s), {len(settings.tokens)} token(s), "
        f"{len(settings.imports)} import(s), {len(settings.triggers)} trigger(s), "
        f"{len(settings.campaigns)} campaign(s), {len(settings.journeys)} journey(s))"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The group's workers, their partitions, lag, queues and the last imports (streamapp.status)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from streamapp.status import as_json, gather, render

    settings = _settings_or_exit()
    try:
        status = asyncio.run(gather(settings))
    except (KafkaError, OSError) as exc:
        print(f"cannot read the group from {settings.service.broker}: {exc}", file=sys.stderr)
        return 2
    print(as_json(status) if args.json else render(status))
    return 0


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    """A new DKIM key (SPEC §11): the PEM file, the [[dkim]] entry and the DNS TXT record to publish."""
    from streamapp.mail.dkim import DkimError, format_keygen_output, generate_key

    try:
        key = generate_key(args.domain, args.selector, args.algorithm, args.bits, args.out_dir)
    except DkimError as exc:
        print(f"dkim keygen: {exc}", file=sys.stderr)
        return 2
    print(format_keygen_output(key), end="")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from streamapp.worker import run_worker

    return run_worker(_settings_or_exit(templates=True), args.loglevel)


def cmd_dev(args: argparse.Namespace) -> int:
    """Broker (unless one answers at service.broker) plus one worker, in the foreground."""
    from streamapp.devtools import kafka_broker

    settings = _settings_or_exit(templates=True)
    host, port = kafka_broker.parse_address(settings.service.broker)
    started_here = False
    if not kafka_broker.is_listening(host, port):
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"no broker answers at {host}:{port}, and it is not a loopback address", file=sys.stderr)
            return 1
        print(f"starting a local Kafka broker at {host}:{port} (first run downloads it with Maven)...")
        try:
            kafka_broker.start(settings.service.broker, settings.service.data_dir, kafka_broker.find_project_root())
        except kafka_broker.BrokerError as exc:
            print(f"cannot start the local broker: {exc}", file=sys.stderr)
            return 1
        started_here = True
    dev_sink = settings.smtp is None
    if dev_sink:
        from streamapp.devtools.devsink import with_dev_sink

        settings = with_dev_sink(settings)
        print(f"no [smtp]: messages go to the local sink, Maildir {settings.service.data_dir / 'outbox'}")
    from streamapp.worker import run_worker

    try:
        return run_worker(settings, args.loglevel, dev_sink=dev_sink)
    finally:
        if started_here:
            print("stopping the local Kafka broker...")
            kafka_broker.stop(settings.service.data_dir)


def cmd_kafka(args: argparse.Namespace) -> int:
    from streamapp.devtools import kafka_broker

    settings = _settings_or_exit()
    broker, data_dir = settings.service.broker, settings.service.data_dir
    try:
        if args.action == "start":
            status = kafka_broker.start(broker, data_dir, kafka_broker.find_project_root())
        elif args.action == "stop":
            stopped = kafka_broker.stop(data_dir)
            print("stopped" if stopped else "not running")
            return 0
        else:
            status = kafka_broker.status(broker, data_dir)
    except kafka_broker.BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = "running" if status.running else "not running"
    owner = f" (pid {status.pid})" if status.pid else (" (not started by streamapp)" if status.running else "")
    print(f"kafka at {status.address}: {state}{owner}")
    return 0 if status.running or args.action == "status" else 1


def cmd_import(args: argparse.Namespace) -> int:
    """A manual import through a named schema: progress bar, same checks and report as a dropped file."""
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from streamapp.imports.files import DropLayout
    from streamapp.imports.job import import_settings, run_import
    from streamapp.kafka.topics import ensure_topics

    settings = _settings_or_exit()
    try:
        imp = import_settings(settings, args.import_name)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    path: Path = args.file
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    layout = DropLayout.of(settings, worker="cli")
    layout.create([])
    claim = layout.claim(path, imp.name, clock.now_iso(), copy=True)
    assert claim is not None
    size = path.stat().st_size
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rows]:,} rows"),
               TextColumn("{task.fields[rate]:,.0f} rows/s"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(path.name, total=size, rows=0, rate=0.0)

        def progress(rows: int, position: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0
            bar.update(task, completed=position, rows=rows, rate=rows / elapsed if elapsed else 0.0)

        async def run() -> tuple[object, Path]:
            await ensure_topics(settings)
            return await run_import(settings, layout, claim, progress=progress)

        report, target = asyncio.run(run())
        bar.update(task, completed=size)
    from streamapp.imports.report import ImportReport

    assert isinstance(report, ImportReport)
    print(f"{report.outcome}: {report.rowsRead:,} rows read, {report.applied:,} applied, {report.rejected:,} rejected")
    if report.reason:
        print(f"reason: {report.reason}")
    print(f"report: {target}.report.json")
    return 1 if report.outcome == "rejected" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamapp", description=__doc__)
    parser.add_argument(
        "--config", type=Path, help="TOML configuration (default: $STREAMAPP_CONFIG or config/streamapp.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("dev", cmd_dev, "local broker + worker in the foreground"),
        ("worker", cmd_worker, "one production worker"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
        p.set_defaults(func=func)
    kafka = sub.add_parser("kafka", help="the local Kafka broker used by dev and tests")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.set_defaults(func=cmd_kafka)
    manual = sub.add_parser("import", help="import a file through a named import schema")
    manual.add_argument("file", type=Path)
    manual.add_argument(
        "--import",
        dest="import_name",
        required=True,
        help="an [[imports]] name, or a send folder: triggers/<trigger> or campaigns",
    )
    manual.set_defaults(func=cmd_import)
    status = sub.add_parser("status", help="workers, partitions, lag, queues and last imports of the group")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(func=cmd_status)
    dkim = sub.add_parser("dkim", help="DKIM signing keys").add_subparsers(dest="dkim_command", required=True)
    keygen = dkim.add_parser("keygen", help="write a new key and print its [[dkim]] entry and DNS record")
    keygen.add_argument("--domain", required=True, help="the From domain it signs for")
    keygen.add_argument("--selector", required=True, help="the DKIM selector (the DNS name's first label)")
    keygen.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (2048 to 4096)")
    keygen.add_argument("--out-dir", type=Path, default=Path("config/secrets"), help="folder of the PEM file")
    keygen.set_defaults(func=cmd_dkim_keygen)
    check = sub.add_parser("check-config", help="validate the configuration")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.config is not None:
        import os

        os.environ["STREAMAPP_CONFIG"] = str(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
