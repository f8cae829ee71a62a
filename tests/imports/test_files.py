"""Drop-folder bookkeeping: candidates, settling, claiming, finishing exactly once, adopting."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import msgspec
import pytest

from streamapp.imports.files import (
    CLAIMS_FOLDER,
    DropLayout,
    DropPaths,
    SettleTracker,
    display_name,
    drop_path_problems,
    drop_paths,
    is_candidate,
    safe_name,
    try_lock,
)
from streamapp.imports.report import ImportReport, encode_report
from streamapp.settings import ConfigError, ServiceSettings, load_settings

AT = "2026-01-01T00:00:00.000+00:00"
IMPORTS = ["crm"]
D1, D2 = "a" * 64, "b" * 64


def layout(tmp_path: Path, worker: str = "aaaaaaaaaaaa") -> DropLayout:
    made = DropLayout(tmp_path, worker)
    made.create(["crm"])
    return made


def dropped(made: DropLayout, name: str = "x.csv", data: str = "Id\n1\n") -> Path:
    path = made.folder("crm") / name
    path.write_text(data)
    return path


def test_candidates_skip_incomplete_and_hidden_files() -> None:
    assert is_candidate("members.csv", "*.csv") and is_candidate("MEMBERS.CSV", "*.csv")
    for name in (".members.csv", "members.csv.tmp", "members.csv.part", "members.txt", "x.csv.report.json"):
        assert not is_candidate(name, "*.csv"), name


def test_safe_name_never_escapes_the_folder() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("a b;rm -rf.csv") == "a_b_rm_-rf.csv"
    assert safe_name("..") == "file"
    assert safe_name("evil\nname.csv") == "evil_name.csv"


def test_undecodable_names_become_storable_text() -> None:
    name = os.fsdecode(b"caf\xe9.csv")  # a Latin-1 name on a UTF-8 system: a lone surrogate
    assert display_name(name) == "caf\\xe9.csv"
    assert display_name("Åsa.csv") == "Åsa.csv"
    msgspec.json.encode(display_name(name))  # the raw name would raise


def test_claims_live_outside_the_drop_folder_by_default(tmp_path: Path) -> None:
    made = DropLayout(tmp_path, "aaaaaaaaaaaa")
    assert made.drop == tmp_path / "drop"
    assert made.claims == tmp_path.resolve() / CLAIMS_FOLDER
    assert not made.inflight.resolve().is_relative_to(made.drop.resolve())
    assert not made.seen.resolve().is_relative_to(made.drop.resolve())


def test_drop_paths_reads_settings_and_explicit_arguments(tmp_path: Path) -> None:
    class Service:
        data_dir = tmp_path / "var"
        drop_dir = tmp_path / "shared" / "drop"
        claims_dir = None

    class Settings:
        service = Service()

    paths = drop_paths(Settings())  # type: ignore[arg-type]
    assert paths == DropPaths(tmp_path / "shared" / "drop", tmp_path.resolve() / "shared" / CLAIMS_FOLDER)
    explicit = drop_paths(Settings(), claims_dir=tmp_path / "c")  # type: ignore[arg-type]
    assert explicit.claims == tmp_path / "c"


def test_default_claims_folder_of_a_linked_drop_is_beside_its_target(tmp_path: Path) -> None:
    """`..` of a link is the parent of what it points at, as the kernel sees it: shared by both workers."""
    (tmp_path / "shared" / "drop").mkdir(parents=True)
    (tmp_path / "w2").mkdir()
    (tmp_path / "w2" / "drop").symlink_to(tmp_path / "shared" / "drop")
    assert DropLayout(tmp_path / "w2", "bbbbbbbbbbbb").claims == (tmp_path / "shared").resolve() / CLAIMS_FOLDER


def test_claims_inside_the_drop_folder_are_refused(tmp_path: Path) -> None:
    problems = drop_path_problems(DropPaths(tmp_path / "drop", tmp_path / "drop" / ".claims"))
    assert problems and "inside drop_dir" in problems[0]
    assert drop_path_problems(DropPaths(tmp_path / "drop", tmp_path / ".claims")) == []


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second file system")
def test_claims_on_another_file_system_are_refused(tmp_path: Path) -> None:
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same file system here")
    problems = drop_path_problems(DropPaths(tmp_path / "drop", Path("/dev/shm") / "claims"))
    assert any("not on the file system" in p for p in problems)


def test_settle_waits_for_size_and_mtime_to_stop_changing(tmp_path: Path) -> None:
    now = [100.0]
    tracker = SettleTracker(clock=lambda: now[0])
    path = tmp_path / "f.csv"
    path.write_text("a")
    assert not tracker.ready(path, 2)
    now[0] += 1.9
    assert not tracker.ready(path, 2)
    path.write_text("ab")  # still being written
    now[0] += 1.9
    assert not tracker.ready(path, 2)
    now[0] += 2.0
    assert tracker.ready(path, 2)
    path.unlink()
    assert not tracker.ready(path, 2) and tracker.waiting() == 0


def test_settle_starts_again_when_the_name_is_another_file(tmp_path: Path) -> None:
    now = [0.0]
    tracker = SettleTracker(clock=lambda: now[0])
    path, other = tmp_path / "f.csv", tmp_path / "g.csv"
    path.write_text("a")
    other.write_text("b")
    tracker.ready(path, 1)
    os.replace(other, path)  # same size and maybe mtime, another inode
    now[0] += 5
    assert not tracker.ready(path, 1)
    tracker.retain(set())
    assert tracker.waiting() == 0


def test_only_one_worker_claims_a_file(tmp_path: Path) -> None:
    first, second = layout(tmp_path, "aaaaaaaaaaaa"), layout(tmp_path, "bbbbbbbbbbbb")
    path = dropped(first)
    claim = first.claim(path, "crm", AT)
    assert claim is not None and second.claim(path, "crm", AT) is None
    assert not path.exists() and Path(claim.path).read_text() == "Id\n1\n"
    assert Path(claim.path) == first.inflight / claim.id / "data"
    assert [c.id for c in first.unfinished_claims(IMPORTS)] == [claim.id] and second.unfinished_claims(IMPORTS) == []
    assert os.listdir(second.inflight) == []  # the losing worker left nothing behind


def test_a_claim_record_written_before_a_crash_without_its_file_is_released(tmp_path: Path) -> None:
    made = layout(tmp_path)
    claim = made.claim(dropped(made), "crm", AT)
    assert claim is not None
    os.unlink(claim.path)  # as if the worker died between writing claim.json and the rename
    from streamapp.imports.nofollow import ClaimGone

    with pytest.raises(ClaimGone), made.open_claimed(claim):
        pass


def test_finish_is_redone_after_a_crash_with_one_report(tmp_path: Path) -> None:
    made = layout(tmp_path)
    claim = made.claim(dropped(made), "crm", AT)
    assert claim is not None
    # A crash after staging: report and finish record written, nothing moved yet.
    folder = made.inflight / claim.id
    (folder / "report.json").write_text("{}")
    (folder / "finish.json").write_text(json.dumps({"folder": "processed", "name": "x.csv"}))
    target = made.resume_finish(claim)
    assert target == made.processed / "x.csv" and target.read_text() == "Id\n1\n"
    assert sorted(p.name for p in made.processed.iterdir()) == ["x.csv", "x.csv.report.json"]
    assert made.unfinished_claims(IMPORTS) == [] and made.resume_finish(claim) is None
    assert not folder.exists()


def test_finish_never_overwrites_an_earlier_file_of_the_same_name(tmp_path: Path) -> None:
    made = layout(tmp_path)
    (made.processed / "x.csv").write_text("earlier")
    claim = made.claim(dropped(made), "crm", AT)
    assert claim is not None
    report = ImportReport(file="x.csv", import_="crm", database="members", kind="recipients", mode="upsert")
    target = made.finish(claim, "processed", encode_report(report))
    assert target.name == f"x.{claim.id}.csv" and (made.processed / "x.csv").read_text() == "earlier"


def test_same_content_is_seen_once_per_claim(tmp_path: Path) -> None:
    made = layout(tmp_path)
    a = made.claim(dropped(made, "a.csv", "same"), "crm", AT)
    b = made.claim(dropped(made, "b.csv", "same"), "crm", AT)
    assert a is not None and b is not None
    assert made.mark_seen(D1, a) is None
    assert made.mark_seen(D1, a) is None  # redoing the same claim is not a duplicate
    assert made.mark_seen(D1, b) == "a.csv"
    made.unmark_seen(D1)
    assert made.mark_seen(D1, b) is None
    assert (made.seen / D1).exists() and not (made.drop / ".streamapp").exists()


def test_claims_of_a_worker_that_is_not_running_are_adopted(tmp_path: Path) -> None:
    dead, alive = layout(tmp_path, "dddddddddddd"), layout(tmp_path, "aaaaaaaaaaaa")
    live_other = layout(tmp_path, "cccccccccccc")
    orphan = dead.claim(dropped(dead, "orphan.csv"), "crm", AT)
    kept = live_other.claim(dropped(live_other, "kept.csv"), "crm", AT)
    assert orphan is not None and kept is not None
    with live_other.hold_worker_lock(), alive.hold_worker_lock():
        adopted = alive.adopt_orphans(IMPORTS)
    assert [(c.id, c.original_name, c.claimed_at) for c in adopted] == [(orphan.id, "orphan.csv", AT)]
    assert Path(adopted[0].path) == alive.inflight / orphan.id / "data" and Path(adopted[0].path).exists()
    assert dead.unfinished_claims(IMPORTS) == []
    assert [c.id for c in live_other.unfinished_claims(IMPORTS)] == [kept.id]  # its worker runs: not touched


def test_a_claim_a_job_still_works_on_is_not_adopted(tmp_path: Path) -> None:
    dead, alive = layout(tmp_path, "dddddddddddd"), layout(tmp_path, "aaaaaaaaaaaa")
    orphan = dead.claim(dropped(dead), "crm", AT)
    assert orphan is not None
    with try_lock(dead.inflight / orphan.id / "lock") as held:  # an orphaned job of the dead worker
        assert held
        assert alive.adopt_orphans(IMPORTS) == []
    assert [c.id for c in alive.adopt_orphans(IMPORTS)] == [orphan.id]


def test_a_second_worker_with_the_same_tag_does_not_start(tmp_path: Path) -> None:
    from streamapp.imports.files import DropSetupError

    made = layout(tmp_path)
    with made.hold_worker_lock(), pytest.raises(DropSetupError, match="another running worker"):
        made.hold_worker_lock(wait=0.2)


SETTINGS_HAVE_DROP_DIR = "drop_dir" in {f.name for f in dataclasses.fields(ServiceSettings)}


@pytest.mark.skipif(not SETTINGS_HAVE_DROP_DIR, reason="[service] drop_dir/claims_dir not in settings.py yet")
def test_configured_drop_and_claims_folders_are_used_and_checked(tmp_path: Path) -> None:
    from tests.fixtures import config_text

    config = tmp_path / "conf" / "streamapp.toml"
    config.parent.mkdir()
    service = 'drop_dir = "../shared/drop"\nclaims_dir = "../shared/claims"'
    config.write_text(config_text("kafka://127.0.0.1:1", tmp_path / "var", 6066, "t", service=service))
    made = DropLayout.of(load_settings(config, {}))
    assert (made.drop, made.claims) == (
        tmp_path.resolve() / "shared" / "drop",
        tmp_path.resolve() / "shared" / "claims",
    )
    assert made.data_dir == tmp_path / "var"
    config.write_text(
        config_text("kafka://127.0.0.1:1", tmp_path / "var", 6066, "t", service='drop_dir = "../shared/drop"')
    )
    assert DropLayout.of(load_settings(config, {})).claims == tmp_path.resolve() / "shared" / CLAIMS_FOLDER
    inside = 'drop_dir = "../shared/drop"\nclaims_dir = "../shared/drop/.claims"'
    config.write_text(config_text("kafka://127.0.0.1:1", tmp_path / "var", 6066, "t", service=inside))
    with pytest.raises(ConfigError, match="claims_dir"):
        load_settings(config, {})
