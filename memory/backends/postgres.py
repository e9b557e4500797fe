"""The PostgreSQL backend: a `postgresql://` URL, over psycopg 3 (memory/postgres.py).

Many memoir instances may share one database. What keeps them correct:

- Writes serialise as SQLite's single writer does: every write transaction starts with
  `pg_advisory_xact_lock(WRITE_LOCK)`, held until COMMIT or ROLLBACK, across instances. A
  read-then-write (an update checks the memory, then writes it) therefore sees every earlier
  write, whichever instance made it. Waiting for the lock is bounded by `lock_timeout` (the
  store's busy timeout), as SQLite's wait by `busy_timeout`.
- Every write transaction bumps the one row of `memoir_changes`. Its value is the state token
  of the keyword index's statistics (`state`), and `data_version` counts the bumps this
  instance did not make itself: the in-process caches (vectors, keyword statistics) are
  dropped when another instance wrote, and kept across this instance's own writes (which
  update them as they go), exactly as SQLite's `PRAGMA data_version` behaves.
- Each connection is in autocommit mode: a read sees every transaction committed before it.

Durability is PostgreSQL's: a COMMIT returns once the WAL is flushed (`synchronous_commit` on,
the server's default) with MEMOIR_SYNCHRONOUS=FULL (the default) or EXTRA; NORMAL or OFF turn
`synchronous_commit` off for memoir's writes, the same trade as SQLite's NORMAL: a crash of
memoir loses nothing, a crash of the database server may lose the last moments of commits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .. import postgres
from .pg_schema import MIGRATIONS

# The advisory lock every write transaction holds: "memoir" in ASCII.
WRITE_LOCK = 0x6D656D6F6972
# The lock migrations hold, so that two instances starting at once migrate once.
MIGRATE_LOCK = WRITE_LOCK + 1

Statement = tuple[str, tuple[Any, ...]]

_BUMP = "UPDATE memoir_changes SET version = version + 1 WHERE id = 1 RETURNING version"


async def _configure(connection: postgres.Connection) -> None:
    # memoir's working set (a user's rows and their indexes) is in memory: a random page costs
    # about what a sequential one does. With the default 4, looking up a search's 100 memories by
    # id read all 10,000 of the user's rows (2.2 ms) instead of their unique index.
    await connection._execute(connection._conn.configure, "SET random_page_cost = 1.1")


class PostgresBackend:
    name = "postgresql"
    is_file = False

    def __init__(self, location: str) -> None:
        self.location = location
        self._lock = threading.Lock()
        self._known: int | None = None  # the last version this instance accounted for
        self._foreign = 0  # how many times another instance was seen to have written

    async def open(self, synchronous: str, busy_timeout_ms: int) -> tuple[postgres.Connection, postgres.Connection]:
        writer = await postgres.Connection.connect(self.location)
        try:
            await _configure(writer)
            await writer._execute(writer._conn.configure, f"SET lock_timeout = {int(busy_timeout_ms)}")
            if synchronous.upper() in ("NORMAL", "OFF"):
                # As SQLite's NORMAL: a crash of memoir loses nothing, a crash of the server (or a
                # power cut) may lose the last fraction of a second of commits; nothing is corrupted.
                await writer._execute(writer._conn.configure, "SET synchronous_commit = off")
            await writer._execute(migrate, writer._conn)
            reader = await postgres.Connection.connect(self.location)
            await _configure(reader)
        except BaseException:
            await writer.close()
            raise
        return writer, reader

    def opened_file(self) -> None:
        return None

    # -- writing ---------------------------------------------------------------------------

    async def begin(self, db: postgres.Connection) -> None:
        await db._execute(self._begin, db._conn)

    def _begin(self, db: postgres.SyncConnection) -> None:
        db.execute("BEGIN")
        try:
            db.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            self._wrote(db.execute(_BUMP).fetchone()[0])
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def begin_and_commit(
        self, db: postgres.SyncConnection, statements: list[Statement], busy_ms: int | None, usual_busy_ms: int
    ) -> bool:
        """BEGIN, `statements`, COMMIT; rolled back on any error. False, with nothing written, when
        another instance held the write lock for longer than `busy_ms` (None: the usual wait).

        Two round trips: BEGIN on its own (on a connection the server dropped it is retried on a
        new one), then the rest pipelined; an add was six round trips, each a wake-up of the
        server's process."""
        db.execute("BEGIN")
        rest: list[tuple[str, Any]] = []
        if busy_ms is not None:
            rest.append((f"SET LOCAL lock_timeout = {int(busy_ms)}", None))
        rest.append((f"SELECT pg_advisory_xact_lock({WRITE_LOCK})", None))
        if busy_ms is not None:
            rest.append((f"SET LOCAL lock_timeout = {int(usual_busy_ms)}", None))
        bump = len(rest)
        rest += [(_BUMP, None), *statements, ("COMMIT", None)]
        try:
            rows = db.pipeline(rest)
        except postgres.sqlite3.OperationalError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(getattr(exc, "pg_error", None), postgres.pg_errors.LockNotAvailable):
                return False
            raise
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._wrote(rows[bump][0][0])
        return True

    def write_lightly(self, db: postgres.SyncConnection, synchronous: str, fn: Callable[..., Any], *args: Any) -> None:
        """`fn(db, *args)` in a write transaction of its own whose COMMIT does not wait for the WAL
        flush (`synchronous_commit = off`), on the connection's thread: for derived data (the
        keyword index), which a lost commit leaves queued to be indexed again."""
        self._begin(db)
        try:
            db.execute("SET LOCAL synchronous_commit = off")
            fn(db, *args)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _wrote(self, version: int) -> None:
        with self._lock:
            if self._known is not None and version != self._known + 1:
                self._foreign += 1  # another instance wrote since this one last looked
            self._known = version

    async def after_copy(self, db: postgres.Connection) -> None:
        """Identity sequences do not follow ids inserted as they are: set each past its largest id."""
        for table, column in (("memories", "id"), ("history", "event_id"), ("fts_pending", "seq"), ("keyword_users", "uid")):
            await db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), coalesce(max({column}), 0) + 1, false)"
                f" FROM {table}"
            )

    # -- reading ---------------------------------------------------------------------------

    def state(self, db: postgres.SyncConnection) -> int:
        """On a connection's thread: a token that changes whenever any instance has written."""
        return int(db.execute("SELECT version FROM memoir_changes WHERE id = 1").fetchone()[0])

    async def data_version(self, writer: postgres.Connection, reader: postgres.Connection) -> int:
        """Changes whenever another instance has committed a write since the last call."""
        rows = await reader.execute_fetchall("SELECT version FROM memoir_changes WHERE id = 1")
        version = int(rows[0][0])
        with self._lock:
            if self._known is not None and version != self._known and not writer.in_transaction:
                self._foreign += 1
            if not writer.in_transaction or self._known is None:
                self._known = version
            return self._foreign

    async def quick_check(self, reader: postgres.Connection) -> str:
        """'ok' when the server answers and the schema is this memoir's."""
        rows = await reader.execute_fetchall("SELECT version FROM schema_version")
        return "ok" if rows and int(rows[0][0]) == len(MIGRATIONS) else "schema_version is not this memoir's"

    async def integrity_check(self, reader: postgres.Connection) -> str:
        return await self.quick_check(reader)


def migrate(db: postgres.SyncConnection) -> int:
    """Bring the schema to the newest version (in one transaction; two instances starting
    together migrate once); returns the version it was at."""
    db.execute("BEGIN")
    try:
        db.execute(f"SELECT pg_advisory_xact_lock({MIGRATE_LOCK})")
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            db.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = 0 if row is None else int(row[0])
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this memoir knows ({len(MIGRATIONS)}); "
                "upgrade memoir-mcp"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute(script)
            db.execute(f"UPDATE schema_version SET version = {number}")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return version
