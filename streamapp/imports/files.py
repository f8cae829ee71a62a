"""Drop-folder bookkeeping: which files to take, claiming them, where they end.

Two places, kept apart on purpose (SPEC §13):

    <drop_dir>/<watch>/                       upstream systems write here; only the bytes
                                              of the files to import are trusted
    <claims_dir>/inflight/<worker>/<claim>/   claim.json, data (the claimed file), lock,
                                              and report.json + finish.json while finishing
    <claims_dir>/seen/<sha256>                one marker per file content ever imported
    <claims_dir>/workers/<worker>.lock        held (flock) by the running worker

`drop_dir` (default `<data_dir>/drop`) may be one folder shared by every worker;
`claims_dir` (default `<drop_dir>/../.streamapp-claims`) is outside it, so nobody who
can write into the drop folder can write a claim, and on the same file system, so a
claim is one atomic rename: with several workers exactly one rename of a file
succeeds, without a leader or a lock server.

Nothing read back from the claims folder says *where* to read or move: a claim's
file is always `<claims_dir>/inflight/<worker>/<claim id>/data`, its id is the
folder's name (checked to be 12 hex digits), its import must be a configured one,
and where it ends is `processed/` or `rejected/` plus a name that `safe_name`
leaves unchanged. A worker that dies leaves its claims in its folder; its restart
redoes them, and while it is down another worker adopts them (see `adopt_orphans`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Literal

import msgspec

from streamapp.core import clock
from streamapp.imports.nofollow import ClaimedFile, NotAFolder, WatchedDir, open_claimed, open_watched
from streamapp.settings import Settings

log = logging.getLogger(__name__)

IGNORED_SUFFIXES = (".tmp", ".part", ".report.json")
CLAIMS_FOLDER = ".streamapp-claims"
#: The files of one claim's folder; nothing else is ever read or written there.
CLAIM_FILE, DATA_FILE, LOCK_FILE, STAGED_REPORT, FINISH_FILE = (
    "claim.json", "data", "lock", "report.json", "finish.json",
)  # fmt: skip
Outcome = Literal["processed", "rejected"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HEX12 = re.compile(r"[0-9a-f]{12}")  # claim ids and worker tags
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # any inflight folder ("cli" too)
_DIGEST = re.compile(r"[0-9a-f]{64}")
_MAX_RECORD = 1 << 16


class DropSetupError(Exception):
    """The drop and claims folders cannot work as configured; the worker does not start."""


def is_candidate(name: str, pattern: str) -> bool:
    """Complete-looking files that match the import's pattern (case-insensitive)."""
    if name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES):
        return False
    return fnmatch.fnmatch(name.lower(), pattern.lower())


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder or surprise a shell."""
    cleaned = _UNSAFE.sub("_", os.path.basename(name)).strip("._") or "file"
    return cleaned[:150]


def display_name(name: str) -> str:
    """A file name as text that can be stored as JSON: undecodable bytes become `\\xNN`.

    Names from the OS carry such bytes as lone surrogates, which JSON encoders refuse;
    one such name must not stop the watcher.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def worker_tag(advertised_url: str) -> str:
    """A stable folder name per worker: the same after a restart, distinct between workers."""
    return hashlib.sha256(advertised_url.encode()).hexdigest()[:12]


# -- where: the settings adapter ------------------------------------------------------------------


@dataclass(frozen=True)
class DropPaths:
    drop: Path
    claims: Path


def default_claims_dir(drop: Path) -> Path:
    """`<drop>/../.streamapp-claims`, with `..` taken as the kernel does (after resolving links)."""
    return (drop / "..").resolve() / CLAIMS_FOLDER


def drop_paths(settings: Settings, drop_dir: Path | None = None, claims_dir: Path | None = None) -> DropPaths:
    """`[service] drop_dir` and `claims_dir` with their defaults (explicit arguments win, for tests).

    Read with getattr so this works before and after settings.py has the two fields.
    """
    configured_drop: Path | None = getattr(settings.service, "drop_dir", None)
    configured_claims: Path | None = getattr(settings.service, "claims_dir", None)
    drop = Path(drop_dir or configured_drop or settings.service.data_dir / "drop")
    return DropPaths(drop, Path(claims_dir or configured_claims or default_claims_dir(drop)))


