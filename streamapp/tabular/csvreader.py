"""Reading delimited text files: strict decoding, exact line numbers, streamed.

Tokenizing uses the standard library's C `csv` reader rather than polars:
the report must give each rejected row's physical line (rows may span lines
inside quotes) and reject rows with too many or too few fields, and polars
reports neither (it pads or truncates). It reads 1,000,000 ten-column rows in
about 0.6 s; typed conversion and validation of each batch is then done with
polars (see rows.py).

The reader is fed bounded lines (`_Lines`): a line, or the lines of one row, of more than
MAX_LINE characters is a rejected row and is never held whole: the csv module would otherwise
build one field per delimiter of a 1 GiB line of `;` (8 bytes each) before anything could refuse it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from streamapp.core.validation import MAX_LINE
from streamapp.settings import CODECS

READ_CHUNK = 1 << 20
#: A single field may be this long; longer is a rejected row, not a crash.
MAX_FIELD = 1 << 20
BATCH_ROWS = 20_000

csv.field_size_limit(MAX_FIELD)


class FileRejected(Exception):
    """The file cannot be imported at all; nothing from it is applied."""


@dataclass
class Batch:
    """Rows with the right number of fields, and the rows rejected for their shape."""

    lines: list[int] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


class RowTooLong(Exception):
    """A line, or the lines of one row, longer than the limit; its rest was skipped."""


class _Lines:
    """The physical lines of a text stream, for the csv reader, each read with a bounded readline.

    `number` counts the lines read (skipped rests included); `row` the characters of the row being
    read, which the caller resets whenever the reader returns a row. Past `limit`, the rest of the
    line is skipped (in bounded reads) and RowTooLong raised: the csv reader starts its next row
    afresh at the next line.
    """

    __slots__ = ("limit", "number", "readline", "row", "stream")

    def __init__(self, stream: TextIO, limit: int) -> None:
        self.stream = stream
        self.readline = stream.readline
        self.limit = limit
        self.number = 0
        self.row = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.readline(self.limit + 1)
        if not line:
            raise StopIteration
        self.number += 1
        self.row += len(line)
        if self.row > self.limit:
            self._too_long(line)
        return line

    def _too_long(self, line: str) -> None:
        whole = len(line) <= self.limit  # the line fits: the row it continues does not
        while not line.endswith("\n") and (line := self.stream.readline(self.limit)):
            pass
        self.row = 0
        raise RowTooLong(
            f"a row longer than {self.limit:,} characters (an unclosed quote?)"
            if whole
            else f"a line longer than {self.limit:,} characters"
        )


def precheck(path: Path, encoding: str) -> str:
    """Decode the whole file strictly before anything is applied; return its SHA-256."""
    decoder = codecs.getincrementaldecoder(CODECS[encoding])(errors="strict")
    digest = hashlib.sha256()
    offset = lines = 0
    with path.open("rb") as source:
        while chunk := source.read(READ_CHUNK):
            digest.update(chunk)
            nul = chunk.find(b"\x00")
            if nul >= 0:
                where = _place(chunk, nul, offset, lines)
                raise FileRejected(f"{where}: NUL byte, this is not a text file")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                where = _place(chunk, exc.start, offset, lines)
                raise FileRejected(f"{where}: not valid {encoding} ({exc.reason})") from None
            offset += len(chunk)
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise FileRejected(f"byte {offset}: not valid {encoding} (the file ends inside a character)") from None
    if offset == 0:
        raise FileRejected("the file is empty")
    return digest.hexdigest()


def _place(chunk: bytes, index: int, offset: int, lines: int) -> str:
    """'line L, byte B' of a position in the current chunk (B counts from 0 in the file)."""
    line = lines + chunk.count(b"\n", 0, index) + 1
    return f"line {line}, byte {offset + index}"


class DelimitedFile:
    """A streamed CSV/TXT file: header (optional) then batches of rows.

    `max_columns` (batch bodies and send files: MAX_COLUMNS) refuses a wider header whole.
    """

    def __init__(
        self,
        path: Path,
        encoding: str,
        delimiter: str,
        header: bool,
        ragged_ok: bool = False,
        *,
        max_columns: int | None = None,
        max_line: int = MAX_LINE,
    ) -> None:
        # Universal newlines: LF, CRLF and CR alone all end a line.
        self.raw = path.open("rb")
        self.stream = io.TextIOWrapper(self.raw, encoding=CODECS[encoding], newline=None)
        self.lines = _Lines(self.stream, max_line)
        self.reader = csv.reader(self.lines, delimiter=delimiter)
        self.has_header = header
        self.ragged_ok = ragged_ok
        self.max_columns = max_columns
        self.header: list[str] | None = None
        self.width: int | None = None
        self.rows_read = 0
        if header:
            self.header = self._read_header()
            self.width = len(self.header)

    def _read_header(self) -> list[str]:
        try:
            row = next(self.reader)
        except StopIteration:
            raise FileRejected("the file has no header line") from None
        except (csv.Error, RowTooLong) as exc:
            raise FileRejected(f"line 1 (header): {exc}") from None
        if self.max_columns is not None and len(row) > self.max_columns:
            raise FileRejected(f"line 1 (header): {len(row):,} columns, more than the {self.max_columns} allowed")
        names = [name.strip() for name in row]
        if not any(names):
            raise FileRejected("line 1: the header line is empty")
        duplicates = sorted({n for n in names if names.count(n) > 1 and n})
        if duplicates:
            raise FileRejected(f"line 1 (header): duplicate column(s) {', '.join(map(repr, duplicates))}")
        return names

    def batches(self, size: int = BATCH_ROWS) -> Iterator[Batch]:
        batch = Batch()
        lines = self.lines
        while True:
            start = lines.number + 1
            try:
                row = next(self.reader)
            except StopIteration:
                break
            except (csv.Error, RowTooLong) as exc:
                self.rows_read += 1
                batch.rejected.append((start, f"unreadable row: {exc}"))
                lines.row = 0
                continue
            lines.row = 0
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            self.rows_read += 1
            self._take(batch, start, row)
            if len(batch.rows) + len(batch.rejected) >= size:
                yield batch
                batch = Batch()
        if batch.rows or batch.rejected:
            yield batch

    def _take(self, batch: Batch, line: int, row: list[str]) -> None:
        if self.width is None:
            self.width = len(row)
        if len(row) != self.width and not self.ragged_ok:
            batch.rejected.append((line, f"expected {self.width} fields, found {len(row)}"))
            return
        batch.lines.append(line)
        batch.rows.append(row)

    def position(self) -> int:
        """Bytes read so far (for progress)."""
        return self.raw.tell()

    def close(self) -> None:
        self.stream.close()
