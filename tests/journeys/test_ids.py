"""Derived ids and split draws: stable, distinct, and in the ledger's message id shape."""

from __future__ import annotations

from streamapp.core.ids import partition_of
from streamapp.journeys.ids import instance_id, message_id, split_draw


def test_message_ids_have_the_ledger_shape_and_differ_per_step_run() -> None:
    one = message_id("welcome", b"members/ann", 7, 1, 1_764_244_800_000, "hello", 1)
    assert partition_of(one) == 7 and len(one) == 32
    assert one == message_id("welcome", b"members/ann", 7, 1, 1_764_244_800_000, "hello", 1)
    others = {
        message_id("welcome", b"members/ann", 7, 1, 1_764_244_800_000, "hello", 2),
        message_id("welcome", b"members/ann", 7, 2, 1_764_244_800_000, "hello", 1),
        message_id("welcome", b"members/bob", 7, 1, 1_764_244_800_000, "hello", 1),
        message_id("other", b"members/ann", 7, 1, 1_764_244_800_000, "hello", 1),
        message_id("welcome", b"members/ann", 7, 1, 1_764_244_800_000, "tips", 1),
    }
    assert one not in others and len(others) == 5


def test_instance_ids() -> None:
    assert instance_id("j", b"members/ann", 1) == instance_id("j", b"members/ann", 1)
    assert instance_id("j", b"members/ann", 1) != instance_id("j", b"members/ann", 2)
    assert len(instance_id("j", b"members/ann", 1)) == 20


def test_split_draws_are_per_journey_and_step() -> None:
    keys = [f"members/{n}".encode() for n in range(2000)]
    first = [split_draw("j", "a", key, [1, 1]) for key in keys]
    assert first == [split_draw("j", "a", key, [1, 1]) for key in keys]
    assert first != [split_draw("j", "b", key, [1, 1]) for key in keys]
    assert first != [split_draw("k", "a", key, [1, 1]) for key in keys]
    assert {split_draw("j", "a", key, [1]) for key in keys} == {0}
    assert 900 < first.count(0) < 1100
