"""A small sqlite wrapper shared by the client's StateDB and the node's PendingStore.

One connection per store (check_same_thread=False) guarded by a lock, autocommit mode with explicit
transactions. Writes run in `BEGIN IMMEDIATE` so two processes on one file serialise on the write
lock (the busy timeout makes the second wait instead of failing). WAL journal; `synchronous=FULL`
by default, so a committed transaction is on disk before commit returns (RELIABILITY 2.4).
Every sqlite error is raised as StoreError (the base exception of the local stores).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

BUSY_TIMEOUT_S = 30.0


class StoreError(Exception):
    """A local store failed (sqlite error, corrupt file) or was misused; the message says which."""


class Database:
    """A sqlite file opened in WAL mode; `schema` is a list of CREATE ... IF NOT EXISTS statements."""

    def __init__(self, path: Path, schema: Sequence[str], *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL").fetchall()
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            with self.write() as cur:
                for statement in schema:
                    cur.execute(statement)
        except (sqlite3.Error, StoreError) as exc:
            self._conn.close()
            raise StoreError(f"cannot open {self.path}: {exc}") from exc

    def write(self) -> AbstractContextManager[sqlite3.Cursor]:
        """A write transaction (BEGIN IMMEDIATE): committed on exit, rolled back on any exception."""
        return self._transaction("BEGIN IMMEDIATE")

    def read(self) -> AbstractContextManager[sqlite3.Cursor]:
        """A read transaction (deferred BEGIN): one consistent snapshot for several statements."""
        return self._transaction("BEGIN")

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute(begin)
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: {exc}") from exc
                raise
            finally:
                cur.close()

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read statement (autocommit: a consistent snapshot of that statement)."""
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteStore:
    """Base of a store kept in one sqlite file: subclasses set SCHEMA; use as a context manager."""

    SCHEMA: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: Path) -> None:
        self._db = Database(Path(path), self.SCHEMA, synchronous="FULL")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
