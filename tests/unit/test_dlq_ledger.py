"""The replay ledger: what a replay group remembers per DLQ partition, encoded in commit metadata."""

from __future__ import annotations

import random

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streamproc.dead_letters import parse_ref
from streamproc.errors import StreamprocError
from streamproc.replay_ledger import PartitionLedger, load_ledger


def check(ledger: PartitionLedger, replayed: set[int]) -> None:
    """The ledger agrees with the plain set of replayed offsets, and its size with its text."""
    committed = 0
    while committed in replayed:
        committed += 1
    assert ledger.committed == committed
    assert {o for lo, hi in ledger.ranges for o in range(lo, hi + 1)} == {o for o in replayed if o > committed}
    assert ledger.size == len(ledger.encode())
    for offset in range(max(replayed, default=0) + 3):
        assert ledger.holds(offset) == (offset in replayed)


def test_empty_ledger_holds_nothing_and_encodes_to_nothing() -> None:
    ledger = PartitionLedger()
    assert (ledger.committed, ledger.encode(), ledger.size, ledger.highest) == (0, "", 0, -1)
    assert not ledger.holds(0)


def test_encode_decode_round_trip() -> None:
    ledger = PartitionLedger.decode(12, "14-40,45,50-51")
    assert ledger.committed == 12
    assert ledger.ranges == [(14, 40), (45, 45), (50, 51)]
    assert ledger.encode() == "14-40,45,50-51"
    assert ledger.size == len("14-40,45,50-51")
    assert ledger.highest == 51
    assert [o for o in range(10, 55) if ledger.holds(o)] == [10, 11, *range(14, 41), 45, 50, 51]
    assert PartitionLedger.decode(ledger.committed, ledger.encode()).ranges == ledger.ranges


def test_contiguous_replays_only_move_the_committed_offset() -> None:
    ledger = PartitionLedger()
    for offset in range(1000):
        ledger.add(offset)
    assert (ledger.committed, ledger.encode()) == (1000, "")


def test_merging_joins_neighbours_and_bridges_gaps() -> None:
    ledger = PartitionLedger(3)
    for offset in (10, 12, 11, 20, 19, 21, 15):
        ledger.add(offset)
    assert ledger.encode() == "10-12,15,19-21"
    ledger.add(13)
    ledger.add(14)  # bridges 10-13 and 15
    assert ledger.encode() == "10-15,19-21"
    ledger.add(10)  # already there: nothing changes
    assert ledger.encode() == "10-15,19-21"


def test_reaching_the_committed_offset_advances_it_over_the_ranges() -> None:
    ledger = PartitionLedger.decode(5, "7-9,12")
    ledger.add(5)
    assert (ledger.committed, ledger.encode()) == (6, "7-9,12")
    ledger.add(6)  # 5..9 are all replayed now
    assert (ledger.committed, ledger.encode()) == (10, "12")
    for offset in (11, 10):
        ledger.add(offset)
    assert (ledger.committed, ledger.encode()) == (13, "")


def test_filtered_replay_leaves_gaps_that_an_unfiltered_one_fills() -> None:
    task_of = {offset: "a" if offset % 3 == 0 else "b" for offset in range(30)}
    ledger = PartitionLedger()
    for offset, task in task_of.items():
        if task == "a":
            ledger.add(offset)
    assert ledger.committed == 1  # 0 is a's; 1 is b's and not replayed
    assert ledger.encode() == ",".join(str(o) for o in range(3, 30, 3))
    replayed_again = [o for o, task in task_of.items() if task == "a" and not ledger.holds(o)]
    assert replayed_again == []
    unfiltered = [o for o in task_of if not ledger.holds(o)]
    assert unfiltered == [o for o, task in task_of.items() if task == "b"]
    for offset in unfiltered:
        ledger.add(offset)
    assert (ledger.committed, ledger.encode()) == (30, "")


def test_the_size_is_known_before_adding() -> None:
    ledger = PartitionLedger.decode(0, "2,4-5,9")
    for offset in range(12):
        expected = PartitionLedger(ledger.committed, ledger.ranges)
        expected.add(offset)
        assert ledger.size_with(offset) == len(expected.encode())


