"""Typed helpers over aiokafka's admin client: reachability and the state of topics.

aiokafka's admin methods return raw protocol responses; this module turns them into plain
values and raises on per-topic error codes, so callers never read error tuples themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code
from aiokafka.structs import OffsetAndMetadata

from streamproc.settings import KafkaSettings

UNKNOWN_TOPIC_OR_PARTITION = 3


@dataclass(frozen=True)
class TopicState:
    """What the cluster has for one topic."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def admin_client(settings: KafkaSettings, timeout_ms: int = 15_000) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(**settings.client_kwargs(), request_timeout_ms=timeout_ms)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def broker_answers(settings: KafkaSettings, within_s: float = 5.0) -> bool:
    """True when a metadata request to the cluster succeeds within `within_s` seconds."""
    try:
        async with asyncio.timeout(within_s), admin_client(settings, timeout_ms=int(within_s * 1000)) as client:
            await client.describe_cluster()
    except (TimeoutError, KafkaError, OSError):
        return False
    return True


def _raise_for_code(code: int, what: str, message: str | None = None) -> None:
    if code:
        error = for_code(code)
        raise error(f"{what}: {message or error.__name__}")


async def describe_topics(client: AIOKafkaAdminClient, names: list[str]) -> dict[str, TopicState]:
    """The existing topics among `names`, with their dynamic (non-default) configs."""
    existing = set(await client.list_topics()) & set(names)
    if not existing:
        return {}
    metadata = await client.describe_topics(sorted(existing))
    shapes = {
        t["topic"]: (len(t["partitions"]), min((len(p["replicas"]) for p in t["partitions"]), default=0))
        for t in metadata
    }
    responses = await client.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in sorted(existing)]
    )
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for code, message, _type, name, entries in response.resources:
            _raise_for_code(code, f"describe configs of {name}", message)
            # entry: (name, value, read_only, config_source, is_sensitive, ...); source 1 = topic override
            configs[name] = {e[0]: e[1] for e in entries if e[3] == 1}
    return {
        name: TopicState(name, shapes[name][0], shapes[name][1], configs.get(name, {})) for name in sorted(existing)
    }


async def create_topics(client: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    response = await client.create_topics(topics)
    for name, code, *rest in response.topic_errors:
        _raise_for_code(code, f"create topic {name}", rest[0] if rest else None)
    await _wait_for_partitions(client, {t.name: t.num_partitions for t in topics})


async def add_partitions(client: AIOKafkaAdminClient, counts: dict[str, int]) -> None:
    """Raise each topic's partition count to the given total (aiokafka raises on error codes)."""
    await client.create_partitions({name: NewPartitions(total) for name, total in counts.items()})
    await _wait_for_partitions(client, counts)


async def _wait_for_partitions(client: AIOKafkaAdminClient, counts: dict[str, int], within_s: float = 30.0) -> None:
    """Return once metadata shows every topic with its partitions led: the controller's answer
    comes before the brokers' metadata catches up, and a client started at once would miss them."""
    async with asyncio.timeout(within_s):
        while True:
            metadata = await client.describe_topics(sorted(counts))
            led = {t["topic"]: sum(p["leader"] >= 0 for p in t["partitions"]) for t in metadata if not t["error_code"]}
            if all(led.get(name, 0) >= count for name, count in counts.items()):
                return
            await asyncio.sleep(0.1)


async def delete_topics(client: AIOKafkaAdminClient, names: list[str], within_s: float = 30.0) -> list[str]:
    """Delete the existing topics among `names`; return once metadata no longer lists them (a topic
    created again at once would otherwise collide with the deletion still under way)."""
    existing = sorted(set(await client.list_topics()) & set(names))
    if not existing:
        return []
    response = await client.delete_topics(existing)
    for name, code in response.topic_error_codes:
        if code != UNKNOWN_TOPIC_OR_PARTITION:  # deleted meanwhile: the outcome wanted
            _raise_for_code(code, f"delete topic {name}")
    async with asyncio.timeout(within_s):
        while True:
            if not set(await client.list_topics()) & set(existing):
                return existing
            await asyncio.sleep(0.1)


async def set_topic_configs(client: AIOKafkaAdminClient, configs: dict[str, dict[str, str]]) -> None:
    """Replace each topic's overrides with `configs` (AlterConfigs is a full replacement)."""
    responses = await client.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, values) for name, values in configs.items()]
    )
    for response in responses:
        for code, message, _type, name in response.resources:
            _raise_for_code(code, f"alter configs of {name}", message)


async def topic_partitions(client: AIOKafkaAdminClient, names: list[str]) -> dict[str, list[int]]:
    """The partition numbers of the existing topics among `names`; a missing one is absent (only
    existing topics are described, so a broker that auto-creates topics does not create it)."""
    existing = sorted(set(await client.list_topics()) & set(names))
    if not existing:
        return {}
    return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in await client.describe_topics(existing)}


async def log_bounds(settings: KafkaSettings, topics: list[str]) -> dict[TopicPartition, tuple[int, int]]:
    """(log start, end offset) of every partition of the existing topics among `topics`."""
    async with admin_client(settings) as client:
        found = await topic_partitions(client, topics)
    partitions = [TopicPartition(topic, p) for topic, numbers in found.items() for p in numbers]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp: (starts[tp], ends[tp]) for tp in partitions}


async def end_offsets(settings: KafkaSettings, topics: list[str]) -> dict[TopicPartition, int]:
    """The end offset (next offset to be written) of every partition of `topics`."""
    return {tp: end for tp, (_, end) in (await log_bounds(settings, topics)).items()}


async def committed_offsets(settings: KafkaSettings, group: str) -> dict[TopicPartition, int]:
    """The offsets `group` has committed (partitions without a commit are absent)."""
    return {tp: committed.offset for tp, committed in (await committed_with_metadata(settings, group)).items()}


async def committed_with_metadata(settings: KafkaSettings, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets `group` has committed with the metadata string of each commit."""
    async with admin_client(settings) as client:
        offsets = await client.list_consumer_group_offsets(group)
    return {tp: committed for tp, committed in offsets.items() if committed.offset >= 0}
