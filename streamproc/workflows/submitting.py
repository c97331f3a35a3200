"""The producer's side of workflows (SPEC §13): `Producer.submit(chain | group | chord)`.

Only a workflow's first records are sent here: a chain's first step, a group's or chord's members.
Everything after is produced by the worker that finishes what came before (`continuation`), from
what these records carry (`wire`). Each record's intake partition is picked here, from its id as
the Kafka key (the partitioner the worker's writes use too), and the ones still to come are carried
in the `workflow` header, so their statuses land where the `WorkflowHandle` awaits them.

- chain: the root id is a fresh UUID4; step 0 is validated against its model like any submit
  (later steps' payloads are completed at run time). The last step's `pending` status is written
  now too, so `handle.result()` follows the status partition from there, and says `pending`
  until the chain reaches its end.
- group: members are sent together (like `submit_many`), each with its own id as the key.
- chord: every member, and later the callback, goes to one intake partition (picked from the
  group id), so a join reads one status partition (`joins`). The callback has no status until a
  worker sends it: a join takes any callback status to mean "sent already".
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from streamproc.envelope import ROOT_ID, WORKFLOW, Headers, task_headers
from streamproc.lifecycle.handle import TaskHandle
from streamproc.lifecycle.status import TaskState, TaskStatus, status_partition
from streamproc.submission import TaskRecord, check_size, encode_payload, resolve_priority
from streamproc.workflows import wire
from streamproc.workflows.canvas import Chain, Chord, Group, Signature, Workflow
from streamproc.workflows.handle import WorkflowHandle

if TYPE_CHECKING:
    from streamproc.producer import Producer


async def submit_workflow(
    producer: Producer, workflow: Workflow, *, priority: str | None = None, traceparent: str | None = None
) -> WorkflowHandle:
    """Send a workflow's first records (see the module docstring); returns once the broker has them."""
    resolved = resolve_priority(producer.topology, priority)
    if isinstance(workflow, Chain):
        return await _chain(producer, workflow, resolved, traceparent)
    if isinstance(workflow, Chord):
        return await _group(producer, workflow.group, resolved, traceparent, workflow.callback)
    return await _group(producer, workflow, resolved, traceparent, None)


async def _chain(producer: Producer, chain: Chain, priority: str, traceparent: str | None) -> WorkflowHandle:
    topic = producer.topology.intake_topic(priority)
    kafka = await producer._ready(topic)
    root = str(uuid.uuid4())
    ids = [wire.step_id(root, k) for k in range(len(chain.steps))]
    partitions = [await producer._partition(kafka, topic, task_id.encode()) for task_id in ids]
    rest = tuple(
        wire.Step(sig.name, sig.payload, partition)
        for sig, partition in zip(chain.steps[1:], partitions[1:], strict=True)
    )
    position = wire.ChainStep(root, 0, len(ids), ids[-1], partitions[-1], rest)
    extra = [(ROOT_ID, root.encode()), (WORKFLOW, position.header())]
    first = _record(producer, chain.steps[0], root, priority, traceparent, extra)
    last = chain.steps[-1]
    pending_offset = None
    if len(ids) > 1 and producer._statuses:
        pending_offset = await _pending(producer, ids[-1], last.name, partitions[-1])
    [handle] = await producer._send(kafka, topic, [(first, partitions[0])])
    final = TaskHandle(ids[-1], topic, partitions[-1], None, producer.lifecycle, pending_offset, _returns(last))
    return WorkflowHandle(root, "chain", (handle,), final if len(ids) > 1 else handle, producer.cancel)


async def _group(
    producer: Producer, group: Group, priority: str, traceparent: str | None, callback: Signature | None
) -> WorkflowHandle:
    topic = producer.topology.intake_topic(priority)
    kafka = await producer._ready(topic)
    group_id = str(uuid.uuid4())
    size = len(group.members)
    ids = [wire.member_id(group_id, i) for i in range(size)]
    shared = await producer._partition(kafka, topic, group_id.encode()) if callback is not None else None
    records: list[tuple[TaskRecord, int]] = []
    for index, (sig, task_id) in enumerate(zip(group.members, ids, strict=True)):
        partition = shared if shared is not None else await producer._partition(kafka, topic, task_id.encode())
        if callback is not None:
            step = wire.Step(callback.name, callback.payload, partition)
            header = wire.ChordMember(group_id, size, index, partition, _now_ms(), step).header()
        else:
            header = wire.group_header(group_id, size, index)
        extra = [(ROOT_ID, group_id.encode()), (WORKFLOW, header)]
        records.append((_record(producer, sig, task_id, priority, traceparent, extra), partition))
    handles = await producer._send(kafka, topic, records)
    final = None
    if callback is not None and shared is not None:
        callback_id = wire.callback_id(group_id)
        final = TaskHandle(callback_id, topic, shared, None, producer.lifecycle, None, _returns(callback))
    return WorkflowHandle(group_id, "chord" if final else "group", tuple(handles), final, producer.cancel)


def _record(
    producer: Producer, sig: Signature, task_id: str, priority: str, traceparent: str | None, extra: Headers
) -> TaskRecord:
    """A first record: validated (a registered task's model), keyed by its id, measured."""
    value = encode_payload(sig.task if sig.task is not None else sig.name, sig.payload)
    headers = task_headers(sig.name, task_id, _now_ms(), priority, traceparent=traceparent) + extra
    record = TaskRecord(task_id, sig.name, value, task_id.encode(), headers, _returns(sig))
    check_size(record, producer.max_request_size)
    return record


async def _pending(producer: Producer, task_id: str, task: str, partition: int) -> int:
    """Write `task_id`'s `pending` status now; its offset, where its handle follows from."""
    kafka = await producer._ready(producer.lifecycle.topic)
    status = TaskStatus(task_id, TaskState.PENDING, task, 1, _now_ms())
    at = status_partition(partition, producer.lifecycle.partitions)
    sent = await (await kafka.send(producer.lifecycle.topic, status.to_json(), key=task_id.encode(), partition=at))
    offset: int = sent.offset
    return offset


def _returns(sig: Signature) -> Any:
    return sig.task.returns if sig.task is not None else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
