"""Reading what uploaders control without ever following it.

Everything under the drop folder is written by upstream systems, so any name
there may be swapped for a symbolic link, a hard link or a folder between the
moment streamapp looks and the moment it acts. Two rules close that gap:

* watched folders are reached from the drop folder one component at a time
  with `O_NOFOLLOW`, listed, and renamed from *by descriptor*, so a folder
  replaced by a link to somewhere else is refused instead of drained;
* a claimed file is opened once with `O_NOFOLLOW`, `fstat`-ed to be a regular
  file with exactly one name, and read through that descriptor only. A
  symbolic link (to a file outside, or swapped in after the scan) is never
  followed, and a hard link, which can give an uploader the bytes of a file it
  cannot read, is refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from streamapp.tabular.csvreader import FileRejected

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: opening a FIFO must not hang the job; O_NOCTTY: a terminal never becomes ours.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PROC_FD = Path("/proc/self/fd")


class NotAFolder(Exception):
    """A watched folder is missing, or is not a real folder (a link planted in the drop area)."""


class FileRefused(FileRejected):
    """What was claimed is not a plain file of its own: it is never read and never kept."""


class ClaimGone(Exception):
    """The claim holds no file (a redo after the work was finished, or a crash right after claiming)."""


@dataclass(frozen=True)
class WatchedDir:
    """An open watched folder: `fd` is what is listed and renamed from, `path` is for messages."""

    fd: int
    path: Path


def _components(relative: str) -> list[str]:
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("/", ".", "..") for part in parts):
        raise NotAFolder(f"{relative!r} is not a plain relative folder name")
    return list(parts)


@contextmanager
def open_watched(root: Path, relative: str, create: bool = False) -> Iterator[WatchedDir]:
    """`root/relative` as a descriptor, reached without following a link below `root`.

    `root` (the configured drop folder) may itself be a link, e.g. to a shared mount.
    With `create`, missing folders are made (mode 0o770) on the way.
    """
    parts = _components(relative)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            child = _step(fd, part, create, root / relative)
            os.close(fd)
            fd = child
        yield WatchedDir(fd, root / relative)
    finally:
        os.close(fd)


def _step(parent: int, name: str, create: bool, full: Path) -> int:
    """Open folder `name` in `parent`; NotAFolder when it is missing, a link or not a folder."""
    if create:
        with suppress(FileExistsError):
            os.mkdir(name, 0o770, dir_fd=parent)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise NotAFolder(f"{str(full)!r} does not exist") from None
    except OSError as exc:  # ELOOP (a link), ENOTDIR (a file), EACCES
        raise NotAFolder(f"{str(full)!r} is not a folder reachable without following a link ({exc.strerror})") from None


def scan(folder: WatchedDir) -> list[tuple[str, os.stat_result]]:
    """Each entry of the folder that is not a folder, with its own (never followed) status.

    Listed whole first: entries are renamed away while the caller goes through them.
    """
    found = []
    with os.scandir(folder.fd) as entries:
        for entry in entries:
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(status.st_mode):
                found.append((entry.name, status))
    return found


def refusal(status: os.stat_result) -> str | None:
    """Why a claimed entry is not imported, or None for a regular file with one name."""
    mode = status.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link: refused, links in drop folders are never followed"
    if stat.S_ISDIR(mode):
        return "a folder, not a file: refused"
    if not stat.S_ISREG(mode):
        return "not a regular file (a device, FIFO or socket): refused"
    if status.st_nlink != 1:
        return (
            f"a hard link ({status.st_nlink} names share this file): refused, "
            "a link can import a file its uploader may not read"
        )
    return None


@dataclass(frozen=True)
class ClaimedFile:
    """A claimed file opened once: every read goes through `path`, which names this very inode."""

    fd: int
    path: Path
    signature: tuple[int, int]  # size and mtime when opened

    def changed(self) -> bool:
        """Whether someone wrote to the file since it was opened (an uploader that kept it open)."""
        now = os.fstat(self.fd)
        return (now.st_size, now.st_mtime_ns) != self.signature


@contextmanager
def open_claimed(path: Path) -> Iterator[ClaimedFile]:
    """Open a claimed file for import; FileRefused for anything but a plain file of its own.

    The name is streamapp's own (in the claims folder), yet what was renamed there came from
    the drop folder: it is checked with `lstat`, opened with `O_NOFOLLOW`, and the descriptor
    is checked again to be that same inode, a regular file with one link.
    """
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise ClaimGone from None
    _refuse(named)
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError as exc:  # ELOOP: a link after all
        raise FileRefused(f"cannot be opened without following a link ({exc.strerror}): refused") from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
            raise FileRefused("the file was replaced while it was being opened: refused")
        _refuse(opened)
        yield ClaimedFile(fd, _reading_path(fd, path), (opened.st_size, opened.st_mtime_ns))
    finally:
        os.close(fd)


def _refuse(status: os.stat_result) -> None:
    reason = refusal(status)
    if reason is not None:
        raise FileRefused(reason)


def _reading_path(fd: int, path: Path) -> Path:
    """A name readers can open that is the descriptor's inode, whatever happens to `path`.

    On Linux, /proc/self/fd/N reopens the open file itself (a new offset, no path lookup).
    Elsewhere the claimed name is used: it is in streamapp's own claims folder, which
    uploaders cannot reach, and it was just checked to be this inode.
    """
    proc = _PROC_FD / str(fd)
    return proc if _PROC_FD.is_dir() else path
