"""Prometheus metrics (SPEC §7): base units, `_total` counters, no recipient data in labels."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

registry: CollectorRegistry = REGISTRY

HTTP_REQUESTS = Counter(
    "streamapp_http_requests", "HTTP requests by method, route template and status code", ["method", "route", "code"]
)
HTTP_DURATION = Histogram(
    "streamapp_http_request_duration_seconds",
    "HTTP request duration by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INGEST_ROWS = Counter(
    "streamapp_ingest_rows",
    "Recipient and history rows received, by database, source and outcome",
    ["database", "source", "outcome"],
)
COMMANDS = Counter(
    "streamapp_recipient_commands",
    "Recipient commands applied to the tables by the agent, by outcome",
    ["outcome"],
)
FILES = Counter(
    "streamapp_files", "Dropped or manually imported files, by import schema and outcome", ["import", "outcome"]
)
IMPORT_DURATION = Histogram(
    "streamapp_import_duration_seconds",
    "Time to import one file, by import schema",
    ["import"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
FILES_WAITING = Gauge("streamapp_files_waiting", "Files seen in drop folders and not yet imported by this worker")

# -- sending (streamapp.sending) ------------------------------------------------
MESSAGES = Counter(
    "streamapp_messages",
    "Messages processed by the send engine, by priority and outcome (sent, deferred, failed, suppressed, scheduled)",
    ["priority", "outcome"],
)
SEND_DURATION = Histogram(
    "streamapp_send_duration_seconds",
    "Time from taking a message off the priority queue to its recorded outcome, by priority",
    ["priority"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
#: The labels of BOUNCES (SPEC §7): kind, and where the bounce was learnt.
BOUNCE_KINDS = ("hard", "soft", "complaint")
BOUNCE_SOURCES = ("smtp", "dsn", "webhook")
BOUNCES = Counter(
    "streamapp_bounces",
    "Bounces and complaints by kind and by where they were learnt (the SMTP reply, a DSN, a webhook)",
    ["kind", "source"],
)
BOUNCE_JUNK = Counter(
    "streamapp_bounce_junk", "Messages to the return path that were neither a bounce report nor a complaint (dropped)"
)
SMTP_REPLIES = Counter(
    "streamapp_smtp_replies", "SMTP transaction results by reply class (2xx, 4xx, 5xx, connection_error)", ["class"]
)
#: The `state` label of QUEUE_DEPTH (SPEC §7).
QUEUE_STATES = ("ready", "scheduled", "deferred")
QUEUE_DEPTH = Gauge(
    "streamapp_queue_depth",
    "Messages waiting on this worker's partitions: ready (unread topic records and in-memory queue), scheduled,"
    " deferred",
    ["priority", "state"],
)
OLDEST_QUEUED_AGE = Gauge(
    "streamapp_oldest_queued_age_seconds",
    "Age (since enqueue) of the oldest message in this worker's in-memory send queue, by priority",
    ["priority"],
)
SKIPPED_RECORDS = Counter(
    "streamapp_send_records_skipped",
    "Priority-topic records that skipped the send agent and were read again (streamapp.kafka.gaps)",
)
COMMAND_RECORDS_SKIPPED = Counter(
    "streamapp_command_records_skipped",
    "Recipient-command records whose offsets the agent never saw (a jump in a partition's offsets)",
)
IDEMPOTENCY_UNCHECKED = Counter(
    "streamapp_idempotency_unchecked",
    "Trigger messages with an idempotency key accepted while no owner of the key answered (not checked for 409)",
)
READY = Gauge("streamapp_ready", "1 while the worker serves: started, not rebalancing, its tables recovered")
BUILD_INFO = Gauge("streamapp_build_info", "Always 1; the label says which streamapp version runs", ["version"])
EVENT_LOOP_LAG = Histogram(
    "streamapp_event_loop_lag_seconds",
    "How late the event loop ran a timer (streamapp.http.loop_lag): time blocked by one request or task",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# -- tracking (streamapp.sending.tracking) ----------------------------------------
TRACKING_HITS = Counter(
    "streamapp_tracking_hits",
    "Open pixel and click requests with a genuine token, by what they recorded: opened (a reader's first open),"
    " machine (a prefetcher's or within 60 s of delivery), clicked (a link's first click), repeat, dropped",
    ["kind", "outcome"],
)
_TRACKING_OUTCOMES = {"open": ("opened", "machine", "repeat", "dropped"), "click": ("clicked", "repeat", "dropped")}
for _kind, _outcomes in _TRACKING_OUTCOMES.items():
    for _outcome in _outcomes:
        TRACKING_HITS.labels(kind=_kind, outcome=_outcome)

CONSUMER_LAG_RECORDS = Gauge(
    "streamapp_consumer_lag_records",
    "Broker end offset minus the group's committed offset, per partition of the consumed topics, owned or not",
    ["topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "streamapp_consumer_lag_seconds",
    "Estimated age of the oldest unread record per partition (from end offsets sampled every 5 s; 0 if none)",
    ["topic", "partition"],
)

# -- segments (streamapp.segments) ----------------------------------------------
SEGMENT_MEMBERS = Gauge(
    "streamapp_segment_members",
    "Members of a ready segment in this worker's partitions (exact; sum over workers for the segment's count)",
    ["database", "segment"],
)
TIMER_LATENESS = Histogram(
    "streamapp_timer_lateness_seconds",
    "How late each due segment timer fired: the flip's re-evaluation time minus its due time",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
SEGMENT_CHANGES = Counter(
    "streamapp_segment_changes",
    "Segment membership changes published (entered or left), by database",
    ["database"],
)
