"""Imports across restarts and workers: files present at start, kill -9 mid-file, a shared mount."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from streamapp.imports.files import worker_tag
from tests.fixtures import Worker, WorkerPool, applied_commands, client, eventually
from tests.imports.fixtures import IMPORTS, drop, drop_folder, find_report, wait_report

pytestmark = pytest.mark.integration


def claimed(worker: Worker, name: str) -> list[Path]:
    """The claim folders (under the worker's claims folder) holding a file dropped as `name`."""
    inflight = worker.data_dir / ".streamapp-claims" / "inflight"
    return [p.parent for p in inflight.glob("*/*/claim.json") if json.loads(p.read_text())["original_name"] == name]


def big_file(rows: int) -> bytes:
    lines = ["CustomerNo;Email;FirstName;Score"]
    lines += [f"K{i};k{i}@example.com;Name{i % 97};{i % 1000}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def test_files_already_there_at_start_are_imported(workers: WorkerPool) -> None:
    worker = workers.create(partitions=4, extra=IMPORTS, start=False)
    folder = worker.data_dir / "drop" / "members" / "fast"
    folder.mkdir(parents=True)
    (folder / "early.csv").write_bytes(b"CustomerNo;Email\nEARLY1;early@example.com\n")
    worker.start().wait_ready()
    outcome, report = wait_report(worker, "early.csv")
    assert outcome == "processed" and report["applied"] == 1
    with client(worker) as api:
        eventually(lambda: api.get("/api/v1/databases/members/recipients/EARLY1").status_code == 200)


def test_kill9_mid_file_then_restart_gives_one_clean_import(workers: WorkerPool) -> None:
    rows = 200_000
    worker = workers.create(partitions=4, extra=IMPORTS)
    drop(worker, "members/fast", "big.csv", big_file(rows))
    eventually(lambda: applied_commands(worker.url) > 10_000, timeout=60, interval=0.05)
    assert find_report(worker, "big.csv") is None, "the import finished before the kill: nothing was tested"
    worker.kill()
    [claim] = claimed(worker, "big.csv")
    assert (claim / "data").is_file()  # the claimed file waits for the restart, outside the drop folder
    assert not (worker.data_dir / "drop" / ".streamapp").exists()
    worker.start().wait_ready()
    outcome, report = wait_report(worker, "big.csv", timeout=120)
    assert outcome == "processed"
    assert (report["rowsRead"], report["applied"], report["rejected"]) == (rows, rows, 0)
    reports = [p.name for p in (worker.data_dir / "processed").iterdir() if p.name.endswith(".report.json")]
    assert reports == ["big.csv.report.json"]
    assert not any(p.is_file() for p in (worker.data_dir / ".streamapp-claims" / "inflight").rglob("*"))
    sample = [0, rows - 1, *random.Random(3).sample(range(rows), 300)]
    created = set()
    with client(worker) as api:
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/K{rows - 1}").status_code == 200, timeout=60)
        for i in sample:
            r = api.get(f"/api/v1/databases/members/recipients/K{i}").json()
            expected = {"firstname": f"Name{i % 97}", "score": i % 1000}
            assert (r["email"], r["attributes"]) == (f"k{i}@example.com", expected), r
            assert r["createdAt"] == r["updatedAt"]
            created.add(r["createdAt"])
    assert len(created) == 1  # the redo wrote with the claim's time: same rows as one clean import


def test_workers_sharing_a_drop_mount_import_each_file_once(workers: WorkerPool, tmp_path: Path) -> None:
    first = workers.create(partitions=4, extra=IMPORTS)
    second = workers.create(partitions=4, extra=IMPORTS, start=False)
    second.data_dir.mkdir(parents=True)
    (second.data_dir / "drop").symlink_to(first.data_dir / "drop")  # the shared mount
    second.start().wait_ready()
    names = [f"shared-{n}.csv" for n in range(12)]
    for n, name in enumerate(names):
        drop(first, "members/fast", name, f"CustomerNo\nSH{n}\n".encode())
    found = {}
    deadline = time.monotonic() + 60
    while len(found) < len(names) and time.monotonic() < deadline:
        for worker in (first, second):
            for name in names:
                if find_report(worker, name):
                    found.setdefault(name, []).append(worker.url)
        found = {k: sorted(set(v)) for k, v in found.items()}
        time.sleep(0.2)
    assert sorted(found) == sorted(names)
    assert all(len(urls) == 1 for urls in found.values()), found  # exactly one worker imported each file
    assert not list(drop_folder(first, "members/fast").glob("shared-*"))
    assert (first.data_dir / ".streamapp-claims" / "seen").is_dir()  # one claims folder, beside the shared drop
    assert not (second.data_dir / ".streamapp-claims").exists()


def test_a_killed_workers_claim_is_redone_by_another_worker_sharing_the_mount(workers: WorkerPool) -> None:
    rows = 200_000
    first = workers.create(partitions=4, extra=IMPORTS)
    second = workers.create(partitions=4, extra=IMPORTS, start=False)
    second.data_dir.mkdir(parents=True)
    (second.data_dir / "drop").symlink_to(first.data_dir / "drop")
    second.start().wait_ready()
    drop(first, "members/fast", "adopted.csv", big_file(rows))
    eventually(lambda: bool(claimed(first, "adopted.csv")), timeout=30, interval=0.05)
    [claim] = claimed(first, "adopted.csv")
    owner = claim.parent.name
    taker, other = (first, second) if owner == worker_tag(first.url) else (second, first)
    eventually(lambda: applied_commands(taker.url) + applied_commands(other.url) > 10_000, timeout=60, interval=0.05)
    assert find_report(taker, "adopted.csv") is None, "the import finished before the kill: nothing was tested"
    taker.kill()
    outcome, report = wait_report(other, "adopted.csv", timeout=120)  # adopted: the killed worker stays down
    assert outcome == "processed"
    assert (report["rowsRead"], report["applied"], report["rejected"]) == (rows, rows, 0)
    assert find_report(taker, "adopted.csv") is None and claimed(first, "adopted.csv") == []
    with client(other) as api:
        eventually(lambda: api.get(f"/api/v1/databases/members/recipients/K{rows - 1}").status_code == 200, timeout=60)
