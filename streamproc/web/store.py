"""The embedded store behind `streamproc web`: the latest status of each task id, in SQLite.

Kafka has no point lookup (SPEC §12), so the view copies `<prefix>.status` into one table keyed by
task id and answers lookups from it. Each batch is one transaction holding both the rows and the
next offset of every status partition, so a restart resumes exactly where the last commit left
off: no record is lost, and one applied twice is harmless (the merge rule is idempotent).

The merge rule is `lifecycle.status.newer`, done in SQL by the upsert's `WHERE`: a terminal state
is never replaced by a non-terminal one, otherwise the later record wins. Rows older than the
status TTL are pruned in bounded chunks, and a lookup never returns one even before it is pruned.

The file is a cache of the topic: one that is missing, unreadable, corrupt, from another schema
version or of another topic is moved aside and the view rebuilds from the topic's beginning.

Two connections (WAL mode, so a reader never waits for the writer): writes (`apply`, `prune`,
`positions`) must come from one thread at a time, lookups (`get`) from one other thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import structlog

from streamproc.errors import StreamprocError
from streamproc.lifecycle.status import TaskStatus

SCHEMA_VERSION = 1
PRUNE_CHUNK = 10_000  # rows deleted per transaction, so a prune never holds the writer for long
PAGE_BYTES = 16_384  # a batch of random ids dirties fewer pages than with the default 4 KiB (measured: ~1.5x faster)
CACHE_KIB = 16 * 1024  # the writer's SQLite page cache: inserts of random ids touch pages all over the index
READER_CACHE_KIB = 8 * 1024  # the reader's: a lookup reads a few pages, which the OS caches anyway

# (task id, state, terminal, at ms, record value): one row as `apply` takes it.
Row = tuple[str, str, bool, int, bytes]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS status (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    terminal INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS status_at ON status (at_ms);
CREATE TABLE IF NOT EXISTS positions (partition INTEGER PRIMARY KEY NOT NULL, next_offset INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
"""
_UPSERT = """
INSERT INTO status (id, state, terminal, at_ms, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    state = excluded.state, terminal = excluded.terminal, at_ms = excluded.at_ms, value = excluded.value
WHERE excluded.terminal OR NOT status.terminal
"""
_POSITION = "INSERT OR REPLACE INTO positions (partition, next_offset) VALUES (?, ?)"
_PRUNE = "DELETE FROM status WHERE rowid IN (SELECT rowid FROM status WHERE at_ms < ? LIMIT ?)"

log = structlog.get_logger("streamproc.web")


class _Unusable(Exception):
    """The file holds no store this version can use; why, for the log line."""


def row(status: TaskStatus, value: bytes, at_ms: int) -> Row:
    """The row of a status record; `at_ms` is when it counts as written (for the TTL)."""
    return (status.task_id, status.state.value, status.state.terminal, at_ms, value)


class StatusStore:
    """The statuses of one status topic, in the SQLite file at `path` (created when missing)."""

    def __init__(self, path: str | os.PathLike[str], topic: str, ttl_ms: int) -> None:
        self.path = Path(path)
        self.topic = topic
        self.ttl_ms = ttl_ms
        try:
            self._writer = self._open_writer()
        except (sqlite3.DatabaseError, _Unusable) as exc:
            log.warning(
                "status store unusable: starting empty, rebuilding from the topic's beginning",
                path=str(self.path),
                reason=str(exc),
            )
            self._move_aside()
            try:
                self._writer = self._open_writer()
            except (sqlite3.DatabaseError, _Unusable) as again:
                raise StreamprocError(f"cannot create the status store {self.path}: {again}") from again
        self._reader = self._connect(query_only=True)

    def _connect(self, *, query_only: bool = False) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; `apply` and `prune` begin and commit their own.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB if query_only else CACHE_KIB}")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StreamprocError(f"cannot create the directory of the status store {self.path}: {exc}") from exc
        conn = self._connect()
        try:
            conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")  # only takes effect in a new file
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # a cache of the topic: a lost last batch is read again
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise _Unusable(f"schema version {version}, this streamproc writes {SCHEMA_VERSION}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            found = conn.execute("SELECT value FROM meta WHERE key = 'topic'").fetchone()
            if found is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('topic', ?)", (self.topic,))
            elif found[0] != self.topic:
                raise _Unusable(f"it holds the statuses of {found[0]}, not {self.topic}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> None:
        """Keep the unusable file as `<name>.unusable` (a mistyped --db may name someone's file)."""
        aside = self.path.with_name(self.path.name + ".unusable")
        try:
            if self.path.exists():
                self.path.replace(aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
        except OSError as exc:
            raise StreamprocError(f"cannot replace the unusable status store {self.path}: {exc}") from exc

    def positions(self) -> dict[int, int]:
        """The next offset to read of each status partition the store has read from."""
        return dict(self._writer.execute("SELECT partition, next_offset FROM positions").fetchall())

    def apply(self, rows: Iterable[Row], positions: Mapping[int, int]) -> None:
        """Merge `rows` (in read order) and record `positions`, in one transaction."""
        conn = self._writer
        conn.execute("BEGIN")
        try:
            conn.executemany(_UPSERT, rows)
            conn.executemany(_POSITION, positions.items())
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def prune(self, now_ms: int | None = None, limit: int = PRUNE_CHUNK) -> int:
        """Delete up to `limit` rows older than the TTL; how many went (call again while it is `limit`)."""
        horizon = (now_ms if now_ms is not None else _now_ms()) - self.ttl_ms
        conn = self._writer
        conn.execute("BEGIN")
        try:
            deleted = conn.execute(_PRUNE, (horizon, limit)).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return deleted

    def get(self, task_id: str, now_ms: int | None = None) -> TaskStatus:
        """The stored status of `task_id`; `unknown` when there is none within the TTL."""
        found = self._reader.execute("SELECT at_ms, value FROM status WHERE id = ?", (task_id,)).fetchone()
        horizon = (now_ms if now_ms is not None else _now_ms()) - self.ttl_ms
        if found is None or found[0] < horizon:
            return TaskStatus.unknown(task_id)
        return TaskStatus.from_json(found[1]) or TaskStatus.unknown(task_id)

    def count(self) -> int:
        """How many task ids the store holds (a full scan of the id index: for tests and benchmarks)."""
        count: int = self._reader.execute("SELECT count(*) FROM status").fetchone()[0]
        return count

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> StatusStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
