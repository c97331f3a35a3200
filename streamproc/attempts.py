"""The run step of the worker: whether and how a started job runs, and its `Outcome`.

Before a handler is called: a cancelled task, or one whose id already succeeded, is not run
(`lifecycle.verdict`); a task whose circuit is open is deferred (`breaker.Circuits`); a task with
`track_started` gets its `started` status; the hooks (metrics) hear that it started. Then the
handler runs through `RunningHandlers` (so a cancel reaches it); or, when it never suspends, in
place without a task of its own (`inline`: nothing could interrupt it); or, for the jobs of a
batch task, once for the whole batch (`batches.run_batch`: a cancel reaches its items only before
the batch starts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from streamproc.app import Task
from streamproc.batches import run_batch
from streamproc.breaker import Admission, Circuits, Permit, deferred
from streamproc.envelope import Envelope
from streamproc.execution import Executor, Outcome
from streamproc.hooks import TaskHooks
from streamproc.inline import never_suspends
from streamproc.lifecycle.cancelling import RunningHandlers
from streamproc.lifecycle.tracking import TaskLifecycle


class Attempts:
    """Runs started jobs of one worker's app."""

    def __init__(
        self,
        tasks: Mapping[str, Task[Any, Any]],
        executor: Executor,
        lifecycle: TaskLifecycle,
        hooks: Sequence[TaskHooks],
    ) -> None:
        self._executor = executor
        self._lifecycle = lifecycle
        self._hooks = tuple(hooks)
        self._handlers = RunningHandlers(executor)
        lifecycle.on_cancel = self._handlers.cancel
        self.circuits = Circuits(tasks)
        # Tasks whose jobs run in place (`in_place`): a handler that never suspends, and no `started`
        # status to await before it.
        self._in_place = frozenset(
            name
            for name, task in tasks.items()
            if task.batch is None and never_suspends(task.fn) and not (task.track_started and lifecycle.tracks_started)
        )

    async def one(self, envelope: Envelope) -> Outcome:
        """The outcome of one job: not run, deferred by its circuit, or its handler's."""
        admitted = self._admit(envelope)
        if isinstance(admitted, Outcome):
            return admitted
        try:
            if self._lifecycle.tracks_started:
                await self._lifecycle.started(envelope)
            for hook in self._hooks:
                hook.task_started(envelope)
            outcome = await self._handlers.run(envelope)
        except asyncio.CancelledError:
            if admitted is not None:
                self.circuits.abandon(admitted)
            raise
        if admitted is not None:
            self.circuits.settle(admitted, outcome)
        return outcome

    def runs_in_place(self, envelope: Envelope) -> bool:
        """Whether the job's task may run through `in_place`, with no asyncio task of its own."""
        return envelope.task in self._in_place

    def in_place(self, envelope: Envelope) -> Outcome:
        """`one` for a job that `runs_in_place`: its handler is called without an await (`inline`)."""
        admitted = self._admit(envelope)
        if isinstance(admitted, Outcome):
            return admitted
        for hook in self._hooks:
            hook.task_started(envelope)
        outcome = self._executor.run_in_place(envelope)
        if admitted is not None:
            self.circuits.settle(admitted, outcome)
        return outcome

    def _admit(self, envelope: Envelope) -> Outcome | Admission | None:
        """The outcome of a job that does not run (cancelled, already succeeded, its circuit open);
        else what its breaker admitted (None: it has none)."""
        verdict = self._lifecycle.verdict(envelope)
        if verdict is not None:
            return Outcome(verdict, 0.0)
        admission = self.circuits.admit(envelope)
        if admission is not None and admission[1] is Permit.DENY:
            return deferred(envelope)
        return admission

    async def batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """The outcomes of the jobs of one batch, in order: those not to run, and one handler call for the rest."""
        verdicts = [self._lifecycle.verdict(envelope) for envelope in envelopes]
        running = [envelope for envelope, verdict in zip(envelopes, verdicts, strict=True) if verdict is None]
        for hook in self._hooks:
            for envelope in running:
                hook.task_started(envelope)
        ran = iter(await run_batch(self._executor, running) if running else ())
        return [Outcome(verdict, 0.0) if verdict is not None else next(ran) for verdict in verdicts]
