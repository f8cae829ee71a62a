"""Hostile drops against a real worker (and a real broker): planted claims, links, forged log lines,
and a file that changes after its check. Stand-in files play /etc/passwd and the key file: these
tests run as root, and a regression must not move the real ones."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from streamapp.imports.files import Claim, DropLayout, worker_tag
from streamapp.imports.job import run_import
from streamapp.kafka.topics import ensure_topics
from streamapp.settings import Settings, load_settings
from tests.fixtures import Worker, WorkerPool, client, config_text, free_port
from tests.imports.fixtures import IMPORTS, drop, drop_folder, find_report, wait_report

pytestmark = pytest.mark.integration

AT = "2026-01-01T00:00:00.000+00:00"


def outside_file(tmp_path: Path, name: str, original_id: str) -> Path:
    path = tmp_path / "outside" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"CustomerNo;Email\n{original_id};{original_id.lower()}@example.com\n")
    return path


def absent(worker: Worker, original_id: str) -> bool:
    with client(worker) as api:
        return api.get(f"/api/v1/databases/members/recipients/{original_id}").status_code == 404


def test_claims_planted_in_the_drop_folder_do_nothing_at_start(workers: WorkerPool, tmp_path: Path) -> None:
    worker = workers.create(partitions=4, extra=IMPORTS, start=False)
    passwd = outside_file(tmp_path, "passwd", "ROOT")
    key = worker.data_dir / "secret.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"k" * 32)
    inflight = worker.data_dir / "drop" / ".streamapp" / "inflight" / worker_tag(worker.url)
    inflight.mkdir(parents=True)
    for n, path in enumerate((passwd, key)):
        claim = {"id": f"evil{n}", "import_name": "fast", "original_name": f"evil{n}.csv", "claimed_at": AT,
                 "path": str(path)}  # fmt: skip
        (inflight / f"evil{n}.claim.json").write_text(json.dumps(claim))
        (inflight / f"evil{n}.target").write_text(str(key))
    worker.start().wait_ready()
    drop(worker, "members/fast", "after-planted.csv", b"CustomerNo\nPLANT1\n")
    assert wait_report(worker, "after-planted.csv")[0] == "processed"
    assert passwd.read_text().startswith("CustomerNo;Email\nROOT") and key.read_bytes() == b"k" * 32
    assert find_report(worker, "evil0.csv") is None and find_report(worker, "evil1.csv") is None
    assert sorted(p.name for p in (worker.data_dir / "processed").iterdir()) == [
        "after-planted.csv", "after-planted.csv.report.json",
    ]  # fmt: skip
    assert absent(worker, "ROOT")


def test_links_in_a_watched_folder_are_refused_with_a_report(import_worker: Worker, tmp_path: Path) -> None:
    target = outside_file(tmp_path, "private.csv", "SECRET1")
    linked = outside_file(tmp_path, "linked.csv", "SECRET2")  # same file system as the drop folder (tmp)
    folder = drop_folder(import_worker, "members/fast")
    (folder / "symlink.csv").symlink_to(target)
    os.link(linked, folder / "hardlink.csv")
    for name, why in (("symlink.csv", "symbolic link"), ("hardlink.csv", "hard link")):
        outcome, report = wait_report(import_worker, name)
        assert (outcome, report["outcome"], report["applied"]) == ("rejected", "rejected", 0), report
        assert why in report["reason"]
        assert not (import_worker.data_dir / "rejected" / name).exists()  # never kept where people read files
    assert target.read_text().endswith("SECRET1;secret1@example.com\n") and os.stat(linked).st_nlink == 1
    drop(import_worker, "members/fast", "after-links.csv", b"CustomerNo\nLINK3\n")
    wait_report(import_worker, "after-links.csv")
    assert absent(import_worker, "SECRET1") and absent(import_worker, "SECRET2")


def test_file_names_cannot_forge_log_lines(import_worker: Worker) -> None:
    name = "evil\n2026-01-01 00:00:00,000 INFO FORGED everything is fine\r\x1b[1A.csv"
    drop(import_worker, "members/fast", name, b"CustomerNo\nLOG1\n")
    outcome, report = wait_report(import_worker, "evil_2026-01-01_00_00_00_000_INFO_FORGED_everything_is_fine_1A.csv")
    assert outcome == "processed" and report["file"] == name  # the report is JSON: escaped there
    log = import_worker.log.read_text(errors="replace")
    assert "FORGED" in log
    assert not re.search(r"^2026-01-01 00:00:00,000 INFO FORGED", log, re.M)
    forging = [line for line in log.splitlines() if "FORGED" in line]
    assert forging and all("\\n" in line and "\x1b" not in line for line in forging), forging


def test_invalid_utf8_at_row_50000_rejects_the_whole_file(import_worker: Worker) -> None:
    rows = [f"BAD{i};b{i}@example.com" for i in range(60_000)]
    data = ("CustomerNo;Email\n" + "\n".join(rows) + "\n").encode()
    at = data.index(b"BAD50000;")
    data = data[:at] + b"\xff" + data[at + 1 :]
    drop(import_worker, "members/fast", "late-error.csv", data)
    outcome, report = wait_report(import_worker, "late-error.csv")
    assert (outcome, report["applied"]) == ("rejected", 0)
    assert report["reason"].startswith(f"line 50002, byte {at}: not valid utf-8")
    assert absent(import_worker, "BAD0")


# -- a file that changes after its check (an uploader kept it open) --------------------------------------


def big(rows: int) -> bytes:
    return ("CustomerNo;Email\n" + "".join(f"CH{i};ch{i}@example.com\n" for i in range(rows))).encode()


@pytest.fixture
def job_settings(kafka: str, tmp_path: Path) -> Settings:
    config = tmp_path / "job.toml"
    config.write_text(config_text(kafka, tmp_path / "var", free_port(), f"tjob{os.getpid()}{free_port()}", 4, IMPORTS))
    return load_settings(config, {})


async def claimed_open(settings: Settings, data: bytes) -> tuple[DropLayout, Claim, int]:
    """A dropped file claimed while its uploader still holds it open for writing."""
    await ensure_topics(settings)
    layout = DropLayout.of(settings, worker="aaaaaaaaaaaa")
    layout.prepare([imp.watch for imp in settings.imports])
    path = layout.folder("members/fast") / "open.csv"
    path.write_bytes(data)
    fd = os.open(path, os.O_WRONLY)
    claim = layout.claim(path, "fast", AT)
    assert claim is not None
    return layout, claim, fd


async def test_a_decode_error_part_way_rejects_the_file_and_says_what_was_applied(job_settings: Settings) -> None:
    data = big(200_000)
    at = data.index(b"CH150000;")
    layout, claim, fd = await claimed_open(job_settings, data)

    def progress(rows: int, position: int) -> None:
        os.pwrite(fd, b"\xff", at)  # after the precheck passed, before the reader gets there

    try:
        report, target = await run_import(job_settings, layout, claim, progress=progress)
    finally:
        os.close(fd)
    assert report.outcome == "rejected" and target.parent == layout.rejected
    assert report.reason and report.reason.startswith(f"line 150002, byte {at}: not valid utf-8"), report.reason
    assert "found part-way through the import" in report.reason
    assert 0 < report.applied < 150_000 and f"{report.applied:,} rows of it were applied before that" in report.reason
    assert (layout.rejected / "open.csv.report.json").exists() and layout.unfinished_claims(["fast"]) == []


async def test_a_file_that_grows_while_imported_is_rejected(job_settings: Settings) -> None:
    layout, claim, fd = await claimed_open(job_settings, big(50_000))
    os.lseek(fd, 0, os.SEEK_END)

    def progress(rows: int, position: int) -> None:
        os.write(fd, b"CHX;chx@example.com\n")

    try:
        report, _ = await run_import(job_settings, layout, claim, progress=progress)
    finally:
        os.close(fd)
    assert report.outcome == "rejected" and report.applied > 0
    assert report.reason and report.reason.startswith("the file changed while it was being imported")
