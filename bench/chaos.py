"""Chaos suite, in the style of Kafka Streams' EOS system test: kill -9 under a mixed load, then verify.

Two `streamapp worker` processes share a broker of their own, a drop folder and a streamapp SMTP
sink. While a mixed load runs (single upserts, batch upserts, a 200,000-row file, a campaign of
20,000, a transactional message every 100 ms), a random worker is killed with -9 every 10-20 s
and restarted at once, and the broker is killed with -9 once, half-way, and restarted on the same
port and log dir. Then the verifier (bench/chaos_verify.py) checks that

- every write that got a 202 is applied with its last value;
- every file has exactly one report and all its rows;
- every accepted message was delivered at least once, and duplicates stay within the documented
  bound (docs/sending.md: 2 x `smtp.connections` per crashed worker);
- both skip counters (streamapp.kafka.gaps) stayed 0 on every worker incarnation;
- no write was refused while only a worker was down (503s are allowed only around the broker kill).
- no worker exited on its own (a crash of the survivor is a finding, not chaos).

It prints one JSON object (`ok` says whether every verdict held) and exits 1 when one did not,
keeping its folder (worker logs, broker log, Maildir) for diagnosis.

    .venv/bin/python bench/chaos.py                   # two minutes of load; `make test` runs it too
    .venv/bin/python bench/chaos.py --minutes 20 --seed 7
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_cluster import Cluster, ClusterError, Health, Observer, Timeline
from bench.chaos_load import IMPORT, Load, LoadPlan, summary
from bench.chaos_verify import Target, Verifier
from streamapp.devtools import kafka_broker
from tests.fixtures import ROOT, WorkerPool, free_port
from tests.mail.fixtures import Peers
from tests.sending.fixtures import smtp_extra, write_templates

WORKERS = 2
#: After a restart, the cluster serves this long before the next kill at the earliest.
SERVE_BETWEEN_KILLS = 3.0
#: No kill this close to the end of the load: the last one would not be seen recovering.
QUIET_END = 5.0
#: The first kill comes this long after the first file was dropped (it is being imported then).
FILE_LEAD = 2.0
FIRST_BULK_WAIT = 180.0


@dataclass(frozen=True)
class Options:
    minutes: float = 2.0
    seed: int = 0
    cycles: int | None = None  # worker kills; default: as many as fit
    kill_min: float = 10.0
    kill_max: float = 20.0
    partitions: int = 4
    connections: int = 4
    file_rows: int = LoadPlan.file_rows
    campaign_rows: int = LoadPlan.campaign_rows
    bulk_every: float = 300.0  # a new campaign and file every this many seconds
    idle: float = 90.0  # after the load, wait while anything still moves; give up after this long idle
    settle_max: float = 900.0
    keep: bool = False


@dataclass
class Topology:
    broker_url: str
    broker_dir: Path
    base: Path
    maildir: Path
    pool: WorkerPool
    cluster: Cluster


def run(options: Options) -> dict[str, Any]:
    """The whole run: start everything, load and kill, verify; the report as a dict."""
    started = time.monotonic()
    timeline = Timeline()
    base = Path(tempfile.mkdtemp(prefix="chaos-"))
    report: dict[str, Any] = {"seed": options.seed, "options": asdict(options), "dir": str(base)}
    try:
        with topology(options, base, timeline) as topo:
            report |= chaos(options, topo, timeline)
    except (ClusterError, kafka_broker.BrokerError) as exc:
        report |= {"ok": False, "error": str(exc)}
    report["events"] = timeline.events
    report["down_windows"] = timeline.windows()
    report["duration_s"] = round(time.monotonic() - started, 1)
    if report.get("ok") and not options.keep:
        shutil.rmtree(base, ignore_errors=True)
        report["dir"] = None
    return report


@contextmanager
def topology(options: Options, base: Path, timeline: Timeline) -> Iterator[Topology]:
    """A broker of its own (it gets killed), the sink, two workers sharing a drop folder; all stopped after."""
    broker_url, broker_dir = f"kafka://127.0.0.1:{free_port()}", base / "broker"
    kafka_broker.start(broker_url, broker_dir, ROOT)
    peers = Peers(base)
    pool = WorkerPool(broker_url, base)
    try:
        peer, maildir = peers.streamapp_sink()
        write_templates(base)
        extra = smtp_extra(peer.port, connections=options.connections) + IMPORT
        # One key ring for both, as production must have (SPEC §13): message ids derived from an
        # idempotent request are then the same on either worker.
        (base / "shared").mkdir(parents=True, exist_ok=True)
        secret = base / "shared" / "secret.keys"
        secret.write_text(secrets.token_hex(32) + "\n")
        shared = f'drop_dir = "{base / "shared" / "drop"}"\nsecret_file = "{secret}"'
        workers = [pool.create(options.partitions, extra, start=False, service=shared) for _ in range(WORKERS)]
        cluster = Cluster(workers, broker_url, broker_dir, timeline)
        cluster.start_all()
        timeline.record("cluster ready")
        yield Topology(broker_url, broker_dir, base, maildir, pool, cluster)
    finally:
        pool.stop_all()
        peers.stop_all()
        kafka_broker.stop(broker_dir)


def chaos(options: Options, topo: Topology, timeline: Timeline) -> dict[str, Any]:
    rng = random.Random(options.seed)
    first_kill = rng.uniform(options.kill_min, options.kill_max)
    load_start = timeline.now()
    health = Health(topo.cluster.urls)
    load = Load(plan(options, load_start), topo.cluster.urls, lambda: health.ready, timeline,
                topo.base / "shared" / "drop")  # fmt: skip
    observer = Observer(topo.cluster)
    try:
        for thread in (health, observer, load):
            thread.start()
        timeline.record("load started")
        load.first_bulk.wait(FIRST_BULK_WAIT)
        first = max(load_start + first_kill, timeline.now() + FILE_LEAD)
        kill_loop(options, topo.cluster, timeline, rng, load_start, first)
        stuck = load.stop()
        load_s = timeline.now() - load_start
        timeline.record("load stopped", threads_still_running=stuck)
        topo.cluster.wait_all_ready()
        verified = Verifier(target(options, topo, timeline), load.ledgers).run(options.idle, options.settle_max)
        observer.scrape_all()
    finally:
        load.stop(timeout=0)  # on an error: the generators end with their current request
        health.stop.set()
        observer.stop.set()
    return assemble(options, topo.cluster, observer, load, verified, load_s)


def plan(options: Options, load_start: float) -> LoadPlan:
    """The campaign at once and the first file once it is answered (the first kill follows 2 s
    later, so it meets the file half-imported); both again every `bulk_every` seconds."""
    seconds = options.minutes * 60
    rounds = [r * options.bulk_every for r in range(int(seconds // options.bulk_every) + 1)]
    rounds = [r for r in rounds if r < max(seconds - 30, 1)]
    return LoadPlan(
        seed=options.seed, file_rows=options.file_rows, campaign_rows=options.campaign_rows,
        campaign_at=tuple(load_start + 1 + r for r in rounds),
        file_at=tuple(load_start + 10 + r for r in rounds),
    )  # fmt: skip


def kill_loop(
    options: Options, cluster: Cluster, timeline: Timeline, rng: random.Random, load_start: float, first_kill: float
) -> None:
    """From `first_kill` (a timeline second), a random worker every kill_min-kill_max seconds; the
    broker instead at the first kill past half-time."""
    end = load_start + options.minutes * 60
    next_kill, broker_done, kills = first_kill, False, 0
    while next_kill <= end - QUIET_END:
        _wait_until(cluster, timeline, next_kill)
        if not broker_done and next_kill >= (load_start + end) / 2:
            cluster.kill_broker()
            broker_done = True
        elif options.cycles is None or kills < options.cycles:
            cluster.kill_worker(rng.randrange(WORKERS))
            kills += 1
        earliest = timeline.now() + SERVE_BETWEEN_KILLS
        next_kill = max(next_kill + rng.uniform(options.kill_min, options.kill_max), earliest)
    if not broker_done:  # slow restarts used the time up: the broker is still killed once
        cluster.wait_all_ready()
        cluster.kill_broker()
    _wait_until(cluster, timeline, end)


def _wait_until(cluster: Cluster, timeline: Timeline, at: float) -> None:
    """Sleep until `at` (timeline seconds), restarting workers that exit on their own meanwhile."""
    while timeline.now() < at:
        cluster.supervise()
        time.sleep(min(0.5, max(0.0, at - timeline.now())))


def target(options: Options, topo: Topology, timeline: Timeline) -> Target:
    workers = topo.cluster.workers
    return Target(
        bootstrap=topo.broker_url.removeprefix("kafka://"), service_id=topo.pool.service_id,
        partitions=options.partitions, maildir=topo.maildir, data_dirs=[w.data_dir for w in workers],
        urls=[w.url for w in workers], worker_logs=[w.log for w in workers], seed=options.seed,
        wall0=timeline.wall0,
    )  # fmt: skip


def assemble(
    options: Options, cluster: Cluster, observer: Observer, load: Load, verified: dict[str, Any], load_s: float
) -> dict[str, Any]:
    """The report: what was done, what the verifier found, and one verdict per promise."""
    writes = summary(load.ledgers)
    crashes = cluster.worker_kills + len(cluster.exits) + WORKERS * cluster.broker_kills
    bound = 2 * options.connections * crashes
    messages = verified["messages"]
    skips = observer.counters()
    report = {
        "cycles": cluster.worker_kills + cluster.broker_kills,
        "worker_kills": cluster.worker_kills,
        "broker_kills": cluster.broker_kills,
        "worker_exits": len(cluster.exits),
        "worker_exit_detail": cluster.exits,
        "load_s": round(load_s, 1),
        "writes": writes,
        "refusal_reasons": load.ledgers.writes.reason_counts(),
        "refusals_first": load.ledgers.writes.details[:50],
        **verified,
        "skip_counters": skips,
        "metric_scrapes": observer.scrapes,
    }
    report["messages"] |= {"duplicate_bound": bound,
                           "duplicate_bound_rule": f"2 x {options.connections} connections x {crashes} crashes "
                                                   "(worker kills + unplanned exits + 2 per broker kill)"}  # fmt: skip
    verdicts = {
        "no_lost_writes": verified["writes_lost"] == 0,
        "files_complete": all(_file_ok(f) for f in verified["files"]) and bool(verified["files"]),
        "no_lost_messages": messages["lost"] == 0,
        "duplicates_within_bound": messages["duplicates"] + messages["second_ids_for_one_key"] <= bound,
        "skip_counters_zero": all(_no_skips(s) for s in skips.values()),
        "no_refusals_with_worker_down": writes["refused_with_worker_down"] == 0,
        "no_refusals_all_up": writes["refused_all_up"] == 0,
        "api_agrees_with_changelog": verified["api_check"]["mismatches"] == 0,
        "no_rejected_requests": writes["rejected"] == 0,
        "no_unplanned_worker_exits": not cluster.exits,
    }
    return report | {"verdicts": verdicts, "ok": all(verdicts.values())}


def _file_ok(f: dict[str, Any]) -> bool:
    return bool(f["reports"] == 1 and f.get("outcome") == "processed" and f.get("applied") == f["rows"]
                and f["rows_missing"] == 0)  # fmt: skip


def _no_skips(counters: dict[str, Any]) -> bool:
    return bool(counters["send_records_skipped"] == 0 and counters["command_records_skipped"] == 0
                and counters["gap_log_count"] == 0)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the load and the kills last")
    parser.add_argument("--seed", type=int, default=None, help="kill times, victims, batch keys (default: random)")
    parser.add_argument("--cycles", type=int, default=None, help="worker kills at most (default: as many as fit)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4, help="smtp.connections of each worker")
    parser.add_argument("--file-rows", type=int, default=200_000)
    parser.add_argument("--campaign", type=int, default=20_000)
    parser.add_argument("--idle", type=float, default=90.0, help="give up waiting after this long without progress")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder even when every verdict held")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"chaos: seed {seed}", file=sys.stderr, flush=True)
    options = Options(minutes=args.minutes, seed=seed, cycles=args.cycles, partitions=args.partitions,
                      connections=args.connections, file_rows=args.file_rows, campaign_rows=args.campaign,
                      idle=args.idle, keep=args.keep)  # fmt: skip
    report = run(options)
    print(json.dumps(report, indent=1, default=str))
    sys.exit(0 if report.get("ok") else 1)


if __name__ == "__main__":
    main()
