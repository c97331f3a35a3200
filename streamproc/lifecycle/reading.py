"""`records_until`: read assigned partitions up to given offsets, the loop the lifecycle's readers share.

The bounded reads of the lifecycle (a status lookup without `streamproc web`, the statuses a crashed
worker wrote after its last commit, the control topic before a worker's first task) all read some
partitions, already assigned and positioned, up to offsets taken beforehand. Offsets are not
contiguous (compaction, transaction markers), so the end is known by the consumer's position, not by
the last record's offset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

FETCH_WAIT_MS = 500


async def records_until(
    consumer: AIOKafkaConsumer, stops: Mapping[TopicPartition, int], max_records: int | None = None
) -> AsyncIterator[Any]:
    """The records of the partitions in `stops` from their positions up to (not including) their stop
    offsets, each partition in offset order."""
    todo = {tp: stop for tp, stop in stops.items() if await consumer.position(tp) < stop}
    while todo:
        for tp, records in (await consumer.getmany(*todo, timeout_ms=FETCH_WAIT_MS, max_records=max_records)).items():
            for record in records:
                if record.offset < todo[tp]:
                    yield record
        todo = {tp: stop for tp, stop in todo.items() if await consumer.position(tp) < stop}
