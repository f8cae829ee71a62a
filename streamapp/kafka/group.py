"""The consumer group as the broker describes it: its members, their URLs and the partitions each owns.

Faust's partition assignor puts, in every member's assignment, a zlib-compressed JSON `ClientMetadata`
with the member's `url` (its `service.advertised_url`) and its active and standby partitions, so the
broker alone can say which worker owns what, without asking any worker (`streamapp status`).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

from streamapp.kafka.security import client_options
from streamapp.kafka.topics import bootstrap_servers
from streamapp.settings import Settings


@dataclass(frozen=True)
class Member:
    """One worker of the group: who it is, and the partitions assigned to it, by topic."""

    member_id: str
    client_id: str
    host: str
    url: str | None
    actives: dict[str, list[int]] = field(default_factory=dict)
    standbys: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    group_id: str
    state: str  # Stable, PreparingRebalance, CompletingRebalance, Empty, Dead
    members: list[Member]


def decode_member(member_id: str, client_id: str, host: str, assignment: bytes) -> Member:
    """A member from its raw assignment: Kafka's consumer protocol, with Faust's metadata as user data.

    An assignment that is empty (a rebalance in progress) or not Faust's gives a member without URL.
    """
    if not assignment:
        return Member(member_id, client_id, host, None)
    decoded = ConsumerProtocolMemberAssignment.decode(assignment)
    kafka_actives = {topic: sorted(partitions) for topic, partitions in decoded.assignment}
    try:
        metadata: dict[str, Any] = json.loads(zlib.decompress(decoded.user_data))
    except (zlib.error, ValueError, TypeError):
        return Member(member_id, client_id, host, None, kafka_actives)
    faust_assignment = metadata.get("assignment") or {}
    return Member(
        member_id,
        client_id,
        host,
        metadata.get("url"),
        {t: sorted(p) for t, p in (faust_assignment.get("actives") or kafka_actives).items()},
        {t: sorted(p) for t, p in (faust_assignment.get("standbys") or {}).items()},
    )


#: How long a request to the broker may take.
REQUEST_TIMEOUT_MS = 10_000


async def describe_group(settings: Settings) -> Group:
    """The group of `settings.service.id` (an unknown group is `Dead` with no members)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings), request_timeout_ms=REQUEST_TIMEOUT_MS, **client_options(settings)
    )
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([settings.service.id])
    finally:
        await admin.close()
    for response in responses:
        for group in response.to_object()["groups"]:
            members = [
                decode_member(m["member_id"], m["client_id"], m["client_host"], m["member_assignment"])
                for m in group["members"]
            ]
            return Group(group["group"], group["state"], sorted(members, key=lambda m: m.url or m.member_id))
    return Group(settings.service.id, "Dead", [])
