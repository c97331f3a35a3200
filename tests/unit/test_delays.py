"""`DelayQueue`: due-time order, per-partition counts, dropping revoked partitions."""

from __future__ import annotations

from streamproc.delays import DelayQueue

A, B = ("t", 0), ("t", 1)


def test_items_come_out_when_due_in_due_order() -> None:
    queue: DelayQueue[str] = DelayQueue()
    queue.add(A, 3.0, "a3")
    queue.add(B, 1.0, "b1")
    queue.add(A, 1.0, "a1")
    assert queue.next_due() == 1.0
    assert queue.pop_due(0.5) == []
    assert queue.pop_due(1.0) == ["b1", "a1"]  # equal times keep insertion order
    assert (queue.count(A), queue.count(B), len(queue)) == (1, 0, 1)
    assert queue.pop_due(10.0) == ["a3"]
    assert queue.next_due() is None


def test_pop_due_takes_at_most_limit() -> None:
    queue: DelayQueue[str] = DelayQueue()
    for i in range(3):
        queue.add(A, 0.0, f"a{i}")
    assert queue.pop_due(1.0, limit=2) == ["a0", "a1"]
    assert queue.pop_due(1.0) == ["a2"]


def test_drop_forgets_only_the_given_partitions() -> None:
    queue: DelayQueue[str] = DelayQueue()
    for i in range(3):
        queue.add(A, float(i), f"a{i}")
        queue.add(B, float(i), f"b{i}")
    assert queue.drop([A]) == ["a0", "a1", "a2"]
    assert queue.count(A) == 0
    assert queue.pop_due(10.0) == ["b0", "b1", "b2"]
