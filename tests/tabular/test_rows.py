"""Rows to commands: typed attributes, per-row reasons, modes, history rows."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import msgspec
import pytest

from streamapp.core.models import AppendHistory, UpsertRecipient
from streamapp.settings import DatabaseSettings, ImportSettings
from streamapp.tabular.csvreader import FileRejected
from streamapp.tabular.rows import convert_history, convert_recipients, plan_columns

ZONE = ZoneInfo("Europe/Stockholm")
AT = "2026-11-27T10:00:00.000+00:00"
DB = DatabaseSettings(
    "members", False, {"firstname": "string", "score": "int", "ratio": "float", "vip": "bool", "birthday": "date",
                       "seen": "datetime"},
)  # fmt: skip


def schema(**overrides: object) -> ImportSettings:
    base: dict[str, object] = dict(
        name="crm", database="members", kind="recipients", watch="crm", settle_seconds=1, pattern="*.csv",
        encoding="utf-8", delimiter=";", header=True, mode="upsert", identity="Id",
        columns={"Mail": "email", "Name": "firstname", "Score": "score", "Ratio": "ratio", "Vip": "vip",
                 "Born": "birthday", "Seen": "seen"},
    )  # fmt: skip
    base.update(overrides)
    return ImportSettings(**base)  # type: ignore[arg-type]


HEADER = ["Id", "Mail", "Name", "Score", "Ratio", "Vip", "Born", "Seen", "Shoe"]


def convert(
    rows: list[list[str]], imp: ImportSettings | None = None
) -> tuple[list[UpsertRecipient], list[tuple[int, str]]]:
    imp = imp or schema()
    plan = plan_columns(imp, DB, HEADER, len(HEADER))
    commands, rejected = convert_recipients(rows, list(range(2, 2 + len(rows))), plan, imp, ZONE, AT)
    assert all(isinstance(c, UpsertRecipient) for c in commands)
    return commands, rejected  # type: ignore[return-value]


def test_typed_values_and_empty_cells_untouched() -> None:
    commands, rejected = convert([
        ["C1", "a@example.com", "Åsa", "7", "1,5", "ja", "1990-05-01", "2026-01-02 03:04:05", "42"],
        [" C2 ", "", "", "", "", "", "", "", ""],
    ])  # fmt: skip
    assert rejected == []
    first, second = commands
    assert first.originalId == "C1" and first.email == "a@example.com" and first.at == AT
    assert first.attributes == {"firstname": "Åsa", "score": 7, "ratio": 1.5, "vip": True, "birthday": "1990-05-01",
                                "seen": "2026-01-02T03:04:05+01:00"}  # fmt: skip
    assert second.originalId == "C2"
    assert second.email is msgspec.UNSET and second.attributes is msgspec.UNSET  # empty cells change nothing


def test_each_bad_cell_is_named_in_the_rows_reason() -> None:
    commands, rejected = convert([
        ["C1", "not-mail", "x", "seven", "n/a", "maybe", "1 May", "soon", ""],
        ["", "b@example.com", "", "", "", "", "", "", ""],
        ["C3", "c@example.com", "", "", "", "", "", "", ""],
    ])  # fmt: skip
    assert [c.originalId for c in commands] == ["C3"]
    assert rejected[0] == (2, "column 'Mail': 'not-mail' is not a valid e-mail address; column 'Score': 'seven' is "
                              "not an integer; column 'Ratio': 'n/a' is not a number; column 'Vip': 'maybe' is not "
                              "true/false; column 'Born': '1 May' is not a date (YYYY-MM-DD); column 'Seen': 'soon' "
                              "is not a date-time (ISO 8601)")  # fmt: skip
    assert rejected[1] == (3, "empty identity (column 'Id')")


def test_unknown_columns_ignored_unless_auto_create() -> None:
    plan = plan_columns(schema(), DB, HEADER, len(HEADER))
    assert plan.ignored == ("Shoe",)
    auto = DatabaseSettings("members", True, DB.attributes)
    plan = plan_columns(schema(), auto, HEADER, len(HEADER))
    assert plan.ignored == () and plan.attributes[-1].name == "Shoe" and plan.attributes[-1].kind == "string"


def test_missing_identity_column_rejects_the_file() -> None:
    with pytest.raises(FileRejected, match="identity column 'CustomerNo' not found"):
        plan_columns(schema(identity="CustomerNo"), DB, HEADER, len(HEADER))


def test_modes_shape_the_commands() -> None:
    row = [["C1", "", "", "", "", "", "", "", ""]]
    unsubscribe, _ = convert(row, schema(mode="unsubscribe"))
    assert unsubscribe[0].status == "unsubscribed"
    replace, _ = convert(row, schema(mode="replace"))
    assert replace[0].reactivate is True and replace[0].status is msgspec.UNSET
    upsert, _ = convert(row)
    assert upsert[0].reactivate is False


def test_headerless_columns_by_position() -> None:
    imp = schema(header=False, identity="2", columns={"1": "email", "3": "score"})
    plan = plan_columns(imp, DB, None, 3)
    commands, rejected = convert_recipients([["a@example.com", "C9", "5"]], [1], plan, imp, ZONE, AT)
    assert rejected == [] and commands == [
        UpsertRecipient(database="members", originalId="C9", at=AT, email="a@example.com", attributes={"score": 5})
    ]


def test_history_rows() -> None:
    imp = schema(kind="history", header=False, identity=None, columns={}, history_type="purchase")
    rows = [
        ["C1", "SKU-1", "99,50", "2026-11-20 14:03:00", "-1", "-99.5", "", "store-7"],
        ["C2", "SKU-2", "10"],
        ["C3", "SKU-3", "ten"],
        ["", "SKU-4", "1"],
        ["C5", "SKU-5", "1", "20/11/2026"],
    ]
    commands, rejected = convert_history(rows, [1, 2, 3, 4, 5], imp, ZONE, AT, "ab" * 32)
    assert rejected == [
        (3, "field 3 (itemPrice): 'ten' is not a number"),
        (4, "empty identity (field 1)"),
        (5, "field 4 (time): '20/11/2026' is not yyyy-MM-dd HH:mm:ss"),
    ]
    first, second = commands
    assert isinstance(first, AppendHistory) and isinstance(second, AppendHistory)
    record = first.records[0]
    assert (record.sku, record.price, record.quantity, record.total) == ("SKU-1", 99.5, -1.0, -99.5)
    assert record.time == "2026-11-20T13:03:00+00:00" and record.fields == {"custom3": "store-7"}
    assert record.id == f"{'ab' * 8}:1" and record.type == "purchase"
    assert second.records[0].time == AT and second.records[0].quantity is None


# -- SPEC §3 limits: a rejected row with its line and reason, never a crash ---------------------------

AUTO = DatabaseSettings("members", True, DB.attributes)


def test_a_string_cell_over_64_kib_or_with_control_characters_is_a_rejected_row() -> None:
    commands, rejected = convert([
        ["C1", "", "x" * 65536, "", "", "", "", "", ""],
        ["C2", "", "x" * 65537, "", "", "", "", "", ""],
        ["C3", "", "€" * 21846, "", "", "", "", "", ""],  # 65,538 bytes in fewer characters
        ["C4", "", "a\x00b", "", "", "", "", "", ""],
        ["C5", "", "Ann\tLee", "", "", "", "", "", ""],
    ])  # fmt: skip
    assert [c.originalId for c in commands] == ["C1", "C5"]
    assert rejected == [
        (3, "column 'Name': 65537 bytes, more than 65536"),
        (4, "column 'Name': 65538 bytes, more than 65536"),
        (5, "column 'Name': contains control characters (tab and line breaks are allowed)"),
    ]


def test_email_cells_follow_the_rule_of_every_door() -> None:
    commands, rejected = convert([
        ["C1", "ann@bücher.de", "", "", "", "", "", "", ""],
        ["C2", "a\x01@x.com", "", "", "", "", "", "", ""],
        ["C3", "a" * 243 + "@example.com", "", "", "", "", "", "", ""],
        ["C4", "ann@-x.com", "", "", "", "", "", "", ""],
        ["C5", "a@x.com", "", "", "", "", "", "", ""],
    ])  # fmt: skip
    assert [(c.originalId, c.email) for c in commands] == [("C1", "ann@bücher.de"), ("C5", "a@x.com")]
    assert rejected == [
        (3, "column 'Mail': 'a\\x01@x.com' is not a valid e-mail address (it contains a space or a control character)"),
        (4, f"column 'Mail': {'a' * 60!r} is not a valid e-mail address (longer than 254 bytes)"),
        (5, "column 'Mail': 'ann@-x.com' is not a valid e-mail address"),
    ]


def test_a_row_whose_attributes_would_not_fit_a_recipient_is_rejected() -> None:
    header = ["Id", *(f"n{i}" for i in range(9))]
    imp = schema(columns={})
    plan = plan_columns(imp, AUTO, header, len(header))
    rows = [["C1", *("x" * 60_000 for _ in range(8))], ["C2", *("x" * 60_000 for _ in range(9))]]
    rows[0].append("")
    commands, rejected = convert_recipients(rows, [2, 3], plan, imp, ZONE, AT)
    assert [c.originalId for c in commands] == ["C1"]  # type: ignore[union-attr]
    assert rejected == [(3, "the attributes would take about 540162 bytes stored, more than 520192")]


def test_a_file_with_more_than_256_attribute_columns_is_refused_whole() -> None:
    header = ["Id", *(f"n{i}" for i in range(257))]
    with pytest.raises(FileRejected, match="257 columns are attributes; a recipient has at most 256"):
        plan_columns(schema(columns={}), AUTO, header, len(header))
    with pytest.raises(FileRejected, match="an attribute name that must not contain control characters"):
        plan_columns(schema(columns={}), AUTO, ["Id", "a\x01"], 2)


def test_history_rows_within_the_limits() -> None:
    imp = schema(kind="history", header=False, identity=None, columns={}, history_type="purchase")
    rows = [
        ["C1", "x" * 65537, "1"],
        ["C2", "SKU", "1", "", "", "", "a\x00"],
        ["C3", "SKU", "1", "", "", "", *("x" * 60_000 for _ in range(9))],
        ["C\x01", "SKU", "1"],
        ["C5", "SKU", "1", "", "", "", *("x" * 60_000 for _ in range(8))],
    ]
    commands, rejected = convert_history(rows, [1, 2, 3, 4, 5], imp, ZONE, AT, "ab" * 32)
    assert rejected == [
        (1, "field 2 (sku): must be at most 65536 bytes in UTF-8"),
        (2, "field 7 (custom2): must not contain control characters (tab and line breaks are allowed)"),
        (3, "the record takes 540203 bytes stored, more than 524283"),
        (4, "identity contains control characters"),
    ]
    assert [c.originalId for c in commands] == ["C5"]  # type: ignore[union-attr]


def test_numbers_that_are_not_finite_are_not_numbers() -> None:
    """The API refuses NaN and infinities; a file must not store them either."""
    commands, rejected = convert([["C1", "", "", "", cell, "", "", "", ""] for cell in ("nan", "inf", "1e999", "2,5")])
    assert [c.attributes for c in commands] == [{"ratio": 2.5}]
    assert [line for line, _ in rejected] == [2, 3, 4] and "'nan' is not a number" in rejected[0][1]
    imp = schema(kind="history", header=False, identity=None, columns={}, history_type="purchase")
    _, rejected = convert_history(
        [["C1", "SKU", "nan"], ["C2", "SKU", "1", "", "inf"]], [1, 2], imp, ZONE, AT, "ab" * 32
    )
    assert rejected == [
        (1, "field 3 (itemPrice): 'nan' is not a number"),
        (2, "field 5 (quantity): 'inf' is not a number"),
    ]