def drop_path_problems(paths: DropPaths) -> list[str]:
    """What is wrong with the two folders: claims inside the upload area, or on another file system."""
    drop, claims = paths.drop.resolve(), paths.claims.resolve()
    problems = []
    if claims.is_relative_to(drop):
        problems.append(f"claims_dir {claims} is inside drop_dir {drop}: uploaders could write claims")
    if _device(drop) != _device(claims):
        problems.append(f"claims_dir {claims} is not on the file system of drop_dir {drop} (a claim is a rename)")
    return problems


def _device(path: Path) -> int:
    """st_dev of the path, or of its nearest existing parent (before the folders are made)."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(FileNotFoundError):
            return os.stat(candidate).st_dev
    return -1


def probe_rename(paths: DropPaths) -> None:
    """Rename a probe file from the drop folder into the claims folder, as a claim will.

    Equal st_dev is not enough: two bind mounts of one file system share it, and a
    rename between them still fails (EXDEV).
    """
    probe = paths.drop / f".streamapp-probe-{uuid.uuid4().hex[:12]}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    target = paths.claims / probe.name
    try:
        os.rename(probe, target)
    except OSError as exc:
        probe.unlink(missing_ok=True)
        raise DropSetupError(
            f"cannot rename from drop_dir {paths.drop} into claims_dir {paths.claims} ({exc.strerror}): "
            "they must be one file system and one mount"
        ) from None
    target.unlink(missing_ok=True)


# -- claims ---------------------------------------------------------------------------------------


class Claim(msgspec.Struct, kw_only=True):
    """What a worker took, and when: a restart (or another worker) redoes it from this."""

    id: str
    import_name: str
    original_name: str  # shown in reports and logs (escaped there); a path only through safe_name
    claimed_at: str  # UTC ISO: the `at` of every command, so a redo writes the same rows
    #: The claimed file: always derived from the claims folder and the id, never read from a record.
    path: str = ""


class _ClaimRecord(msgspec.Struct, kw_only=True):
    """claim.json; unknown fields (a `path` someone wrote) are ignored."""

    import_name: str
    original_name: str
    claimed_at: str


class _Finish(msgspec.Struct, kw_only=True):
    """finish.json: where the file and its staged report go; `keep_file` false for refused entries."""

    folder: Outcome
    name: str
    keep_file: bool = True


@dataclass(frozen=True)
class DropLayout:
    """The folders of one worker (`worker`: its tag, or "cli") on a drop folder and claims folder."""

    data_dir: Path
    worker: str
    drop_dir: Path | None = None  # default <data_dir>/drop
    claims_dir: Path | None = None  # default <drop>/../.streamapp-claims

    def __post_init__(self) -> None:
        if not _FOLDER_NAME.fullmatch(self.worker):
            raise ValueError(f"not a worker folder name: {self.worker!r}")

    @classmethod
    def of(cls, settings: Settings, worker: str | None = None) -> DropLayout:
        """The configured layout; `worker` defaults to this worker's tag."""
        paths = drop_paths(settings)
        tag = worker or worker_tag(settings.service.advertised_url)
        return cls(settings.service.data_dir, tag, paths.drop, paths.claims)

    @cached_property
    def paths(self) -> DropPaths:
        drop = self.drop_dir or self.data_dir / "drop"
        return DropPaths(drop, self.claims_dir or default_claims_dir(drop))

    @property
    def drop(self) -> Path:
        return self.paths.drop

    @property
    def claims(self) -> Path:
        return self.paths.claims

    @property
    def inflight(self) -> Path:
        return self.claims / "inflight" / self.worker

    @property
    def seen(self) -> Path:
        return self.claims / "seen"

    @property
    def workers(self) -> Path:
        return self.claims / "workers"

    @property
    def processed(self) -> Path:
        return self.data_dir / "processed"

    @property
    def rejected(self) -> Path:
        return self.data_dir / "rejected"

    def folder(self, watch: str) -> Path:
        return self.drop / watch

    def claim_dir(self, claim_id: str) -> Path:
        if not _HEX12.fullmatch(claim_id):
            raise ValueError(f"not a claim id: {claim_id!r}")
        return self.inflight / claim_id

    def data_path(self, claim: Claim) -> Path:
        return self.claim_dir(claim.id) / DATA_FILE

    def create(self, watches: list[str]) -> list[str]:
        """Make the folders; return the watch folders that cannot be made (a link planted there)."""
        for folder in (self.inflight, self.seen, self.workers):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.processed, self.rejected, self.drop):
            folder.mkdir(parents=True, exist_ok=True)
        refused = []
        for watch in watches:
            try:
                with open_watched(self.drop, watch, create=True):
                    pass
            except NotAFolder as exc:
                log.error("watch folder %r cannot be used: %s", watch, exc)
                refused.append(watch)
        return refused

    def prepare(self, watches: list[str]) -> list[str]:
        """`create` for a watcher, after checking the claims folder is safe and atomic to claim into.

        DropSetupError otherwise; returns the watch folders that cannot be used.
        """
        problems = drop_path_problems(self.paths)
        if problems:
            raise DropSetupError("; ".join(problems))
        refused = self.create(watches)
        probe_rename(self.paths)
        return refused

    # -- taking a file --------------------------------------------------------------------------

    def claim(self, path: Path, import_name: str, now: str, copy: bool = False) -> Claim | None:
        """Move (or, for `streamapp import`, copy) a file named by a trusted caller into a claim.

        None if another worker took it first.
        """
        if copy:
            return self._claim(path.name, import_name, now, lambda target: shutil.copyfile(path, target))
        return self._claim(path.name, import_name, now, lambda target: os.rename(path, target))

    def claim_entry(
        self, folder: WatchedDir, name: str, import_name: str, now: str, settled: os.stat_result | None = None
    ) -> Claim | None:
        """Claim `name` of an open watched folder: renamed by descriptor, whatever it is.

        A link or a folder swapped in after the scan is renamed as itself (rename never
        follows) and refused when the job opens it. `settled`: the status that settled;
        None is returned when the name is another file by now (another worker took the
        settled one and a new upload of the same name began).
        """
        if settled is not None and not _same_file(folder, name, settled):
            return None
        return self._claim(name, import_name, now, lambda target: os.rename(name, target, src_dir_fd=folder.fd))

    def _claim(self, name: str, import_name: str, now: str, move: Callable[[Path], object]) -> Claim | None:
        """The claim record is written before the rename, so a claimed file always has one."""
        claim_id = uuid.uuid4().hex[:12]
        folder = self.claim_dir(claim_id)
        folder.mkdir(mode=0o700, parents=True)
        record = _ClaimRecord(import_name=import_name, original_name=display_name(name), claimed_at=now)
        try:
            write_atomic(folder / CLAIM_FILE, msgspec.json.encode(record))
            move(folder / DATA_FILE)
        except FileNotFoundError:
            _remove(folder)
            return None
        except BaseException:
            _remove(folder)
            raise
        return self._claim_of(claim_id, record)

    def _claim_of(self, claim_id: str, record: _ClaimRecord) -> Claim:
        claim = Claim(id=claim_id, import_name=record.import_name, original_name=record.original_name,
                      claimed_at=record.claimed_at)  # fmt: skip
        claim.path = str(self.data_path(claim))
        return claim

    def load_claim(self, claim_id: str, imports: Collection[str]) -> Claim | None:
        """The claim of our folder `claim_id`; None when it is gone, unreadable or for no configured import."""
        if not _HEX12.fullmatch(claim_id):
            return None
        try:
            with (self.inflight / claim_id / CLAIM_FILE).open("rb") as source:
                record = msgspec.json.decode(source.read(_MAX_RECORD), type=_ClaimRecord)
            clock.parse_time(record.claimed_at)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, ValueError) as exc:
            log.error("claim %s cannot be read (%s); left for an operator", claim_id, exc)
            return None
        if record.import_name not in imports:
            log.error("claim %s is for import %r, which is not configured; left for an operator",
                      claim_id, record.import_name)  # fmt: skip
            return None
        return self._claim_of(claim_id, record)

    def unfinished_claims(self, imports: Collection[str]) -> list[Claim]:
        """Claims in our folder that were not finished (a previous run was killed), oldest first."""
        claims = [c for name in _names(self.inflight) if (c := self.load_claim(name, imports))]
        return sorted(claims, key=lambda c: (c.claimed_at, c.id))

    def release(self, claim: Claim) -> None:
        """The claim is done: its folder goes."""
        _remove(self.claim_dir(claim.id))

    def open_claimed(self, claim: Claim) -> contextlib.AbstractContextManager[ClaimedFile]:
        """The claimed file, opened once without following links (see nofollow.open_claimed)."""
        return open_claimed(self.data_path(claim))

    # -- several workers ------------------------------------------------------------------------

    def hold_worker_lock(self, wait: float = 10.0) -> IO[bytes]:
        """Lock our folder for as long as this worker runs (the kernel releases it when we die).

        Other workers adopt the claims of a folder whose lock is free. Waiting a little
        lets an adoption under way finish; a lock still held after that is a second
        running worker with the same advertised URL.
        """
        self.workers.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = (self.workers / f"{self.worker}.lock").open("ab")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise DropSetupError(f"another running worker uses claims folder {self.inflight}") from None
                time.sleep(0.1)

    def adopt_orphans(self, imports: Collection[str]) -> list[Claim]:
        """Move the claims of workers that are not running into our folder, to redo them.

        A worker's folder lock is free only when it is not running; a claim's lock is held
        while a job (maybe an orphan of the dead worker) works on it, and such a claim is
        left for a later round. Claim ids stay the same, so the redo writes the same rows.
        """
        adopted: list[Claim] = []
        for tag in _names(self.claims / "inflight"):
            if tag == self.worker or not _HEX12.fullmatch(tag):
                continue
            with try_lock(self.workers / f"{tag}.lock") as gone:
                if gone:
                    adopted += self._adopt_from(tag, imports)
        return adopted

    def _adopt_from(self, tag: str, imports: Collection[str]) -> list[Claim]:
        source = self.claims / "inflight" / tag
        claims = []
        for claim_id in filter(_HEX12.fullmatch, _names(source)):
            with try_lock(source / claim_id / LOCK_FILE) as free:
                if not free:
                    continue
                try:
                    os.rename(source / claim_id, self.inflight / claim_id)
                except OSError:
                    continue
            log.info("adopted claim %s of worker %s, which is not running", claim_id, tag)
            if claim := self.load_claim(claim_id, imports):
                claims.append(claim)
        with contextlib.suppress(OSError):
            source.rmdir()
        return claims

    # -- duplicates -----------------------------------------------------------------------------

    def mark_seen(self, digest: str, claim: Claim) -> str | None:
        """Record this content; return the earlier claim's file name if it was seen before."""
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a content digest: {digest!r}")
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
            if not isinstance(earlier, dict):
                return "an earlier file"
            return None if earlier.get("claim") == claim.id else str(earlier.get("file", "an earlier file"))

    def unmark_seen(self, digest: str) -> None:
        """Forget a content that was rejected, so a corrected drop is not a 'duplicate'."""
        if _DIGEST.fullmatch(digest):
            (self.seen / digest).unlink(missing_ok=True)

    # -- finishing ------------------------------------------------------------------------------

    def finish(self, claim: Claim, outcome: Outcome, report: bytes, keep_file: bool = True) -> Path:
        """Stage the report in the claim's folder, then move file and report out.

        Every step can be redone after a crash (see `resume_finish`), so each file ends
        with exactly one report. `keep_file` false: the entry was refused (a link, ...):
        it is removed, never moved where people read files.
        """
        name = self._free_name(outcome, claim)
        folder = self.claim_dir(claim.id)
        write_atomic(folder / STAGED_REPORT, report)
        finish = _Finish(folder=outcome, name=name, keep_file=keep_file)
        write_atomic(folder / FINISH_FILE, msgspec.json.encode(finish))
        finished = self.resume_finish(claim)
        assert finished is not None
        return finished

    def _free_name(self, outcome: Outcome, claim: Claim) -> str:
        name = safe_name(claim.original_name)
        folder = self.data_dir / outcome
        if (folder / name).exists() or (folder / f"{name}.report.json").exists():
            stem, suffix = os.path.splitext(name)
            name = f"{stem}.{claim.id}{suffix}"
        return name

    def resume_finish(self, claim: Claim) -> Path | None:
        """Complete a finish that was staged; None when nothing was staged."""
        folder = self.claim_dir(claim.id)
        finish = _read_finish(folder)
        if finish is None:
            return None
        target = self.data_dir / finish.folder / finish.name
        if finish.keep_file:
            move_file(folder / DATA_FILE, target)
        else:
            _remove(folder / DATA_FILE)
        move_file(folder / STAGED_REPORT, target.with_name(f"{target.name}.report.json"))
        self.release(claim)
        return target

    def staged_report(self, target: Path) -> bytes | None:
        """The report a finished claim left beside `target` (for the metrics of a redo)."""
        try:
            return target.with_name(f"{target.name}.report.json").read_bytes()
        except OSError:
            return None


