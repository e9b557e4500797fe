"""Getting memories out and back in: JSON Lines export and import, and online backups.

Export writes one JSON object per line: a header (`type: memoir-export`), then every memory
(`type: memory`, the memory's own fields) and, with history, every recorded change
(`type: history`, the event's fields).

Import reads that format and also the reference MCP memory server's `memory.jsonl` (a
knowledge graph): each observation of an entity becomes one memory ("Ava: likes to ski",
topics [entityType, name]) and each relation one memory ("Ava knows Bob", topics ["relation",
from, to]), for the user the caller names. Every line passes the same limits as a tool call;
a line that does not is skipped with its number and the reason, and the rest goes in, in one
transaction. Whatever a line holds, reading it either succeeds or skips it: no line aborts an
import (`_read_line`).

A memory id belongs to exactly one user forever. A `memory` or `history` line whose id another
user has, or ever had (a memory, or any history event, in the store or in an earlier line of
the same import), is skipped: an import never writes into another user's history, nor takes
the id of another user's deleted memory (whose undo would then have nowhere to go).

Import is idempotent. Memories keep their `memory_id` (the reference format gets one derived
from user and text), so a memory already present is skipped; history events are matched on
(memory_id, user_id, operation, created_at). Importing the same file twice adds nothing.

Backups use SQLite's online backup API: a consistent copy even while a server writes, checked
with `PRAGMA integrity_check` before it replaces the destination.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from .errors import InvalidArgument, MemoirError
from .limits import now, parse_time
from .models import Actor, HistoryEvent, Memory, Operation
from .store import Change, Store, event_statement, id_used_by_another_user, insert_statement, record_event

FORMAT = "memoir-export"
VERSION = 1
_MEMORY_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_PAGE = 500
_COLUMNS = "memory_id, user_id, memory, topics, input, agent_id, created_at, updated_at, valid_from, valid_to, superseded_by"


# -- export -----------------------------------------------------------------------------------


async def export_lines(store: Store, user_id: str | None = None, *, history: bool = False) -> AsyncIterator[str]:
    """The export, a line at a time (without newlines): all users, or only `user_id`."""
    if user_id is not None:
        store.limits.user_id(user_id)
    yield json.dumps(
        {"type": FORMAT, "version": VERSION, "exported_at": now(), "user_id": user_id, "history": history}
    )
    where, params = ("user_id = ? AND ", [user_id]) if user_id is not None else ("", [])
    last = 0
    while True:
        rows = await store.fetch(
            f"SELECT id, {_COLUMNS} FROM memories WHERE {where}id > ? ORDER BY id LIMIT {_PAGE}", [*params, last]
        )
        for row in rows:
            memory = Memory(**{k: row[k] for k in row.keys() if k != "id"} | {"topics": json.loads(row["topics"])})
            yield json.dumps({"type": "memory", **memory.model_dump()}, ensure_ascii=False)
        if len(rows) < _PAGE:
            break
        last = rows[-1]["id"]
    if not history:
        return
    last = 0
    while True:
        rows = await store.fetch(
            f"SELECT * FROM history WHERE {where}event_id > ? ORDER BY event_id LIMIT {_PAGE}", [*params, last]
        )
        for row in rows:
            event = HistoryEvent(
                **{k: row[k] for k in row.keys() if k not in ("before", "after")},
                before=None if row["before"] is None else Memory.model_validate_json(row["before"]),
                after=None if row["after"] is None else Memory.model_validate_json(row["after"]),
            )
            yield json.dumps({"type": "history", **event.model_dump()}, ensure_ascii=False)
        if len(rows) < _PAGE:
            break
        last = rows[-1]["event_id"]


# -- import -----------------------------------------------------------------------------------


@dataclass
class Skipped:
    line: int
    reason: str


@dataclass
class ImportReport:
    memories: int = 0
    history: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        text = f"imported {self.memories} memories and {self.history} history events"
        return text + (f"; skipped {len(self.skipped)} lines" if self.skipped else "")


@dataclass
class _Memory:
    line: int
    memory: Memory
    reason: str | None = None  # for the 'add' event of a memory that brings no history of its own


@dataclass
class _Event:
    line: int
    event: HistoryEvent


async def import_lines(
    store: Store,
    lines: Iterable[str],
    *,
    user_id: str | None = None,
    default_user: str = "default",
    source: str = "import",
) -> ImportReport:
    """Import export or reference-format lines.

    `user_id`: the user reference-format lines (entities, relations) are imported for; memoir
    lines keep their own user, and with `user_id` given only that user's lines are imported.
    Without `user_id`, reference-format lines go to `default_user`.
    """
    if user_id is not None:
        user_id = store.limits.user_id(user_id, "--user")
    report = ImportReport()
    memories: list[_Memory] = []
    events: list[_Event] = []
    parsed: list[_Memory | _Event] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        read = _read_line(store, raw, number, user_id, user_id or default_user, source)
        if isinstance(read, Skipped):
            report.skipped.append(read)
            continue
        try:
            parsed += [_guarded(store, item) for item in read]  # a credential: the line is skipped (or redacted)
        except InvalidArgument as exc:
            report.skipped.append(Skipped(number, str(exc)))

    async with store.transaction() as db:
        # Each id for one user: checked in line order against the store and the lines before.
        claimed: dict[str, str] = {}
        for item in parsed:
            memory_id, owner = _claim(item)
            if claimed.get(memory_id, owner) != owner or (
                memory_id not in claimed and await id_used_by_another_user(db, memory_id, owner)
            ):
                what = f"memory '{memory_id}'" if isinstance(item, _Memory) else f"history event {item.event.event_id}"
                report.skipped.append(Skipped(item.line, (
                    f"{what}: memory_id '{memory_id}' is, or was, another user's; a memory id belongs to one "
                    "user only - give this memory a new id, or leave the line out"
                )))
                continue
            claimed[memory_id] = owner
            (memories if isinstance(item, _Memory) else events).append(item)  # type: ignore[arg-type]

        with_history = {e.event.memory_id for e in events}
        for item in memories:
            m = item.memory
            async with db.execute("SELECT user_id FROM memories WHERE memory_id = ?", (m.memory_id,)) as cursor:
                found = await cursor.fetchone()
            if found is not None:  # the same user's (another user's id was refused above)
                report.skipped.append(Skipped(item.line, f"memory '{m.memory_id}': already present"))
                continue
            await db.execute(*insert_statement(m))
            if m.memory_id not in with_history:
                event = event_statement(m.memory_id, m.user_id, "add", None, m, Change("import", item.reason), now())
                await record_event(db, event)
            report.memories += 1
        renumbered: dict[int, int] = {}
        for item in events:
            e = item.event
            async with db.execute(
                "SELECT event_id FROM history WHERE memory_id = ? AND user_id = ? AND operation = ? AND created_at = ?",
                (e.memory_id, e.user_id, e.operation, e.created_at),
            ) as cursor:
                found = await cursor.fetchone()
            if found is not None:
                renumbered[e.event_id] = found[0]
                report.skipped.append(Skipped(item.line, f"history event {e.event_id}: already present"))
                continue
            undoes = renumbered.get(e.undoes) if e.undoes is not None else None
            part_of = renumbered.get(e.part_of) if e.part_of is not None else None
            new_id = await record_event(db, event_statement(
                e.memory_id, e.user_id, e.operation, e.before, e.after, Change(e.actor, e.reason, e.source), e.created_at,
                undoes, part_of,
            ))
            renumbered[e.event_id] = new_id
            report.history += 1
    report.skipped.sort(key=lambda s: s.line)
    return report


def _claim(item: _Memory | _Event) -> tuple[str, str]:
    """The memory id a line writes under, and the user it writes for."""
    if isinstance(item, _Memory):
        return item.memory.memory_id, item.memory.user_id
    return item.event.memory_id, item.event.user_id


# What reading one line can raise, whatever the line holds: the checks' own InvalidArgument, and
# the errors of the parsers underneath - JSON (ValueError; RecursionError when nested thousands
# deep), dates (ValueError; OverflowError when the conversion to UTC leaves years 1-9999),
# pydantic (ValidationError, a ValueError), and TypeError/UnicodeError for values of a wrong kind.
_LINE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)


def _read_line(
    store: Store, raw: str, number: int, user_id: str | None, owner: str, source: str
) -> list[_Memory | _Event] | Skipped:
    """One line's memories and events, or the line skipped with the reason: never an exception."""
    try:
        return _parse(store, raw, number, user_id, owner, source)
    except InvalidArgument as exc:
        return Skipped(number, str(exc))
    except ValidationError as exc:
        return Skipped(number, f"not a valid record ({exc.error_count()} problems: {_first_error(exc)})")
    except _LINE_ERRORS as exc:
        return Skipped(number, f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})")


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first.get('loc', ()))) or 'record'}: {first.get('msg', '')}"[:200]


