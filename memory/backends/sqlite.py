"""The SQLite backend: a file (or ":memory:") over aiosqlite, WAL, one writer connection.

See memory/backends/__init__.py for what a backend is; memory/store.py for the store over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from ..schema import AFTER_MIGRATION, MIGRATIONS

Statement = tuple[str, tuple[Any, ...]]


class SQLiteBackend:
    """A database file at `location` (":memory:" for one that lives and dies with the store)."""

    name = "sqlite"
    # A local file: `memoir backup` copies it, the doctor opens it, a missing one can be refused.
    is_file = True

    def __init__(self, location: str) -> None:
        self.location = location

    async def open(self, synchronous: str, busy_timeout_ms: int) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        """The writer and reader connections, the schema migrated (the reader is the writer in memory)."""
        path = self.location
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path, synchronous, busy_timeout_ms)
        try:
            await migrate(writer)
            # An in-memory database exists only on its own connection, so it is read there too.
            reader = writer if path == ":memory:" else await _connect(path, synchronous, busy_timeout_ms)
        except BaseException:
            await writer.close()
            raise
        return writer, reader

    def opened_file(self) -> _OpenedFile | None:
        return _OpenedFile.of(self.location)

    async def begin(self, db: aiosqlite.Connection) -> None:
        """Begin a write transaction: waits (busy_timeout) while another process writes."""
        await db.execute("BEGIN IMMEDIATE")

    def begin_and_commit(
        self, db: sqlite3.Connection, statements: list[Statement], busy_ms: int | None, usual_busy_ms: int
    ) -> bool:
        return _begin_and_commit(db, statements, busy_ms, usual_busy_ms)

    async def after_copy(self, db: aiosqlite.Connection) -> None:
        """Nothing to do: SQLite's next row id follows the largest one (and AUTOINCREMENT's too)."""

    def write_lightly(self, db: sqlite3.Connection, synchronous: str, fn: Callable[..., Any], *args: Any) -> None:
        """`fn(db, *args)` in a write transaction of its own committed with `synchronous = NORMAL`,
        on the connection's thread: for derived data (the keyword index).

        Its transaction moves rows from the queue into the index, so a power cut that loses it
        (WAL with NORMAL does not wait for the disk at COMMIT) loses both sides, and the changes are
        indexed again from the queue. Waiting for the disk (FULL, the default) made a user's first
        search after a write pay for a write's fsync: with 10,000 users, p99 27 ms instead of ~5.
        The next durable commit syncs these frames too.
        """
        lighter = synchronous in ("FULL", "EXTRA")
        if lighter:
            db.execute("PRAGMA synchronous = NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                fn(db, *args)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if lighter:
                db.execute(f"PRAGMA synchronous = {synchronous}")

    def state(self, db: sqlite3.Connection) -> tuple[int, int]:
        """On a connection's thread: a token that changes whenever the database may have changed
        under this connection (another connection's commit, or its own writes)."""
        return db.execute("PRAGMA data_version").fetchone()[0], db.total_changes

    async def data_version(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> int:
        """Changes whenever another connection (another process) commits to the database."""
        rows = await writer.execute_fetchall("PRAGMA data_version", ())
        return int(next(iter(rows))[0])

    async def quick_check(self, reader: aiosqlite.Connection) -> str:
        """'ok', or what SQLite's PRAGMA quick_check found wrong (a damaged file)."""
        rows = await reader.execute_fetchall("PRAGMA quick_check(3)", ())
        return "; ".join(" ".join(str(r[0]).split()) for r in rows)  # one line

    async def integrity_check(self, reader: aiosqlite.Connection) -> str:
        rows = await reader.execute_fetchall("PRAGMA integrity_check", ())
        return str(next(iter(rows))[0])


def _begin_and_commit(
    db: sqlite3.Connection, statements: list[Statement], busy_ms: int | None, usual_busy_ms: int
) -> bool:
    """BEGIN, `statements`, COMMIT; rolled back on any error. False, with nothing written, when
    another connection held the write lock for longer than `busy_ms` (None: the usual wait)."""
    if busy_ms is not None:
        db.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return False
        raise
    finally:
        if busy_ms is not None:
            db.execute(f"PRAGMA busy_timeout = {int(usual_busy_ms)}")
    try:
        for sql, params in statements:
            db.execute(sql, params)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return True


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


@dataclass(frozen=True)
class _OpenedFile:
    """The database file a store opened, and its WAL and shared-memory files beside it."""

    path: str  # absolute: SQLite resolved it once, at open; a later chdir must not matter
    identity: tuple[int, int]
    sidecars: dict[str, tuple[int, int]]  # "-wal" / "-shm" -> identity

    @classmethod
    def of(cls, path: str) -> _OpenedFile | None:
        if path in (":memory:", ""):
            return None
        path = os.path.abspath(path)
        identity = _identity(path)
        if identity is None:
            return None
        found = {suffix: _identity(path + suffix) for suffix in ("-wal", "-shm")}
        return cls(path, identity, {suffix: i for suffix, i in found.items() if i is not None})

    def gone(self) -> Literal["deleted", "replaced"] | None:
        """How the path no longer leads to the opened file; None while it does (or cannot be told)."""
        try:
            found = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return "deleted"
        except OSError:
            return None  # cannot look (e.g. permissions changed): writes go on as before
        return None if (found.st_dev, found.st_ino) == self.identity else "replaced"

    def drop_stale_sidecars(self) -> None:
        """After closing: remove this store's WAL and shared-memory files if the database file
        was deleted or replaced meanwhile. SQLite leaves them then (the file "has moved"), and
        would apply the old file's WAL to whatever file is next opened at the path - a backup
        renamed into place would come back as the old database. Only the very files this store
        had open are removed, never another's."""
        if self.gone() is None:
            return
        for suffix, identity in self.sidecars.items():
            if _identity(self.path + suffix) == identity:
                with contextlib.suppress(OSError):
                    os.unlink(self.path + suffix)


async def _connect(path: str, synchronous: str, busy_timeout_ms: int) -> aiosqlite.Connection:
    # isolation_level=None: transactions are begun explicitly, so each change is exactly one.
    connection = aiosqlite.connect(path, isolation_level=None)
    try:
        db = await connection
    except BaseException:
        # aiosqlite queues its thread's stop without waiting for it: were the loop to close first,
        # the thread would print "Event loop is closed" tracebacks (e.g. a read-only directory).
        await asyncio.to_thread(connection._thread.join, 5)
        raise
    try:
        db.row_factory = sqlite3.Row
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if path != ":memory:":
            await db.execute("PRAGMA journal_mode = WAL")
        await db.execute(f"PRAGMA synchronous = {synchronous}")
        await db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        # e.g. "file is not a database": an open connection's thread would keep the process alive.
        await db.close()
        raise
    return db


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the schema to the newest version; returns the version it was at."""
    await db.execute("BEGIN IMMEDIATE")
    try:
        row = next(iter(await db.execute_fetchall("PRAGMA user_version", ())))
        version = int(row[0])
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this memoir knows ({len(MIGRATIONS)}); "
                "upgrade memoir-mcp"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                await db.execute(statement)
            if number in AFTER_MIGRATION:
                await db._execute(AFTER_MIGRATION[number], db._conn)
            await db.execute(f"PRAGMA user_version = {number}")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    await db.execute("COMMIT")
    return version


def _statements(script: str) -> Iterable[str]:
    """Split a migration into statements (executescript would commit on its own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()
