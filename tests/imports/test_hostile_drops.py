"""Hostile drop folders, with real files: whatever an uploader writes, only the bytes of files get in.

Nothing here points at the real /etc/passwd: these tests run as root in CI, and a regression
would move it. A stand-in "outside" file plays its part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamapp.imports.files import DropLayout, SettleTracker, worker_tag
from streamapp.imports.job import run_import
from streamapp.imports.nofollow import FileRefused, NotAFolder, open_watched, scan
from streamapp.settings import Settings, load_settings
from tests.fixtures import config_text
from tests.imports.fixtures import IMPORTS as IMPORT_TABLES

AT = "2026-01-01T00:00:00.000+00:00"
IMPORTS = ["crm", "fast"]
CSV = "CustomerNo;Email\nS1;s1@example.com\n"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "streamapp.toml"
    config.write_text(config_text("kafka://127.0.0.1:1", tmp_path / "var", 6066, "hostile", extra=IMPORT_TABLES))
    return load_settings(config, {})


@pytest.fixture
def layout(settings: Settings) -> DropLayout:
    made = DropLayout.of(settings)
    made.prepare([imp.watch for imp in settings.imports])
    return made


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable file the uploader must never get imported or moved (stands in for /etc/passwd)."""
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text("CustomerNo;Email\nROOT;root@example.com\n")
    return secret


@pytest.fixture
def key_file(settings: Settings) -> Path:
    key = settings.service.data_dir / "unsubscribe.key"
    key.write_bytes(b"k" * 32)
    return key


def claim_ready(layout: DropLayout, watch: str = "members/crm", import_name: str = "crm") -> list[str]:
    """What the watcher does with a folder: scan, settle (no wait here), claim by descriptor."""
    claimed = []
    with open_watched(layout.drop, watch) as folder:
        for name, _ in scan(folder):
            claim = layout.claim_entry(folder, name, import_name, AT)
            assert claim is not None
            claimed.append(claim.id)
    return claimed


def import_claims(settings: Settings, layout: DropLayout) -> list[tuple[str, str | None, Path]]:
    """run_import on every claim (refusals and rejections need no broker): outcome, reason, target."""
    results = []
    for claim in layout.unfinished_claims(IMPORTS):
        report, target = asyncio.run(run_import(settings, layout, claim))
        results.append((report.outcome, report.reason, target))
    return results


def rejected_files(layout: DropLayout) -> list[str]:
    return sorted(p.name for p in layout.rejected.iterdir())


# -- planted bookkeeping ------------------------------------------------------------------------------


def plant_legacy_claims(layout: DropLayout, outside: Path, key_file: Path) -> None:
    """Today's (old) claim location inside the drop folder, written by an uploader."""
    for tag in (layout.worker, "x"):
        folder = layout.drop / ".streamapp" / "inflight" / tag
        folder.mkdir(parents=True, exist_ok=True)
        for n, path in enumerate((outside, key_file)):
            claim = {"id": f"evil{n}", "import_name": "crm", "original_name": "evil.csv", "claimed_at": AT,
                     "path": str(path)}  # fmt: skip
            (folder / f"evil{n}.claim.json").write_text(json.dumps(claim))
            (folder / f"evil{n}.target").write_text(str(key_file))


def test_claims_planted_in_the_drop_folder_have_no_effect(
    settings: Settings, layout: DropLayout, outside: Path, key_file: Path
) -> None:
    plant_legacy_claims(layout, outside, key_file)
    assert layout.unfinished_claims(IMPORTS) == [] and layout.adopt_orphans(IMPORTS) == []
    assert import_claims(settings, layout) == []
    assert outside.read_text().startswith("CustomerNo") and key_file.read_bytes() == b"k" * 32
    assert rejected_files(layout) == [] and list(layout.processed.iterdir()) == []