def _parse(store: Store, raw: str, number: int, user_id: str | None, owner: str, source: str) -> list[_Memory | _Event]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument("JSON", f"not valid JSON ({exc.msg}); each line must be one JSON object") from None
    if not isinstance(obj, dict):
        raise InvalidArgument("JSON", "not a JSON object; each line must be one JSON object")
    kind = obj.get("type")
    limits = store.limits
    if kind == FORMAT:
        if obj.get("version") != VERSION:
            raise InvalidArgument("version", f"{obj.get('version')!r} is not an export version this memoir reads ({VERSION})")
        return []
    if kind == "memory":
        memory = _memory(store, obj)
        if user_id is not None and memory.user_id != user_id:
            raise InvalidArgument("user_id", f"'{memory.user_id}' is not --user '{user_id}'; this import takes only that user")
        return [_Memory(number, memory, f"imported from {source}")]
    if kind == "history":
        event = _event(store, obj)
        if user_id is not None and event.user_id != user_id:
            raise InvalidArgument("user_id", f"'{event.user_id}' is not --user '{user_id}'; this import takes only that user")
        return [_Event(number, event)]
    if kind == "entity":
        name = _text(obj, "name", 200)
        entity_type = _text(obj, "entityType", limits.topic_max_chars)
        observations = obj.get("observations", [])
        if not isinstance(observations, list) or not all(isinstance(o, str) for o in observations):
            raise InvalidArgument("observations", "must be a list of strings")
        topics = limits.topics([entity_type] + ([name] if len(name.strip()) <= limits.topic_max_chars else []))
        out: list[_Memory | _Event] = []
        for i, observation in enumerate(observations):
            text = limits.memory_text(f"{name}: {observation}", f"observations[{i}]")
            out.append(_Memory(number, _derived(owner, text, topics), f"imported from {source} (entity {name})"))
        return out
    if kind == "relation":
        a, b = _text(obj, "from", 200), _text(obj, "to", 200)
        relation = _text(obj, "relationType", 200).replace("_", " ")
        text = limits.memory_text(f"{a} {relation} {b}")
        topics = limits.topics(["relation"] + [n for n in (a, b) if len(n.strip()) <= limits.topic_max_chars])
        return [_Memory(number, _derived(owner, text, topics), f"imported from {source} (relation)")]
    raise InvalidArgument("type", f"{kind!r} is not one of memoir-export, memory, history, entity, relation")


