"""Celery on Kafka through kombu's `confluentkafka://` transport, consuming no-op tasks.

`celery_peer.py fill '<spec>'` sends `count` Celery messages of the `noop` task to the queue
(its own topic, `topic`) with `app.send_task`: the very messages Celery's clients write. kombu's
transport flushes its producer after every message, one broker round trip each; for filling only,
the flush is deferred to the end (the records are the same).

`celery_peer.py '<spec>'` runs a worker: solo pool, `task_acks_late` (at-least-once: kombu's
transport commits the consumer's offsets when a task is acked, after it ran), default prefetch,
no remote control, events, mingle, gossip or heartbeat (they would create topics of their own).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from celery import Celery  # type: ignore[import-not-found]
from kombu.transport import confluentkafka  # type: ignore[import-not-found]
from kombu.utils.encoding import str_to_bytes  # type: ignore[import-not-found]
from kombu.utils.json import dumps  # type: ignore[import-not-found]

# The sibling module of this directory (the script's own is on sys.path); mypy sees none.
from protocol import Counter, finish, report_progress, spec  # type: ignore[import-not-found]

PARTITIONS = 6
counter = Counter()


def make_app(config: dict[str, Any]) -> Celery:
    app = Celery("bench", broker=f"confluentkafka://{config['bootstrap_servers']}")
    app.conf.update(
        broker_transport_options={
            "num_partitions": PARTITIONS,
            "wait_time_seconds": 1,
            "kafka_consumer_config": {"group.id": config["group"]},
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=config["topic"],
        task_acks_late=True,
        task_ignore_result=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )

    @app.task(name="noop")  # type: ignore[untyped-decorator]
    def noop(payload: dict[str, Any]) -> None:
        counter.done += 1

    return app


def fill(config: dict[str, Any]) -> None:
    producers: list[Any] = []

    def put(self: Any, queue: str, message: Any, **kwargs: Any) -> None:
        producer = self._get_producer(queue)
        if producer not in producers:
            producers.append(producer)
        while True:
            try:
                producer.produce(self.sanitize_queue_name(queue), str_to_bytes(dumps(message)))
                break
            except BufferError:  # librdkafka's queue is full: let it send
                producer.poll(0.05)
        producer.poll(0)

    confluentkafka.Channel._put = put
    app = make_app(config)
    with app.producer_or_acquire() as producer:
        for n in range(config["count"]):
            app.send_task("noop", args=[{"n": n}], producer=producer)
    for producer in producers:
        producer.flush()


def work(config: dict[str, Any]) -> None:
    app = make_app(config)
    progress = report_progress(counter)
    with contextlib.suppress(SystemExit):  # SIGTERM: Celery's warm shutdown
        app.worker_main(
            ["worker", "--pool=solo", "--loglevel=ERROR", "--without-mingle", "--without-gossip", "--without-heartbeat"]
        )
    finish(counter, progress)
    sys.exit(0)


if __name__ == "__main__":
    (fill if sys.argv[1] == "fill" else work)(spec())
