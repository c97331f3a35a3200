"""`timing.due.LookAhead` and `timing.schedule_record`: the scheduler's bookkeeping, without Kafka."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.envelope import RUN_AT, TASK_ID
from streamproc.timing.due import LookAhead
from streamproc.timing.schedule_record import Entry, Junk, Tombstone, parse, schedule_headers

WINDOW = 100


def entry(task_id: str, due: int, partition: int = 0) -> Entry:
    return Entry(task_id, due, "p.normal", 0, None, b"{}", [], partition)


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int = 0
    offset: int = 0


def test_a_far_future_schedule_is_skipped_and_does_not_hold_back_an_earlier_one() -> None:
    queue = LookAhead(WINDOW)
    queue.assign(0, now_ms=0, end_offset=0)
    assert not queue.offer(0, entry("far", 3_600_000))
    assert queue.offer(1, entry("soon", 10))
    assert queue.pop_due(9, 10) == []
    assert [e.task_id for e in queue.pop_due(10, 10)] == ["soon"]
    assert len(queue) == 0


def test_nothing_read_before_the_end_of_the_first_read_fires_and_a_tombstone_there_deletes() -> None:
    queue = LookAhead(WINDOW)
    queue.assign(0, now_ms=0)  # end offset not known yet
    queue.offer(0, entry("a", 0))
    queue.offer(1, entry("b", 0))
    assert queue.pop_due(50, 10) == []
    queue.set_end(0, 3)
    queue.remove(0, 2, "a")  # fired or cancelled before we came
    assert queue.pop_due(50, 10) == []
    queue.caught_up(0, 3)
    assert [e.task_id for e in queue.pop_due(50, 10)] == ["b"]


def test_a_rescan_takes_what_entered_the_window_and_never_what_was_held_or_fired() -> None:
    queue = LookAhead(WINDOW)
    queue.assign(0, now_ms=0, end_offset=0)
    log = [entry("early", 20), entry("later", 150)]
    for offset, e in enumerate(log):
        queue.offer(offset, e)
    assert [e.task_id for e in queue.pop_due(20, 10)] == ["early"]  # unconfirmed until its tombstone
    assert queue.rescan(0, position=2, now_ms=60)
    for offset, e in enumerate(log):
        queue.offer(offset, e)
    assert not queue.rescan(0, position=2, now_ms=60)  # still replaying
    queue.caught_up(0, 2)
    assert queue.next_due() == 150
    assert [e.task_id for e in queue.pop_due(200, 10)] == ["later"]


def test_fires_in_due_order_in_batches_and_revoking_drops_a_partitions_schedules() -> None:
    queue = LookAhead(WINDOW)
    for p in (0, 1):
        queue.assign(p, now_ms=0, end_offset=0)
    for i, due in enumerate([30, 10, 20, 40]):
        queue.offer(i, entry(f"t{i}", due, partition=i % 2))
    assert [e.task_id for e in queue.pop_due(100, 2)] == ["t1", "t2"]
    queue.revoke(0)
    assert [e.task_id for e in queue.pop_due(100, 10)] == ["t3"]
    assert queue.partitions == [1]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 600), st.integers(0, 900), st.booleans()), min_size=1, max_size=60),
    st.integers(1, 3),
)
def test_every_schedule_fires_once_never_early_never_after_its_cancel(
    plan: list[tuple[int, int, bool]], rescans_per_window: int
) -> None:
    """A simulated log: schedule i is appended at `written`, due at `due`; a cancelled one gets its
    tombstone at `written + 5`. The scheduler reads the log in order every tick, rescans it from the
    beginning every window / `rescans_per_window`, and appends a tombstone for what it fires."""
    log: list[tuple[str, Entry | None]] = []  # (task id, schedule or tombstone)
    events = sorted(
        [(written, "put", i) for i, (written, _, _) in enumerate(plan)]
        + [(written + 5, "cancel", i) for i, (written, _, cancel) in enumerate(plan) if cancel]
    )
    queue = LookAhead(WINDOW)
    queue.assign(0, now_ms=0)
    position, fired, cancelled_at = 0, dict[str, int](), dict[str, int]()
    next_rescan = WINDOW // rescans_per_window
    for now in range(0, 1_200):
        while events and events[0][0] <= now:
            _, what, i = events.pop(0)
            written, due, _ = plan[i]
            if what == "put":
                log.append((f"t{i}", entry(f"t{i}", max(due, written))))
            else:
                log.append((f"t{i}", None))
                cancelled_at.setdefault(f"t{i}", now)
        if now == 0:
            queue.set_end(0, len(log))
        if now >= next_rescan and queue.rescan(0, position, now):
            next_rescan = now + WINDOW // rescans_per_window
            position = 0
        for offset in range(position, len(log)):  # read to the end
            task_id, record = log[offset]
            if record is None:
                queue.remove(0, offset, task_id)
            else:
                queue.offer(offset, record)
        position = len(log)
        queue.caught_up(0, position)
        for e in queue.pop_due(now, 1_000):
            assert e.task_id not in fired, "fired twice"
            assert e.due_ms <= now, "fired early"
            fired[e.task_id] = now
            log.append((e.task_id, None))
        assert len(queue) <= len(plan)
    for i, (written, due, cancel) in enumerate(plan):
        task_id = f"t{i}"
        if cancel and cancelled_at[task_id] < max(due, written):
            assert task_id not in fired, "fired after its cancel"
        elif not cancel:
            assert task_id in fired
            assert fired[task_id] <= max(due, written) + 1  # read within the tick it was written


def test_parse_reads_a_schedule_a_tombstone_and_leaves_periodic_state_and_junk_alone() -> None:
    headers = schedule_headers([(TASK_ID, b"id-1")], 1234, "p.normal", 2, b"k")
    parsed = parse(Record(b"id-1", b"{}", headers, partition=4), {"p.normal"}, 3)
    assert parsed == Entry("id-1", 1234, "p.normal", 2, b"k", b"{}", [(TASK_ID, b"id-1"), (RUN_AT, b"1234")], 4)
    assert parse(Record(b"id-1", None, []), {"p.normal"}, 3) == Tombstone("id-1")
    assert parse(Record(b"periodic:nightly", b"{}", []), {"p.normal"}, 3) is None
    assert isinstance(parse(Record(None, b"{}", headers), {"p.normal"}, 3), Junk)
    assert isinstance(parse(Record(b"\xff", b"{}", headers), {"p.normal"}, 3), Junk)
    assert isinstance(parse(Record(b"id-1", b"{}", headers[:1]), {"p.normal"}, 3), Junk)  # no run-at
    assert isinstance(parse(Record(b"id-1", b"{}", headers), {"p.high"}, 3), Junk)  # not an intake topic
    assert isinstance(parse(Record(b"id-1", b"{}", headers), {"p.normal"}, 2), Junk)  # no such partition
    bad = [(n, b"soon" if n == RUN_AT else v) for n, v in headers]
    assert isinstance(parse(Record(b"id-1", b"{}", bad), {"p.normal"}, 3), Junk)
    no_key = schedule_headers([], 5, "p.normal", 0, None)
    assert parse(Record(b"id-2", b"{}", no_key), {"p.normal"}, 1) == Entry(
        "id-2", 5, "p.normal", 0, None, b"{}", [(RUN_AT, b"5")], 0
    )
