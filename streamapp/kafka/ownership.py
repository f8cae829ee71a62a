"""Which worker owns a partition of a table, from Faust's partition assignor.

Every member of the consumer group advertises its `service.advertised_url`; the assignor's
changelog distribution says which URL holds which changelog partitions. The HTTP layer uses this
to forward a read to the worker that has the row (streamapp.http.forwarding).
"""

from __future__ import annotations

from yarl import URL

from streamapp.kafka.app import KafkaApp


class OwnerUnknown(Exception):
    """No owner can be named now: the worker is starting or rebalancing, or assignment is not known."""


class Ownership:
    def __init__(self, kafka: KafkaApp, self_url: str) -> None:
        self.kafka = kafka
        self.self_url = URL(self_url)

    def owner_of(self, table: str, partition: int) -> URL | None:
        """The URL of the worker owning `partition` of `table`, or None when it is this worker."""
        if not self.kafka.is_ready():
            raise OwnerUnknown("worker is starting or rebalancing")
        app = self.kafka.faust
        changelog = app.tables[table].changelog_topic.get_topic_name()
        for url, topics in app.assignor.changelog_distribution.items():
            if partition in topics.get(changelog, ()):
                owner = URL(url)
                return None if (owner.host, owner.port) == (self.self_url.host, self.self_url.port) else owner
        raise OwnerUnknown("partition assignment not known yet")