def test_a_set_over_the_size_limit_is_caught_before_it_is_added() -> None:
    """Every other offset replayed: each one grows the metadata, so the limit is reached."""
    limit = 4096
    ledger = PartitionLedger()
    offset = 1
    while ledger.size_with(offset) <= limit:
        ledger.add(offset)
        offset += 2
    assert ledger.size <= limit < ledger.size_with(offset)
    assert len(ledger.encode()) == ledger.size
    full = ledger.size
    ledger.add(0)  # filling the lowest gap moves the committed offset over 0 and 1: the text shrinks
    assert (ledger.committed, ledger.encode()[:4]) == (2, "3,5,")
    assert ledger.size == len(ledger.encode()) == full - len("1,")


def test_random_replays_agree_with_a_plain_set() -> None:
    rng = random.Random(7)
    for _ in range(200):
        replayed: set[int] = set()
        ledger = PartitionLedger()
        for _ in range(rng.randint(0, 60)):
            offset = rng.randint(0, 80)
            assert ledger.size_with(offset) == len(_added(ledger, offset).encode())
            ledger.add(offset)
            replayed.add(offset)
            check(ledger, replayed)
        check(PartitionLedger.decode(ledger.committed, ledger.encode()), replayed)


def _added(ledger: PartitionLedger, offset: int) -> PartitionLedger:
    copy = PartitionLedger(ledger.committed, ledger.ranges)
    copy.add(offset)
    return copy


def test_offsets_that_left_the_log_count_as_replayed() -> None:
    ledger = PartitionLedger.decode(2, "4-6,9,12-13")
    assert PartitionLedger.decode(2, "4-6,9,12-13").forget_below(1).encode() == "4-6,9,12-13"
    forgotten = ledger.forget_below(5)
    assert (forgotten.committed, forgotten.encode()) == (7, "9,12-13")
    forgotten = ledger.forget_below(10)
    assert (forgotten.committed, forgotten.encode()) == (10, "12-13")
    forgotten = ledger.forget_below(12)
    assert (forgotten.committed, forgotten.encode()) == (14, "")
    assert forgotten.size == 0
    assert ledger.encode() == "4-6,9,12-13"  # the original is unchanged


@pytest.mark.parametrize(
    ("committed", "metadata"),
    [
        (0, "x"),
        (0, "1-"),
        (0, "-3"),
        (0, "1,,3"),
        (0, "5-3"),  # ends before it starts
        (0, "3,2"),  # not ascending
        (0, "2-4,5"),  # touches the range before: never written
        (4, "4"),  # not above the committed offset
        (0, "1 "),
        (0, "+1"),
    ],
)
def test_malformed_metadata_is_refused(committed: int, metadata: str) -> None:
    with pytest.raises(ValueError):
        PartitionLedger.decode(committed, metadata)


def test_load_reads_each_partition_and_names_a_foreign_commit() -> None:
    topic = "tasks.dlq"
    committed = {
        TopicPartition(topic, 0): OffsetAndMetadata(5, "7,9-10"),
        TopicPartition("other", 1): OffsetAndMetadata(3, "garbage"),
    }
    ledger = load_ledger("g", topic, [0, 1], committed)
    assert (ledger[0].committed, ledger[0].encode()) == (5, "7,9-10")
    assert (ledger[1].committed, ledger[1].encode()) == (0, "")

    committed[TopicPartition(topic, 1)] = OffsetAndMetadata(3, "worker state")
    with pytest.raises(StreamprocError, match=r"replay group 'g' .* partition 1 .*'worker state'.*--group"):
        load_ledger("g", topic, [0, 1], committed)


@pytest.mark.parametrize(("text", "ref"), [("3:17", (3, 17)), ("17", (None, 17)), (" 0:0 ", (0, 0))])
def test_parse_ref(text: str, ref: tuple[int | None, int]) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text", ["", "a:1", "1:b", "1:2:3", "-1", "1:-2", ":4"])
def test_parse_ref_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ref(text)
