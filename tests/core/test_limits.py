"""SPEC §3 limits at the door (streamapp.core.validation): strings, e-mail addresses, counts, record sizes."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamapp.core.validation import (
    EMAIL_ASCII,
    EMAIL_RE,
    MAX_ATTRIBUTES,
    MAX_PROPERTIES,
    MAX_STRING_BYTES,
    check_email,
    check_properties,
    email_problem,
    parse_history,
    parse_recipient,
)
from streamapp.settings import DatabaseSettings

ZONE = ZoneInfo("Europe/Stockholm")
AT = "2026-11-27T10:00:00.000+00:00"
DB = DatabaseSettings("members", False, {"firstname": "string", "score": "int", "ratio": "float"})
AUTO = DatabaseSettings("other", True, {})
TYPES = ("purchase",)
KIB60 = "x" * (60 * 1024)


def recipient_errors(body: dict[str, Any], db: DatabaseSettings = DB) -> list[tuple[str, str]]:
    command, errors = parse_recipient(db, body, at=AT, zone=ZONE, original_id="C1")
    assert (command is None) == bool(errors)
    return [(e.path, e.message) for e in errors]


def history_errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    command, errors = parse_history(DB, {"originalId": "C1", **body}, types=TYPES, at=AT, zone=ZONE)
    assert (command is None) == bool(errors)
    return [(e.path, e.message) for e in errors]


# -- e-mail addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "a@x.com\n",  # `$` matched before a final newline
        "a\x00@x.com",
        "a@x.com\r\nRCPT TO:<b@y>",
        "a\t@x.com",
        "a b@x.com",
        "a\x7f@x.com",
        "a" * 243 + "@example.com",  # 255 bytes
        "ann@-x.com",
        "ann@x-.com",
        "ann@" + "b" * 64 + ".com",  # a label of 64
        "ann@x",
        "ann@x.com.",
        "åsa@example.com",  # a non-ASCII local part needs SMTPUTF8
        "ann@bü\u200bcher.de",  # invisible: IDNA would drop it, the address would not be what is shown
        "ann@bü\x00cher.de",
        "a@b@x.com",
        '"a"@x.com',
        "a@[192.0.2.1]",
    ],
)
def test_bad_addresses_are_refused(address: str) -> None:
    assert email_problem(address) is not None
    assert recipient_errors({"email": address})[0][0] == "/email"


@pytest.mark.parametrize(
    "address",
    [
        "a@x.com",
        "a" * 242 + "@example.com",  # 254 bytes
        "ann@bücher.de",  # an IDN domain, stored as given
        "ann@xn--bcher-kva.de",
        "first.last+tag@mail.example.co.uk",
        "o'brien@example.ie",
        "ann@" + "b" * 63 + ".com",
        "x@☃.net",
    ],
)
def test_good_addresses_are_stored_as_given(address: str) -> None:
    command, errors = parse_recipient(DB, {"email": address}, at=AT, zone=ZONE, original_id="C1")
    assert errors == [] and command is not None and command.email == address


def test_messages_say_why() -> None:
    assert check_email("a@x.com\n", "/email")[0].message == (
        "'a@x.com\\n' is not a valid e-mail address (it contains a space or a control character)"
    )
    long = "a" * 243 + "@example.com"
    assert email_problem(long) == "is not a valid e-mail address (longer than 254 bytes)"
    assert email_problem("ann@-x.com") == "is not a valid e-mail address"


def test_an_idn_domain_is_counted_encoded() -> None:
    """254 bytes as given, but longer once its domain is IDNA-encoded (as it is sent): refused."""
    local = "a" * (254 - len("@bücher.de".encode()))
    assert len(f"{local}@bücher.de".encode()) == 254
    assert email_problem(f"{local}@bücher.de") == (
        "is not a valid e-mail address (longer than 254 bytes with its domain encoded)"
    )


ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=40)
address_like = st.from_regex(r"[a-z!#'+./=?^_`{|}~\-]{0,6}@[A-Za-z0-9.\-]{0,12}", fullmatch=True)


@given(value=ascii_text | address_like)
def test_ascii_addresses_the_regex_and_the_rule_agree(value: str) -> None:
    """EMAIL_RE (the fast path, and the polars check of file rows) accepts exactly what email_problem does."""
    assert (EMAIL_RE.match(value) is not None and len(value) <= 254) == (email_problem(value) is None)


@given(values=st.lists(ascii_text | address_like, max_size=30))
def test_polars_reads_the_pattern_as_python_does(values: list[str]) -> None:
    polars = pl.Series(values, dtype=pl.String).str.contains(f"^(?:{EMAIL_ASCII})$").to_list()
    assert polars == [re.fullmatch(EMAIL_ASCII, v) is not None for v in values]


# -- strings and attributes ----------------------------------------------------------------------


def test_a_string_is_at_most_64_kib_in_utf8() -> None:
    assert recipient_errors({"attributes": {"firstname": "x" * MAX_STRING_BYTES}}) == []
    assert recipient_errors({"attributes": {"firstname": "x" * (MAX_STRING_BYTES + 1)}}) == [
        ("/attributes/firstname", "must be at most 65536 bytes in UTF-8")
    ]
    euros = "€" * (MAX_STRING_BYTES // 3 + 1)  # fewer characters than the limit, more bytes
    assert len(euros) < MAX_STRING_BYTES
    assert recipient_errors({"attributes": {"firstname": euros}}) == [
        ("/attributes/firstname", "must be at most 65536 bytes in UTF-8")
    ]


@pytest.mark.parametrize("value", ["a\x00b", "Hi\x1b[31m", "\x7f", "a\x0bb", "\ud800"])
def test_control_characters_are_refused_in_strings(value: str) -> None:
    found = recipient_errors({"attributes": {"firstname": value}})
    assert found == [("/attributes/firstname", "must not contain control characters (tab and line breaks are allowed)")]
    assert recipient_errors({"attributes": {"x": value}}, AUTO)[0][0] == "/attributes/x"


def test_tabs_and_line_breaks_are_text() -> None:
    assert recipient_errors({"attributes": {"firstname": "Ann\tLee\r\nStreet 1\n"}}) == []


def test_at_most_256_attributes() -> None:
    assert recipient_errors({"attributes": {f"a{i}": "x" for i in range(MAX_ATTRIBUTES)}}, AUTO) == []
    assert recipient_errors({"attributes": {f"a{i}": "x" for i in range(MAX_ATTRIBUTES + 1)}}, AUTO) == [
        ("/attributes", "at most 256 attributes, not 257")
    ]


def test_the_attributes_of_one_command_fit_a_row() -> None:
    found = recipient_errors({"attributes": {f"a{i}": KIB60 for i in range(9)}}, AUTO)  # 540 KiB
    assert len(found) == 1 and found[0][0] == "/attributes"
    assert found[0][1].startswith("the attributes would take 553") and found[0][1].endswith(
        "more than the 520192 allowed"
    )


def test_an_auto_created_name_is_bounded_text() -> None:
    assert recipient_errors({"attributes": {"a\x00": "x"}}, AUTO) == [
        ("/attributes/a\x00", "the name must not contain control characters (tab and line breaks are allowed)")
    ]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"score": 2**63}, "must be an integer between -2^63 and 2^63-1"),
        ({"score": -(2**63) - 1}, "must be an integer between -2^63 and 2^63-1"),
        ({"ratio": 10**400}, "must be a number"),  # used to raise OverflowError (a 500)
    ],
)
def test_numbers_that_cannot_be_stored_are_a_422(attributes: dict[str, Any], message: str) -> None:
    assert recipient_errors({"attributes": attributes}) == [(f"/attributes/{next(iter(attributes))}", message)]


def test_auto_created_huge_integers_are_refused() -> None:
    assert recipient_errors({"attributes": {"n": 10**5000}}, AUTO) == [
        ("/attributes/n", "must be an integer between -2^63 and 2^63-1")
    ]
    assert recipient_errors({"attributes": {"n": 2**63 - 1}}, AUTO) == []


# -- history -------------------------------------------------------------------------------------


def test_history_fields_are_bounded_strings() -> None:
    assert history_errors({"sku": "x" * (MAX_STRING_BYTES + 1)}) == [("/sku", "must be at most 65536 bytes in UTF-8")]
    assert history_errors({"fields": {"custom1": "a\x00"}}) == [
        ("/fields/custom1", "must not contain control characters (tab and line breaks are allowed)")
    ]
    assert history_errors({"price": 10**400}) == [("/price", "must be a number")]  # used to be OverflowError


def test_a_history_record_fits_a_history_list() -> None:
    assert history_errors({"fields": {f"custom{i}": KIB60 for i in range(1, 9)}}) == []  # 480 KiB
    found = history_errors({"fields": {f"custom{i}": KIB60 for i in range(1, 10)}})  # 540 KiB
    assert len(found) == 1 and found[0][0] == "/" and "the history record would take" in found[0][1]


# -- template properties -------------------------------------------------------------------------


def property_errors(value: Any) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in check_properties(value, "/properties")]


def test_properties_are_bounded() -> None:
    assert property_errors({"order": {"lines": [{"sku": "A", "qty": 2, "price": 9.5}], "ok": True, "n": None}}) == []
    assert property_errors([]) == [("/properties", "must be an object")]
    assert property_errors({f"p{i}": 1 for i in range(MAX_PROPERTIES + 1)}) == [
        ("/properties", "at most 256 properties, not 257")
    ]
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    assert property_errors({"d": deep}) == [("/properties", "nested deeper than 32 levels")]


def test_every_string_in_properties_is_checked_where_it_is() -> None:
    value = {"a": [{"b": "x" * (MAX_STRING_BYTES + 1)}], "c": "ok\x00", "n": 2**64, "k" * (MAX_STRING_BYTES + 1): 1}
    assert property_errors(value) == [
        ("/properties/" + "k" * 80, "the name must be at most 65536 bytes in UTF-8"),
        ("/properties/a/0/b", "must be at most 65536 bytes in UTF-8"),
        ("/properties/c", "must not contain control characters (tab and line breaks are allowed)"),
        ("/properties/n", "must be an integer between -2^63 and 2^63-1"),
    ]


def test_properties_fit_a_record() -> None:
    assert property_errors({f"p{i}": KIB60 for i in range(8)}) == []
    found = property_errors({f"p{i}": KIB60 for i in range(9)})
    assert len(found) == 1 and found[0][0] == "/properties" and found[0][1].endswith("more than the 524288 allowed")
