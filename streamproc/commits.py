"""Committing a worker's partitions, and picking up where their previous owner left off (SPEC §5).

A commit names each partition's lowest unfinished offset and carries, in its metadata, the offsets
above it that already finished (`offsetmap`). A partition's new owner reads that commit back when
it is assigned the partition, so work that finished behind a slow task is not run twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc import offsetmap
from streamproc.offsets import PartitionOffsets

log = structlog.get_logger("streamproc.worker")
READ_TIMEOUT_S = 10.0
# aiokafka retries a retriable commit error without end, and a partition of a topic deleted under the
# worker answers one (UnknownTopicOrPartition) until the group rebalances: that would hold every
# later commit, and a revocation's final commit would hold the rebalance itself.
COMMIT_TIMEOUT_S = 10.0


async def commit(
    consumer: AIOKafkaConsumer, trackers: Mapping[TopicPartition, PartitionOffsets], final: bool = False
) -> None:
    """Commit every tracker whose commit changed; a failure is logged and left to the next call.
    `final`: the worker lets these partitions go, so nothing of them finishes after this commit."""
    assigned = consumer.assignment()  # read right before the commit (KAFKA-NOTES "Commits")
    for tp, position in _positions(consumer, assigned).items():
        tracker = trackers.get(tp)
        if tracker is not None:
            tracker.passed(position)
    existing = consumer._client.cluster.topics()  # a deleted topic's partitions stay assigned until a rebalance
    at_ms = time.time_ns() // 1_000_000
    # The trackers themselves, not their dict: a revocation may remove them during the await.
    due = [
        (tp, tracker, commit)
        for tp, tracker in trackers.items()
        if tp in assigned and tp.topic in existing and (commit := tracker.to_commit(at_ms, final)) is not None
    ]
    if not due:
        return
    try:
        async with asyncio.timeout(COMMIT_TIMEOUT_S):  # the metadata may not know of a deletion yet
            await consumer.commit({tp: (offset, metadata) for tp, _, (offset, metadata, _, _) in due})
    except (KafkaError, TimeoutError) as exc:
        # A rebalance took the partitions (their next owner resumes from the last commit), the
        # broker is unreachable for now, or a topic is gone (the next commit carries the same offsets).
        log.warning(
            "commit failed", error=str(exc) or type(exc).__name__, error_type=type(exc).__name__, partitions=len(due)
        )
        return
    for _, tracker, (offset, _, version, final_) in due:
        tracker.committed(offset, version, final_)


def _positions(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The next offset the consumer hands out, of each of `partitions` where it knows it. Read from
    its subscription state: the public `position()` waits for an unknown one, and a commit must not."""
    subscription = consumer._subscription.subscription
    if subscription is None or subscription.assignment is None:
        return {}
    positions = {}
    for tp in partitions:
        state = subscription.assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            positions[tp] = state.position
    return positions


@dataclass(frozen=True, slots=True)
class Inherited:
    """What a partition's last commit says: the offsets finished above it, and (sp2) when it was made."""

    finished: set[int]
    at_ms: int | None


async def inherited(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, Inherited]:
    """The last commits of `partitions` (those the group committed), as `Inherited`.

    aiokafka's public `committed()` drops the metadata, so this asks its group coordinator, as
    `committed()` does itself. If the broker cannot say, nothing is known: those tasks run again.
    """
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):  # aiokafka retries retriable errors without end
            commits = await consumer._coordinator.fetch_committed_offsets(list(partitions))
    except (KafkaError, TimeoutError) as exc:
        log.warning("could not read the offset maps of the last commits", error=str(exc) or type(exc).__name__)
        return {}
    return {
        tp: Inherited(offsetmap.decode(found.offset, found.metadata), offsetmap.noted_at(found.metadata))
        for tp, found in commits.items()
        if found.offset >= 0
    }
