import random

import pytest

from streamproc import offsetmap
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


def test_the_commit_passes_what_the_consumer_skipped_once_nothing_before_it_is_unfinished() -> None:
    offsets = PartitionOffsets()
    offsets.passed(12)  # nothing fetched yet: where to start is the previous owner's commit, not this
    assert offsets.committable() is None
    offsets.fetched(3)
    offsets.fetched(4)
    offsets.finished(4)
    offsets.passed(6)  # 5 is a transaction marker, but 3 is still running
    assert offsets.committable() == 3
    offsets.finished(3)
    assert offsets.committable() == 5
    offsets.passed(6)
    assert offsets.to_commit() == (6, "", 3, False)
    offsets.passed(4)  # never backwards
    assert offsets.committable() == 6
    offsets.fetched(6)  # the next record the consumer hands out


def test_to_commit_only_reports_changes() -> None:
    offsets = PartitionOffsets()
    offsets.fetched(0)
    offsets.fetched(1)
    assert offsets.to_commit() == (0, "", 0, False)
    offsets.committed(0, 0)
    assert offsets.to_commit() is None
    offsets.finished(1)  # the commit stays at 0, but its map now holds 1
    commit = offsets.to_commit()
    assert commit is not None and commit[0] == 0 and offsetmap.decode(0, commit[1]) == {1}
    offsets.committed(commit[0], commit[2])
    assert offsets.to_commit() is None
    offsets.finished(0)
    assert offsets.to_commit() == (2, "", 2, False)


def test_a_new_owner_skips_what_the_previous_one_finished() -> None:
    before = PartitionOffsets()
    for o in range(10):
        before.fetched(o)
    for o in (3, 4, 8):
        before.finished(o)
    commit = before.to_commit()
    assert commit is not None and commit[0] == 0
    after = PartitionOffsets(offsetmap.decode(commit[0], commit[1]))
    assert [o for o in range(10) if after.fetched(o)] == [0, 1, 2, 5, 6, 7, 9]
    assert after.finished_ahead == 3 and after.unfinished == 7
    for o in (0, 1, 2):
        after.finished(o)
    assert after.committable() == 5


def test_inherited_offsets_not_yet_fetched_stay_in_the_map() -> None:
    offsets = PartitionOffsets(inherited={12, 15})
    offsets.fetched(10)
    offsets.fetched(11)
    offsets.finished(11)
    commit = offsets.to_commit()
    assert commit is not None and offsetmap.decode(10, commit[1]) == {11, 12, 15}


def test_open_span_counts_from_the_head_to_the_next_fetch() -> None:
    offsets = PartitionOffsets()
    assert offsets.open_span == 0
    for o in range(100):
        offsets.fetched(o)
    for o in range(1, 100):
        offsets.finished(o)
    assert offsets.open_span == 100 and offsets.unfinished == 1 and offsets.finished_ahead == 99
    offsets.finished(0)
    assert offsets.open_span == 0


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
