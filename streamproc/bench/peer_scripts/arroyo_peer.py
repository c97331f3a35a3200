"""sentry-arroyo (librdkafka underneath) consuming the no-op backlog: a `RunTask` step that
JSON-decodes each value and does nothing, then `CommitOffsets`. At-least-once: offsets are
committed only after the step has run, by the processor's default policy (once per second)."""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from typing import Any

from arroyo.backends.kafka import KafkaConsumer, KafkaPayload  # type: ignore[import-not-found]
from arroyo.backends.kafka.configuration import (  # type: ignore[import-not-found]
    build_kafka_consumer_configuration,
)
from arroyo.processing import StreamProcessor  # type: ignore[import-not-found]
from arroyo.processing.strategies import (  # type: ignore[import-not-found]
    CommitOffsets,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    RunTask,
)
from arroyo.types import Commit, Message, Partition, Topic  # type: ignore[import-not-found]

# The sibling module of this directory (the script's own is on sys.path); mypy sees none.
from protocol import Counter, finish, report_progress, spec  # type: ignore[import-not-found]

counter = Counter()


def noop(message: Message[KafkaPayload]) -> None:
    json.loads(message.payload.value)
    counter.done += 1


class Factory(ProcessingStrategyFactory[KafkaPayload]):  # type: ignore[misc]
    def create_with_partitions(
        self, commit: Commit, partitions: Mapping[Partition, int]
    ) -> ProcessingStrategy[KafkaPayload]:
        return RunTask(noop, CommitOffsets(commit))


def main(config: dict[str, Any]) -> None:
    consumer = KafkaConsumer(
        build_kafka_consumer_configuration(
            default_config={},
            group_id=config["group"],
            auto_offset_reset="earliest",
            bootstrap_servers=config["bootstrap_servers"].split(","),
        )
    )
    processor = StreamProcessor(consumer, Topic(config["topic"]), Factory())
    signal.signal(signal.SIGTERM, lambda *_: processor.signal_shutdown())
    progress = report_progress(counter)
    processor.run()
    finish(counter, progress)


if __name__ == "__main__":
    main(spec())
