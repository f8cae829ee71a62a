"""A stored recipient row and its history as the `RecipientView` evaluation reads.

The row is a `core.models.Recipient` as it is; history is kept newest first across every type
(streamapp.core.rules.append_history), so one type's records, filtered in order, are newest first
too, as `RecipientView.history` requires. Each type is filtered once per view, on first use, and
the history is decoded only for databases whose definitions read it (`history=None` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamapp.core.models import HistoryRecord, Recipient, decode_history, decode_recipient

__all__ = ["StoredView", "view_of"]

_NONE: tuple[HistoryRecord, ...] = ()


class StoredView:
    """One recipient for evaluation; `member_of` is answered by the tracker, never here."""

    __slots__ = ("_by_type", "_history", "row")

    def __init__(self, row: Recipient, history: list[HistoryRecord] | None) -> None:
        self.row = row
        self._history = history
        self._by_type: dict[str, Sequence[HistoryRecord]] = {}

    @property
    def email(self) -> str | None:
        return self.row.email

    @property
    def status(self) -> str:
        return self.row.status

    @property
    def createdAt(self) -> str:
        return self.row.createdAt

    @property
    def updatedAt(self) -> str:
        return self.row.updatedAt

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self.row.attributes

    def history(self, type: str) -> Sequence[HistoryRecord]:
        if not self._history:
            return _NONE
        found = self._by_type.get(type)
        if found is None:
            found = self._by_type[type] = [r for r in self._history if r.type == type]
        return found

    def member_of(self, segment: str) -> bool:
        raise AssertionError("segment leaves are answered by the tracker's own evaluation")


def view_of(row: bytes, history: bytes | None) -> StoredView:
    """The view of a stored row (`history` None: not read, or none kept)."""
    return StoredView(decode_recipient(row), decode_history(history) if history else None)
