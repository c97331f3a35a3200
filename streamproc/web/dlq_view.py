"""The DLQ as the monitor shows it: counts by reason and task, and the latest dead letters.

`DlqView` tails `<prefix>.dlq` from its start (assigned, no group) and keeps only totals and the
`LATEST` newest letters, so a DLQ of millions costs the same memory as one of ten. Which of the
latest letters were replayed is asked of the replay group's ledger when the page is read
(`dlq.replayed_ids`), since a replay from the CLI changes it without writing to the DLQ.
"""

from __future__ import annotations

from collections import Counter, deque

from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel, Field

from streamproc import lenient_decoding
from streamproc.dead_letters import NO_TASK, DeadLetter
from streamproc.settings import KafkaSettings
from streamproc.tailing import partitions_when_present, start_when_reachable
from streamproc.topology import Topology

LATEST = 50
MAX_GROUPS = 1_000  # distinct (reason, task) pairs kept apart; any client may write the DLQ, so bound them
OTHER = "(other)"
MESSAGE_CHARS = 300


class LetterSummary(BaseModel):
    id: str = Field(description="PARTITION:OFFSET, what `streamproc dlq show` and replay take")
    partition: int
    offset: int
    task: str | None
    task_id: str | None
    reason: str | None
    error_type: str
    error: str = Field(description=f"the error message, its first {MESSAGE_CHARS} characters")
    attempt: int
    failed_at: int = Field(description="ms since epoch")

    @classmethod
    def of(cls, letter: DeadLetter) -> LetterSummary:
        return cls(
            id=letter.id,
            partition=letter.partition,
            offset=letter.offset,
            task=letter.task,
            task_id=letter.task_id,
            reason=letter.reason,
            error_type=letter.error_type,
            error=letter.error_message[:MESSAGE_CHARS],
            attempt=letter.attempt,
            failed_at=letter.failed_at_ms,
        )


class ReasonCount(BaseModel):
    reason: str
    task: str
    count: int


class DlqSummary(BaseModel):
    total: int = Field(description="dead letters read since the DLQ's start (replayed ones included)")
    by_reason: list[ReasonCount] = Field(description="the largest first")
    latest: list[LetterSummary] = Field(description=f"the {LATEST} newest, newest first")


class DlqView:
    def __init__(self, settings: KafkaSettings, topology: Topology) -> None:
        self._settings, self._topic = settings, topology.dlq_topic
        self._counts: Counter[tuple[str, str]] = Counter()
        self._latest: deque[LetterSummary] = deque(maxlen=LATEST)
        self.total = 0

    def summary(self) -> DlqSummary:
        return DlqSummary(
            total=self.total,
            by_reason=[
                ReasonCount(reason=reason, task=task, count=count)
                for (reason, task), count in self._counts.most_common()
            ],
            latest=list(reversed(self._latest)),
        )

    def apply(self, letter: DeadLetter) -> None:
        key = (letter.reason or "(none)", letter.task or NO_TASK)
        if key not in self._counts and len(self._counts) >= MAX_GROUPS:
            key = (OTHER, OTHER)
        self._counts[key] += 1
        self.total += 1
        self._latest.append(LetterSummary.of(letter))

    async def run(self) -> None:
        """Tail the DLQ until cancelled."""
        lenient_decoding.install()  # a header key that is not UTF-8 must not stop the view
        consumer = AIOKafkaConsumer(**self._settings.client_kwargs(), enable_auto_commit=False)
        try:
            await start_when_reachable(consumer)
            consumer.assign(await partitions_when_present(self._settings, self._topic))
            await consumer.seek_to_beginning()
            while True:
                for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                    for record in records:
                        self.apply(DeadLetter.from_record(record))
        finally:
            await consumer.stop()