def _same_file(folder: WatchedDir, name: str, settled: os.stat_result) -> bool:
    try:
        now = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_size, now.st_mtime_ns) == (settled.st_ino, settled.st_size, settled.st_mtime_ns)


def _read_finish(folder: Path) -> _Finish | None:
    """finish.json, checked: a name that is not its own safe form is discarded, and the import redone."""
    try:
        finish = msgspec.json.decode((folder / FINISH_FILE).read_bytes(), type=_Finish)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        finish = None
        log.error("discarding the finish record of %s (%s): the file is imported again", folder.name, exc)
    if finish is not None and (finish.name != safe_name(finish.name) or finish.name.endswith(IGNORED_SUFFIXES)):
        log.error("discarding the finish record of %s (name %r): the file is imported again", folder.name, finish.name)
        finish = None
    if finish is None:
        for name in (FINISH_FILE, STAGED_REPORT):
            (folder / name).unlink(missing_ok=True)
    return finish


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """An exclusive flock on `path` (made if missing) if nobody holds it; False otherwise.

    The kernel releases it when its holder dies, which is what makes it a liveness test.
    """
    try:
        handle = path.open("ab")
    except OSError:
        yield False
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def move_file(source: Path, target: Path) -> None:
    """Rename `source` over `target`; copy then unlink across file systems. Missing source: done already."""
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:6]}.tmp")
        shutil.copyfile(source, tmp, follow_symlinks=False)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
        source.unlink()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _remove(path: Path) -> None:
    """Remove a file, link or folder (never following a link; shutil.rmtree does not)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


# -- settling -------------------------------------------------------------------------------------


class SettleTracker:
    """A file is ready once its size, mtime and inode stayed the same for `settle` seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seen: dict[Path, tuple[tuple[int, int, int], float]] = {}

    def ready(self, path: Path, settle: float, status: os.stat_result | None = None) -> bool:
        """`status`: the entry's own (lstat) status when the caller has it; else it is read here."""
        if status is None:
            try:
                status = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                self.seen.pop(path, None)
                return False
        signature = (status.st_size, status.st_mtime_ns, status.st_ino)
        now = self.clock()
        previous = self.seen.get(path)
        if previous is None or previous[0] != signature:
            self.seen[path] = (signature, now)
            return False
        return now - previous[1] >= settle

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)

    def retain(self, present: Collection[Path]) -> None:
        """Forget files that are gone (taken by another worker, deleted)."""
        for path in [p for p in self.seen if p not in present]:
            del self.seen[path]

    def waiting(self) -> int:
        return len(self.seen)
