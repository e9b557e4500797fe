"""A PostgreSQL connection with the surface of the aiosqlite connection that memoir uses.

Built like aiosqlite itself: one psycopg 3 connection owned by a worker thread of its own; the
async methods queue work to that thread. Its sync side (`Connection._conn`, a `SyncConnection`)
offers sqlite3's `execute(sql, params)` and `executemany`, returning a cursor with `fetchone`,
`fetchall`, iteration and `rowcount`, so the store's functions that run several statements in
one trip to the connection's thread (`store._in_thread`) run unchanged on either backend.

What it translates, and nothing more:

- placeholders: sqlite3's `?` (and numbered `?1`) become psycopg's `%s`; a literal `%` is
  escaped. memoir's SQL never has a `?` inside a string literal.
- rows: a tuple addressable by column name too (`row["memory_id"]`, `row[0]`), as sqlite3.Row.
- errors: psycopg's become sqlite3's classes (`IntegrityError`, `OperationalError`,
  `DatabaseError`), raised from the original, so the layers above catch one vocabulary.

Transactions are explicit, as on SQLite: the connection is in autocommit mode and the store
sends BEGIN / COMMIT / ROLLBACK itself (through its backend, memory/backends/postgres.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache, partial
from queue import SimpleQueue
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

# -- SQL and rows ----------------------------------------------------------------------------

_MARK = re.compile(r"%|\?(\d*)")


@lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, tuple[int, ...] | None]:
    """`sql` with psycopg's placeholders, and for numbered ones (`?1`) the index of the parameter
    each `%s` takes (None: in order)."""
    order: list[int | None] = []

    def mark(found: re.Match[str]) -> str:
        if found.group(0) == "%":
            return "%%"
        order.append(int(found.group(1)) - 1 if found.group(1) else None)
        return "%s"

    out = _MARK.sub(mark, sql)
    if any(i is not None for i in order):
        if None in order:
            raise ValueError(f"mixed ? and ?N placeholders: {sql}")
        return out, tuple(order)  # type: ignore[arg-type]
    return out, None


def _bind(sql: str, params: Sequence[Any] | None) -> tuple[str, Sequence[Any] | None]:
    if not params:
        return sql, None  # sent as it is: no placeholders to translate, and a literal % stays one
    text, order = translate(sql)
    if order is not None:
        params = [params[i] for i in order]
    return text, params


@lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[tuple]:
    index = {name: i for i, name in enumerate(names)}
    get = tuple.__getitem__

    class Row(tuple):
        """A result row, addressed by position or by column name (as sqlite3.Row)."""

        __slots__ = ()

        def __getitem__(self, key: Any) -> Any:
            if isinstance(key, str):
                try:
                    return get(self, index[key])
                except KeyError:
                    raise IndexError(f"No item with that key: {key}") from None
            return get(self, key)

        def keys(self) -> list[str]:
            return list(names)

    return Row


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], tuple]:
    description = cursor.description
    cls = _row_class(tuple(c.name for c in description) if description else ())
    return cls


def _sqlite_error(exc: psycopg.Error) -> sqlite3.Error:
    """The sqlite3 class of error that says what `exc` says (the message is PostgreSQL's)."""
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, pg_errors.IntegrityError):
        out: sqlite3.Error = sqlite3.IntegrityError(message)
    elif isinstance(exc, pg_errors.UndefinedTable):
        out = sqlite3.OperationalError(f"no such table: {message}")
    elif isinstance(exc, (psycopg.OperationalError, pg_errors.LockNotAvailable, pg_errors.QueryCanceled)):
        out = sqlite3.OperationalError(message)
    elif isinstance(exc, psycopg.InterfaceError):
        out = sqlite3.ProgrammingError(message)
    else:
        out = sqlite3.DatabaseError(message)
    out.pg_error = exc  # type: ignore[attr-defined]
    return out


# -- the sync side: what runs on the connection's thread --------------------------------------


