"""What evaluation reads of a recipient: a small structural Protocol, so the stored
`Recipient`/`HistoryRecord` structs (or a test's plain objects) serve as they are."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["HistoryRecordView", "MemberOf", "RecipientView"]

#: Membership of another segment of the same database, for `{"segment": NAME}` leaves.
MemberOf = Callable[[str], bool]


class HistoryRecordView(Protocol):
    """One retained history record; `time` is ISO 8601 (offset-less means the service zone)."""

    @property
    def time(self) -> str: ...
    @property
    def sku(self) -> str | None: ...
    @property
    def price(self) -> float | None: ...
    @property
    def quantity(self) -> float | None: ...
    @property
    def total(self) -> float | None: ...
    @property
    def fields(self) -> Mapping[str, str]: ...


class RecipientView(Protocol):
    """A recipient as stored: `createdAt`/`updatedAt` ISO 8601 strings, attributes typed by the schema
    (dates `YYYY-MM-DD`, date-times ISO 8601 with or without offset).

    `history(type)` returns the retained records of that type **newest first** (by time, as
    the store keeps them): windows stop scanning at the first record older than the window
    and `last` reads the first match, so that order is part of the contract.
    """

    @property
    def email(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def createdAt(self) -> str: ...
    @property
    def updatedAt(self) -> str: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...
    def history(self, type: str) -> Sequence[HistoryRecordView]: ...
    def member_of(self, segment: str) -> bool: ...
