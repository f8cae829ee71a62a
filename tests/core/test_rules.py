"""The rules of SPEC §3 applied to recipients and history."""

from __future__ import annotations

from streamapp.core.models import HistoryRecord, UpsertRecipient
from streamapp.core.rules import HISTORY_LIMIT, append_history, apply_upsert


def upsert(at: str = "2026-01-01T00:00:00+00:00", **fields: object) -> UpsertRecipient:
    return UpsertRecipient(database="members", originalId="C1", at=at, **fields)  # type: ignore[arg-type]


def test_new_recipient_is_active_with_timestamps() -> None:
    r = apply_upsert(None, upsert(email="a@example.com"))
    assert (r.status, r.email, r.createdAt, r.updatedAt) == ("active", "a@example.com", r.createdAt, r.createdAt)


def test_partial_upsert_touches_only_given_fields() -> None:
    r = apply_upsert(None, upsert(email="a@example.com", attributes={"firstname": "Ann", "zipcode": "111"}))
    r = apply_upsert(r, upsert(at="2026-01-02T00:00:00+00:00", attributes={"zipcode": "222"}))
    assert r.email == "a@example.com"
    assert r.attributes == {"firstname": "Ann", "zipcode": "222"}
    assert r.updatedAt == "2026-01-02T00:00:00+00:00" and r.createdAt == "2026-01-01T00:00:00+00:00"


def test_null_attribute_clears_it() -> None:
    r = apply_upsert(None, upsert(attributes={"firstname": "Ann"}))
    assert apply_upsert(r, upsert(attributes={"firstname": None})).attributes == {}


def test_unsubscribed_and_bounced_stay_unless_status_is_explicit() -> None:
    for sticky in ("unsubscribed", "bounced"):
        r = apply_upsert(None, upsert(status=sticky))
        r = apply_upsert(r, upsert(email="new@example.com"))
        assert r.status == sticky
        assert apply_upsert(r, upsert(status="active")).status == "active"


def test_replaying_a_command_changes_nothing() -> None:
    command = upsert(email="a@example.com", attributes={"score": 1})
    once = apply_upsert(None, command)
    assert apply_upsert(once, command) == once


def test_history_newest_first_and_capped() -> None:
    def rec(t: str, sku: str = "A") -> HistoryRecord:
        return HistoryRecord(id=f"{t}/{sku}", type="purchase", time=t, sku=sku)

    history = append_history([], [rec("2026-01-02T00:00:00+00:00"), rec("2026-01-01T00:00:00+00:00")])
    history = append_history(history, [rec("2026-01-03T00:00:00+00:00")])
    assert [h.time[:10] for h in history] == ["2026-01-03", "2026-01-02", "2026-01-01"]
    many = [rec(f"2020-01-01T00:00:{i % 60:02d}+00:00", str(i)) for i in range(HISTORY_LIMIT + 5)]
    assert len(append_history(history, many)) == HISTORY_LIMIT
    assert append_history(history, many)[0].time[:10] == "2026-01-03"


def test_history_replay_adds_nothing() -> None:
    records = [HistoryRecord(id="a", type="purchase", time="2026-01-01T00:00:00+00:00")]
    once = append_history([], records)
    assert append_history(once, records) == once
    assert len(append_history(once, [HistoryRecord(id="b", type="purchase", time=records[0].time)])) == 2


def test_a_replayed_older_command_does_not_undo_a_newer_one() -> None:
    """After a crash, commands after the committed offset replay over state that has their effects."""
    first = upsert(at="2026-01-01T00:00:00+00:00", attributes={"score": 1})
    second = upsert(at="2026-01-01T00:00:01+00:00", attributes={"score": 2})
    state = apply_upsert(apply_upsert(None, first, seq=10), second, seq=11)
    replayed = apply_upsert(apply_upsert(state, first, seq=10), second, seq=11)
    assert replayed.attributes == {"score": 2} and replayed == state
    assert "seq" not in state.public() and state.public()["attributes"] == {"score": 2}


def test_sweep_skips_recipients_written_after_it() -> None:
    from streamapp.core.rules import sweep_inactive

    r = apply_upsert(None, upsert(at="2026-01-01T00:00:00+00:00"), seq=5)
    assert sweep_inactive(r, "2026-02-01T00:00:00+00:00", seq=4) is None
    swept = sweep_inactive(r, "2026-02-01T00:00:00+00:00", seq=6)
    assert swept is not None and swept.status == "inactive" and swept.seq == 6


def test_creating_equals_updating_an_empty_recipient() -> None:
    """The one-step path for new recipients gives what the merge path gives."""
    from streamapp.core.models import Recipient

    for command in (
        upsert(email="a@example.com", attributes={"firstname": "Ann", "zipcode": None}, status="unsubscribed"),
        upsert(attributes={"score": 3}),
        upsert(),
    ):
        empty = Recipient(originalId="C1", createdAt=command.at, updatedAt=command.at)
        assert apply_upsert(None, command, seq=7) == apply_upsert(empty, command, seq=7)


def test_trigger_upsert_creates_with_its_address_but_keeps_an_existing_one() -> None:
    created = apply_upsert(None, upsert(emailIfNew="new@example.com", createOnly=True))
    assert (created.email, created.status) == ("new@example.com", "active")
    existing = apply_upsert(None, upsert(email="old@example.com", attributes={"firstname": "Ann"}))
    again = apply_upsert(
        existing, upsert(at="2026-02-01T00:00:00+00:00", emailIfNew="new@example.com", createOnly=True)
    )
    assert again is existing
    saved = apply_upsert(existing, upsert(emailIfNew="new@example.com", attributes={"zipcode": "123"}))
    assert saved.email == "old@example.com" and saved.attributes == {"firstname": "Ann", "zipcode": "123"}
