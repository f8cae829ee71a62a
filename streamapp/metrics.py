"""Prometheus metrics (SPEC §7): base units, `_total` counters, no recipient data in labels."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

registry: CollectorRegistry = REGISTRY

HTTP_REQUESTS = Counter("streamapp_http_requests", "HTTP requests by route template and status code", ["route", "code"])
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
