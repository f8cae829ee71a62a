"""Tagged message ids (streamapp.core.ids): the API's ids verify, what it never issued does not."""

from __future__ import annotations

import time

from streamapp.core.ids import (
    BATCH_SIGNED,
    SINGLE_SIGNED,
    batch_message_id,
    batch_prefix,
    idempotent_message_id,
    issued,
    message_id_for,
    new_batch_id,
    partition_of,
)
from streamapp.core.keys import partition_for, recipient_key

KEY, OLD_KEY, OTHER_KEY = b"k" * 32, b"o" * 32, b"x" * 32
CANDIDATES = [(d, p) for d in ("members", "other") for p in ("transactional", "batch", "campaign")]


def test_a_single_message_id_verifies_for_its_database_and_priority_only() -> None:
    before = time.time()
    message_id = message_id_for("members", "ann", 8, KEY)
    assert len(message_id) == SINGLE_SIGNED
    assert partition_of(message_id) == partition_for(recipient_key("members", "ann"), 8)
    found = issued(message_id, [KEY], CANDIDATES)
    assert found is not None and (found.database, found.priority) == ("members", "transactional")
    assert before - 0.001 <= found.at <= time.time()
    assert issued(message_id, [KEY], [("other", "transactional"), ("members", "campaign")]) is None
    assert issued(message_id, [OTHER_KEY], CANDIDATES) is None  # another deployment's key


def test_a_batch_row_id_verifies_and_keeps_the_batch_prefix() -> None:
    batch_id = new_batch_id(2)
    message_id = batch_message_id(5, batch_id, 41, KEY, "other", "campaign")
    assert len(message_id) == BATCH_SIGNED and partition_of(message_id) == 5
    assert message_id.encode().startswith(batch_prefix(5, batch_id))  # counting a batch is still a prefix scan
    found = issued(message_id, [KEY], CANDIDATES)
    assert found is not None and (found.database, found.priority) == ("other", "campaign")
    assert abs(found.at - int(batch_id[4:16], 16) / 1000) < 0.001  # the batch's time


def test_ids_never_issued_do_not_verify() -> None:
    single = message_id_for("members", "ann", 8, KEY)
    row = batch_message_id(5, new_batch_id(2), 41, KEY, "members", "batch")
    for genuine in (single, row):
        flipped = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
        other_row = genuine[:-9] + ("0" if genuine[-9] != "0" else "1") + genuine[-8:]  # another row or random part
        for forged in (flipped, other_row):
            assert partition_of(forged) is not None and issued(forged, [KEY], CANDIDATES) is None
    untagged = message_id_for("members", "ann", 8)  # tests' and old ids: valid, but not verifiable
    assert len(untagged) == 32 and partition_of(untagged) is not None
    assert issued(untagged, [KEY], CANDIDATES) is None and issued("garbage", [KEY], CANDIDATES) is None


def test_ids_signed_before_a_key_rotation_still_verify() -> None:
    message_id = message_id_for("members", "ann", 8, OLD_KEY)
    assert issued(message_id, [KEY, OLD_KEY], CANDIDATES) is not None
    assert issued(message_id, [KEY], CANDIDATES) is None  # once the old key is gone from the ring


def test_every_id_shape_names_its_partition() -> None:
    batch_id = new_batch_id(7)
    shapes = [
        message_id_for("members", "b", 16), message_id_for("members", "b", 16, KEY),
        batch_message_id(3, batch_id, 9), batch_message_id(3, batch_id, 9, KEY, "members", "batch"),
    ]  # fmt: skip
    assert sorted(len(s) for s in shapes) == [32, 36, 40, 44]
    assert [partition_of(s) for s in shapes[2:]] == [3, 3]
    assert all(partition_of(s + "0") is None and partition_of(s[:-1]) is None for s in shapes)


def test_an_idempotent_request_gets_one_id_a_day_on_any_worker() -> None:
    noon = 1_800_000_000 // 86_400 * 86_400 + 43_200.0  # 12:00 UTC
    request = b"digest\x1fwelcome\x1fkey-1\0bodyhash"
    first = idempotent_message_id("members", "ann", 8, KEY, request, now=noon)
    assert idempotent_message_id("members", "ann", 8, KEY, request, now=noon + 11 * 3600) == first  # 23:00
    assert len(first) == SINGLE_SIGNED and partition_of(first) == partition_for(recipient_key("members", "ann"), 8)
    found = issued(first, [KEY], CANDIDATES)
    assert found is not None and (found.database, found.priority) == ("members", "transactional")
    assert found.at == noon - 43_200  # its time part is the start of the day
    others = {
        idempotent_message_id("members", "ann", 8, KEY, request, now=noon + 12 * 3600),  # the next day
        idempotent_message_id("members", "ann", 8, KEY, request.replace(b"bodyhash", b"otherbody"), now=noon),
        idempotent_message_id("members", "ann", 8, KEY, request.replace(b"key-1", b"key-2"), now=noon),
        idempotent_message_id("members", "ann", 8, OTHER_KEY, request, now=noon),  # another deployment
    }
    assert first not in others and len(others) == 4
