"""`memoir migrate`: move a whole database between backends (SQLite <-> PostgreSQL).

Everything is copied row for row, ids kept: memories, their history (so undo works as before),
bearer tokens, vectors (no re-embedding), OAuth clients, grants and codes, and the hooks' tables. The keyword index is not copied: it is derived, and the
target's triggers queue every copied memory for it, indexed on each user's next search.

The copy is one transaction on the target, which must be empty (no memories, no history, no
tokens): on any error nothing is left behind. Afterwards it is verified: the count of every
table on both sides, and for a sample of users the same results from keyword and last_n search.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import MemoirError
from .store import Store

# (table, its key): copied in this order, so every foreign key finds its row; pages by key.
TABLES: tuple[tuple[str, str], ...] = (
    ("memories", "id"),
    ("history", "event_id"),
    ("tokens", "token_id"),
    ("embeddings", "memory_rowid"),
    ("oauth_clients", "client_id"),
    ("oauth_login_codes", "code_id"),
    ("oauth_grants", "grant_id"),
    ("oauth_spent_refresh", "refresh_hash"),
    ("oauth_auth_codes", "code_hash"),
    ("hook_recalls", "memory_id"),
    ("hook_sessions", "session_id"),
)
PAGE = 1000


class MigrateFailed(MemoirError):
    pass


@dataclass
class Migrated:
    counts: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    searches_compared: int = 0


async def migrate_database(
    source: str, target: str, *, on_progress: Callable[[int, int], None] | None = None,
) -> Migrated:
    """Copy the database at `source` into the empty one at `target` (created as needed)."""
    if source == target:
        raise MigrateFailed("--from and --to are the same database")
    src = await Store.open(source)
    try:
        dst = await Store.open(target)
        try:
            return await _copy(src, dst, on_progress)
        finally:
            await dst.close()
    finally:
        await src.close()


async def _copy(src: Store, dst: Store, on_progress: Callable[[int, int], None] | None) -> Migrated:
    for table in ("memories", "history", "tokens", "oauth_grants"):
        if (await dst.fetch(f"SELECT count(*) AS n FROM {table}"))[0]["n"]:
            raise MigrateFailed(
                f"the target already holds data ({table} is not empty); migrate into a new, empty database"
            )
    plan: list[tuple[str, str, list[str], int]] = []
    for table, key in TABLES:
        columns = await src.columns(table)
        if columns is None:
            continue
        total = (await src.fetch(f"SELECT count(*) AS n FROM {table}"))[0]["n"]
        plan.append((table, key, columns, int(total)))
    grand_total, done = sum(p[3] for p in plan), 0
    out = Migrated()
    async with dst.transaction() as db:
        for table, key, columns, _total in plan:
            names = ", ".join(columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
            last: Any = None
            copied = 0
            while True:
                where, params = ("", []) if last is None else (f" WHERE {key} > ?", [last])
                rows = await src.fetch(f"SELECT {names} FROM {table}{where} ORDER BY {key} LIMIT {PAGE}", params)
                if not rows:
                    break
                await db.executemany(insert, [tuple(r) for r in rows])
                copied += len(rows)
                done += len(rows)
                last = rows[-1][key]
                if on_progress is not None:
                    on_progress(done, grand_total)
                if len(rows) < PAGE:
                    break
            out.counts[table] = copied
        await dst.after_copy(db)
    await _verify(src, dst, out)
    return out


async def _verify(src: Store, dst: Store, out: Migrated) -> None:
    for table, copied in out.counts.items():
        there = int((await dst.fetch(f"SELECT count(*) AS n FROM {table}"))[0]["n"])
        here = int((await src.fetch(f"SELECT count(*) AS n FROM {table}"))[0]["n"])
        if not here == there == copied:
            raise MigrateFailed(f"{table}: {here} rows in the source, {there} in the target after copying {copied}")
    users = await src.users()
    rng = random.Random(0)
    for user in rng.sample(users, min(len(users), 10)):
        recent = [m.memory_id for m in await src.by_time(user, newest_first=True, limit=5)]
        if recent != [m.memory_id for m in await dst.by_time(user, newest_first=True, limit=5)]:
            raise MigrateFailed(f"user {user!r}: the newest memories differ after the copy")
        rows = await src.fetch("SELECT memory FROM memories WHERE user_id = ? ORDER BY id LIMIT 50", (user,))
        query = rng.choice(rows)["memory"] if rows else ""
        expected = [m.memory_id for m in await src.keyword(user, query, limit=5)]
        found = [m.memory_id for m in await dst.keyword(user, query, limit=5)]
        if set(expected) != set(found):
            raise MigrateFailed(f"user {user!r}: a keyword search for {query!r} differs after the copy")
        out.searches_compared += 2
