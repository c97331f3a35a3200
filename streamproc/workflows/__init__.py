"""Workflows (SPEC §13): signatures, `chain`, `group` and `chord` (`canvas`), sent by the producer
(`submitting`), continued by the worker that finishes each step (`continuation`), awaited through a
`WorkflowHandle` (`handle`); `wire` is what their records carry."""

from streamproc.workflows.canvas import Chain, Chord, Group, Signature, chain, chord, group

__all__ = ["Chain", "Chord", "Group", "Signature", "chain", "chord", "group"]
