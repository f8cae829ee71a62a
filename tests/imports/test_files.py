"""Drop-folder bookkeeping: candidates, settling, claiming, finishing exactly once."""

from __future__ import annotations

from pathlib import Path

from streamapp.imports.files import DropLayout, SettleTracker, is_candidate, safe_name


def test_candidates_skip_incomplete_and_hidden_files() -> None:
    assert is_candidate("members.csv", "*.csv") and is_candidate("MEMBERS.CSV", "*.csv")
    for name in (".members.csv", "members.csv.tmp", "members.csv.part", "members.txt", "x.csv.report.json"):
        assert not is_candidate(name, "*.csv"), name


def test_safe_name_never_escapes_the_folder() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("a b;rm -rf.csv") == "a_b_rm_-rf.csv"
    assert safe_name("..") == "file"


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


def test_only_one_worker_claims_a_file(tmp_path: Path) -> None:
    first, second = DropLayout(tmp_path, "w1"), DropLayout(tmp_path, "w2")
    first.create(["crm"])
    second.create(["crm"])
    path = first.folder("crm") / "x.csv"
    path.write_text("Id\n1\n")
    claim = first.claim(path, "crm", "2026-01-01T00:00:00+00:00")
    assert claim is not None and second.claim(path, "crm", "2026-01-01T00:00:00+00:00") is None
    assert not path.exists() and Path(claim.path).read_text() == "Id\n1\n"
    assert [c.id for c in first.unfinished_claims()] == [claim.id] and second.unfinished_claims() == []


def test_finish_is_redone_after_a_crash_with_one_report(tmp_path: Path) -> None:
    layout = DropLayout(tmp_path, "w1")
    layout.create(["crm"])
    (layout.folder("crm") / "x.csv").write_text("Id\n1\n")
    claim = layout.claim(layout.folder("crm") / "x.csv", "crm", "t")
    assert claim is not None
    # A crash after staging: report and target written, nothing moved yet.
    (layout.inflight / f"{claim.id}.report.json").write_text("{}")
    (layout.inflight / f"{claim.id}.target").write_text(str(layout.processed / "x.csv"))
    target = layout.resume_finish(claim)
    assert target == layout.processed / "x.csv" and target.read_text() == "Id\n1\n"
    assert sorted(p.name for p in layout.processed.iterdir()) == ["x.csv", "x.csv.report.json"]
    assert layout.unfinished_claims() == [] and layout.resume_finish(claim) is None


def test_same_content_is_seen_once_per_claim(tmp_path: Path) -> None:
    layout = DropLayout(tmp_path, "w1")
    layout.create(["crm"])
    for name in ("a.csv", "b.csv"):
        (layout.folder("crm") / name).write_text("same")
    a = layout.claim(layout.folder("crm") / "a.csv", "crm", "t")
    b = layout.claim(layout.folder("crm") / "b.csv", "crm", "t")
    assert a is not None and b is not None
    assert layout.mark_seen("d1", a) is None
    assert layout.mark_seen("d1", a) is None  # redoing the same claim is not a duplicate
    assert layout.mark_seen("d1", b) == "a.csv"
    layout.unmark_seen("d1")
    assert layout.mark_seen("d1", b) is None
