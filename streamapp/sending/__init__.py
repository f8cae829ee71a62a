"""The sending engine (SPEC §6): priority topics, a strict-priority dispatcher, a ledger, retries.

- `ids`: message ids that carry their partition; topic names.
- `retry`: back-off and expiry arithmetic.
- `ledger`: reads and durable writes of the `messages` table.
- `pipeline`: one message from ledger check to recorded outcome.
- `dispatcher`: priority queues in front of the SMTP senders, flow control by pausing partitions.
- `schedule`: scheduled and deferred messages, released by a timer when due.
- `engine`: the mode.Service that ties them together in a worker.
- `enqueue`: publish SendMessage commands to the priority topics.
- `single`, `idempotency`: one trigger message and its idempotency key.
- `batch_rows`, `batches`: rows of a batch send (CSV, NDJSON, JSON array) and publishing them.
- `trigger_routes`, `batch_routes`: the trigger, campaign and batch status routes.
- `bounces`: the soft-bounce rule applied by the recipient-commands agent.
- `routes`, `unsubscribe_routes`: GET /api/v1/messages/{id}, GET/POST /u/{token}.
- `devsink`: the Maildir SMTP sink `streamapp dev` runs when `[smtp]` is absent.

Design and guarantees: docs/sending.md.
"""
