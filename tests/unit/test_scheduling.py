from hypothesis import given
from hypothesis import strategies as st

from streamproc.scheduling import Job, Ordering, Scheduler

HIGH, NORMAL, LOW = 0, 1, 2


def job(topic: str, partition: int, offset: int, rank: int, key: bytes | None, ordering: Ordering) -> Job[str]:
    return Job(
        (topic, partition), offset, rank, ordering.lane((topic, partition), key), f"{topic}-{partition}-{offset}"
    )


def drain(scheduler: Scheduler[str]) -> list[str]:
    started = []
    while (j := scheduler.pop()) is not None:
        started.append(j.item)
        scheduler.done(j)
    return started


def test_highest_priority_starts_first_oldest_first_within_a_priority() -> None:
    s: Scheduler[str] = Scheduler(ranks=3)
    for o in range(3):
        s.add(job("low", 0, o, LOW, None, Ordering.UNORDERED))
    s.add(job("high", 0, 0, HIGH, None, Ordering.UNORDERED))
    s.add(job("normal", 0, 0, NORMAL, None, Ordering.UNORDERED))
    s.add(job("high", 1, 5, HIGH, None, Ordering.UNORDERED))
    assert drain(s) == ["high-0-0", "high-1-5", "normal-0-0", "low-0-0", "low-0-1", "low-0-2"]


def test_pop_up_to_a_rank_leaves_lower_priorities_waiting() -> None:
    s: Scheduler[str] = Scheduler(ranks=3)
    s.add(job("low", 0, 0, LOW, None, Ordering.UNORDERED))
    assert s.pop(max_rank=HIGH) is None
    s.add(job("high", 0, 0, HIGH, None, Ordering.UNORDERED))
    popped = s.pop(max_rank=HIGH)
    assert popped is not None and popped.item == "high-0-0"
    assert s.waiting == 1
    popped = s.pop()
    assert popped is not None and popped.item == "low-0-0"


def test_key_ordering_runs_one_task_of_a_key_at_a_time_in_offset_order() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    for o, key in enumerate([b"a", b"a", b"b", b"a"]):
        s.add(job("t", 0, o, 0, key, Ordering.KEY))
    first, second = s.pop(), s.pop()
    assert first is not None and second is not None
    assert (first.item, second.item) == ("t-0-0", "t-0-2")  # a and b run concurrently
    assert s.pop() is None  # the next "a" waits for the running one
    s.done(first)
    nxt = s.pop()
    assert nxt is not None and nxt.item == "t-0-1"
    s.done(nxt)
    s.done(second)
    assert drain(s) == ["t-0-3"]


def test_records_without_key_are_not_serialised_in_key_ordering() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    for o in range(3):
        s.add(job("t", 0, o, 0, None, Ordering.KEY))
    assert [s.pop() is not None for _ in range(3)] == [True, True, True]


def test_partition_ordering_runs_one_task_per_partition() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    for o in range(2):
        s.add(job("t", 0, o, 0, bytes([o]), Ordering.PARTITION))
        s.add(job("t", 1, o, 0, bytes([o]), Ordering.PARTITION))
    a, b = s.pop(), s.pop()
    assert a is not None and b is not None and {a.partition, b.partition} == {("t", 0), ("t", 1)}
    assert s.pop() is None


def test_a_lane_keeps_offset_order_over_priority() -> None:
    s: Scheduler[str] = Scheduler(ranks=2)
    s.add(job("t", 0, 0, 1, b"k", Ordering.KEY))
    s.add(job("t", 0, 1, 0, b"k", Ordering.KEY))
    assert drain(s) == ["t-0-0", "t-0-1"]


def test_buffered_counts_added_not_started_jobs_per_partition() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    for o in range(4):
        s.add(job("t", 0, o, 0, None, Ordering.UNORDERED))
    s.add(job("t", 1, 0, 0, None, Ordering.UNORDERED))
    assert s.buffered(("t", 0)) == 4
    s.pop()
    assert s.buffered(("t", 0)) == 3 and s.buffered(("t", 1)) == 1


