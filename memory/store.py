"""The store: memories, their history, and keyword search, over SQLite (aiosqlite) or PostgreSQL.

One `Store` per process, shared by every connection the server accepts. Writes go through a
single writer connection, one write transaction per change (memory row, history event and
keyword index together); reads use a second connection, which runs beside the writer (SQLite's
WAL; PostgreSQL's MVCC). Validation happens before a transaction starts, so an error leaves the
store as it was.

The store is one code path over an aiosqlite connection pair, or memory/postgres.py's connection
with the same surface (`?` parameters, rows by name and index, sqlite3's error classes). What is
not portable - opening and migrating, beginning a write transaction (SQLite's `BEGIN IMMEDIATE`,
PostgreSQL's advisory lock), the "did another process write?" token, health checks, the file -
is the backend's (memory/backends/), chosen once by the database's location.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from .deadline import commit_point
from .errors import CannotUndo, DatabaseFileGone, EventNotFound, InvalidArgument, MemoryNotFound
from .limits import Limits, format_time, now, parse_time
from .models import Actor, HistoryEvent, Memory, MemoryPage, Operation, ScoredMemory
from . import keyword_index, keyword_search
from .backends import backend_for, in_lists
from .keyword_index import IndexStats
from .ranking import query_terms
from .secrets import SecretsPolicy

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_MEMORY_COLUMNS = (
    "m.id, m.memory_id, m.user_id, m.memory, m.topics, m.input, m.agent_id, m.created_at, m.updated_at,"
    " m.valid_from, m.valid_to, m.superseded_by"
)

# How far ahead of the server's clock a `valid_from` may be: a client's clock may run a little
# fast, but a fact that starts later is not yet true (add it when it is).
VALID_FROM_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Change:
    """Who made a change and why, recorded with its history event."""

    actor: Actor = "tool"
    reason: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Changed:
    """A memory that a committed transaction added, changed the text of, or deleted (text None).

    `appended` marks a new memory, which comes last in its user's timeline. `retired` marks a
    change of validity only (the text is unchanged): True when the memory was superseded, False
    when it became current again.
    """

    user_id: str
    memory_id: str
    text: str | None
    appended: bool = False
    retired: bool | None = None


@dataclass(frozen=True)
class Edit:
    """One change in a batch applied by `Store.apply` (add: memory; update: memory_id and memory
    and/or topics; delete: memory_id; supersede: memory_id of the memory it replaces, memory, and
    optionally valid_from)."""

    op: Literal["add", "update", "delete", "supersede"]
    memory_id: str | None = None
    memory: str | None = None
    topics: Sequence[str] | None = None
    input: str | None = None
    change: Change = Change()
    valid_from: str | None = None


@dataclass(frozen=True)
class Filters:
    """Restrictions every search and listing honours.

    Validity: by default only current memories (`valid_to` null); `as_of` (a normalised time)
    gives those valid at that moment (`valid_from <= as_of < valid_to`, an open end counting as
    still valid); `include_superseded` gives every memory. The two are exclusive.
    """

    topics: tuple[str, ...] = ()
    created_after: str | None = None
    created_before: str | None = None
    as_of: str | None = None
    include_superseded: bool = False

    def __post_init__(self) -> None:
        if self.as_of is not None and self.include_superseded:
            raise InvalidArgument(
                "include_superseded",
                "cannot be combined with as_of (as_of already chooses which memories were valid); give one of them",
            )

    @property
    def current_only(self) -> bool:
        return self.as_of is None and not self.include_superseded

    @property
    def narrows(self) -> bool:
        """Whether anything but "current or not" restricts the memories (needs their columns)."""
        return bool(self.topics or self.created_after or self.created_before or self.as_of)

    def sql(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.as_of is not None:
            clauses.append("m.valid_from <= ? AND (m.valid_to IS NULL OR m.valid_to > ?)")
            params += [self.as_of, self.as_of]
        elif not self.include_superseded:
            clauses.append("m.valid_to IS NULL")
        if self.topics:
            marks = ", ".join("?" * len(self.topics))
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(m.topics) WHERE json_each.value IN ({marks}))")
            params.extend(self.topics)
        if self.created_after:
            clauses.append("m.created_at >= ?")
            params.append(self.created_after)
        if self.created_before:
            clauses.append("m.created_at < ?")
            params.append(self.created_before)
        return "".join(f" AND {c}" for c in clauses), params


class Store:
    """Memories of many users in one database; every method is scoped to one user."""

    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: str, limits: Limits,
        busy_timeout_ms: int = 10_000, secrets: SecretsPolicy | None = None, synchronous: Synchronous = "FULL",
        backend: Any = None,
    ) -> None:
        # What is not portable SQL (memory/backends/): SQLite's file, or PostgreSQL's URL.
        self._backend = backend or backend_for(path)
        self._writer = writer
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._reader = reader
        self._write_lock = asyncio.Lock()
        # What the current transaction changed, handed to listeners (e.g. the vector index) after COMMIT.
        self._changes: list[Changed] = []
        self._listeners: list[Callable[[list[Changed]], Awaitable[None]]] = []
        # What keyword searches learned about each user's keyword index (so: the users known to
        # have one), valid while no other connection has committed (PRAGMA data_version).
        self._index_stats: dict[str, IndexStats] = {}
        self._background: set[asyncio.Future[Any]] = set()  # ROLLBACKs queued behind an abandoned BEGIN
        self.path = path
        self.limits = limits
        # Credentials in what is written (MEMOIR_SECRETS): refused, redacted or allowed (memory/secrets.py).
        self.secrets = secrets or SecretsPolicy()
        self._file: Any = None  # the SQLite file opened; None in memory and on PostgreSQL

    # -- opening and closing ----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        limits: Limits | None = None,
        synchronous: Synchronous = "FULL",
        busy_timeout_ms: int = 10_000,
        secrets: SecretsPolicy | None = None,
    ) -> Store:
        """Open (creating and migrating as needed) the database at `path`: an SQLite file (or
        ":memory:"), or a PostgreSQL database named by a `postgresql://` URL."""
        path = str(path)
        backend = backend_for(path)
        writer, reader = await backend.open(synchronous, busy_timeout_ms)
        store = cls(writer, reader, path, limits or Limits(), busy_timeout_ms, secrets, synchronous, backend)
        store._file = backend.opened_file()
        return store

    async def close(self) -> None:
        async with self._write_lock:
            if self._reader is not self._writer:
                await self._reader.close()
            await self._writer.close()
        if self._file is not None:
            self._file.drop_stale_sidecars()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection; rolled back on any error."""
        async with self._write_lock:
            db = await self._begin()
            self._changes = []
            try:
                yield db
                await commit_point()  # a call's time limit stops here, or not at all (memory/deadline.py)
            except BaseException:
                self._changes = []
                await db.execute("ROLLBACK")
                raise
            changes, self._changes = self._changes, []
            await self._commit(db, changes)
        # Outside the lock: a listener may write in a transaction of its own.
        if changes:
            await self._notify(changes)

    async def _commit(self, db: aiosqlite.Connection, changes: list[Changed]) -> None:
        """COMMIT the open transaction; the listeners hear of it even if this call is stopped meanwhile."""
        commit = asyncio.ensure_future(db.execute("COMMIT"))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # A COMMIT already handed to the connection's thread runs whatever happens to this call.
            self._notify_when_written(commit, changes)
            raise
        except BaseException:
            if db.in_transaction:  # a COMMIT that failed (e.g. busy) leaves the transaction open
                await db.execute("ROLLBACK")
            raise

    def _check_file(self) -> None:
        """Refuse to write when the database file at the path is no longer the one opened.

        SQLite writes to the file it opened, path or no path: once that file is deleted, or
        another one renamed over it (a restore done by hand), a write would be acknowledged and
        then lost when the process exits. So every write transaction first compares the path's
        (st_dev, st_ino) with the opened file's: one stat, about 2 us of a 0.35 ms add. A file
        swapped between this check and the COMMIT still slips through; that window is a few
        microseconds against the whole life of the server.

        Reads are not checked: they go on answering from the file that was opened, which still
        holds every acknowledged write. A read that has to write first (a keyword search that
        brings the user's index up to date, the embeddings a search computes) fails like a write.
        """
        if self._file is not None and (gone := self._file.gone()) is not None:
            raise DatabaseFileGone(self._file.path, replaced=gone == "replaced")

    async def _begin(self) -> aiosqlite.Connection:
        self._check_file()
        db = self._writer
        try:
            await self._backend.begin(db)  # waits (busy timeout) while another process writes
        except BaseException:
            # Stopped (the call's time limit) while BEGIN waits: aiosqlite still runs it, so queue a
            # ROLLBACK behind it - without waiting for either, or the call would wait out the busy timeout.
            rollback = asyncio.ensure_future(db.execute("ROLLBACK"))
            self._background.add(rollback)
            rollback.add_done_callback(self._settle_background)
            raise
        return db

    def _settle_background(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # "no transaction is active" when BEGIN itself failed: expected, not an error

    def on_commit(self, listener: Callable[[list[Changed]], Awaitable[None]]) -> None:
        """Call `listener` with the memories each committed transaction changed."""
        self._listeners.append(listener)

    async def _write_at_once(self, statements: list[Statement], changes: list[Changed]) -> None:
        """A transaction of statements that need nothing read first, in one trip to the writer's
        thread: BEGIN, the statements, COMMIT (awaiting each statement made an add four trips).

        The call's time limit is taken before the trip, as `transaction()` takes it before
        COMMIT; SQLite's wait for another process's write lock is then bounded by the time that
        was left, and running out of it is a timeout with nothing written.
        """
        async with self._write_lock:
            self._check_file()
            left = await commit_point()
            # Shorten SQLite's wait for another writer only when less time is left than it would wait.
            busy_ms = None if left is None or left * 1000 >= self._busy_timeout_ms else max(1, int(left * 1000))
            trip = asyncio.ensure_future(
                _in_thread(self._writer, self._backend.begin_and_commit, statements, busy_ms, self._busy_timeout_ms)
            )
            try:
                written = await asyncio.shield(trip)
            except asyncio.CancelledError:
                # Queued statements run whatever happens to this call: the listeners must still hear of them.
                self._notify_when_written(trip, changes)
                raise
        if not written:
            raise TimeoutError  # memory/deadline.py's `bounded` makes it the call's timeout
        await self._notify(changes)

    def _notify_when_written(self, trip: asyncio.Future[Any], changes: list[Changed]) -> None:
        """Tell the listeners of `changes` once `trip` (a COMMIT, or `_begin_and_commit`) has
        written them; for a call stopped while its transaction was being committed."""

        def done(trip: asyncio.Future[Any]) -> None:
            if trip.cancelled() or trip.exception() is not None or trip.result() is False:
                return  # nothing was written
            notified = asyncio.ensure_future(self._notify(changes))
            self._background.add(notified)
            notified.add_done_callback(self._settle_background)

        trip.add_done_callback(done)

    async def _notify(self, changes: list[Changed]) -> None:
        for listener in self._listeners:
            await listener(changes)

    # -- writes -----------------------------------------------------------------------------

    async def add(
        self,
        user_id: str,
        memory: str,
        topics: Sequence[str] = (),
        *,
        input: str | None = None,
        agent_id: str | None = None,
        change: Change = Change(),
        supersedes: str | None = None,
        valid_from: str | None = None,
    ) -> Memory:
        """Add a memory. `valid_from`: since when the fact holds (ISO-8601; default now).
        `supersedes`: the memory_id of the user's current memory that this one replaces because
        the world changed; it is retired (valid_to = this one's valid_from, superseded_by = this
        one) in the same transaction, and undoing the add brings it back."""
        text = self.secrets.clean(self.limits.memory_text(memory), "memory")
        topic_list = self.limits.topics(self.secrets.clean_topics(topics))  # before lower-casing: keys are case-sensitive
        input = self.secrets.clean_optional(self.limits.input_text(input), "input")
        stamp = now()
        valid_from = check_valid_from(valid_from, stamp)
        if supersedes is not None:
            self.limits.memory_id(supersedes, "supersedes")
            async with self.transaction() as db:
                return await self._insert(
                    db, user_id, text, topic_list, input, agent_id, change, valid_from=valid_from, supersedes=supersedes
                )
        added = _new_memory(user_id, text, topic_list, input, agent_id, valid_from, stamp)
        # The most frequent write, and one that reads nothing first: all of it in one trip.
        await self._write_at_once(
            [insert_statement(added), event_statement(added.memory_id, user_id, "add", None, added, change, added.created_at)],
            [Changed(user_id, added.memory_id, added.memory, appended=True)],
        )
        return added

    async def update(
        self,
        user_id: str,
        memory_id: str,
        *,
        memory: str | None = None,
        topics: Sequence[str] | None = None,
        change: Change = Change(),
    ) -> Memory:
        self.limits.memory_id(memory_id)
        if memory is None and topics is None:
            raise InvalidArgument("memory", "give a new memory text, new topics, or both")
        text = None if memory is None else self.secrets.clean(self.limits.memory_text(memory), "memory")
        topic_list = None if topics is None else self.limits.topics(self.secrets.clean_topics(topics))
        async with self.transaction() as db:
            return await self._update(db, user_id, memory_id, text, topic_list, change)

    async def delete(self, user_id: str, memory_id: str, *, change: Change = Change()) -> None:
        self.limits.memory_id(memory_id)
        async with self.transaction() as db:
            await self._delete(db, user_id, memory_id, "delete", change)

    async def apply(self, user_id: str, edits: Sequence[Edit]) -> list[Memory]:
        """Apply several changes in one transaction: all of them, or (on any error) none.

        Returns, per edit, the memory after it (add, update, supersede: the new one) or as it was (delete).
        """
        stamp = now()
        checked = [
            Edit(
                e.op,
                None if e.memory_id is None else self.limits.memory_id(e.memory_id),
                None if e.memory is None else self.secrets.clean(self.limits.memory_text(e.memory), "memory"),
                None if e.topics is None else self.limits.topics(self.secrets.clean_topics(e.topics)),
                self.secrets.clean_optional(self.limits.input_text(e.input), "input"),
                e.change,
                check_valid_from(e.valid_from, stamp),
            )
            for e in edits
        ]
        out: list[Memory] = []
        async with self.transaction() as db:
            for e in checked:
                if e.op in ("add", "supersede"):
                    if e.op == "supersede" and e.memory_id is None:
                        raise InvalidArgument("memory_id", "is required to supersede a memory: the one it replaces")
                    if e.memory is None:
                        raise InvalidArgument("memory", f"is required to {e.op} a memory")
                    out.append(await self._insert(
                        db, user_id, e.memory, list(e.topics or []), e.input, None, e.change,
                        valid_from=e.valid_from, supersedes=e.memory_id if e.op == "supersede" else None,
                    ))
                elif e.op == "update":
                    topics = None if e.topics is None else list(e.topics)
                    out.append(await self._update(db, user_id, e.memory_id or "", e.memory, topics, e.change))
                else:
                    before = await self._get(db, user_id, e.memory_id or "")
                    await self._delete(db, user_id, e.memory_id or "", "delete", e.change)
                    out.append(before)  # type: ignore[arg-type]
        return out

    async def clear(self, user_id: str, *, change: Change = Change()) -> int:
        """Delete every memory of one user (each recorded, so each can be undone)."""
        async with self.transaction() as db:
            rows = await _fetchall(db, f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.user_id = ?", (user_id,))
            stamp = now()
            await db.executemany(
                "INSERT INTO history (memory_id, user_id, operation, before, actor, reason, source, created_at)"
                " VALUES (?, ?, 'clear', ?, ?, ?, ?, ?)",
                [
                    (m.memory_id, user_id, m.model_dump_json(), change.actor, change.reason, change.source, stamp)
                    for m in map(_memory, rows)
                ],
            )
            await db.execute("DELETE FROM memories WHERE user_id = ?", (user_id,))
            self._changes += [Changed(user_id, r["memory_id"], None) for r in rows]
            return len(rows)

    async def purge(self, user_id: str) -> int:
        """Forget a user entirely: memories and their history (the right to be forgotten). Not undoable."""
        async with self.transaction() as db:
            gone = await _fetchall(db, "SELECT memory_id FROM memories WHERE user_id = ?", (user_id,))
            cursor = await db.execute("DELETE FROM memories WHERE user_id = ?", (user_id,))
            deleted = cursor.rowcount
            self._changes += [Changed(user_id, r["memory_id"], None) for r in gone]
            await db.execute("DELETE FROM history WHERE user_id = ?", (user_id,))
            await db.execute("DELETE FROM hook_sessions WHERE user_id = ?", (user_id,))  # recalls go with the memories
            # The words of the user's memories live in the keyword index too: drop them all.
            await _in_thread(db, keyword_index.drop_user, user_id)
            return deleted

    async def undo(self, event_id: int, *, user_id: str | None = None, change: Change | None = None) -> HistoryEvent:
        """Revert one recorded change, as a new change of its own. The memory must not have changed since.

        Events that make up one change (`part_of`: an add and the memory it superseded retired; a
        delete and the memory it made current again) are reverted together, latest first, and
        the undo events are linked the same way. Returns the event that reverted `event_id`.
        """
        async with self.transaction() as db:
            row = await _fetchone(db, "SELECT * FROM history WHERE event_id = ?", (event_id,))
            if row is None or (user_id is not None and row["user_id"] != user_id):
                raise EventNotFound(event_id, user_id)
            first = row["part_of"] or event_id
            group = [
                _event(r)
                for r in await _fetchall(
                    db, "SELECT * FROM history WHERE event_id = ? OR part_of = ? ORDER BY event_id", (first, first)
                )
            ]
            change = change or Change(actor="undo")
            reverted: dict[int, int] = {}
            head: int | None = None
            for event in reversed(group):
                why = Change(change.actor, change.reason or f"undo of event {event.event_id}", change.source)
                reverted[event.event_id] = await self._undo_one(db, event, why, head)
                head = head or reverted[event.event_id]
            row = await _fetchone(db, "SELECT * FROM history WHERE event_id = ?", (reverted[event_id],))
            return _event(row)

    async def undo_clear(self, user_id: str, event_id: int, *, change: Change | None = None) -> list[HistoryEvent]:
        """Revert a whole `clear` in one transaction: every memory that clear removed comes back.

        `event_id` is any of the clear's events (one per memory, all with the clear's time and
        actor). A memory that was already brought back on its own is left as it is; the restore
        events are linked (`part_of`), so undoing one of them clears them all again. Returns the
        restore events, oldest first.
        """
        async with self.transaction() as db:
            row = await _fetchone(db, "SELECT * FROM history WHERE event_id = ?", (event_id,))
            if row is None or row["user_id"] != user_id:
                raise EventNotFound(event_id, user_id)
            if row["operation"] != "clear":
                raise CannotUndo(
                    f"event {event_id} is a {row['operation']}, not a clear; undo it on its own (`memoir undo {event_id}`)"
                )
            group = [
                _event(r)
                for r in await _fetchall(
                    db,
                    "SELECT * FROM history WHERE user_id = ? AND operation = 'clear' AND created_at = ? AND actor = ?"
                    " ORDER BY event_id",
                    (user_id, row["created_at"], row["actor"]),
                )
            ]
            change = change or Change(actor="undo")
            head: int | None = None
            restored: list[int] = []
            for event in group:
                if await self._get(db, user_id, event.memory_id) is not None:
                    continue  # restored on its own since
                why = Change(change.actor, change.reason or f"undo of the clear at {event.created_at}", change.source)
                restored.append(await self._undo_one(db, event, why, head))
                head = head or restored[0]
            if not restored:
                raise CannotUndo(f"every memory of the clear at {row['created_at']} exists again; nothing to restore")
            rows = await _fetchall(db, "SELECT * FROM history WHERE event_id = ? OR part_of = ? ORDER BY event_id", (head, head))
            return [_event(r) for r in rows]

    async def _undo_one(self, db: aiosqlite.Connection, event: HistoryEvent, change: Change, part_of: int | None) -> int:
        event_id = event.event_id
        current = await self._get(db, event.user_id, event.memory_id)
        if event.after is not None and not _same(current, event.after):
            raise CannotUndo(
                f"memory '{event.memory_id}' has changed since event {event_id}; "
                "undo its later events first (see its history)"
            )
        if event.after is None and current is not None:
            raise CannotUndo(f"memory '{event.memory_id}' exists again; nothing to restore")
        if event.before is None:  # an add (or restore) undone: remove it
            return await self._delete(db, event.user_id, event.memory_id, "delete", change, event_id, part_of)
        if event.after is None:  # a delete or clear undone: put it back as it was
            return await self._restore(db, event.before, change, event_id, part_of)
        # an update undone: set the earlier text and topics, or the earlier validity, again
        before, after = event.before, event.after
        if (before.valid_to, before.superseded_by) != (after.valid_to, after.superseded_by):
            await self._set_validity(
                db, current, before.valid_to, before.superseded_by, change, event_id, part_of  # type: ignore[arg-type]
            )
        else:
            await self._update(db, event.user_id, event.memory_id, before.memory, before.topics, change, event_id, part_of)
        return await _last_event_id(db)

    # -- reads ------------------------------------------------------------------------------

    async def get(self, user_id: str, memory_id: str) -> Memory:
        self.limits.memory_id(memory_id)
        return await self._existing(self._reader, user_id, memory_id)

    async def find(self, memory_id: str) -> Memory | None:
        """A memory by id, whoever it belongs to (for trusted local callers only)."""
        if not _well_formed(memory_id):
            return None
        row = await _fetchone(self._reader, f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.memory_id = ?", (memory_id,))
        return None if row is None else _memory(row)

    async def count(self, user_id: str | None = None) -> int:
        if user_id is None:
            row = await _fetchone(self._reader, "SELECT count(*) AS n FROM memories", ())
        else:
            row = await _fetchone(self._reader, "SELECT count(*) AS n FROM memories WHERE user_id = ?", (user_id,))
        return int(row["n"])

    async def users(self) -> list[str]:
        rows = await _fetchall(self._reader, "SELECT DISTINCT user_id FROM memories ORDER BY user_id", ())
        return [r["user_id"] for r in rows]

    async def list(
        self, user_id: str, *, limit: int = 20, cursor: str | None = None, filters: Filters = Filters()
    ) -> MemoryPage:
        """Newest first, `limit` at a time; pass `next_cursor` back for the next page."""
        where, params = filters.sql()
        if cursor is not None:
            created_at, row_id = _decode_cursor(cursor)
            where += " AND (m.created_at, m.id) < (?, ?)"
            params += [created_at, row_id]
        rows = await _fetchall(
            self._reader,
            f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.user_id = ?{where}"
            " ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
            (user_id, *params, limit + 1),
        )
        page = rows[:limit]
        next_cursor = _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
        return MemoryPage(memories=[_memory(r) for r in page], next_cursor=next_cursor)

    async def by_time(
        self, user_id: str, *, newest_first: bool, limit: int, filters: Filters = Filters()
    ) -> list[ScoredMemory]:
        """`last_n` / `first_n`: the score is 1.0 for the first result, falling by rank."""
        where, params = filters.sql()
        order = "DESC" if newest_first else "ASC"
        rows = await _fetchall(
            self._reader,
            f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.user_id = ?{where}"
            f" ORDER BY m.created_at {order}, m.id {order} LIMIT ?",
            (user_id, *params, limit),
        )
        return [_scored(r, 1.0 / (i + 1)) for i, r in enumerate(rows)]

    async def keyword(
        self, user_id: str, query: str, *, limit: int, filters: Filters = Filters()
    ) -> list[ScoredMemory]:
        """BM25 over text and topics (memory/keyword_index.py), with the user's own statistics."""
        rows = await self._keyword_rows(user_id, query, _MEMORY_COLUMNS, limit, filters)
        return [_scored(r, float(r["score"])) for r in rows]

    async def keyword_ranked(
        self, user_id: str, query: str, *, limit: int, filters: Filters = Filters(),
        respelled: Mapping[str, Sequence[str]] | None = None,
    ) -> list[tuple[str, float]]:
        """`keyword` as `(memory_id, score)` only: candidates for fusion, without loading memories.
        `respelled`: hybrid's respellings of misspelt query terms (memory/spelling.py)."""
        rows = await self._keyword_rows(user_id, query, "m.memory_id", limit, filters, respelled)
        return [(r["memory_id"], float(r["score"])) for r in rows]

    async def term_matches(
        self, user_id: str, terms: Sequence[str], memory_ids: Sequence[str],
        respelled: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[int, dict[str, int], dict[str, set[str]]]:
        """For relevance (memory/ranking.py): the number of memories in the user's keyword
        index, how many hold each of `terms` (counted up to half of them + 1, as the keyword
        search counts common words), and which of `terms` each of `memory_ids` holds; a term no
        memory holds stands for its `respelled` words (hybrid). Call it after a keyword search,
        which brings the index up to date."""
        return await _in_thread(
            self._reader, keyword_search.term_matches, self._backend.state, user_id, list(terms), list(memory_ids),
            self._index_stats.get(user_id), respelled,
        )

    async def _keyword_rows(
        self, user_id: str, query: str, columns: str, limit: int, filters: Filters,
        respelled: Mapping[str, Sequence[str]] | None = None,
    ) -> list[sqlite3.Row]:
        terms = query_terms(query)
        if not terms:
            return []
        # Only "current or not" to decide: rank in the index alone and subtract the superseded
        # rows there (few, read from their partial index). Other filters join every match.
        where, params = filters.sql() if filters.narrows else ("", [])
        retired = filters.current_only and not filters.narrows

        async def read(check_pending: bool) -> keyword_search.KeywordRead:
            # One trip to the reader's thread (three before: queued changes, common words, the
            # ranking), because each trip costs about as much as the ranking's own SQL at 10k.
            return await _in_thread(
                self._reader, keyword_search.read, self._backend.state,
                user_id, terms, columns, limit, where, params, self._index_stats.get(user_id), check_pending, retired,
                respelled,
            )

        found = await read(check_pending=True)
        if found.pending:
            await self._index_queued(user_id)
            # Later changes are for later searches: this read does not look for them, so what it
            # learns is not kept. Kept, it would vouch for a state whose queued changes nobody
            # checked, and later searches at that state would skip them (an acknowledged add,
            # committed between the apply and this read, stayed unfound until the next write).
            found = await read(check_pending=False)
            self._index_stats.pop(user_id, None)
        elif found.stats is None:
            self._index_stats.pop(user_id, None)
        else:
            self._index_stats[user_id] = found.stats
        return found.rows

    async def sync_index(self, user_id: str) -> bool:
        """Apply the user's queued changes to the keyword index; False if the user has none."""
        if await _in_thread(self._reader, keyword_search.has_pending, user_id):
            await self._index_queued(user_id)
        rows = await _fetchall(self._reader, "SELECT 1 FROM keyword_users WHERE user_id = ?", (user_id,))
        return bool(rows)

    async def _index_queued(self, user_id: str) -> None:
        """Index the user's queued changes, in one transaction of its own: one trip to the writer's
        thread, committed without waiting for the disk (the backend's `write_lightly`)."""
        async with self._write_lock:
            self._check_file()
            trip = asyncio.ensure_future(_in_thread(
                self._writer, self._backend.write_lightly, self._synchronous, keyword_index.apply_pending, user_id
            ))
            # Stopped meanwhile, the trip still runs to its COMMIT or ROLLBACK, before anything
            # queued after it on the connection.
            await asyncio.shield(trip)

    async def history(self, memory_id: str, *, user_id: str | None = None) -> list[HistoryEvent]:
        """Every recorded change of a memory, oldest first: only `user_id`'s events.

        Without `user_id` (a trusted local caller), the events of the id's owner: the user who
        first recorded it (see `_restore`). Events of any other user never show with them - a
        history holds one user's events only, even in a database where an import wrote another
        user's events under the id before imports checked ids.
        """
        if not _well_formed(memory_id):
            return []
        sql = "SELECT * FROM history WHERE memory_id = ? AND user_id = "
        if user_id is None:
            sql += "(SELECT user_id FROM history WHERE memory_id = ? ORDER BY event_id LIMIT 1)"
            params: tuple[Any, ...] = (memory_id, memory_id)
        else:
            sql += "?"
            params = (memory_id, user_id)
        rows = await _fetchall(self._reader, sql + " ORDER BY event_id", params)
        return [_event(r) for r in rows]

    async def user_history(self, user_id: str, *, limit: int = 100) -> list[HistoryEvent]:
        rows = await _fetchall(
            self._reader, "SELECT * FROM history WHERE user_id = ? ORDER BY event_id DESC LIMIT ?", (user_id, limit)
        )
        return [_event(r) for r in rows]

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read on the reader connection, for the package's modules that keep tables of their own (tokens)."""
        return await _fetchall(self._reader, sql, params)

    async def columns(self, table: str) -> list[str] | None:
        """A table's columns; None when the database has no such table."""
        try:
            async with self._reader.execute(f"SELECT * FROM {table} WHERE 1 = 0") as cursor:
                return [d[0] for d in cursor.description]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise

    async def after_copy(self, db: aiosqlite.Connection) -> None:
        """In the transaction that copied rows with their ids (memory/migrate.py): let new rows
        take ids after them (PostgreSQL's identity sequences do not follow inserted ids)."""
        await self._backend.after_copy(db)

    async def filtered_ids(self, user_id: str, filters: Filters) -> list[str]:
        """The ids of the user's memories that pass `filters`."""
        where, params = filters.sql()
        rows = await _fetchall(
            self._reader, f"SELECT m.memory_id FROM memories m WHERE m.user_id = ?{where}", (user_id, *params)
        )
        return [r["memory_id"] for r in rows]

    async def scored(self, user_id: str, ranked: Sequence[tuple[str, float]]) -> list[ScoredMemory]:
        """The user's memories among `ranked` `(memory_id, score)`, in that order, with those scores
        (others' and unknown ids are left out)."""
        rows: dict[str, sqlite3.Row] = {}
        for chunk, marks in in_lists([m for m, _ in ranked]):
            # `m.user_id || ''`: look the ids up by their unique index; SQLite otherwise chose the
            # (user_id, created_at) index and read every memory of the user (1.3 ms at 10,000).
            rows.update(
                (r["memory_id"], r)
                for r in await _fetchall(
                    self._reader,
                    f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.user_id || '' = ? AND m.memory_id IN ({marks})",
                    (user_id, *chunk),
                )
            )
        return [_scored(rows[m], score) for m, score in ranked if m in rows]

    async def rowids(self, memory_ids: Sequence[str]) -> dict[str, int]:
        """Internal row ids (the key of side tables such as embeddings) of existing memories."""
        out: dict[str, int] = {}
        for chunk, marks in in_lists(memory_ids):
            rows = await _fetchall(self._writer, f"SELECT id, memory_id FROM memories WHERE memory_id IN ({marks})", chunk)
            out.update((r["memory_id"], r["id"]) for r in rows)
        return out

    async def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to the database."""
        return await self._backend.data_version(self._writer, self._reader)

    async def quick_check(self) -> str:
        """'ok', or what SQLite's PRAGMA quick_check found wrong (a damaged file)."""
        return await self._backend.quick_check(self._reader)

    async def keyword_index_problems(self) -> list[str]:
        """What is inconsistent in the keyword index (memory/keyword_index.py `problems`)."""
        return await _in_thread(self._reader, keyword_index.problems)

    async def rebuild_keyword_index(self) -> int:
        """Index every memory again; returns how many memories the index holds."""
        async with self.transaction() as db:
            indexed = await _in_thread(db, keyword_index.rebuild)
        self._index_stats.clear()
        return indexed

    async def integrity_check(self) -> str:
        return await self._backend.integrity_check(self._reader)

    @property
    def backend(self) -> str:
        """"sqlite" or "postgresql"."""
        return self._backend.name

    @property
    def is_file(self) -> bool:
        """Whether the database is a local file (SQLite): a backup copies it, a doctor opens it."""
        return self._backend.is_file

    # -- inside a transaction ---------------------------------------------------------------

    async def _get(self, db: aiosqlite.Connection, user_id: str, memory_id: str) -> Memory | None:
        row = await _fetchone(
            db, f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.memory_id = ? AND m.user_id = ?", (memory_id, user_id)
        )
        return None if row is None else _memory(row)

    async def _existing(self, db: aiosqlite.Connection, user_id: str, memory_id: str) -> Memory:
        found = await self._get(db, user_id, memory_id)
        if found is None:
            raise MemoryNotFound(memory_id, user_id)
        return found

    async def _insert(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        text: str,
        topics: list[str],
        input: str | None,
        agent_id: str | None,
        change: Change,
        *,
        valid_from: str | None = None,
        supersedes: str | None = None,
    ) -> Memory:
        memory = _new_memory(user_id, text, topics, input, agent_id, valid_from)
        old = None if supersedes is None else await self._supersedable(db, user_id, supersedes, memory.valid_from)
        await db.execute(*insert_statement(memory))
        self._changes.append(Changed(user_id, memory.memory_id, memory.memory, appended=True))
        added = await record_event(
            db, event_statement(memory.memory_id, user_id, "add", None, memory, change, memory.created_at)
        )
        if old is not None:
            why = f"superseded by memory '{memory.memory_id}'" + (f": {change.reason}" if change.reason else "")
            await self._set_validity(
                db, old, memory.valid_from, memory.memory_id, Change(change.actor, why, change.source), part_of=added
            )
        return memory

    async def _supersedable(self, db: aiosqlite.Connection, user_id: str, memory_id: str, valid_from: str) -> Memory:
        """The user's current memory `memory_id`, which a memory valid from `valid_from` may supersede."""
        old = await self._get(db, user_id, memory_id)
        if old is None:
            raise InvalidArgument(
                "supersedes",
                f"no memory '{memory_id}' for user '{user_id}'; pass the memory_id of the user's current memory "
                "that the new one replaces (search_memories or list_memories show them)",
            )
        if old.valid_to is not None:
            raise InvalidArgument(
                "supersedes",
                f"memory '{memory_id}' was already superseded by '{old.superseded_by}' (valid until {old.valid_to}); "
                f"a memory is superseded only once: supersede '{old.superseded_by}' instead, "
                "or correct the old one with update_memory",
            )
        if valid_from < old.valid_from:
            raise InvalidArgument(
                "valid_from",
                f"{valid_from} is before {old.valid_from}, when memory '{memory_id}' (the one it supersedes) became "
                "valid; a successor starts at or after its predecessor: give a later valid_from, or omit it (now)",
            )
        return old

    async def _set_validity(
        self,
        db: aiosqlite.Connection,
        before: Memory,
        valid_to: str | None,
        superseded_by: str | None,
        change: Change,
        undoes: int | None = None,
        part_of: int | None = None,
    ) -> Memory:
        """Retire a memory (valid_to and superseded_by set) or make it current again (both None),
        recorded as an update of that memory."""
        stamp = now()
        after = before.model_copy(update={"valid_to": valid_to, "superseded_by": superseded_by, "updated_at": stamp})
        await db.execute(
            "UPDATE memories SET valid_to = ?, superseded_by = ?, updated_at = ? WHERE memory_id = ?",
            (valid_to, superseded_by, stamp, before.memory_id),
        )
        self._changes.append(Changed(before.user_id, before.memory_id, before.memory, retired=valid_to is not None))
        event = event_statement(before.memory_id, before.user_id, "update", before, after, change, stamp, undoes, part_of)
        await record_event(db, event)
        return after

    async def _update(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        memory_id: str,
        text: str | None,
        topics: list[str] | None,
        change: Change,
        undoes: int | None = None,
        part_of: int | None = None,
    ) -> Memory:
        before = await self._existing(db, user_id, memory_id)
        stamp = now()
        after = before.model_copy(
            update={
                "memory": before.memory if text is None else text,
                "topics": before.topics if topics is None else topics,
                "updated_at": stamp,
            }
        )
        await db.execute(
            "UPDATE memories SET memory = ?, topics = ?, updated_at = ? WHERE memory_id = ?",
            (after.memory, json.dumps(after.topics), stamp, memory_id),
        )
        if after.memory != before.memory:
            self._changes.append(Changed(user_id, memory_id, after.memory))
            # The vector of the old text goes in the same transaction: another process (another
            # instance) that reloads this user's vectors before this one saves the new text's
            # would otherwise rank the new text by the old one's meaning; without one, it embeds it.
            await db.execute("DELETE FROM embeddings WHERE memory_rowid = (SELECT id FROM memories WHERE memory_id = ?)", (memory_id,))
        await record_event(db, event_statement(memory_id, user_id, "update", before, after, change, stamp, undoes, part_of))
        return after

    async def _delete(
        self,
        db: aiosqlite.Connection,
        user_id: str,
        memory_id: str,
        operation: Operation,
        change: Change,
        undoes: int | None = None,
        part_of: int | None = None,
    ) -> int:
        """Delete one memory. If it had superseded another, that one becomes current again, in
        an event linked to the deletion (so undoing either brings both back)."""
        before = await self._existing(db, user_id, memory_id)
        await db.execute("DELETE FROM memories WHERE memory_id = ?", (memory_id,))
        self._changes.append(Changed(user_id, memory_id, None))
        event = event_statement(memory_id, user_id, operation, before, None, change, now(), undoes, part_of)
        deleted = await record_event(db, event)
        row = await _fetchone(
            db,
            f"SELECT {_MEMORY_COLUMNS} FROM memories m WHERE m.user_id = ? AND m.superseded_by = ? AND m.valid_to IS NOT NULL",
            (user_id, memory_id),
        )
        if row is not None:
            why = Change(change.actor, f"current again: memory '{memory_id}', which superseded it, was deleted", change.source)
            await self._set_validity(db, _memory(row), None, None, why, part_of=part_of or deleted)
        return deleted

    async def _restore(
        self, db: aiosqlite.Connection, memory: Memory, change: Change, undoes: int | None, part_of: int | None = None
    ) -> int:
        """Put a deleted memory back under its own id, which must still be free and its user's.

        A memory id belongs to one user forever: its owner is whoever first recorded it (its
        earliest history event). A restore for anyone else - possible only from events an
        import wrote before imports checked ids - or over a memory that now holds the id is
        refused as CannotUndo, never left to the UNIQUE constraint.
        """
        row = await _fetchone(
            db,
            "SELECT (SELECT user_id FROM memories WHERE memory_id = ?),"
            " (SELECT user_id FROM history WHERE memory_id = ? ORDER BY event_id LIMIT 1)",
            (memory.memory_id, memory.memory_id),
        )
        holder, owner = row[0], row[1]
        if holder is not None or (owner is not None and owner != memory.user_id):
            raise CannotUndo(
                f"memory '{memory.memory_id}' cannot come back: its id "
                + ("is now taken by another memory" if holder is not None else "belongs to another user's memory")
                + "; nothing was changed - the text is in this event's 'before': add it again as a new memory"
            )
        await db.execute(*insert_statement(memory))
        self._changes.append(Changed(memory.user_id, memory.memory_id, memory.memory))
        event = event_statement(memory.memory_id, memory.user_id, "restore", None, memory, change, now(), undoes, part_of)
        return await record_event(db, event)


# -- module helpers ---------------------------------------------------------------------------


async def id_used_by_another_user(db: aiosqlite.Connection, memory_id: str, user_id: str) -> bool:
    """Whether another user has, or ever had, a memory with this id (a row or a history event).

    A memory id belongs to exactly one user forever. Ids the store makes are random (2^48
    values), so only ids that come from outside - an import - can collide, and an import checks
    each one here (memory/transfer.py); a restore (undo) checks its own way, in `_restore`.
    """
    row = await _fetchone(
        db,
        "SELECT EXISTS (SELECT 1 FROM memories WHERE memory_id = ? AND user_id != ?)"
        " OR EXISTS (SELECT 1 FROM history WHERE memory_id = ? AND user_id != ?)",
        (memory_id, user_id, memory_id, user_id),
    )
    return bool(row[0])


# execute_fetchall runs the statement and fetches in one trip to the connection's thread
# (execute, fetch and close would be three): each trip costs ~0.05 ms of a ~1 ms tool call.


async def _fetchone(db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
    rows = await db.execute_fetchall(sql, params)
    return next(iter(rows), None)


async def _fetchall(db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
    return list(await db.execute_fetchall(sql, params))


T = TypeVar("T")


async def _in_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """`fn(connection, *args)` on the connection's thread, in one trip: for work of several
    statements. aiosqlite has no public way to do this; `_execute` is how its own methods do it
    (pinned: aiosqlite < 0.23 in pyproject.toml). memory/postgres.py's connection offers the same
    `_execute` and `_conn` (a sqlite3-like connection), so `fn` runs unchanged on either backend."""
    return await db._execute(fn, db._conn, *args)


Statement = tuple[str, tuple[Any, ...]]


def check_valid_from(value: str | None, stamp: str) -> str | None:
    """`valid_from` normalised (None stays None: the memory's creation time), or an error when it
    is not a time or lies ahead of `stamp` (now) by more than VALID_FROM_SKEW."""
    valid_from = parse_time(value, "valid_from")
    if valid_from is None:
        return None
    latest = format_time(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc) + VALID_FROM_SKEW)
    if valid_from > latest:
        raise InvalidArgument(
            "valid_from",
            f"{valid_from} is in the future (now is {stamp}); a memory records what holds already: "
            "give a past time, or omit valid_from to mean now",
        )
    return valid_from


def _new_memory(
    user_id: str, text: str, topics: list[str], input: str | None, agent_id: str | None,
    valid_from: str | None = None, stamp: str | None = None,
) -> Memory:
    stamp = stamp or now()
    return Memory(
        memory_id=_new_memory_id(),
        user_id=user_id,
        memory=text,
        topics=topics,
        input=input,
        agent_id=agent_id,
        created_at=stamp,
        updated_at=stamp,
        valid_from=valid_from or stamp,
    )


def insert_statement(memory: Memory) -> Statement:
    return (
        "INSERT INTO memories (memory_id, user_id, memory, topics, input, agent_id, created_at, updated_at,"
        " valid_from, valid_to, superseded_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            memory.memory_id,
            memory.user_id,
            memory.memory,
            json.dumps(memory.topics),
            memory.input,
            memory.agent_id,
            memory.created_at,
            memory.updated_at,
            memory.valid_from,
            memory.valid_to,
            memory.superseded_by,
        ),
    )


def event_statement(
    memory_id: str,
    user_id: str,
    operation: Operation,
    before: Memory | None,
    after: Memory | None,
    change: Change,
    stamp: str,
    undoes: int | None = None,
    part_of: int | None = None,
) -> Statement:
    return (
        "INSERT INTO history (memory_id, user_id, operation, before, after, actor, reason, source, undoes, part_of,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            memory_id,
            user_id,
            operation,
            None if before is None else before.model_dump_json(),
            None if after is None else after.model_dump_json(),
            change.actor,
            change.reason,
            change.source,
            undoes,
            part_of,
            stamp,
        ),
    )


async def record_event(db: aiosqlite.Connection, event: Statement) -> int:
    """Write an `event_statement` inside an open transaction; returns the new event's id."""
    sql, params = event
    cursor = await db.execute(sql + " RETURNING event_id", params)
    return int((await cursor.fetchone())[0])


async def _last_event_id(db: aiosqlite.Connection) -> int:
    row = await _fetchone(db, "SELECT max(event_id) FROM history", ())
    return int(row[0])


def _memory(row: sqlite3.Row) -> Memory:
    return Memory(**_fields(row))


def _scored(row: sqlite3.Row, score: float) -> ScoredMemory:
    return ScoredMemory(**_fields(row), score=score)


def _fields(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "memory_id": row["memory_id"],
        "user_id": row["user_id"],
        "memory": row["memory"],
        "topics": json.loads(row["topics"]),
        "input": row["input"],
        "agent_id": row["agent_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "valid_from": row["valid_from"] or row["created_at"],
        "valid_to": row["valid_to"],
        "superseded_by": row["superseded_by"],
    }


def _event(row: sqlite3.Row) -> HistoryEvent:
    return HistoryEvent(
        event_id=row["event_id"],
        memory_id=row["memory_id"],
        user_id=row["user_id"],
        operation=row["operation"],
        before=None if row["before"] is None else Memory.model_validate_json(row["before"]),
        after=None if row["after"] is None else Memory.model_validate_json(row["after"]),
        actor=row["actor"],
        reason=row["reason"],
        source=row["source"],
        undoes=row["undoes"],
        part_of=row["part_of"],
        created_at=row["created_at"],
    )


def _same(current: Memory | None, recorded: Memory) -> bool:
    return (
        current is not None
        and current.memory == recorded.memory
        and current.topics == recorded.topics
        and current.updated_at == recorded.updated_at
    )


def _new_memory_id() -> str:
    # 12 hex digits: short enough for a model to copy back, 2^48 values against collisions.
    return secrets.token_hex(6)


def _encode_cursor(created_at: str, row_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, row_id]).encode()).decode().rstrip("=")


def _well_formed(memory_id: str) -> bool:
    try:
        Limits().memory_id(memory_id)
    except InvalidArgument:
        return False
    return True


# A cursor this server makes is about 60 characters; anything longer is refused before decoding.
_CURSOR_MAX_CHARS = 256
_ROW_ID_MAX = 2**63 - 1  # SQLite's INTEGER: a larger value overflows when bound


def _decode_cursor(cursor: str) -> tuple[str, int]:
    """The (created_at, row id) a cursor holds; `InvalidArgument` for anything this server did not make.

    Every value is checked before it reaches SQLite, which raises on an integer over 2^63 - 1
    (OverflowError) or a lone surrogate (UnicodeEncodeError) instead of just finding nothing.
    """
    refused = InvalidArgument(
        "cursor", "is not a cursor this server made; pass next_cursor from the previous page, or omit it"
    )
    if not isinstance(cursor, str) or len(cursor) > _CURSOR_MAX_CHARS:
        raise refused
    try:
        created_at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        created_at.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError here, not in SQLite
    except (ValueError, TypeError, AttributeError, UnicodeError, RecursionError):
        raise refused from None
    if isinstance(row_id, bool) or not isinstance(row_id, int) or not 0 <= row_id <= _ROW_ID_MAX:
        raise refused
    return created_at, row_id
