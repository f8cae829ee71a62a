"""The batches table: one BatchInfo (MessagePack) per batchId.

Written only by the recipient-commands agent, from the partition the batch id names
(streamapp.core.ids), where the batch's sender published it; read by the batch status route
from that partition's owner.
"""

from __future__ import annotations

from typing import Any

import faust

BATCHES = "batches"


def batches_table(app: faust.App, partitions: int) -> Any:
    return app.Table(BATCHES, key_type=bytes, value_type=bytes, partitions=partitions, help="Batch sends by batchId")
