"""The idempotency table: one IdempotencyRecord per (token, trigger, key) of a single trigger message.

Written and read only by the worker that owns the key's partition (the API forwards a request
with a key there), with a durable write (streamapp.kafka.store.Store.put_durably), so a check-and-set under a
local lock gives one message per key (except across a partition move in the
middle of a request: streamapp.sending.idempotency).
"""

from __future__ import annotations

from typing import Any

import faust

IDEMPOTENCY = "idempotency"


def idempotency_table(app: faust.App, partitions: int) -> Any:
    return app.Table(
        IDEMPOTENCY, key_type=bytes, value_type=bytes, partitions=partitions, help="Trigger messages by idempotency key"
    )
