"""Every topic name, and the source topics created before a worker subscribes to them.

Faust creates its changelog topics itself, but a consumer that subscribes to
a source topic the broker does not have yet gets it ignored by the partition
assignor ("Ignoring missing topic") and never consumes it, and a broker with
auto-creation would make it with one partition. So every worker creates the
source topics with the configured partitions first, and refuses to start on
a topic whose partition count differs (tables are co-partitioned with it).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streamapp.core.models import PRIORITIES, Priority
from streamapp.kafka.security import client_options, connect_problem
from streamapp.settings import Settings

log = logging.getLogger(__name__)


class TopicError(RuntimeError):
    """The source topics cannot be made ready: one has the wrong number of partitions, or no broker answers."""


class BrokerUnreachable(TopicError):
    """The broker turned the admin client away (wrong protocol, untrusted certificate, failed SASL login)."""


def commands_topic(settings: Settings) -> str:
    return f"{settings.service.id}-recipient-commands"


def messages_topic(settings: Settings, priority: Priority) -> str:
    return f"{settings.service.id}-messages-{priority}"


def messages_topics(settings: Settings) -> list[str]:
    return [messages_topic(settings, p) for p in PRIORITIES]


def source_topics(settings: Settings) -> list[str]:
    return [commands_topic(settings), *messages_topics(settings)]


def bootstrap_servers(settings: Settings) -> str:
    return settings.service.broker.removeprefix("kafka://")


async def ensure_topics(settings: Settings, request_timeout: float = 60.0) -> None:
    """Create missing source topics; check the partition count of existing ones."""
    service = settings.service
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings),
        request_timeout_ms=int(request_timeout * 1000),
        **client_options(settings),
    )
    try:
        await admin.start()
    except KafkaConnectionError:
        await admin.close()
        raise BrokerUnreachable(await connect_problem(settings)) from None
    try:
        wanted = source_topics(settings)
        for name in wanted:
            try:
                await admin.create_topics([NewTopic(name, service.partitions, service.replication_factor)])
                log.info("created topic %s with %d partitions", name, service.partitions)
            except TopicAlreadyExistsError:
                pass
        for description in await admin.describe_topics(wanted):
            count = len(description["partitions"])
            if count and count != service.partitions:
                raise TopicError(
                    f"topic {description['topic']} has {count} partitions but service.partitions is "
                    f"{service.partitions}; partitions cannot change once data exists"
                )
    finally:
        await admin.close()


def ensure_topics_sync(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
