"""The status of a task id that may have finished long ago (SPEC §12).

Kafka has no point lookup. With `STREAMPROC_WEB_URL` set, `streamproc web` answers from its
materialised view of the status topic (one HTTP request). Without it the lookup is a bounded read:
the status partitions that can hold the id (one when its intake partition is known, else all),
read from their start to their current end, about as long as reading the records the status TTL
keeps there (see the README for the price).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc.lifecycle.reading import records_until
from streamproc.lifecycle.status import TaskStatus, newer
from streamproc.settings import KafkaSettings


async def read_status(settings: KafkaSettings, topic: str, task_id: str, partitions: list[int]) -> TaskStatus:
    """The latest status of `task_id` in the `partitions` of the status topic, read whole."""
    consumer = AIOKafkaConsumer(**settings.client_kwargs(), enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        await consumer.seek_to_beginning(*assigned)
        found: TaskStatus | None = None
        wanted = task_id.encode()
        async for record in records_until(consumer, ends, max_records=10_000):
            if record.key == wanted and (status := TaskStatus.from_json(record.value)) is not None:
                found = newer(found, status)
        return found or TaskStatus.unknown(task_id)
    finally:
        await consumer.stop()
