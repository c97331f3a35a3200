"""The task ids that succeeded on a partition before this worker took it over, so it skips them (SPEC §12).

A worker knows the ids it finished itself (`tracking`); a partition it takes over brings ids the
previous owner finished that can still arrive again:
- work that succeeded after the owner's last commit, when the owner crashed: a commit is made every
  second, so that is about a second of its throughput, or all of it when it died before its first
  commit;
- a second copy of a finished task at a later offset: a workflow step that a crashed worker had
  sent, sent again by the successor that re-ran the step before it (same deterministic id), or a
  resubmit with the same id. Such copies follow the first within a session timeout and a re-run.
Their status records are durable (written before the offset finished) and land in the status
partition numbered like the intake partition. The last commit notes its time on the owner's own
clock (`offsetmap`, sp2), the clock that stamped its statuses, so reading status partition *p* from
`LOOKBACK_MS` before that time (before now when the partition has no commit) to its end finds them.
Tier partitions are not restored: their tasks come from every intake partition, so their
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
# Six default session timeouts (10 s): the time between two copies of a task id that a crash and
# the re-run of the step that sent it make, with room for a slow rebalance. About a minute of
# statuses per partition taken over is the cost, read at every assignment.
LOOKBACK_MS = 60_000
SUCCEEDED = b'"state":"succeeded"'  # statuses are compact JSON: most records are skipped undecoded
DEADLINE_S = 10.0


async def succeeded_since(consumer: AIOKafkaConsumer, topic: str, since_ms: Mapping[int, int]) -> dict[str, TaskStatus]:
    """The `succeeded` statuses in the status partitions `since_ms` names, each read from
    `LOOKBACK_MS` before that time to its current end. `consumer` has no group and nothing else assigned."""
    if not since_ms:
        return {}
    partitions = {TopicPartition(topic, p): at - LOOKBACK_MS for p, at in since_ms.items()}
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
                if record.value is None or SUCCEEDED not in record.value:
                    continue
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
