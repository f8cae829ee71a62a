"""Drop-folder bookkeeping: which files to take, claiming them, where they end.

Layout under `<data_dir>/drop/` (the folder upstream systems write to, and
the one several workers share when they share a mount):

    <watch>/                      one folder per import schema
    .streamapp/inflight/<worker>/ files claimed by one worker, with claim.json
    .streamapp/seen/<sha256>      one marker per file content ever imported

A file is claimed by an atomic rename into the claiming worker's inflight
folder: on one file system exactly one rename succeeds, so with several
workers on a shared mount exactly one imports each file, without a leader or
a lock server. A worker that dies leaves its claims in its own inflight
folder and redoes them when it starts again. File names from drop folders
are never used as paths: the stored name is sanitized and prefixed with a
claim id.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

IGNORED_SUFFIXES = (".tmp", ".part", ".report.json")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_candidate(name: str, pattern: str) -> bool:
    """Complete-looking files that match the import's pattern (case-insensitive)."""
    if name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES):
        return False
    return fnmatch.fnmatch(name.lower(), pattern.lower())


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder or surprise a shell."""
    cleaned = _UNSAFE.sub("_", os.path.basename(name)).strip("._") or "file"
    return cleaned[:150]


def worker_tag(advertised_url: str) -> str:
    """A stable folder name per worker: the same after a restart, distinct between workers."""
    return hashlib.sha256(advertised_url.encode()).hexdigest()[:12]


class Claim(msgspec.Struct, kw_only=True):
    """What a worker took, written next to the claimed file so a restart can redo it."""

    id: str
    import_name: str
    original_name: str
    claimed_at: str  # UTC ISO: the `at` of every command, so a redo writes the same rows
    path: str


@dataclass(frozen=True)
class DropLayout:
    data_dir: Path
    worker: str

    @property
    def drop(self) -> Path:
        return self.data_dir / "drop"

    @property
    def inflight(self) -> Path:
        return self.drop / ".streamapp" / "inflight" / self.worker

    @property
    def seen(self) -> Path:
        return self.drop / ".streamapp" / "seen"

    @property
    def processed(self) -> Path:
        return self.data_dir / "processed"

    @property
    def rejected(self) -> Path:
        return self.data_dir / "rejected"

    def folder(self, watch: str) -> Path:
        return self.drop / watch

    def create(self, watches: list[str]) -> None:
        for folder in (self.inflight, self.seen, self.processed, self.rejected, *map(self.folder, watches)):
            folder.mkdir(parents=True, exist_ok=True)

    def claim(self, path: Path, import_name: str, now: str, copy: bool = False) -> Claim | None:
        """Move (or, for `streamapp import`, copy) the file into our inflight folder.

        None if another worker took it first.
        """
        claim_id = uuid.uuid4().hex[:12]
        target = self.inflight / f"{claim_id}__{safe_name(path.name)}"
        try:
            if copy:
                shutil.copyfile(path, target)
            else:
                os.rename(path, target)
        except FileNotFoundError:
            return None
        claim = Claim(id=claim_id, import_name=import_name, original_name=path.name, claimed_at=now, path=str(target))
        write_atomic(self.inflight / f"{claim_id}.claim.json", msgspec.json.encode(claim))
        return claim

    def unfinished_claims(self) -> list[Claim]:
        """Claims this worker made and did not finish (it was killed)."""
        claims = []
        for marker in sorted(self.inflight.glob("*.claim.json")):
            try:
                claims.append(msgspec.json.decode(marker.read_bytes(), type=Claim))
            except (OSError, msgspec.DecodeError):
                continue
        return claims

    def release(self, claim: Claim) -> None:
        """The claim is done: nothing of it stays in the inflight folder."""
        (self.inflight / f"{claim.id}.claim.json").unlink(missing_ok=True)
        (self.inflight / f"{claim.id}.lock").unlink(missing_ok=True)

    def mark_seen(self, digest: str, claim: Claim) -> str | None:
        """Record this content; return the earlier claim's file name if it was seen before."""
        marker = self.seen / digest
        try:
            with marker.open("x", encoding="utf-8") as out:
                json.dump({"claim": claim.id, "file": claim.original_name}, out)
            return None
        except FileExistsError:
            try:
                earlier = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return "an earlier file"
            return None if earlier.get("claim") == claim.id else str(earlier.get("file", "an earlier file"))

    def unmark_seen(self, digest: str) -> None:
        """Forget a content that was rejected, so a corrected drop is not a 'duplicate'."""
        (self.seen / digest).unlink(missing_ok=True)

    def finish(self, claim: Claim, folder: Path, report: bytes) -> Path:
        """Stage the report in the inflight folder, then move file and report out.

        Every step can be redone after a crash (see `resume_finish`), so each
        file ends with exactly one report.
        """
        name = safe_name(claim.original_name)
        target = folder / name
        if target.exists() or (folder / f"{name}.report.json").exists():
            target = folder / f"{Path(name).stem}.{claim.id}{Path(name).suffix}"
        write_atomic(self.inflight / f"{claim.id}.report.json", report)
        write_atomic(self.inflight / f"{claim.id}.target", str(target).encode())
        return self.resume_finish(claim)  # type: ignore[return-value]

    def resume_finish(self, claim: Claim) -> Path | None:
        """Complete a finish that was staged; None when nothing was staged."""
        staged = self.inflight / f"{claim.id}.report.json"
        target_file = self.inflight / f"{claim.id}.target"
        if not target_file.exists():
            return None
        target = Path(target_file.read_text())
        if Path(claim.path).exists():
            os.replace(claim.path, target)
        if staged.exists():
            os.replace(staged, target.with_name(f"{target.name}.report.json"))
        target_file.unlink(missing_ok=True)
        self.release(claim)
        return target


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SettleTracker:
    """A file is ready once its size and mtime stayed the same for `settle` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seen: dict[Path, tuple[tuple[int, int], float]] = {}

    def ready(self, path: Path, settle: float) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.seen.pop(path, None)
            return False
        signature = (stat.st_size, stat.st_mtime_ns)
        now = self.clock()
        previous = self.seen.get(path)
        if previous is None or previous[0] != signature:
            self.seen[path] = (signature, now)
            return False
        return now - previous[1] >= settle

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)

    def waiting(self) -> int:
        return len(self.seen)


def scan(folder: Path, pattern: str) -> Iterator[Path]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_file(follow_symlinks=False) and is_candidate(entry.name, pattern):
            yield Path(entry.path)
