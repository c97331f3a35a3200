import random

import pytest

from streamproc.offsets import PartitionOffsets


def test_nothing_to_commit_before_a_fetch() -> None:
    assert PartitionOffsets().committable() is None


def test_commit_is_the_lowest_unfinished_offset() -> None:
    offsets = PartitionOffsets()
    for o in range(10, 15):
        offsets.fetched(o)
    assert offsets.committable() == 10
    offsets.finished(12)
    offsets.finished(11)
    assert offsets.committable() == 10  # a slow task at 10 holds the commit
    offsets.finished(10)
    assert offsets.committable() == 13  # …and once it finishes the commit passes 11 and 12 too
    offsets.finished(13)
    offsets.finished(14)
    assert offsets.committable() == 15  # nothing unfinished: the next offset to fetch
    assert offsets.unfinished == 0


def test_gaps_in_offsets_do_not_stall_the_commit() -> None:
    offsets = PartitionOffsets()
    for o in (3, 4, 7, 9):  # 5, 6, 8: transaction markers or compacted away
        offsets.fetched(o)
    for o in (9, 3, 7, 4):
        offsets.finished(o)
    assert offsets.committable() == 10


def test_to_commit_only_reports_movement() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(0)
    assert offsets.to_commit() == 0
    offsets.committed(0)
    assert offsets.to_commit() is None
    offsets.finished(0)
    assert offsets.to_commit() == 1


def test_offsets_must_grow() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(5)
    with pytest.raises(ValueError, match="must grow"):
        offsets.fetched(5)


def test_random_completion_order_never_commits_past_an_unfinished_offset() -> None:
    rng = random.Random(7)
    offsets = PartitionOffsets()
    fetched = list(range(0, 2000, 2))
    for o in fetched:
        offsets.fetched(o)
    order = fetched[:]
    rng.shuffle(order)
    done: set[int] = set()
    for o in order:
        offsets.finished(o)
        done.add(o)
        unfinished = [f for f in fetched if f not in done]
        expected = unfinished[0] if unfinished else fetched[-1] + 1
        assert offsets.committable() == expected
