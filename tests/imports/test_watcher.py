"""Dropped files end to end: a real worker watching real folders, on the real broker."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import Worker, client, eventually, get_when
from tests.imports.fixtures import drop, drop_folder, find_report, wait_report

pytestmark = pytest.mark.integration


def recipient(worker: Worker, original_id: str, check: Any = lambda r: True) -> dict[str, Any]:
    return get_when(worker, f"/api/v1/databases/members/recipients/{original_id}", check)  # type: ignore[no-any-return]


def test_a_file_written_in_pieces_is_taken_only_once_complete(import_worker: Worker) -> None:
    folder = drop_folder(import_worker, "members/crm")
    path = folder / "pieces.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write("CustomerNo;Email;FirstName\n")
        for piece in range(3):
            for i in range(piece * 100, piece * 100 + 100):
                out.write(f"P{i};p{i}@example.com;Piece{piece}\n")
            out.flush()
            time.sleep(1.5)  # shorter than settle_seconds (2.5): the file must not be taken yet
            assert path.exists(), "taken while still being written"
            assert find_report(import_worker, "pieces.csv") is None
    outcome, report = wait_report(import_worker, "pieces.csv")
    assert outcome == "processed"
    assert (report["rowsRead"], report["applied"], report["rejected"]) == (300, 300, 0)
    assert recipient(import_worker, "P299")["attributes"] == {"firstname": "Piece2"}
    assert recipient(import_worker, "P0")["email"] == "p0@example.com"


def test_the_same_content_twice_is_a_duplicate_and_not_applied_again(import_worker: Worker) -> None:
    data = b"CustomerNo;Email\nDUP1;dup1@example.com\n"
    drop(import_worker, "members/fast", "dup-a.csv", data)
    assert wait_report(import_worker, "dup-a.csv")[1]["applied"] == 1
    recipient(import_worker, "DUP1")
    with client(import_worker) as api:
        api.put("/api/v1/databases/members/recipients/DUP1", json={"email": "changed@example.com"})
    recipient(import_worker, "DUP1", lambda r: r["email"] == "changed@example.com")
    drop(import_worker, "members/fast", "dup-b.csv", data)
    outcome, report = wait_report(import_worker, "dup-b.csv")
    assert (outcome, report["outcome"], report["duplicateOf"], report["applied"]) == (
        "processed", "duplicate", "dup-a.csv", 0,
    )  # fmt: skip
    time.sleep(1)
    assert recipient(import_worker, "DUP1")["email"] == "changed@example.com"


MALFORMED: dict[str, tuple[str, bytes, str]] = {
    # name: (watch folder, content, expected reason or row rejection)
    "wrong-encoding.csv": ("members/erp", b"Kundnr,Postnr\nE1,111\n" + b"E2,\x81\x8d\n", "not valid windows-1252"),
    "random.csv": ("members/crm", bytes(range(256)) * 64, "NUL byte, this is not a text file"),
    "no-identity.csv": ("members/crm", b"Email;FirstName\na@example.com;A\n", "identity column 'CustomerNo' not found"),
    "empty.csv": ("members/crm", b"", "the file is empty"),
    "header-only.csv": ("members/crm", b"CustomerNo;Email\n", "no data rows (only a header line)"),
    "one-line.csv": ("members/crm", b"CustomerNo;" + b"x" * (5 << 20), "line 1 (header): a line longer than 1,048,576 characters"),
    "not-utf8.csv": ("members/crm", b"CustomerNo;FirstName\nB1;\xe5sa\n", "line 2, byte 24: not valid utf-8"),
}  # fmt: skip


def test_malformed_files_each_get_a_precise_report_and_the_api_keeps_serving(import_worker: Worker) -> None:
    for name, (watch, data, _) in MALFORMED.items():
        drop(import_worker, watch, name, data)
    drop(import_worker, "members/crm", "ragged.csv", b"CustomerNo;Email;FirstName\nR1;r1@example.com;A\nR2;x\nR3;r3@example.com;C;extra\nR4;r4@example.com;D\n")  # fmt: skip
    for name, (_, _, reason) in MALFORMED.items():
        outcome, report = wait_report(import_worker, name)
        assert outcome == "rejected" and report["outcome"] == "rejected", (name, report)
        assert reason in report["reason"], (name, report["reason"])
        assert report["applied"] == 0
        assert (import_worker.data_dir / "rejected" / name).exists()
    outcome, report = wait_report(import_worker, "ragged.csv")
    assert outcome == "processed" and (report["applied"], report["rejected"]) == (2, 2)
    assert report["rejections"] == [
        {"line": 3, "reason": "expected 3 fields, found 2"},
        {"line": 4, "reason": "expected 3 fields, found 4"},
    ]
    assert recipient(import_worker, "R4")["attributes"] == {"firstname": "D"}
    assert httpx.get(f"{import_worker.url}/healthz").status_code == 200
    with client(import_worker) as api:
        assert api.put("/api/v1/databases/members/recipients/alive", json={}).status_code == 202
    recipient(import_worker, "alive")
    with client(import_worker) as api:  # nothing of the unreadable files was applied
        assert api.get("/api/v1/databases/members/recipients/E1").status_code == 404
        assert api.get("/api/v1/databases/members/recipients/B1").status_code == 404


def test_three_systems_files_merge_into_one_recipient(import_worker: Worker) -> None:
    drop(import_worker, "members/fast", "crm-merge.csv", b"CustomerNo;Email;FirstName\nM1;m1@example.com;Maja\nM2;m2@example.com;Nils\n")  # fmt: skip
    drop(import_worker, "members/erp", "erp-merge.csv", "Kundnr,Postnr,Efternamn\nM1,111 22,Öberg\nM2,333 44,Åström\n".encode("cp1252"))  # fmt: skip
    drop(import_worker, "members/shop", "shop-merge.txt", b"M1\t17\ttrue\nM2\t3\tfalse\n")
    for name in ("crm-merge.csv", "erp-merge.csv", "shop-merge.txt"):
        assert wait_report(import_worker, name)[1]["applied"] == 2
    maja = recipient(import_worker, "M1", lambda r: len(r["attributes"]) == 5)
    assert maja["email"] == "m1@example.com"
    assert maja["attributes"] == {
        "firstname": "Maja",
        "zipcode": "111 22",
        "lastname": "Öberg",
        "score": 17,
        "vip": True,
    }
    nils = recipient(import_worker, "M2", lambda r: len(r["attributes"]) == 5)
    assert nils["attributes"] == {
        "firstname": "Nils",
        "zipcode": "333 44",
        "lastname": "Åström",
        "score": 3,
        "vip": False,
    }


def test_replace_mode_deactivates_the_absent_and_keeps_sticky_statuses(import_worker: Worker) -> None:
    with client(import_worker) as api:
        for oid, status in (("F1", "active"), ("F2", "active"), ("F3", "active"), ("F5", "unsubscribed"),
                            ("F6", "inactive")):  # fmt: skip
            api.put(f"/api/v1/databases/members/recipients/{oid}", json={"status": status})
    recipient(import_worker, "F6", lambda r: r["status"] == "inactive")
    time.sleep(0.05)  # the import's time must be after these writes
    drop(
        import_worker,
        "members/full",
        "full.csv",
        b"CustomerNo;Email\nF1;f1@example.com\nF3;\nF4;f4@example.com\nF5;\nF6;\n",
    )
    assert wait_report(import_worker, "full.csv")[1]["applied"] == 5
    statuses = {oid: recipient(import_worker, oid)["status"] for oid in ("F1", "F3", "F4", "F5", "F6")}
    assert statuses == {"F1": "active", "F3": "active", "F4": "active", "F5": "unsubscribed", "F6": "active"}
    assert recipient(import_worker, "F2", lambda r: r["status"] != "active")["status"] == "inactive"


def test_unsubscribe_mode_and_no_import_reactivates(import_worker: Worker) -> None:
    drop(import_worker, "members/fast", "u-create.csv", b"CustomerNo;Email\nU1;u1@example.com\n")
    wait_report(import_worker, "u-create.csv")
    drop(import_worker, "members/unsub", "unsub.csv", b"CustomerNo\nU1\nU2\n")
    assert wait_report(import_worker, "unsub.csv")[1]["applied"] == 2
    assert recipient(import_worker, "U1", lambda r: r["status"] == "unsubscribed")["email"] == "u1@example.com"
    assert recipient(import_worker, "U2")["status"] == "unsubscribed"
    drop(import_worker, "members/fast", "u-again.csv", b"CustomerNo;Email;FirstName\nU1;u1@example.com;Una\n")
    wait_report(import_worker, "u-again.csv")
    again = recipient(import_worker, "U1", lambda r: r["attributes"].get("firstname") == "Una")
    assert again["status"] == "unsubscribed"
    drop(import_worker, "members/full", "u-full.csv", b"CustomerNo\nU1\n")
    wait_report(import_worker, "u-full.csv")
    assert recipient(import_worker, "U1")["status"] == "unsubscribed"


def test_history_file(import_worker: Worker) -> None:
    drop(import_worker, "members/history", "orders.txt",
         b"H9;SKU-1;99,50;2026-11-20 14:03:00;2;199\nH9;SKU-2;10\nH9;SKU-3;5;2026-11-21 09:00:00;-1;-5;;note\nbad\n")  # fmt: skip
    outcome, report = wait_report(import_worker, "orders.txt")
    assert outcome == "processed" and (report["applied"], report["rejected"]) == (3, 1)
    assert report["rejections"] == [
        {"line": 4, "reason": "expected at least 3 fields (originalId;sku;itemPrice), found 1"}
    ]
    with client(import_worker) as api:

        def history() -> list[dict[str, Any]] | None:
            records = api.get("/api/v1/databases/members/recipients/H9/history").json()["records"]
            return records if len(records) == 3 else None

        records = eventually(history)
    dated = [r for r in records if r["sku"] in ("SKU-1", "SKU-3")]
    assert [r["sku"] for r in dated] == ["SKU-3", "SKU-1"]  # newest first
    credit = dated[0]
    assert (credit["quantity"], credit["total"], credit["fields"]) == (-1, -5, {"custom3": "note"})


def test_incomplete_and_hidden_files_are_left_alone(import_worker: Worker) -> None:
    folder = drop_folder(import_worker, "members/fast")
    names = [".hidden.csv", "upload.csv.tmp", "upload.csv.part", "notes.md"]
    for name in names:
        (folder / name).write_bytes(b"CustomerNo\nIGN1\n")
    drop(import_worker, "members/fast", "after-ignored.csv", b"CustomerNo\nIGN2\n")
    wait_report(import_worker, "after-ignored.csv")
    time.sleep(1)
    assert all((folder / name).exists() for name in names)
    assert all(find_report(import_worker, name) is None for name in names)


def test_metrics_count_files_and_rows(import_worker: Worker) -> None:
    drop(import_worker, "members/fast", "metrics.csv", b"CustomerNo;Email\nMET1;met1@example.com\nMET2;bad\n")
    wait_report(import_worker, "metrics.csv")

    def counted() -> bool:
        text = httpx.get(f"{import_worker.url}/metrics").text
        return (
            'streamapp_files_total{import="fast",outcome="processed"}' in text
            and 'streamapp_ingest_rows_total{database="members",outcome="rejected",source="file:fast"}' in text
            and "streamapp_import_duration_seconds_count" in text
            and "streamapp_files_waiting" in text
        )

    eventually(counted)


def test_manual_import_cli(import_worker: Worker, tmp_path: Path) -> None:
    import subprocess
    import sys

    good = tmp_path / "manual.csv"
    good.write_text("CustomerNo;Email;FirstName\nCLI1;cli1@example.com;Cli\nCLI2;oops;Two\n")
    env = {**os.environ, "STREAMAPP_CONFIG": str(import_worker.config)}
    run = subprocess.run([sys.executable, "-m", "streamapp.cli", "import", str(good), "--import", "crm"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "processed: 2 rows read, 1 applied, 1 rejected" in run.stdout
    assert good.exists()  # the user's file is left where it was
    assert recipient(import_worker, "CLI1")["attributes"] == {"firstname": "Cli"}
    bad = tmp_path / "manual-bad.csv"
    bad.write_text("Email\nx@example.com\n")
    run = subprocess.run([sys.executable, "-m", "streamapp.cli", "import", str(bad), "--import", "crm"],
                         env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 1
    assert "rejected" in run.stdout and "identity column 'CustomerNo' not found" in run.stdout
    assert (import_worker.data_dir / "rejected" / "manual-bad.csv.report.json").exists()
