"""Every topic name, and the source topics created before a worker subscribes to them.

Faust creates its changelog topics itself, but a consumer that subscribes to
a source topic the broker does not have yet gets it ignored by the partition
assignor ("Ignoring missing topic") and never consumes it, and a broker with
auto-creation would make it with one partition. So every worker creates the
source topics with the configured partitions first, and refuses to start on
a topic whose partition count differs (tables are co-partitioned with it).

The segment definitions topic is not a Faust source: one partition, compacted,
read whole by every worker (docs/segments.md). It is created here too, and a
worker refuses one with more partitions or without compaction.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

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
    """Topics with the configured partitions (co-partitioned with the tables), created before a worker starts."""
    return [commands_topic(settings), *messages_topics(settings), segment_changes_topic(settings)]


def segment_changes_topic(settings: Settings) -> str:
    """Segment membership changes (SPEC §9): keyed by recipient key, in the recipient's partition (the
    partition of its commands), so the journeys of SPEC §10 consume them where the recipient lives."""
    return f"{settings.service.id}-segment-changes"


def segment_definitions_topic(settings: Settings) -> str:
    """API segment definitions (SPEC §9): key `database/segment`, compacted, one partition."""
    return f"{settings.service.id}-segment-definitions"


#: Topic configuration of the definitions topic: compaction keeps the newest record of each key forever.
COMPACTED = {"cleanup.policy": "compact"}


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
        await _ensure_definitions_topic(admin, settings)
    finally:
        await admin.close()


async def _ensure_definitions_topic(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Create the segment definitions topic, or check that the existing one is single and compacted."""
    name = segment_definitions_topic(settings)
    try:
        await admin.create_topics([NewTopic(name, 1, settings.service.replication_factor, topic_configs=COMPACTED)])
        log.info("created compacted topic %s", name)
    except TopicAlreadyExistsError:
        pass
    for description in await admin.describe_topics([name]):
        count = len(description["partitions"])
        if count > 1:
            raise TopicError(f"topic {name} has {count} partitions; segment definitions need exactly 1")
    policy = await cleanup_policy(admin, name)
    if policy is not None and "compact" not in policy.split(","):
        raise TopicError(
            f"topic {name} has cleanup.policy={policy}; segment definitions need cleanup.policy=compact "
            "(or they are deleted after the retention time)"
        )


async def cleanup_policy(admin: AIOKafkaAdminClient, topic: str, seconds: float = 20.0) -> str | None:
    """The topic's cleanup.policy, or None when the broker's answer does not say.

    A topic just created is unknown to the config handler for a moment: that answer is retried.
    """
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            responses = await admin.describe_configs([resource])
        except KafkaError as exc:  # a broker that will not tell: the check is skipped, not the start-up
            log.warning("cannot read the cleanup.policy of %s: %s", topic, exc)
            return None
        found = [r for response in responses for r in response.to_object()["resources"]]
        unknown = any(r["error_code"] == UnknownTopicOrPartitionError.errno for r in found)
        if not unknown or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    for entry in (e for r in found for e in r.get("config_entries", [])):
        if entry.get("config_names") == "cleanup.policy":
            return str(entry.get("config_value"))
    return None


def ensure_topics_sync(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
