"""`StatusStore`: the merge rule of `newer` in SQL, TTL pruning, resumable positions, and rebuilding
from an unusable file."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from streamproc.lifecycle.status import TaskState, TaskStatus, newer
from streamproc.web.store import PRUNE_CHUNK, StatusStore, row

TOPIC = "tasks.status"
TTL_MS = 60_000
NOW_MS = 1_764_000_000_000


def status(task_id: str, state: TaskState, at_ms: int = NOW_MS, attempt: int = 1) -> TaskStatus:
    return TaskStatus(task_id, state, task="send_email", attempt=attempt, at_ms=at_ms)


def apply(store: StatusStore, *statuses: TaskStatus, positions: dict[int, int] | None = None) -> None:
    store.apply([row(s, s.to_json(), s.at_ms) for s in statuses], positions or {})


@pytest.fixture
def store(tmp_path: Path) -> StatusStore:
    return StatusStore(tmp_path / "status.sqlite", TOPIC, TTL_MS)


def test_an_unknown_id_is_unknown(store: StatusStore) -> None:
    assert store.get("nope", NOW_MS) == TaskStatus.unknown("nope")


def test_the_later_record_wins_until_a_terminal_one(store: StatusStore) -> None:
    apply(store, status("a", TaskState.PENDING), status("a", TaskState.RETRYING, attempt=2))
    assert store.get("a", NOW_MS).state is TaskState.RETRYING
    apply(store, status("a", TaskState.SUCCEEDED, attempt=2))
    apply(store, status("a", TaskState.PENDING))  # a late `pending` from the producer's connection
    assert store.get("a", NOW_MS) == status("a", TaskState.SUCCEEDED, attempt=2)
    apply(store, status("a", TaskState.DEAD, attempt=3))  # a re-run's terminal outcome is later, and wins
    assert store.get("a", NOW_MS).state is TaskState.DEAD


def test_the_stored_value_is_the_record_with_its_result(store: StatusStore) -> None:
    done = TaskStatus("r", TaskState.SUCCEEDED, task="sum", attempt=1, at_ms=NOW_MS, result={"total": [1, 2]})
    apply(store, done)
    assert store.get("r", NOW_MS) == done


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(list(TaskState)), st.integers(0, 9))))
def test_merging_in_sql_is_newer_folded_over_the_records(records: list[tuple[str, TaskState, int]]) -> None:
    with tempfile.TemporaryDirectory() as directory, StatusStore(Path(directory) / "s.sqlite", TOPIC, TTL_MS) as store:
        expected: dict[str, TaskStatus] = {}
        statuses = [status(task_id, state, NOW_MS + n, attempt=n) for task_id, state, n in records]
        for s in statuses:
            expected[s.task_id] = newer(expected.get(s.task_id), s)
        half = len(statuses) // 2  # two transactions: the rule holds within a batch and across them
        apply(store, *statuses[:half])
        apply(store, *statuses[half:])
        for task_id in ("a", "b", "c"):
            assert store.get(task_id, NOW_MS) == expected.get(task_id, TaskStatus.unknown(task_id))


def test_statuses_older_than_the_ttl_are_unknown_and_pruned_in_chunks(store: StatusStore) -> None:
    old = [status(f"old-{n}", TaskState.SUCCEEDED, at_ms=NOW_MS - TTL_MS - 1) for n in range(PRUNE_CHUNK + 5)]
    apply(store, *old, status("fresh", TaskState.SUCCEEDED, at_ms=NOW_MS - TTL_MS))
    assert store.get("old-0", NOW_MS).state is TaskState.UNKNOWN  # even before it is pruned
    assert store.prune(NOW_MS) == PRUNE_CHUNK
    assert store.prune(NOW_MS) == 5
    assert store.prune(NOW_MS) == 0
    assert store.count() == 1
    assert store.get("fresh", NOW_MS).state is TaskState.SUCCEEDED


def test_positions_commit_with_the_rows_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    with StatusStore(path, TOPIC, TTL_MS) as store:
        assert store.positions() == {}
        apply(store, status("a", TaskState.PENDING), positions={0: 5, 1: 2})
        apply(store, status("a", TaskState.SUCCEEDED), positions={0: 9})
    with StatusStore(path, TOPIC, TTL_MS) as store:
        assert store.positions() == {0: 9, 1: 2}
        assert store.get("a", NOW_MS).state is TaskState.SUCCEEDED


def test_a_failed_batch_changes_nothing(store: StatusStore) -> None:
    apply(store, status("a", TaskState.PENDING), positions={0: 1})
    bad = ("b", "pending", False, None, b"{}")  # at_ms is NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        store.apply([row(status("c", TaskState.PENDING), b"{}", NOW_MS), bad], {0: 7})  # type: ignore[list-item]
    assert store.positions() == {0: 1}
    assert store.get("c", NOW_MS).state is TaskState.UNKNOWN


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda path: path.write_bytes(b"not a database at all " * 100), id="junk"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:100] + b"\0" * 50), id="truncated"),
        pytest.param(lambda path: _set_user_version(path, 99), id="newer schema"),
    ],
)
def test_an_unusable_file_is_moved_aside_and_the_store_starts_empty(tmp_path: Path, spoil: object) -> None:
    path = tmp_path / "status.sqlite"
    with StatusStore(path, TOPIC, TTL_MS) as store:
        apply(store, status("a", TaskState.SUCCEEDED), positions={0: 3})
    assert callable(spoil)
    spoil(path)
    with capture_logs() as logs, StatusStore(path, TOPIC, TTL_MS) as store:
        assert store.positions() == {}
        assert store.get("a", NOW_MS).state is TaskState.UNKNOWN
        apply(store, status("a", TaskState.PENDING), positions={0: 1})  # and it works
    assert (tmp_path / "status.sqlite.unusable").exists()
    assert [entry["event"] for entry in logs] == [
        "status store unusable: starting empty, rebuilding from the topic's beginning"
    ]


def test_a_file_of_another_topic_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "status.sqlite"
    with StatusStore(path, "other.status", TTL_MS) as store:
        apply(store, status("a", TaskState.SUCCEEDED), positions={0: 3})
    with StatusStore(path, TOPIC, TTL_MS) as store:
        assert store.positions() == {}
        assert store.get("a", NOW_MS).state is TaskState.UNKNOWN


def _set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