def test_a_path_in_a_claim_record_is_never_used(settings: Settings, layout: DropLayout, outside: Path) -> None:
    (layout.drop / "members" / "crm" / "real.csv").write_text("")  # rejected by the precheck, no broker needed
    [claim_id] = claim_ready(layout)
    record = layout.inflight / claim_id / "claim.json"
    planted = {**json.loads(record.read_text()), "path": str(outside), "id": "000000000000"}
    record.write_text(json.dumps(planted))
    [claim] = layout.unfinished_claims(IMPORTS)
    assert (claim.id, Path(claim.path)) == (claim_id, layout.inflight / claim_id / "data")
    [(outcome, reason, target)] = import_claims(settings, layout)
    assert (outcome, reason) == ("rejected", "the file is empty")  # real.csv was read, not the planted path
    assert target.name == "real.csv" and outside.read_text().startswith("CustomerNo")


def test_a_claim_for_an_import_that_is_not_configured_is_left_alone(layout: DropLayout) -> None:
    (layout.drop / "members" / "crm" / "x.csv").write_text(CSV)
    [claim_id] = claim_ready(layout, import_name="no-such-import")
    assert layout.unfinished_claims(IMPORTS) == []
    assert (layout.inflight / claim_id / "data").exists()


@pytest.mark.parametrize("name", ["../unsubscribe.key", "/x/unsubscribe.key", "x.csv.report.json", "..", ""])
def test_a_finish_record_cannot_move_a_file_anywhere_else(
    settings: Settings, layout: DropLayout, key_file: Path, name: str
) -> None:
    (layout.drop / "members" / "fast" / "x.csv").write_text(CSV)
    claim_ready(layout, "members/fast", "fast")
    [claim] = layout.unfinished_claims(IMPORTS)
    (layout.inflight / claim.id / "report.json").write_text("{}")
    (layout.inflight / claim.id / "finish.json").write_text(json.dumps({"folder": "processed", "name": name}))
    assert layout.resume_finish(claim) is None  # discarded: the file is imported again instead
    assert key_file.read_bytes() == b"k" * 32 and Path(claim.path).read_text() == CSV
    (layout.inflight / claim.id / "finish.json").write_text(json.dumps({"folder": "../state", "name": "x.csv"}))
    assert layout.resume_finish(claim) is None and Path(claim.path).exists()


# -- links and other non-files -------------------------------------------------------------------------


def assert_refused(settings: Settings, layout: DropLayout, why: str, intact: Path | None = None) -> None:
    [(outcome, reason, target)] = import_claims(settings, layout)
    assert outcome == "rejected" and reason and why in reason, reason
    assert rejected_files(layout) == [f"{target.name}.report.json"]  # the entry itself is never kept
    assert not target.exists() and layout.unfinished_claims(IMPORTS) == []
    if intact is not None:
        assert intact.read_text().startswith("CustomerNo;Email\nROOT")


def test_a_symlink_in_a_watched_folder_is_refused_not_followed(
    settings: Settings, layout: DropLayout, outside: Path
) -> None:
    (layout.drop / "members" / "crm" / "link.csv").symlink_to(outside)
    claim_ready(layout)
    assert_refused(settings, layout, "symbolic link", intact=outside)


def test_a_symlink_swapped_in_after_the_scan_is_refused(settings: Settings, layout: DropLayout, outside: Path) -> None:
    path = layout.drop / "members" / "crm" / "swap.csv"
    path.write_text(CSV)
    tracker = SettleTracker(clock=iter([0.0, 10.0]).__next__)
    with open_watched(layout.drop, "members/crm") as folder:
        [(name, status)] = scan(folder)
        tracker.ready(path, 1, status)
        assert tracker.ready(path, 1, status)  # settled: about to be claimed
        path.unlink()
        path.symlink_to(outside)  # the uploader swaps it now
        assert layout.claim_entry(folder, name, "crm", AT) is not None
    assert_refused(settings, layout, "symbolic link", intact=outside)


def test_a_hard_link_is_refused(settings: Settings, layout: DropLayout, key_file: Path) -> None:
    os.link(key_file, layout.drop / "members" / "crm" / "key.csv")
    claim_ready(layout)
    [(outcome, reason, _)] = import_claims(settings, layout)
    assert outcome == "rejected" and reason and "hard link (2 names" in reason
    assert key_file.read_bytes() == b"k" * 32 and os.stat(key_file).st_nlink == 1
    assert len(rejected_files(layout)) == 1  # the report only: the key's bytes went nowhere


