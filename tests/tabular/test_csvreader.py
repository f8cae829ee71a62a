"""Reading delimited files: encodings, delimiters, line ends, quoting, exact line numbers."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from streamapp.tabular.csvreader import DelimitedFile, FileRejected, precheck


def read(
    path: Path, encoding: str = "utf-8", delimiter: str = ";", header: bool = True
) -> tuple[list[str] | None, list[tuple[int, list[str]]], list[tuple[int, str]]]:
    source = DelimitedFile(path, encoding, delimiter, header)
    rows: list[tuple[int, list[str]]] = []
    rejected: list[tuple[int, str]] = []
    for batch in source.batches(size=3):
        rows += list(zip(batch.lines, batch.rows, strict=True))
        rejected += batch.rejected
    source.close()
    return source.header, rows, rejected


def write(tmp_path: Path, data: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_line_ends_and_quoted_fields_keep_physical_line_numbers(tmp_path: Path, newline: bytes) -> None:
    lines = [b"Id;Name;Note", b'1;"Ann; the first";"say ""hi"""', b'2;Bo;"two', b'lines"', b"3;Cy;plain"]
    header, rows, rejected = read(write(tmp_path, newline.join(lines) + newline))
    assert header == ["Id", "Name", "Note"]
    assert rows == [
        (2, ["1", "Ann; the first", 'say "hi"']),
        (3, ["2", "Bo", "two\nlines"]),
        (5, ["3", "Cy", "plain"]),
    ]
    assert rejected == []


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    header, rows, _ = read(write(tmp_path, "\ufeffId;Namn\n1;Åsa\n".encode()))
    assert header == ["Id", "Namn"] and rows == [(2, ["1", "Åsa"])]


@pytest.mark.parametrize("encoding", ["windows-1252", "iso-8859-1"])
def test_single_byte_encodings(tmp_path: Path, encoding: str) -> None:
    codec = {"windows-1252": "cp1252", "iso-8859-1": "latin-1"}[encoding]
    path = write(tmp_path, "Id;Namn\n1;Åsa Öberg\n".encode(codec))
    precheck(path, encoding)
    assert read(path, encoding)[1] == [(2, ["1", "Åsa Öberg"])]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters_and_no_header(tmp_path: Path, delimiter: str) -> None:
    path = write(tmp_path, f"1{delimiter}a\n2{delimiter}b\n".encode())
    header, rows, _ = read(path, delimiter=delimiter, header=False)
    assert header is None and rows == [(1, ["1", "a"]), (2, ["2", "b"])]


def test_ragged_rows_are_rejected_with_their_line(tmp_path: Path) -> None:
    _, rows, rejected = read(write(tmp_path, b"A;B;C\n1;2;3\n1;2\n1;2;3;4\n\n4;5;6\n"))
    assert [line for line, _ in rows] == [2, 6]
    assert rejected == [(3, "expected 3 fields, found 2"), (4, "expected 3 fields, found 4")]


def test_a_huge_field_is_a_rejected_row_not_a_crash(tmp_path: Path) -> None:
    _, rows, rejected = read(write(tmp_path, b"A;B\n1;" + b"x" * (2 << 20) + b"\n2;ok\n"))
    assert rows == [(3, ["2", "ok"])]
    assert rejected == [(2, "unreadable row: a line longer than 1,048,576 characters")]


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [
        (b"", "utf-8", "the file is empty"),
        (b"Id;Name\n1;\xe5sa\n", "utf-8", "line 2, byte 10: not valid utf-8"),
        ("Id\n\x81\n".encode("latin-1"), "windows-1252", "line 2, byte 3: not valid windows-1252"),
        (b"Id\x00;Name\n", "utf-8", "line 1, byte 2: NUL byte, this is not a text file"),
    ],
)
def test_precheck_rejects_unreadable_files(tmp_path: Path, data: bytes, encoding: str, message: str) -> None:
    with pytest.raises(FileRejected, match=message):
        precheck(write(tmp_path, data), encoding)


def test_header_problems(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="duplicate column"):
        DelimitedFile(write(tmp_path, b"A;A\n1;2\n"), "utf-8", ";", True)
    with pytest.raises(FileRejected, match="the header line is empty"):
        DelimitedFile(write(tmp_path, b"\n1;2\n"), "utf-8", ";", True)
    with pytest.raises(FileRejected, match="no header line"):
        DelimitedFile(write(tmp_path, b""), "utf-8", ";", True)


def test_a_line_over_the_limit_is_a_rejected_row_and_the_next_line_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, b"A;B\n1;a\n" + b";" * 5000 + b"\n2;b\n")
    source = DelimitedFile(path, "utf-8", ";", header=True, max_line=1000)
    [batch] = list(source.batches())
    source.close()
    assert list(zip(batch.lines, batch.rows, strict=True)) == [(2, ["1", "a"]), (4, ["2", "b"])]
    assert batch.rejected == [(3, "unreadable row: a line longer than 1,000 characters")]


def test_a_row_over_the_limit_across_lines_is_rejected_where_it_starts(tmp_path: Path) -> None:
    """Many short lines inside one quoted field: a row, not a line, passes the limit."""
    runaway = b'3;"' + b"x\n" * 600
    path = write(tmp_path, b"A;B\n1;a\n" + runaway)
    source = DelimitedFile(path, "utf-8", ";", header=True, max_line=1000)
    [batch] = list(source.batches())
    source.close()
    assert batch.rows[0] == ["1", "a"] and batch.lines[0] == 2
    assert batch.rejected[0] == (3, "unreadable row: a row longer than 1,000 characters (an unclosed quote?)")


def test_a_huge_line_is_never_read_whole(tmp_path: Path) -> None:
    """20 MB of delimiters: the csv module would make 20 million fields of it (160 MB of pointers)."""
    path = write(tmp_path, b"A;B\n" + b";" * 20_000_000 + b"\n1;a\n")
    tracemalloc.start()
    try:
        _, rows, rejected = read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == [(3, ["1", "a"])] and rejected == [(2, "unreadable row: a line longer than 1,048,576 characters")]
    assert peak < 30_000_000, peak


def test_a_header_over_the_column_or_line_limit_refuses_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match=r"line 1 \(header\): 300 columns, more than the 272 allowed"):
        DelimitedFile(write(tmp_path, ";".join(f"c{i}" for i in range(300)).encode() + b"\n"), "utf-8", ";", True,
                      max_columns=272)  # fmt: skip
    with pytest.raises(FileRejected, match=r"line 1 \(header\): a line longer than 1,048,576 characters"):
        DelimitedFile(write(tmp_path, b"a" * 2_000_000 + b"\n1\n"), "utf-8", ";", True)
