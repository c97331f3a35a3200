"""The workflow headers and ids (SPEC §13): what a step or member record carries so that the worker
that finishes it can produce what comes next without asking anyone.

Headers (besides SPEC §3's): `root-id` (the workflow's id: a chain's first step, or the group id;
`cancel(root id)` reaches every record carrying it), `parent-id` (a chain step's previous step) and
`workflow`, compact JSON, one of

    {"chain": {"step": 1, "steps": 3, "last": ID, "last_partition": P,
               "rest": [{"task": "b", "payload": {...fixed fields}, "partition": P}, ...]}}
    {"chord": {"group": G, "size": 10, "index": 3, "partition": P, "since": MS,
               "callback": {"task": "c", "payload": {...fixed fields}}}}
    {"group": {"group": G, "size": 10, "index": 3}}

Ids are deterministic, so a step re-run after a crash produces the very record it produced before
(same id, same key, same partition) and the SPEC §12 rule runs it once: step *k* of a chain is
uuid5(root, "step-k") (step 0 is the root), member *i* of group G uuid5(G, "member-i"), a chord's
callback uuid5(G, "callback"). Every workflow record's Kafka key is its own id, and its intake
partition is chosen at submit and carried here (`partition`), so the status of a chain's last step
or a chord's callback is where its handle looks, whoever writes it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic_core import from_json, to_json

from streamproc.envelope import ROOT_ID, WORKFLOW


def step_id(root: str, step: int) -> str:
    """The task id of chain step `step` (0-based) of the chain whose root id is `root`."""
    return root if step == 0 else str(uuid.uuid5(uuid.UUID(root), f"step-{step}"))


def member_id(group: str, index: int) -> str:
    return str(uuid.uuid5(uuid.UUID(group), f"member-{index}"))


def callback_id(group: str) -> str:
    return str(uuid.uuid5(uuid.UUID(group), "callback"))


@dataclass(frozen=True, slots=True)
class Step:
    """A task still to send: its name, fixed payload fields and intake partition."""

    task: str
    payload: dict[str, Any]
    partition: int

    def wire(self) -> dict[str, Any]:
        return {"task": self.task, "payload": self.payload, "partition": self.partition}


@dataclass(frozen=True, slots=True)
class ChainStep:
    """Where a record stands in its chain; `rest` are the steps after it."""

    root: str
    step: int  # 0-based
    steps: int
    last: str
    last_partition: int
    rest: tuple[Step, ...]

    @property
    def label(self) -> str:
        return f"step {self.step + 1} of {self.steps}"

    def header(self) -> bytes:
        return to_json(
            {
                "chain": {
                    "step": self.step,
                    "steps": self.steps,
                    "last": self.last,
                    "last_partition": self.last_partition,
                    "rest": [step.wire() for step in self.rest],
                }
            }
        )


@dataclass(frozen=True, slots=True)
class ChordMember:
    """A chord member: its group, and the callback to send once every member succeeded."""

    group: str
    size: int
    index: int
    partition: int  # every member and the callback live in this intake partition
    since_ms: int  # the chord's submit time: no member status is older
    callback: Step

    @property
    def callback_id(self) -> str:
        return callback_id(self.group)

    def member_ids(self) -> list[str]:
        return [member_id(self.group, i) for i in range(self.size)]

    def header(self) -> bytes:
        callback = {"task": self.callback.task, "payload": self.callback.payload}
        chord = {"group": self.group, "size": self.size, "index": self.index, "partition": self.partition}
        return to_json({"chord": chord | {"since": self.since_ms, "callback": callback}})


def group_header(group: str, size: int, index: int) -> bytes:
    """A plain group member's `workflow` header: informative only (nothing follows a member)."""
    return to_json({"group": {"group": group, "size": size, "index": index}})


def read(headers: dict[str, str]) -> ChainStep | ChordMember | None:
    """The chain or chord position a record's headers describe; None for anything else (a plain task,
    a group member, or a header this module did not write: never raises)."""
    raw = headers.get(WORKFLOW)
    if not raw:
        return None
    try:
        data = from_json(raw)
        if "chain" in data:
            chain = data["chain"]
            rest = tuple(Step(str(s["task"]), dict(s["payload"]), int(s["partition"])) for s in chain["rest"])
            root = headers[ROOT_ID]
            return ChainStep(
                root, int(chain["step"]), int(chain["steps"]), str(chain["last"]), int(chain["last_partition"]), rest
            )
        if "chord" in data:
            chord = data["chord"]
            callback = chord["callback"]
            partition = int(chord["partition"])
            return ChordMember(
                str(chord["group"]),
                int(chord["size"]),
                int(chord["index"]),
                partition,
                int(chord["since"]),
                Step(str(callback["task"]), dict(callback["payload"]), partition),
            )
    except (ValueError, KeyError, TypeError):
        return None
    return None
