"""What a recipient's history keeps (SPEC §3, §8): the newest 1,000 of each type, 200 of each engagement
type, within the 512 KiB row; engagement records once per message, never for an absent recipient."""

from __future__ import annotations

from collections import Counter
from typing import get_args

from streamapp.core.engagement import EngagementType, engagement, named, record_id
from streamapp.core.keys import recipient_key
from streamapp.core.models import AppendHistory, Command, HistoryRecord, UpsertRecipient, decode_history, encode
from streamapp.core.rules import ENGAGEMENT_LIMIT, HISTORY_LIMIT, append_history, fit_history, keep_newest
from streamapp.recipients.apply import Chunks, apply_all, coalesce_history
from streamapp.settings import ENGAGEMENT_TYPES
from tests.recipients.test_apply import chunks


def at(n: int) -> str:
    """The n-th second of 2026-11 (larger is newer)."""
    day, rest = divmod(n, 86400)
    return f"2026-11-{1 + day:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}+00:00"


def rec(n: int, kind: str = "purchase", size: int = 0) -> HistoryRecord:
    fields = {"custom2": "z" * size} if size else {}
    return HistoryRecord(id=f"{kind}-{n}", type=kind, time=at(n), sku=f"S{n}", fields=fields)


def sent(n: int, name: str | None = "newsletter") -> AppendHistory:
    return engagement("mail.sent", database="members", original_id="A", message_id=f"m{n}", name=name, at=at(n))


def stored(c: Chunks, original_id: str = "A") -> list[HistoryRecord]:
    raw = c.history.get(recipient_key("members", original_id))
    return decode_history(raw) if raw is not None else []


def exists(original_id: str = "A") -> UpsertRecipient:
    return UpsertRecipient(database="members", originalId=original_id, at=at(0))


def test_the_engagement_types_are_one_list() -> None:
    assert get_args(EngagementType) == ENGAGEMENT_TYPES


def test_each_type_keeps_its_newest_1000() -> None:
    """Before: 1,000 in all, so 1,000 page views pushed every purchase out."""
    purchases = [rec(n) for n in range(300)]
    visits = [rec(1000 + n, "visit") for n in range(HISTORY_LIMIT + 50)]
    history = append_history(append_history([], purchases), visits)
    counts = Counter(r.type for r in history)
    assert counts == {"purchase": 300, "visit": HISTORY_LIMIT}
    assert min(r.time for r in history if r.type == "visit") == at(1050)  # the oldest 50 visits went
    assert [r.time for r in history] == sorted((r.time for r in history), reverse=True)


def test_each_engagement_type_keeps_its_newest_200_and_never_pushes_purchases_out() -> None:
    purchases = [rec(n) for n in range(HISTORY_LIMIT)]
    mail = [rec(5000 + n, kind) for kind in ("mail.sent", "mail.opened") for n in range(ENGAGEMENT_LIMIT + 30)]
    history = append_history(append_history([], purchases), mail)
    assert Counter(r.type for r in history) == {"purchase": 1000, "mail.sent": 200, "mail.opened": 200}
    assert min(r.time for r in history if r.type == "mail.sent") == at(5030)


def test_the_records_dropped_may_be_anywhere_in_the_list() -> None:
    """The oldest of a type are not always the oldest of the list: none else goes, the order stays."""
    for extra in (3, 40):  # dropped from a copy one by one, or filtered in one pass
        history = append_history([], [*(rec(n) for n in range(300)), *(rec(1000 + n, "mail.sent") for n in range(200))])
        after = append_history(history, [rec(2000 + n, "mail.sent") for n in range(extra)])
        sent = sorted((r for r in after if r.type == "mail.sent"), key=lambda r: r.time)
        assert len(sent) == 200 and sent[0].time == at(1000 + extra)
        assert [r for r in after if r.type == "purchase"] == [r for r in history if r.type == "purchase"]
        assert [r.time for r in after] == sorted((r.time for r in after), reverse=True)


def test_a_list_within_every_limit_is_returned_as_it_is() -> None:
    records = [rec(n, ("purchase", "mail.sent")[n % 2]) for n in range(400, 0, -1)]
    assert keep_newest(records) is records


def test_the_row_limit_cuts_every_type_to_the_same_depth() -> None:
    """A type with many records (or large ones) does not take the place of another type's few."""
    newest_first = sorted(
        [rec(n, "view", size=900) for n in range(1000)] + [rec(10 + 100 * n) for n in range(5)],
        key=lambda r: r.time,
        reverse=True,
    )
    kept = fit_history(newest_first)
    assert len(encode(kept)) <= 512 * 1024
    assert Counter(r.type for r in kept)["purchase"] == 5  # all of them, though older than most views
    views = [r for r in kept if r.type == "view"]
    assert views == [r for r in newest_first if r.type == "view"][: len(views)]  # the newest, no gap


def test_the_same_engagement_twice_adds_one_record() -> None:
    """A message sent again after a crash publishes its record again, later: the id is the message's."""
    c = chunks()
    again = engagement("mail.sent", database="members", original_id="A", message_id="m1", name="n", at=at(99))
    assert apply_all(c, [exists(), sent(1)], offset=1).skipped == 0
    assert apply_all(c, [again], offset=2).skipped == 0
    [record] = stored(c)
    assert record.id == record_id("mail.sent", "m1") and record.time == at(1)


def test_engagement_of_an_absent_recipient_is_dropped() -> None:
    """An unsubscribe link or a bounce after an erase must not leave history behind (SPEC §3 erasure)."""
    c = chunks()
    assert apply_all(c, [sent(1)], offset=1).skipped == 0
    assert c.history.rows == {}  # type: ignore[attr-defined]
    plain = AppendHistory(database="members", originalId="A", records=[rec(1)])
    assert apply_all(c, [plain], offset=2).skipped == 0  # a client's record needs no recipient (as before)
    assert [r.id for r in stored(c)] == ["purchase-1"]


def test_coalescing_keeps_engagement_and_client_appends_apart() -> None:
    commands: list[Command] = [
        AppendHistory(database="members", originalId="A", records=[rec(1)]),
        sent(2),
        AppendHistory(database="members", originalId="A", records=[rec(3)]),
    ]
    merged = [command for _, command in coalesce_history(commands)]
    assert [(c.ifExists, len(c.records)) for c in merged] == [(False, 2), (True, 1)]  # type: ignore[union-attr]


def test_an_unnamed_engagement_record_takes_its_messages_name() -> None:
    """The unsubscribe link knows the messageId only: the sku comes from the message's mail.sent."""
    c = chunks()
    link = engagement("mail.unsubscribed", database="members", original_id="A", message_id="m1", name=None, at=at(5))
    other = engagement("mail.unsubscribed", database="members", original_id="A", message_id="m9", name=None, at=at(6))
    assert apply_all(c, [exists(), sent(1, "welcome"), sent(2, "promo")], offset=1).skipped == 0
    assert apply_all(c, [link, other], offset=2).skipped == 0
    by_id = {r.id: r for r in stored(c)}
    assert by_id[record_id("mail.unsubscribed", "m1")].sku == "welcome"
    assert by_id[record_id("mail.unsubscribed", "m9")].sku is None  # no mail.sent of it is kept
    assert by_id[record_id("mail.unsubscribed", "m1")].fields == {"custom1": "m1"}


def test_naming_leaves_named_and_client_records_alone() -> None:
    records = [rec(1), *sent(2).records]
    assert named(records, []) is records