def test_drop_forgets_buffered_jobs_and_hands_lanes_on() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    s.add(job("t", 0, 0, 0, b"k", Ordering.KEY))  # lane holder, buffered
    s.add(job("t", 1, 0, 0, b"k", Ordering.KEY))  # same key, other partition, waiting behind it
    s.add(job("t", 0, 1, 0, b"x", Ordering.KEY))
    assert s.drop([("t", 0)]) == 2
    assert s.buffered(("t", 0)) == 0
    assert drain(s) == ["t-1-0"]


def test_drop_keeps_a_running_lane_holder_until_it_is_done() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    s.add(job("t", 0, 0, 0, b"k", Ordering.KEY))
    running = s.pop()
    assert running is not None
    s.add(job("t", 1, 0, 0, b"k", Ordering.KEY))
    s.drop([("t", 0)])
    assert s.pop() is None  # the key is still busy
    s.done(running)
    assert drain(s) == ["t-1-0"]


def test_a_keys_next_task_keeps_its_place_ahead_of_later_arrivals() -> None:
    """When a key's running task finishes, its next task starts before every task fetched after it
    (sending it to the back of the queue held its partition's commit for the whole buffer)."""
    s: Scheduler[str] = Scheduler(ranks=1)
    s.add(job("t", 0, 0, 0, b"a", Ordering.KEY))
    s.add(job("t", 0, 1, 0, b"a", Ordering.KEY))
    for o in range(2, 6):
        s.add(job("t", 0, o, 0, None, Ordering.KEY))
    first = s.pop()
    assert first is not None and first.item == "t-0-0"
    early = s.pop()  # t-0-1 waits for its key, so the oldest free job starts
    assert early is not None and early.item == "t-0-2"
    s.done(first)
    assert drain(s) == ["t-0-1", "t-0-3", "t-0-4", "t-0-5"]


def test_released_jobs_are_dropped_with_their_partition() -> None:
    s: Scheduler[str] = Scheduler(ranks=1)
    s.add(job("t", 0, 0, 0, b"a", Ordering.KEY))
    s.add(job("t", 1, 0, 0, b"a", Ordering.KEY))
    first = s.pop()
    assert first is not None
    s.done(first)  # t-1-0 is released, ready with its arrival number
    assert s.drop([("t", 1)]) == 1
    assert s.pop() is None and s.waiting == 0


@given(st.lists(st.tuples(st.sampled_from(["add", "pop", "done"]), st.integers(0, 3), st.integers(0, 1)), max_size=30))
def test_every_pop_is_the_oldest_free_job_of_the_highest_priority(steps: list[tuple[str, int, int]]) -> None:
    """Against a brute-force model: a job is free when no earlier job of its lane is unfinished."""
    s: Scheduler[str] = Scheduler(ranks=2)
    waiting: list[Job[str]] = []  # added, not started, in arrival order
    running: list[Job[str]] = []
    unfinished_lanes: list[tuple[object, int]] = []  # (lane, arrival) of every added, not done job
    offset = 0
    for action, key, rank in steps:
        if action == "add":
            j = job("t", 0, offset, rank, None if key == 0 else bytes([key]), Ordering.KEY)
            offset += 1
            s.add(j)
            waiting.append(j)
            unfinished_lanes.append((j.lane, j.arrival))
        elif action == "pop":

            def free(j: Job[str]) -> bool:
                return j.lane is None or min(a for lane, a in unfinished_lanes if lane == j.lane) == j.arrival

            candidates = [j for j in waiting if free(j)]
            expected = min(candidates, key=lambda j: (j.rank, j.arrival)) if candidates else None
            popped = s.pop()
            assert popped is expected
            if popped is not None:
                waiting.remove(popped)
                running.append(popped)
        elif running:
            finished = running.pop(key % len(running))
            s.done(finished)
            unfinished_lanes.remove((finished.lane, finished.arrival))
    assert s.waiting == len(waiting)
