"""Periodic schedules (SPEC §13), the pure part: what a schedule is, its slots, and which to fire.

A *slot* is an instant a schedule fires for, in ms since the epoch, UTC. Every process computes the
same slots from the schedule alone, with no clock of its own involved: a cron expression's matching
instants (in UTC, never local time, so no DST gap or doubled hour), or for `every=` the multiples of
the interval since the epoch (not "interval after start-up", which would differ between processes).
That is what lets any process that owns a schedule fire it, and a successor fire the same slot
under the same deterministic task id (`periodic_runner`).

`due_slots` decides what an owner fires given the schedule's last fired slot: every slot missed by
at most the misfire grace (a failover, a broker blip: late, not lost), and for slots missed by more
(an outage) what `catch_up` says: "none" fires none of them, "last" fires the latest missed slot
once. Nothing here touches Kafka or the clock, so it is tested exhaustively (tests/unit/test_periodic.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from croniter import croniter
from croniter.croniter import CroniterError

from streamproc.errors import StreamprocError
from streamproc.timing.schedule_record import PERIODIC_PREFIX

CatchUp = Literal["none", "last"]
CATCH_UPS: tuple[str, ...] = get_args(CatchUp)
DEFAULT_GRACE = timedelta(seconds=60)  # longer than a failover after a SIGKILL (session timeout + rebalance)


def state_key(name: str) -> str:
    """The key of a schedule's state record (the delayed-task scheduler ignores keys with this prefix)."""
    return PERIODIC_PREFIX + name


def stable_hash(name: str) -> int:
    """A hash of `name` that every process and Python version agrees on (`hash()` is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Periodic:
    """One schedule: fire task `task` with `payload` (JSON, validated at registration) at each slot.

    Exactly one of `cron` (a cron expression in UTC; 5 fields, or 6 with seconds last) and
    `every_ms` is set. `grace_ms` is the misfire grace of `due_slots`.
    """

    name: str
    task: str
    payload: bytes
    cron: str | None = None
    every_ms: int | None = None
    catch_up: CatchUp = "none"
    priority: str | None = None  # None: the producer's default (`normal`, else the lowest)
    grace_ms: int = int(DEFAULT_GRACE.total_seconds() * 1000)

    @classmethod
    def build(
        cls,
        name: str,
        task: str,
        payload: bytes,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        catch_up: str = "none",
        priority: str | None = None,
        grace: timedelta | None = None,
    ) -> Periodic:
        """A checked schedule; every mistake is a one-line `StreamprocError` naming the schedule."""
        if not name or not isinstance(name, str):
            raise StreamprocError(f"a periodic schedule's name is a non-empty string, got {name!r}")
        where = f"periodic schedule {name!r}"
        if (cron is None) == (every is None):
            raise StreamprocError(f"{where}: give exactly one of cron='…' and every=timedelta(…)")
        if catch_up not in CATCH_UPS:
            raise StreamprocError(f"{where}: catch_up must be one of {', '.join(CATCH_UPS)}, got {catch_up!r}")
        every_ms = None
        if every is not None:
            if not isinstance(every, timedelta):
                raise StreamprocError(f"{where}: every must be a datetime.timedelta, got {type(every).__name__}")
            every_ms = round(every.total_seconds() * 1000)
            if every_ms < 1000:
                raise StreamprocError(f"{where}: every must be at least 1 second, got {every}")
        if cron is not None:
            try:
                croniter(cron, _utc(0))
            except (CroniterError, ValueError, TypeError, KeyError) as exc:
                raise StreamprocError(f"{where}: bad cron expression {cron!r}: {exc}") from None
        grace_ms = int((grace if grace is not None else DEFAULT_GRACE).total_seconds() * 1000)
        if grace_ms < 0:
            raise StreamprocError(f"{where}: grace must not be negative, got {grace}")
        return cls(name, task, payload, cron, every_ms, catch_up, priority, grace_ms)  # type: ignore[arg-type]

    def describe(self) -> str:
        """`cron */5 * * * *` or `every 2s`: how `schedules list` shows it."""
        if self.cron is not None:
            return f"cron {self.cron}"
        every_ms = self.every_ms or 0
        for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if every_ms % ms == 0:
                return f"every {every_ms // ms}{unit}"
        return f"every {every_ms}ms"

    def next_slot(self, after_ms: int) -> int:
        """The first slot strictly after `after_ms`."""
        if self.every_ms is not None:
            return (after_ms // self.every_ms + 1) * self.every_ms
        assert self.cron is not None
        # croniter works in whole seconds: start from the second `after_ms` falls in.
        return _ms(croniter(self.cron, _utc(after_ms // 1000 * 1000)).get_next(datetime))

    def prev_slot(self, at_ms: int) -> int:
        """The latest slot at or before `at_ms`."""
        if self.every_ms is not None:
            return at_ms // self.every_ms * self.every_ms
        assert self.cron is not None
        following = self.next_slot(at_ms - 1)
        if following == at_ms:
            return at_ms
        return _ms(croniter(self.cron, _utc(at_ms)).get_prev(datetime))

    def slots(self, after_ms: int, until_ms: int) -> list[int]:
        """The slots in (after_ms, until_ms], in order (callers bound the span by the grace)."""
        found = []
        slot = self.next_slot(after_ms)
        while slot <= until_ms:
            found.append(slot)
            slot = self.next_slot(slot)
        return found


def due_slots(schedule: Periodic, last_slot: int | None, now_ms: int) -> list[int]:
    """The slots to fire now, in order, for a schedule whose last fired slot is `last_slot`.

    No state (a brand-new schedule, or an unreadable state record) fires nothing: it starts at the
    next slot. Otherwise every slot after `last_slot` missed by at most the grace fires (a failover
    must not lose slots), and of those missed by more, `catch_up` "last" fires the latest one when
    nothing within the grace fires anyway; "none" fires none of them.
    """
    if last_slot is None or last_slot >= now_ms:
        return []
    horizon = now_ms - schedule.grace_ms  # slots at or before it are missed by more than the grace
    recent = schedule.slots(max(last_slot, horizon), now_ms)
    if recent or schedule.catch_up == "none":
        return recent
    latest = schedule.prev_slot(horizon)
    return [latest] if latest > last_slot else []


def owner_partition(schedule: Periodic, partitions: int) -> int:
    """The intake partition whose owner fires `schedule` (of its priority's intake topic)."""
    return stable_hash(schedule.name) % partitions
