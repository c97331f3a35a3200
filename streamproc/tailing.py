"""What a reader that follows a topic with no group (the DLQ view, the live monitor) waits for at start:
a broker that answers, then the topic. Both are logged and retried every `RETRY_S`, never raised, so
a monitor started before the broker or before `topics apply` comes up on its own."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.admin import admin_client, topic_partitions
from streamproc.settings import KafkaSettings

RETRY_S = 2.0
log = structlog.get_logger("streamproc.tailing")


async def start_when_reachable(consumer: AIOKafkaConsumer) -> None:
    while True:
        try:
            await consumer.start()
            return
        except (KafkaError, OSError) as exc:
            log.warning("waiting for the broker", error=str(exc) or type(exc).__name__)
            await consumer.stop()
        await asyncio.sleep(RETRY_S)


async def partitions_when_present(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """Every partition of `topic`, once it exists."""
    while True:
        with contextlib.suppress(KafkaError, OSError):
            async with admin_client(settings) as client:
                if numbers := (await topic_partitions(client, [topic])).get(topic):
                    return [TopicPartition(topic, p) for p in numbers]
        log.warning("waiting for the topic: run `streamproc topics apply`", topic=topic)
        await asyncio.sleep(RETRY_S)
