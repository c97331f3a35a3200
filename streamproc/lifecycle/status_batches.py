"""`StatusBatches`: the worker's status records, sent a batch per status partition (SPEC §12).

A task's offset may finish only once its status is acknowledged. Sent one by one through aiokafka's
`send`, and awaited one by one, a status cost more than a no-op task itself. Here each partition
has at most one batch in flight: a status added while it flies waits for it and goes in the next
batch, so an idle worker sends a status at once (the next turn of the loop) and a busy one sends
large batches (as Nagle's algorithm does). When the broker has acknowledged a batch, each of its
statuses' `on_sent` runs (the worker marks the offset finished there), so no task waits on a
future of its own. `settled` waits for everything added so far: a release commits after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from streamproc.acked import TOO_LARGE, AckedWriter
from streamproc.lifecycle.status import TaskStatus

# Under the broker's default max.message.bytes (1 MiB and change); a topic set lower is found on the send.
MAX_STATUS_BYTES = 1_000_000

Sent = Callable[[], None]


class StatusBatches:
    """Statuses gathered per partition of one topic until they are sent together."""

    def __init__(self, writer: AckedWriter, topic: str) -> None:
        self._writer = writer
        self._topic = topic
        # partition → each waiting status: (key, value, on_sent)
        self._open: dict[int, list[tuple[bytes, bytes, Sent]]] = {}
        self._sending: dict[int, asyncio.Task[None]] = {}  # partition → its sending task (`_send`)
        self.on_error: Callable[[BaseException], None] = lambda error: None  # a send or an `on_sent` failed

    def add(self, partition: int, task_id: str, value: bytes, on_sent: Sent) -> None:
        """Send the status record `value` (`TaskStatus.to_json`'s) of `task_id`; `on_sent` runs once the
        broker has it. A result too large for the topic is replaced by a `result_error` saying so, never
        a stuck partition."""
        if len(value) > MAX_STATUS_BYTES:
            value = self._too_large(value)
        waiting = self._open.get(partition)
        if waiting is None:
            waiting = self._open[partition] = []
            if partition not in self._sending:  # else its sending task takes it after the batch in flight
                self._sending[partition] = asyncio.create_task(self._send(partition))
        waiting.append((task_id.encode(), value, on_sent))

    async def settled(self) -> None:
        """Return once every status added so far was sent (or its send failed)."""
        while self._sending:
            await asyncio.wait(list(self._sending.values()))

    def _too_large(self, value: bytes) -> bytes:
        status = TaskStatus.from_json(value)
        assert status is not None, "a status this module's caller wrote"
        error = f"the result ({len(value)} bytes as a status record) is too large for {self._topic}"
        return replace(status, result=None, result_error=error).to_json()

    async def _send(self, partition: int) -> None:
        """Send the partition's gathered statuses as a batch, then what gathered while it flew, until
        none is left. Its first step comes a turn after the first status, so it takes every status
        added in that turn."""
        try:
            while records := self._open.pop(partition, None):
                await self._send_batch(partition, records)
                for *_, on_sent in records:
                    on_sent()
        except Exception as error:  # a bug: the worker stops rather than leave the offsets unfinished
            self.on_error(error)
        finally:
            del self._sending[partition]
            if partition in self._open:  # added after a failure: a task of its own takes them
                self._sending[partition] = asyncio.create_task(self._send(partition))

    async def _send_batch(self, partition: int, records: list[tuple[bytes, bytes, Sent]]) -> None:
        try:
            await self._writer.send_batch(self._topic, partition, [(key, value) for key, value, _ in records])
        except TOO_LARGE:  # the topic's max.message.bytes is below a status: find it, replace it
            for key, value, _ in records:
                try:
                    await self._writer.send(self._topic, value, key, [], partition=partition)
                except TOO_LARGE:
                    await self._writer.send(self._topic, self._too_large(value), key, [], partition=partition)