def test_a_folder_swapped_in_is_refused_and_removed_from_the_claim(settings: Settings, layout: DropLayout) -> None:
    path = layout.drop / "members" / "crm" / "dir.csv"
    path.write_text(CSV)
    with open_watched(layout.drop, "members/crm") as folder:
        [(name, _)] = scan(folder)
        path.unlink()
        path.mkdir()
        (path / "inner.csv").write_text(CSV)
        assert layout.claim_entry(folder, name, "crm", AT) is not None
    assert_refused(settings, layout, "a folder")


def test_a_fifo_is_refused_without_hanging(settings: Settings, layout: DropLayout) -> None:
    os.mkfifo(layout.drop / "members" / "crm" / "pipe.csv")
    claim_ready(layout)
    assert_refused(settings, layout, "not a regular file")


def test_a_watched_folder_replaced_by_a_link_is_not_scanned(layout: DropLayout, tmp_path: Path) -> None:
    elsewhere = tmp_path / "var" / "state"
    elsewhere.mkdir(parents=True)
    (elsewhere / "private.csv").write_text(CSV)
    crm = layout.drop / "members" / "crm"
    crm.rmdir()
    crm.symlink_to(elsewhere)
    with pytest.raises(NotAFolder), open_watched(layout.drop, "members/crm"):
        pass
    (layout.drop / "members").rename(layout.drop / "m2")
    (layout.drop / "members").symlink_to(tmp_path / "var")  # a link higher up: members/crm -> var/crm
    (tmp_path / "var" / "crm").mkdir()
    with pytest.raises(NotAFolder), open_watched(layout.drop, "members/crm"):
        pass
    assert (elsewhere / "private.csv").exists()


def test_a_drop_folder_that_is_itself_a_link_is_the_operators_choice(tmp_path: Path) -> None:
    (tmp_path / "mount" / "drop" / "crm").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "drop").symlink_to(tmp_path / "mount" / "drop")
    with open_watched(tmp_path / "var" / "drop", "crm") as folder:
        assert scan(folder) == []


def test_file_refused_is_a_rejection() -> None:
    assert issubclass(FileRefused, Exception)
    from streamapp.tabular.csvreader import FileRejected

    assert issubclass(FileRefused, FileRejected)


# -- names that would forge log lines ------------------------------------------------------------------


@pytest.fixture
def watcher_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="streamapp.imports"):
        yield caplog


async def test_the_watcher_logs_names_escaped(
    settings: Settings, layout: DropLayout, watcher_logs: pytest.LogCaptureFixture
) -> None:
    from streamapp.imports.watcher import DropWatcher

    watcher = DropWatcher(settings)
    now = [0.0]
    watcher.settle = SettleTracker(clock=lambda: now[0])
    evil = "x.csv\n2026-01-01 00:00:00 INFO forged: all good\r\x1b[2J.csv"
    (layout.drop / "members" / "crm" / evil).write_text(CSV)
    crm = next(imp for imp in settings.imports if imp.name == "crm")
    watcher._scan(crm)
    now[0] += 10
    watcher._scan(crm)
    assert watcher.queue.qsize() == 1
    messages = [record.getMessage() for record in watcher_logs.records]
    assert any("forged" in m for m in messages)
    assert all("\n" not in m and "\r" not in m and "\x1b" not in m for m in messages), messages


def test_worker_tags_are_claim_folder_names() -> None:
    assert len(worker_tag("http://127.0.0.1:6066")) == 12


def test_a_name_that_is_another_file_by_now_is_not_claimed(layout: DropLayout) -> None:
    """Another worker took the settled file and a new upload of the same name began: not ready."""
    path = layout.drop / "members" / "crm" / "again.csv"
    path.write_text(CSV)
    with open_watched(layout.drop, "members/crm") as folder:
        [(name, settled)] = scan(folder)
        path.unlink()
        path.write_text("CustomerNo;Em")  # half written
        assert layout.claim_entry(folder, name, "crm", AT, settled) is None
        assert path.read_text() == "CustomerNo;Em" and layout.unfinished_claims(IMPORTS) == []
        [(_, now)] = scan(folder)
        assert layout.claim_entry(folder, name, "crm", AT, now) is not None
