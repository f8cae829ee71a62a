"""The pure rules of sending: back-off and expiry, ledger transitions, soft bounces, ids, schedule, priority order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from streamapp.core import clock
from streamapp.core.ids import message_id_for, new_message_id, partition_of
from streamapp.core.keys import partition_for, recipient_key
from streamapp.core.models import Recipient, SendMessage, SoftBounce, encode
from streamapp.core.rules import SOFT_BOUNCE_LIMIT, apply_soft_bounce
from streamapp.mail.smtp import SmtpOutcome
from streamapp.sending import retry
from streamapp.sending.dispatcher import Dispatcher
from streamapp.sending.ledger import WAITING, BatchCounts, counts_expired, counts_key, due_key
from streamapp.sending.pipeline import Job, Outcome, next_state
from streamapp.settings import SmtpSettings

SMTP = SmtpSettings("h", 25, 2, 0, "news@example.com", 60, 3600, 86400, None, None, False, None)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def command(**fields: object) -> SendMessage:
    values: dict[str, object] = {
        "messageId": new_message_id(0),
        "database": "members",
        "originalId": "C1",
        "priority": "campaign",
        "template": "news",
        "enqueuedAt": clock.iso(NOW),
    }
    return SendMessage(**{**values, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 60), (2, 120), (3, 240), (7, 3600), (500, 3600)])
def test_backoff_doubles_up_to_the_maximum(attempts: int, seconds: float) -> None:
    assert retry.backoff_seconds(SMTP, attempts) == seconds


def test_deferred_keeps_the_command_and_the_next_attempt() -> None:
    reply = SmtpOutcome("deferred", 451, "try later", "4xx", stage="rcpt")
    state = next_state(SMTP, command(), None, Outcome("deferred", "try later", reply), NOW)
    assert (state.status, state.attempts, state.command is not None) == ("deferred", 1, True)
    assert state.nextAttemptAt == clock.iso(NOW + timedelta(seconds=60))
    again = next_state(SMTP, command(), state, Outcome("deferred", "try later", reply), NOW + timedelta(minutes=1))
    assert again.attempts == 2 and again.nextAttemptAt == clock.iso(NOW + timedelta(minutes=3))


def test_deferred_past_expiry_fails_and_drops_the_command() -> None:
    reply = SmtpOutcome("deferred", None, "ConnectionRefused", "connection_error", stage="connect")
    state = next_state(SMTP, command(), None, Outcome("deferred", "refused", reply), NOW + timedelta(days=1))
    assert state.status == "failed" and state.command is None and "expired" in (state.reason or "")


def test_a_recipient_not_created_yet_is_retried_each_second_then_fails() -> None:
    late = Outcome("deferred", "recipient not created yet")
    state = next_state(SMTP, command(upserted=True), None, late, NOW)
    assert (state.status, state.attempts, state.reason) == ("deferred", 0, "recipient not created yet")
    assert state.nextAttemptAt == clock.iso(NOW + timedelta(seconds=1)) and state.command is not None
    assert state.lateSince == clock.iso(NOW)
    later = next_state(SMTP, command(upserted=True), state, late, NOW + timedelta(seconds=200))
    assert later.status == "deferred" and later.lateSince == clock.iso(NOW)
    gone = next_state(SMTP, command(upserted=True), later, late, NOW + timedelta(seconds=301))
    assert gone.status == "failed" and gone.reason == "unknown recipient (not created within 300 s)"
    assert gone.command is None


def test_scheduled_waits_for_not_before_and_counts_no_attempt() -> None:
    later = clock.iso(NOW + timedelta(hours=2))
    state = next_state(SMTP, command(notBefore=later), None, Outcome("scheduled"), NOW)
    assert (state.status, state.attempts, state.nextAttemptAt) == ("scheduled", 0, later)


def recipient(**fields: object) -> Recipient:
    return Recipient(originalId="C1", createdAt="t0", updatedAt="t0", **fields)  # type: ignore[arg-type]


def test_five_soft_bounces_in_a_row_bounce_and_a_replay_changes_nothing() -> None:
    current = recipient(seq=1)
    for n in range(SOFT_BOUNCE_LIMIT):
        inc = SoftBounce(database="members", originalId="C1", at=f"t{n + 1}", action="inc")
        updated = apply_soft_bounce(current, inc, seq=10 + n)
        assert updated is not None
        assert apply_soft_bounce(updated, inc, seq=10 + n) is None  # replayed after a crash
        current = updated
    assert (current.softBounces, current.status) == (SOFT_BOUNCE_LIMIT, "bounced")


def test_a_delivery_resets_the_soft_bounce_count() -> None:
    reset = SoftBounce(database="members", originalId="C1", at="t9", action="reset")
    assert apply_soft_bounce(recipient(softBounces=3), reset, seq=5) == recipient(softBounces=0, seq=5)
    assert apply_soft_bounce(recipient(), reset, seq=5) is None


def test_message_ids_name_the_recipients_partition() -> None:
    for original_id in ("a", "b", "C1001", "ö-ü"):
        message_id = message_id_for("members", original_id, 8)
        assert partition_of(message_id) == partition_for(recipient_key("members", original_id), 8)
    assert partition_of("not-an-id") is None and partition_of("0001" + "g" * 28) is None


def test_dispatcher_takes_the_highest_priority_first_and_asks_to_pause_lower_ones() -> None:
    order: list[str] = []
    done = asyncio.Event()

    async def run(job: Job) -> None:
        order.append(job.command.priority)
        if len(order) == 4:
            done.set()

    async def scenario() -> set[str]:
        dispatcher = Dispatcher(run, senders=1, high=4)
        for priority in ("campaign", "campaign", "batch", "transactional"):
            dispatcher.submit(Job(command(priority=priority), 0))
        wanted = set(dispatcher.wanted_pauses())
        task = asyncio.ensure_future(dispatcher.sender())
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        return wanted

    wanted = asyncio.run(scenario())
    assert order == ["transactional", "batch", "campaign", "campaign"]
    assert wanted == {"batch", "campaign"}


def test_dispatcher_pauses_a_full_queue_until_it_drains_below_half() -> None:
    async def never(job: Job) -> None:
        raise AssertionError

    async def scenario() -> list[set[str]]:
        dispatcher = Dispatcher(never, senders=1, high=4)
        seen = []
        for _ in range(4):
            dispatcher.submit(Job(command(), 0))
        seen.append(set(dispatcher.wanted_pauses()))
        dispatcher.queues["campaign"].popleft()
        seen.append(set(dispatcher.wanted_pauses()))  # 3 left: still above half
        dispatcher.queues["campaign"].popleft()
        dispatcher.queues["campaign"].popleft()
        seen.append(set(dispatcher.wanted_pauses()))
        return seen

    assert asyncio.run(scenario()) == [{"campaign"}, {"campaign"}, set()]


def test_batch_counters_expire_like_final_rows_and_never_while_a_message_waits() -> None:
    def counts(**by_status: int) -> bytes:
        return encode(BatchCounts("members", dict(by_status), updatedAt=clock.iso(NOW)))

    old = lambda at: at < NOW + timedelta(days=1)  # noqa: E731 - everything before tomorrow is old
    young = lambda at: False  # noqa: E731
    assert counts_expired(counts_key("b1"), counts(sent=3, failed=1), old)
    assert not counts_expired(counts_key("b1"), counts(sent=3, failed=1), young)
    assert not counts_expired(counts_key("b1"), counts(sent=3, scheduled=1), old)
    assert not counts_expired(WAITING, encode({"campaign": 0}), old)
    assert not counts_expired(due_key(0, "m"), b"campaign", old)