class SyncCursor:
    """The rows of one statement, fetched at once (as memoir reads them anyway)."""

    __slots__ = ("_rows", "_at", "rowcount", "description")

    def __init__(self, rows: list[tuple], rowcount: int, description: Any) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount
        self.description = description

    lastrowid = None  # PostgreSQL has none: memoir's SQL says RETURNING

    def fetchone(self) -> tuple | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[tuple]:
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def fetchmany(self, size: int = 1) -> list[tuple]:
        rows = self._rows[self._at : self._at + size]
        self._at += len(rows)
        return rows

    def __iter__(self) -> Iterator[tuple]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        pass


class SyncConnection:
    """sqlite3's Connection surface (execute, executemany) over one psycopg connection.

    A connection the server dropped (a restart, a failover, an idle timeout) is made again, and
    the statement retried once, when nothing can have been half done: outside a transaction, for
    a read or the BEGIN of a write. A write's COMMIT is never retried: its outcome is unknown, and
    the caller is told so by the error.
    """

    def __init__(self, raw: psycopg.Connection[Any], conninfo: str = "", application_name: str = "memoir") -> None:
        self.raw = raw
        self.conninfo = conninfo
        self.application_name = application_name
        self.setup: list[str] = []  # session settings, made again on a new connection
        self.total_changes = 0  # rows written through this connection (sqlite3 has the same counter)

    @property
    def _lost(self) -> bool:
        return self.raw.closed or self.raw.broken

    def configure(self, statement: str) -> None:
        """A session setting (e.g. SET lock_timeout), kept across reconnections."""
        self.setup.append(statement)
        self.execute(statement)

    def _reconnect(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()
        self.raw = _raw_connect(self.conninfo, self.application_name)
        for statement in self.setup:
            self.raw.execute(statement)

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> SyncCursor:
        if self.conninfo and self._lost and sql.strip().upper() == "ROLLBACK":
            self._reconnect()  # the transaction died with the connection: nothing to roll back
            return SyncCursor([], 0, None)
        text, bound = _bind(sql, params)
        retry = self.conninfo and not self.in_transaction and sql.lstrip()[:6].upper() in ("BEGIN", "SELECT")
        try:
            if retry and self._lost:
                self._reconnect()
            try:
                cursor = self.raw.execute(text, bound)
            except psycopg.OperationalError:
                if not (retry and self._lost):
                    raise
                self._reconnect()  # the server dropped the connection: once more on a new one
                cursor = self.raw.execute(text, bound)
            rows = cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc
        if cursor.description is None and cursor.rowcount > 0:
            self.total_changes += cursor.rowcount
        return SyncCursor(rows, cursor.rowcount, cursor.description)

    def pipeline(self, statements: Sequence[tuple[str, Sequence[Any] | None]]) -> list[list[tuple]]:
        """Run `statements` in one round trip (psycopg's pipeline mode); each one's rows. The first
        error is raised, and the server skips every statement after it up to the end (so a COMMIT
        among them does not run, or rolls back the aborted transaction)."""
        try:
            with self.raw.pipeline() as pipe:
                cursors = [self.raw.execute(*_bind(sql, params)) for sql, params in statements]
                pipe.sync()
                rows = [c.fetchall() if c.description is not None else [] for c in cursors]
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc
        return rows

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> SyncCursor:
        seq = list(seq)
        if not seq:
            return SyncCursor([], 0, None)
        text, order = translate(sql)
        if order is not None:
            seq = [[p[i] for i in order] for p in seq]
        try:
            with self.raw.cursor() as cursor:
                cursor.executemany(text, seq)
                rowcount = cursor.rowcount
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc
        if rowcount > 0:
            self.total_changes += rowcount
        return SyncCursor([], rowcount, None)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status not in (TransactionStatus.IDLE, TransactionStatus.UNKNOWN)

    def close(self) -> None:
        self.raw.close()


def _raw_connect(conninfo: str, application_name: str) -> psycopg.Connection[Any]:
    return psycopg.connect(conninfo, autocommit=True, row_factory=_row_factory, application_name=application_name)


def connect_sync(conninfo: str, *, application_name: str = "memoir") -> SyncConnection:
    try:
        raw = _raw_connect(conninfo, application_name)
    except psycopg.Error as exc:
        raise _sqlite_error(exc) from exc
    return SyncConnection(raw, conninfo, application_name)


# -- the async side ---------------------------------------------------------------------------

_STOP = object()


def _worker(queue: SimpleQueue[tuple[asyncio.Future[Any] | None, Callable[[], Any]]]) -> None:
    while True:
        future, function = queue.get()
        try:
            result = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            if future is not None:
                future.get_loop().call_soon_threadsafe(_set_exception, future, exc)
            continue
        if future is not None:
            future.get_loop().call_soon_threadsafe(_set_result, future, result)
        if result is _STOP:
            return


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Cursor:
    """What `await Connection.execute(...)` gives: the rows already fetched, as aiosqlite's cursor."""

    __slots__ = ("_sync",)

    def __init__(self, sync: SyncCursor) -> None:
        self._sync = sync

    @property
    def rowcount(self) -> int:
        return self._sync.rowcount

    @property
    def lastrowid(self) -> None:
        return None

    @property
    def description(self) -> Any:
        return self._sync.description

    async def fetchone(self) -> tuple | None:
        return self._sync.fetchone()

    async def fetchall(self) -> list[tuple]:
        return self._sync.fetchall()

    async def fetchmany(self, size: int = 1) -> list[tuple]:
        return self._sync.fetchmany(size)

    async def close(self) -> None:
        pass

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> tuple:
        row = self._sync.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class _Result:
    """`await db.execute(...)` or `async with db.execute(...) as cursor`, as aiosqlite allows both."""

    __slots__ = ("_coro", "_cursor")

    def __init__(self, coro: Any) -> None:
        self._coro = coro
        self._cursor: Cursor | None = None

    def __await__(self) -> Any:
        return self._coro.__await__()

    async def __aenter__(self) -> Cursor:
        self._cursor = await self._coro
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        pass


class Connection:
    """One PostgreSQL connection on a thread of its own, with aiosqlite's async surface."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._queue: SimpleQueue[tuple[asyncio.Future[Any] | None, Callable[[], Any]]] = SimpleQueue()
        self._thread = threading.Thread(target=_worker, args=(self._queue,), name="memoir-postgres", daemon=True)
        self._connection: SyncConnection | None = None
        self._running = False
        self.row_factory: Any = None  # rows are always addressable by name (aiosqlite's attribute, unused)

    @classmethod
    async def connect(cls, conninfo: str) -> Connection:
        self = cls(conninfo)
        self._thread.start()
        self._running = True
        try:
            self._connection = await self._execute(connect_sync, conninfo)
        except BaseException:
            await self._stop()
            raise
        return self

    @property
    def _conn(self) -> SyncConnection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args)` on the connection's thread (the store's `_in_thread` passes `_conn` first)."""
        if not self._running:
            raise ValueError("Connection closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((future, partial(fn, *args, **kwargs)))
        return await future

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Result:
        return _Result(self._cursor(sql, params))

    async def _cursor(self, sql: str, params: Sequence[Any]) -> Cursor:
        return Cursor(await self._execute(self._conn.execute, sql, params))

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Cursor:
        return Cursor(await self._execute(self._conn.executemany, sql, list(seq)))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return (await self._execute(self._conn.execute, sql, params)).fetchall()

    @property
    def in_transaction(self) -> bool:
        return self._connection is not None and self._connection.in_transaction

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes

    async def commit(self) -> None:
        if self.in_transaction:
            await self.execute("COMMIT")

    async def rollback(self) -> None:
        if self.in_transaction:
            await self.execute("ROLLBACK")

    async def close(self) -> None:
        if not self._running:
            return
        try:
            if self._connection is not None:
                await self._execute(self._connection.close)
        finally:
            await self._stop()

    async def _stop(self) -> None:
        self._running = False
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((future, lambda: _STOP))
        await future
        await asyncio.to_thread(self._thread.join, 5)
