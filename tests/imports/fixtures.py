"""Fixtures for import tests: a worker with import schemas, dropping files, waiting for reports."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import Worker, WorkerPool

IMPORTS = r"""
[[imports]]
name = "crm"
database = "members"
watch = "members/crm"
settle_seconds = 2.5
identity = "CustomerNo"
[imports.columns]
Email = "email"
FirstName = "firstname"

[[imports]]
name = "erp"
database = "members"
watch = "members/erp"
settle_seconds = 0.3
encoding = "windows-1252"
delimiter = ","
identity = "Kundnr"
[imports.columns]
Postnr = "zipcode"
Efternamn = "lastname"

[[imports]]
name = "shop"
database = "members"
watch = "members/shop"
settle_seconds = 0.3
delimiter = "\t"
header = false
identity = "1"
pattern = "*.txt"
[imports.columns]
"2" = "score"
"3" = "vip"

[[imports]]
name = "full"
database = "members"
watch = "members/full"
settle_seconds = 0.3
mode = "replace"
identity = "CustomerNo"
[imports.columns]
Email = "email"

[[imports]]
name = "unsub"
database = "members"
watch = "members/unsub"
settle_seconds = 0.3
mode = "unsubscribe"
identity = "CustomerNo"

[[imports]]
name = "purchases"
database = "members"
kind = "history"
watch = "members/history"
settle_seconds = 0.3
pattern = "*.txt"

[[imports]]
name = "fast"
database = "members"
watch = "members/fast"
settle_seconds = 0.3
identity = "CustomerNo"
[imports.columns]
Email = "email"
FirstName = "firstname"
Score = "score"
"""


@pytest.fixture(scope="module")
def import_worker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    pool = WorkerPool(kafka, tmp_path_factory.mktemp("imports"))
    yield pool.create(partitions=4, extra=IMPORTS)
    pool.stop_all()


def drop_folder(worker: Worker, watch: str) -> Path:
    return worker.data_dir / "drop" / watch


def drop(worker: Worker, watch: str, name: str, data: bytes) -> Path:
    """Write the file beside the folder, then rename it in: complete at once."""
    folder = drop_folder(worker, watch)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{name}.writing"
    staging.write_bytes(data)
    os.replace(staging, folder / name)
    return folder / name


def find_report(worker: Worker, name: str) -> tuple[str, dict[str, Any]] | None:
    for outcome in ("processed", "rejected"):
        path = worker.data_dir / outcome / f"{name}.report.json"
        if path.exists():
            return outcome, json.loads(path.read_text())
    return None


def wait_report(worker: Worker, name: str, timeout: float = 60) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find_report(worker, name)
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no report for {name} after {timeout}s:\n{worker.tail()}")
