"""Signatures, `chain`, `group` and `chord` (SPEC §13): what a workflow is, before anything is sent.

Pure data, no Kafka: the producer (`submitting`) turns these into records. A `Signature` is a task
name plus the payload fields it fixes; a chain step's payload is completed at run time by the
previous step's result, merged over the fixed fields, so a signature's payload may be partial and
is not validated here (the worker validates the merged payload, and an invalid one kills the chain
naming its step). What can be checked before anything runs is checked at construction:
`check_fits` refuses a chain whose step *i* result cannot fill step *i+1*'s payload model, as far
as the annotations tell (an unknown annotation is not checked).
"""

from __future__ import annotations

import itertools
import json
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel

from streamproc.errors import StreamprocError

if TYPE_CHECKING:
    from streamproc.app import Task

UNKNOWN: Any = object()  # a return annotation that says nothing checkable
RESULTS = "results"  # the payload field a chord's callback receives the member results in
_SCALARS = (int, float, str, bool, bytes, list, tuple, set)


@dataclass(frozen=True)
class Signature:
    """A task and the payload fields fixed for it: `task.s({...})` or `app.signature("name", {...})`."""

    name: str
    payload: dict[str, Any] = field(default_factory=dict)
    task: Task[Any, Any] | None = field(default=None, repr=False, compare=False)  # when registered here

    @classmethod
    def of(cls, task: str | Task[Any, Any], payload: BaseModel | Mapping[str, Any] | None = None) -> Signature:
        """The signature of `task` with `payload` fixed (a model is dumped to its JSON fields)."""
        from streamproc.app import Task

        if isinstance(payload, BaseModel):
            fixed: dict[str, Any] = payload.model_dump(mode="json", exclude_unset=True)
        elif payload is None or isinstance(payload, Mapping):
            fixed = dict(payload or {})
        else:
            raise StreamprocError(
                f"a signature's payload is a mapping or a pydantic model, not {type(payload).__name__}"
            )
        name = task.name if isinstance(task, Task) else task
        if not isinstance(name, str) or not name:
            raise StreamprocError(f"a task name is a non-empty string, got {name!r}")
        try:
            json.dumps(fixed)
        except (TypeError, ValueError) as exc:
            raise StreamprocError(f"the fixed payload of {name!r} is not JSON-serialisable: {exc}") from None
        return cls(name, fixed, task if isinstance(task, Task) else None)

    @property
    def model(self) -> type[BaseModel] | None:
        """The task's payload model, when the task is known here and has one."""
        return self.task.model if self.task is not None else None

    @property
    def returns(self) -> Any:
        """The handler's return annotation, or `UNKNOWN` (unregistered task, no annotation)."""
        if self.task is None:
            return UNKNOWN
        try:
            return get_type_hints(self.task.fn).get("return", UNKNOWN)
        except (NameError, TypeError):  # a forward reference that does not resolve here
            return UNKNOWN

    def wire(self) -> dict[str, Any]:
        """The signature as the `workflow` header carries it."""
        return {"task": self.name, "payload": self.payload}


@dataclass(frozen=True)
class Chain:
    """Steps run one after another, each fed the previous step's result: `chain(a.s(), b.s())`."""

    steps: tuple[Signature, ...]


@dataclass(frozen=True)
class Group:
    """Members run concurrently; `handle.results()` returns their results in order: `group(sigs)`."""

    members: tuple[Signature, ...]


@dataclass(frozen=True)
class Chord:
    """A group whose `callback` runs once every member succeeded, with `{"results": [...]}` (in member
    order) merged over the callback's fixed fields: `chord(group(sigs), callback.s())`."""

    group: Group
    callback: Signature


Workflow = Chain | Group | Chord


def chain(*steps: Signature) -> Chain:
    """A chain of signatures; refused (`StreamprocError`) when a step's result cannot fill the next."""
    if not steps:
        raise StreamprocError("a chain needs at least one step")
    _all_signatures(steps, "chain")
    for number, (previous, following) in enumerate(itertools.pairwise(steps), start=1):
        check_fits(previous, following, f"chain step {number} ({previous.name})", f"step {number + 1}")
    return Chain(tuple(steps))


def group(*members: Signature | Iterable[Signature]) -> Group:
    """`group(a.s(), b.s())` or `group([a.s(), b.s()])`."""
    if len(members) == 1 and not isinstance(members[0], Signature):
        members = tuple(members[0])
    if not members:
        raise StreamprocError("a group needs at least one member")
    _all_signatures(members, "group")
    return Group(tuple(members))  # type: ignore[arg-type]  # all signatures, checked just above


def chord(header: Group | Iterable[Signature], callback: Signature) -> Chord:
    """A group and the callback that receives its results (see `Chord`)."""
    members = header if isinstance(header, Group) else group(list(header))
    _all_signatures([callback], "chord callback")
    if RESULTS in callback.payload:
        raise StreamprocError(
            f"chord callback {callback.name!r}: its payload field {RESULTS!r} is the members' results"
        )
    model = callback.model
    if model is not None:
        uncovered = _required(model) - set(callback.payload) - {RESULTS}
        if uncovered:
            raise StreamprocError(
                f"chord callback {callback.name!r} needs {', '.join(sorted(uncovered))}, "
                f"which neither its signature nor the member results ({RESULTS!r}) give"
            )
    return Chord(members, callback)


def check_fits(previous: Signature, following: Signature, previous_label: str, following_label: str) -> None:
    """Refuse (`StreamprocError`, one line) when `previous`'s result cannot fill `following`'s payload:
    a scalar result (never a mapping, so it can fill nothing), or a model/None result that leaves a
    required field of `following`'s model unset by its signature."""
    returns = previous.returns
    if returns is UNKNOWN or returns is Any or _is_mapping(returns):
        return
    head = f"{previous_label} cannot feed {following_label} ({following.name})"
    if returns is None or returns is type(None):
        given: set[str] = set()
    elif isinstance(returns, type) and issubclass(returns, BaseModel):
        given = set(returns.model_fields)
    elif returns in _SCALARS or typing.get_origin(returns) in (list, tuple, set):
        raise StreamprocError(f"{head}: it returns {_name(returns)}, not a mapping to merge into the next payload")
    else:  # a union, a TypeVar, …: nothing checkable
        return
    model = following.model
    if model is None:
        return
    uncovered = _required(model) - set(following.payload) - given
    if uncovered:
        raise StreamprocError(
            f"{head}: {', '.join(sorted(uncovered))} required by {model.__name__} is neither fixed by its "
            f"signature nor a field of {_name(returns)}"
        )


def _required(model: type[BaseModel]) -> set[str]:
    return {name for name, info in model.model_fields.items() if info.is_required()}


def _is_mapping(annotation: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, Mapping | dict)


def _name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _all_signatures(items: Iterable[object], what: str) -> None:
    for item in items:
        if not isinstance(item, Signature):
            raise StreamprocError(f"a {what} takes signatures (task.s(...)), got {item!r}")
