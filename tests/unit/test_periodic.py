"""Periodic schedules, the pure part: registration, slot arithmetic and which slots an owner fires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from streamproc import App
from streamproc.errors import StreamprocError
from streamproc.timing.periodic import Periodic, due_slots, owner_partition, stable_hash
from streamproc.timing.periodic_runner import fire_id, parse_state, state_partition

SECOND = 1000
MINUTE = 60 * SECOND
T0 = int(datetime(2025, 3, 30, 0, 0, tzinfo=UTC).timestamp() * 1000)  # a DST change day in Europe: no matter in UTC
times = st.integers(min_value=T0, max_value=T0 + 400 * 86_400_000)


def every(seconds: float, catch_up: str = "none", grace_s: float = 60) -> Periodic:
    return Periodic.build(
        "s", "t", b"{}", every=timedelta(seconds=seconds), catch_up=catch_up, grace=timedelta(seconds=grace_s)
    )


def cron(expression: str, catch_up: str = "none", grace_s: float = 60) -> Periodic:
    return Periodic.build("s", "t", b"{}", cron=expression, catch_up=catch_up, grace=timedelta(seconds=grace_s))


SCHEDULES = [every(2), every(7), every(3600), cron("*/5 * * * *"), cron("0 3 * * *"), cron("* * * * * */10")]
schedules = st.sampled_from(SCHEDULES)


# --- slots ---


@given(schedules, times)
def test_next_and_prev_slot_bracket_any_instant(schedule: Periodic, t: int) -> None:
    following, previous = schedule.next_slot(t), schedule.prev_slot(t)
    assert previous <= t < following
    assert schedule.next_slot(previous) == following  # no slot between them
    assert schedule.prev_slot(following) == following  # a slot is its own latest slot


@given(st.integers(min_value=1, max_value=86_400), times)
def test_every_slots_are_multiples_of_the_interval_since_the_epoch(seconds: int, t: int) -> None:
    """Every process computes the same slots, whenever it started."""
    schedule = every(seconds)
    assert schedule.next_slot(t) % (seconds * SECOND) == 0
    assert schedule.next_slot(t) - seconds * SECOND <= t


def test_cron_slots_are_utc() -> None:
    schedule = cron("0 3 * * *")
    slot = schedule.next_slot(T0)
    assert datetime.fromtimestamp(slot / 1000, UTC) == datetime(2025, 3, 30, 3, 0, tzinfo=UTC)
    assert schedule.slots(T0, T0 + 3 * 86_400_000) == [slot, slot + 86_400_000, slot + 2 * 86_400_000]


def test_describe() -> None:
    assert [s.describe() for s in SCHEDULES] == [
        "every 2s",
        "every 7s",
        "every 1h",
        "cron */5 * * * *",
        "cron 0 3 * * *",
        "cron * * * * * */10",
    ]
    assert every(1.5).describe() == "every 1500ms"


# --- which slots fire ---


def test_a_new_schedule_starts_at_its_next_slot() -> None:
    assert due_slots(every(2), None, T0 + 5 * SECOND) == []


def test_a_failover_within_the_grace_fires_every_missed_slot() -> None:
    schedule = every(2)
    assert due_slots(schedule, T0, T0 + 11 * SECOND) == [T0 + 2000, T0 + 4000, T0 + 6000, T0 + 8000, T0 + 10_000]


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [("none", []), ("last", [T0 + 45 * MINUTE])],
)
def test_after_an_outage_catch_up_decides_the_slots_older_than_the_grace(catch_up: str, expected: list[int]) -> None:
    """A */5 cron last fired at T0, back 48 minutes later: nine slots were missed, all by more than 60 s."""
    schedule = cron("*/5 * * * *", catch_up)
    assert due_slots(schedule, T0, T0 + 48 * MINUTE) == expected


@pytest.mark.parametrize("catch_up", ["none", "last"])
def test_after_an_outage_slots_within_the_grace_fire_and_last_adds_nothing(catch_up: str) -> None:
    """Every 2 s, last fired at T0, back 5 minutes later: the 30 slots of the last minute fire (the
    last missed slot is among them, so "last" has nothing to add); the older ones do not."""
    now = T0 + 5 * MINUTE + 500
    fired = due_slots(every(2, catch_up), T0, now)
    assert fired == list(range(now - 60 * SECOND + 1500, now, 2000))
    assert len(fired) == 30


def test_a_state_in_the_future_fires_nothing() -> None:
    assert due_slots(every(2), T0 + MINUTE, T0) == []


@given(
    schedules,
    times,
    st.integers(min_value=0, max_value=10 * 86_400_000),
    st.sampled_from(["none", "last"]),
    st.integers(min_value=0, max_value=3600),
)
def test_due_slots_properties(schedule: Periodic, last: int, gap: int, catch_up: str, grace_s: int) -> None:
    schedule = Periodic.build(
        "s",
        "t",
        b"{}",
        cron=schedule.cron,
        every=None if schedule.every_ms is None else timedelta(milliseconds=schedule.every_ms),
        catch_up=catch_up,
        grace=timedelta(seconds=grace_s),
    )
    now = last + gap
    fired = due_slots(schedule, last, now)
    horizon = now - grace_s * SECOND
    assert fired == sorted(set(fired))
    assert all(last < slot <= now and schedule.prev_slot(slot) == slot for slot in fired)
    recent = [s for s in fired if s > horizon]
    assert recent == schedule.slots(max(last, horizon), now)  # nothing within the grace is lost
    older = [s for s in fired if s <= horizon]
    if catch_up == "none" or recent:
        assert older == []
    else:
        missed_long_ago = schedule.prev_slot(horizon)
        assert older == ([missed_long_ago] if missed_long_ago > last else [])


@given(
    schedules,
    times,
    st.lists(st.integers(min_value=1, max_value=59_000), min_size=1, max_size=60),
)
def test_owners_taking_over_within_the_grace_fire_each_slot_exactly_once(
    schedule: Periodic, start: int, pauses: list[int]
) -> None:
    """Owners come and go (a failover, a rebalance), each resuming from the state the last one left:
    as long as no pause exceeds the grace, the slots fired are exactly every slot of the span."""
    last, now, fired = start, start, []
    for pause in pauses:
        now += pause
        for slot in due_slots(schedule, last, now):
            fired.append(slot)
            last = slot
    assert fired == schedule.slots(start, now)


# --- identity and placement ---


def test_a_fire_has_one_id_per_schedule_and_slot() -> None:
    schedule = every(2)
    assert fire_id(schedule, T0) == fire_id(every(2), T0)
    assert len({fire_id(schedule, T0 + i * 2000) for i in range(100)}) == 100
    assert fire_id(Periodic.build("other", "t", b"{}", every=timedelta(seconds=2)), T0) != fire_id(schedule, T0)


def test_owner_and_state_partitions_are_stable_and_spread() -> None:
    names = [f"schedule-{i}" for i in range(120)]
    owners = {owner_partition(Periodic.build(n, "t", b"{}", every=timedelta(seconds=2)), 12) for n in names}
    assert owners == set(range(12))
    assert stable_hash("tick") == 6_171_264_492_300_576_195  # never changes between processes or versions
    assert {state_partition(n, 6) for n in names} == set(range(6))


@pytest.mark.parametrize(
    ("raw", "slot"),
    [
        (b'{"last_slot": 1700000000000}', 1_700_000_000_000),
        (None, None),
        (b"", None),
        (b"not json", None),
        (b"[1]", None),
        (b'{"last_slot": "1"}', None),
        (b'{"last_slot": true}', None),
        (b'{"last_slot": -5}', None),
    ],
)
def test_junk_state_reads_as_no_state(raw: bytes | None, slot: int | None) -> None:
    assert parse_state(raw) == slot


# --- registration ---


class Report(BaseModel):
    day: int


def test_periodic_registers_a_schedule_for_a_registered_task() -> None:
    app = App()

    @app.periodic(cron="0 3 * * *", payload={"day": 1}, catch_up="last", priority="low")
    @app.task()
    def report(payload: Report) -> None: ...

    app.periodic(every=timedelta(minutes=5), payload=Report(day=2), name="report-often")(report)
    assert report.name == "report"  # the task is returned unchanged
    nightly, often = app.schedules["report"], app.schedules["report-often"]
    assert (nightly.task, nightly.cron, nightly.catch_up, nightly.priority) == ("report", "0 3 * * *", "last", "low")
    assert (often.task, often.every_ms, often.payload) == ("report", 300_000, b'{"day":2}')


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *", "payload": {"day": 1}}, "bad cron expression '61 * * * *'"),
        ({"cron": "every day", "payload": {"day": 1}}, "bad cron expression"),
        ({"payload": {"day": 1}}, "exactly one of cron"),
        ({"cron": "* * * * *", "every": timedelta(seconds=5), "payload": {"day": 1}}, "exactly one of cron"),
        ({"every": timedelta(milliseconds=10), "payload": {"day": 1}}, "at least 1 second"),
        ({"cron": "* * * * *", "payload": {"day": "x"}}, "invalid payload for task 'report': day"),
        ({"cron": "* * * * *"}, "day: Field required"),
        ({"cron": "* * * * *", "payload": {"day": 1}, "catch_up": "all"}, "catch_up must be one of none, last"),
    ],
)
def test_a_bad_schedule_is_one_line_at_registration(options: dict[str, object], message: str) -> None:
    app = App()

    @app.task()
    def report(payload: Report) -> None: ...

    with pytest.raises(StreamprocError, match="periodic schedule 'report'") as raised:
        app.periodic(**options)(report)  # type: ignore[arg-type]
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert app.schedules == {}


def test_periodic_goes_above_task_and_each_name_once() -> None:
    app = App()

    def plain(payload: dict[str, int]) -> None: ...

    with pytest.raises(StreamprocError, match=r"above @app\.task"):
        app.periodic(every=timedelta(seconds=2))(plain)  # type: ignore[arg-type]
    task = app.task()(plain)
    app.periodic(every=timedelta(seconds=2))(task)
    with pytest.raises(StreamprocError, match="declared twice"):
        app.periodic(every=timedelta(seconds=3))(task)
    with pytest.raises(StreamprocError, match="not registered with this app"):
        App().periodic(every=timedelta(seconds=2))(task)
