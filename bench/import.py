"""File import benchmark: drop a 1,000,000-row, 10-column CSV, time until every row is readable.

Starts a real broker (or uses $STREAMAPP_TEST_BROKER) and one `streamapp worker`
watching a drop folder, then prints one JSON object.
Run: `.venv/bin/python bench/import.py [--rows N]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamapp.devtools import kafka_broker
from tests.fixtures import ROOT, TOKENS, WorkerPool, applied_commands, free_port

IMPORT = """
[[imports]]
name = "bench"
database = "members"
watch = "bench"
settle_seconds = 0.2
identity = "CustomerNo"
[imports.columns]
Email = "email"
FirstName = "firstname"
LastName = "lastname"
Zip = "zipcode"
Score = "score"
Ratio = "ratio"
Vip = "vip"
Birthday = "birthday"
"""
HEADER = ["CustomerNo", "Email", "FirstName", "LastName", "Zip", "Score", "Ratio", "Vip", "Birthday", "City"]


def generate(path: Path, rows: int, run: str) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, delimiter=";")
        writer.writerow(HEADER)
        for i in range(rows):
            writer.writerow([f"{run}-{i}", f"user{i}@example.com", "Åsa", "Öberg", f"{10000 + i % 90000}",
                             str(i % 1000), f"{i % 100 / 7:.3f}", "true" if i % 2 else "false", "1990-05-01",
                             "Göteborg"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamapp-bench-") as tmp:
        broker = os.environ.get("STREAMAPP_TEST_BROKER")
        if not broker:
            broker = f"kafka://127.0.0.1:{free_port()}"
            kafka_broker.start(broker, Path(tmp) / "broker", ROOT)
        pool = WorkerPool(broker, Path(tmp))
        try:
            worker = pool.create(partitions=args.partitions, extra=IMPORT)
            run = f"r{int(time.time())}"
            source = Path(tmp) / "source.csv"
            generate(source, args.rows, run)
            drop = Path(tmp) / "worker0" / "drop" / "bench"
            base = applied_commands(worker.url)
            started = time.perf_counter()
            os.replace(source, drop / "members.csv")  # an atomic drop: complete at once
            reported = readable = None
            while readable is None:
                if reported is None and list((Path(tmp) / "worker0" / "processed").glob("*.report.json")):
                    reported = time.perf_counter() - started
                if applied_commands(worker.url) - base >= args.rows:
                    last = httpx.get(f"{worker.url}/api/v1/databases/members/recipients/{run}-{args.rows - 1}",
                                     headers={"Authorization": f"Bearer {TOKENS['admin']}"})  # fmt: skip
                    if last.status_code == 200:
                        readable = time.perf_counter() - started
                time.sleep(0.05)
            report = json.loads(next((Path(tmp) / "worker0" / "processed").glob("*.report.json")).read_text())
        finally:
            pool.stop_all()
            if not os.environ.get("STREAMAPP_TEST_BROKER"):
                kafka_broker.stop(Path(tmp) / "broker")
    result = {
        "benchmark": "import",
        "cores": os.cpu_count(),
        "rows": args.rows,
        "columns": len(HEADER),
        "partitions": args.partitions,
        "seconds_to_report": round(reported or 0, 2),
        "seconds_to_readable": round(readable, 2),
        "rows_per_s_end_to_end": round(args.rows / readable),
        "job_rows_per_s": report["rowsPerSecond"],
        "applied": report["applied"],
        "rejected": report["rejected"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