def _guarded(store: Store, item: _Memory | _Event) -> _Memory | _Event:
    """A memory line under MEMOIR_SECRETS like any write: with a credential it is skipped (refuse,
    the reason naming the kind) or stored redacted. History lines are imported as recorded."""
    if not isinstance(item, _Memory):
        return item
    m, policy = item.memory, store.secrets
    cleaned = m.model_copy(update={
        "memory": policy.clean(m.memory, "memory"),
        "topics": policy.clean_topics(m.topics),
        "input": policy.clean_optional(m.input, "input"),
    })
    return _Memory(item.line, cleaned, item.reason)


def _text(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(key, "must be a non-empty string")
    if len(value) > limit:
        raise InvalidArgument(key, f"is {len(value)} characters, over the limit of {limit}")
    return value.strip()


def _derived(user_id: str, text: str, topics: list[str]) -> Memory:
    """A reference-format memory: its id comes from user and text, so a second import finds it present."""
    stamp = now()
    digest = hashlib.sha256(f"{user_id}\x00{text}".encode()).hexdigest()[:12]
    return Memory(memory_id=digest, user_id=user_id, memory=text, topics=topics, created_at=stamp, updated_at=stamp)


def _memory(store: Store, obj: dict[str, Any], field_prefix: str = "") -> Memory:
    limits = store.limits
    memory_id = obj.get("memory_id")
    if not isinstance(memory_id, str) or not _MEMORY_ID.fullmatch(memory_id):
        raise InvalidArgument(f"{field_prefix}memory_id", "must be 1-64 letters, digits or _ . : -")
    for key in ("memory", "user_id"):
        if not isinstance(obj.get(key), str):
            raise InvalidArgument(f"{field_prefix}{key}", "must be a string")
    topics = obj.get("topics", [])
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise InvalidArgument(f"{field_prefix}topics", "must be a list of strings")
    for key in ("input", "agent_id"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise InvalidArgument(f"{field_prefix}{key}", "must be a string or null")
    agent_id = obj.get("agent_id")
    if agent_id is not None and len(agent_id) > 128:
        raise InvalidArgument(f"{field_prefix}agent_id", f"is {len(agent_id)} characters, over the limit of 128")
    created = _time(obj, "created_at", field_prefix)
    # Validity (exports before it existed have none: valid from creation, current).
    valid_from = _time(obj, "valid_from", field_prefix) if obj.get("valid_from") else created
    valid_to = _time(obj, "valid_to", field_prefix) if obj.get("valid_to") else None
    superseded_by = obj.get("superseded_by")
    if superseded_by is not None and (not isinstance(superseded_by, str) or not _MEMORY_ID.fullmatch(superseded_by)):
        raise InvalidArgument(f"{field_prefix}superseded_by", "must be a memory id (1-64 letters, digits or _ . : -) or null")
    if (valid_to is None) != (superseded_by is None):
        raise InvalidArgument(f"{field_prefix}valid_to", "and superseded_by are set together (a superseded memory) or both null")
    return Memory(
        memory_id=memory_id,
        user_id=limits.user_id(obj["user_id"], f"{field_prefix}user_id"),
        memory=limits.memory_text(obj["memory"], f"{field_prefix}memory"),
        topics=limits.topics(topics, f"{field_prefix}topics"),
        input=limits.input_text(obj.get("input"), f"{field_prefix}input"),
        agent_id=agent_id,
        created_at=created,
        updated_at=_time(obj, "updated_at", field_prefix) if obj.get("updated_at") else created,
        valid_from=valid_from,
        valid_to=valid_to,
        superseded_by=superseded_by,
    )


def _time(obj: dict[str, Any], key: str, field_prefix: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{field_prefix}{key}", "must be an ISO-8601 time")
    return parse_time(value, f"{field_prefix}{key}")  # type: ignore[return-value]  # any malformed time: InvalidArgument


def _event(store: Store, obj: dict[str, Any]) -> HistoryEvent:
    operation = obj.get("operation")
    if operation not in get_args(Operation):
        raise InvalidArgument("operation", f"{operation!r} is not one of {', '.join(get_args(Operation))}")
    actor = obj.get("actor") if obj.get("actor") in get_args(Actor) else "import"
    states = {}
    for key in ("before", "after"):
        state = obj.get(key)
        if state is not None and not isinstance(state, dict):
            raise InvalidArgument(key, "must be a memory object or null")
        states[key] = None if state is None else _memory(store, state, f"{key}.")
    for key in ("reason", "source"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise InvalidArgument(key, "must be a string or null")
    event_id, undoes, part_of = obj.get("event_id"), obj.get("undoes"), obj.get("part_of")
    if isinstance(event_id, bool) or not isinstance(event_id, int):
        raise InvalidArgument("event_id", "must be a whole number")
    for key, value in (("undoes", undoes), ("part_of", part_of)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidArgument(key, "must be a whole number or null")
    memory_id = obj.get("memory_id")
    if not isinstance(memory_id, str) or not _MEMORY_ID.fullmatch(memory_id):
        raise InvalidArgument("memory_id", "must be 1-64 letters, digits or _ . : -")
    user = store.limits.user_id(obj.get("user_id"), "user_id")  # type: ignore[arg-type]
    for state in states.values():
        if state is not None and (state.memory_id != memory_id or state.user_id != user):
            raise InvalidArgument("before/after", "describe another memory or user than the event")
    try:
        return HistoryEvent(
            event_id=event_id,
            memory_id=memory_id,
            user_id=user,
            operation=operation,
            before=states["before"],
            after=states["after"],
            actor=actor,
            reason=obj.get("reason"),
            source=obj.get("source"),
            undoes=undoes,
            part_of=part_of,
            created_at=_time(obj, "created_at", ""),
        )
    except ValidationError as exc:
        raise InvalidArgument("history", f"is not a valid event ({exc.error_count()} problems)") from None


# -- backup -----------------------------------------------------------------------------------


class BackupFailed(MemoirError):
    pass


async def backup(
    source: str | Path, destination: str | Path, on_progress: Callable[[int, int], None] | None = None
) -> Path:
    """Copy the database at `source` to `destination` (replaced atomically) with the online backup API.
    `on_progress(pages_done, pages_total)` is called (from a worker thread) as pages are copied."""
    return await asyncio.to_thread(_backup, Path(source), Path(destination).expanduser(), on_progress)


def _backup(source: Path, destination: Path, on_progress: Callable[[int, int], None] | None = None) -> Path:
    if not source.exists():
        raise BackupFailed(f"no database at {source}")
    if destination.exists() and destination.resolve() == source.resolve():
        raise BackupFailed("the backup path is the database itself; choose another file")
    if destination.is_dir():
        raise BackupFailed(f"{destination} is a directory; give a file name, e.g. {destination / 'memoir-backup.db'}")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(partial)
        try:
            if on_progress is None:
                src.backup(dst)
            else:
                src.backup(dst, pages=1024, progress=lambda _status, remaining, total: on_progress(total - remaining, total))
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise BackupFailed(f"the copy failed its integrity check ({check}); the previous backup, if any, is untouched")
    os.replace(partial, destination)
    return destination
