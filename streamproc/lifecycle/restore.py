"""The task ids a crashed worker finished after its last commit, so its successor skips them (SPEC §12).

A worker commits every second; work that succeeded since its last commit is in no commit, and a
successor would run it again: with the default interval, about a second of a crashed worker's
throughput. Its status records are durable, though (written before the offset finished), and
land in the status partition numbered like the intake partition. The last commit notes its time
on the dead worker's own clock (`offsetmap`, sp2), and that worker stamped its status records with
the same clock, so reading status partition *p* from that time (less `MARGIN_MS`, for a record
sent just before the commit and acknowledged after it) to its end finds every task of intake
partition *p* it finished since. A final commit (the partition was released, not lost) needs no
read. Tier partitions are not restored: their tasks come from every intake partition, so their
statuses could lie anywhere; a retry finished in the last second before a crash runs again.

The read is bounded by `DEADLINE_S`; past it the rest is left to at-least-once (those tasks run again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.lifecycle.reading import records_until
from streamproc.lifecycle.status import TaskState, TaskStatus

log = structlog.get_logger("streamproc.worker")
MARGIN_MS = 2_000
DEADLINE_S = 10.0


async def succeeded_since(consumer: AIOKafkaConsumer, topic: str, since_ms: Mapping[int, int]) -> dict[str, TaskStatus]:
    """The `succeeded` statuses in the status partitions `since_ms` names, each read from that time
    (less the margin) to its current end. `consumer` has no group and nothing else assigned."""
    if not since_ms:
        return {}
    partitions = {TopicPartition(topic, p): at - MARGIN_MS for p, at in since_ms.items()}
    found: dict[str, TaskStatus] = {}
    try:
        async with asyncio.timeout(DEADLINE_S):
            consumer.assign(list(partitions))
            starts = await consumer.offsets_for_times(partitions)
            ends = await consumer.end_offsets(list(partitions))
            stops = {}
            for tp, start in starts.items():
                if start is not None:
                    consumer.seek(tp, start.offset)
                    stops[tp] = ends[tp]
            async for record in records_until(consumer, stops):
                status = TaskStatus.from_json(record.value)
                if status is not None and status.state is TaskState.SUCCEEDED:
                    found[status.task_id] = status
    except (KafkaError, TimeoutError) as exc:
        log.warning(
            "could not read all statuses finished after the last commits; those tasks may run again",
            error=str(exc) or type(exc).__name__,
            read=len(found),
        )
    finally:
        consumer.assign([])
    log.info("statuses restored", partitions=len(partitions), succeeded=len(found))
    return found
