"""The sending engine (SPEC §6): priority topics, a strict-priority dispatcher, a ledger, retries.

- `engine`: the mode.Service that ties the rest together in a worker.
- `pipeline`: one message from ledger check to recorded outcome; `engagement`: its `mail.sent` record.
- `ledger`: reads and durable writes of the `messages` table and its bookkeeping rows (counts, marks).
- `dispatcher`: priority queues in front of the SMTP senders, flow control by pausing partitions.
- `schedule`: scheduled and deferred messages, released by a timer when due; `retry`: back-off.
- `enqueue`: publish SendMessage commands to the priority topics.
- `single`, `idempotency`: one trigger message and its idempotency key.
- `batch_rows`, `batches`, `first_rows`: rows of a batch send (CSV, NDJSON, JSON array) and publishing them.
- `audience`: campaign sends to a segment's members at `sendTime`; `cancel`: cancelling any batch.
- `tracking`: which messages are tracked, and each open or click recorded once.
- `retention`: the ledger's retention sweep and the ledger side of erasure.

The routes are in streamapp.http.routes. Design and guarantees: docs/sending.md.
"""
