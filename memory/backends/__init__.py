"""Where memoir keeps its data: one small object per kind of database, chosen once at open.

The store (memory/store.py) is one code path over a DB-API-like connection pair; what is not
portable SQL lives behind a `Backend`: connecting, migrating, beginning a write transaction,
the "has anyone else written?" token, health checks, and the file checks of a local database.

- `sqlite.SQLiteBackend`: a file path (or ":memory:"), over aiosqlite.
- `postgres.PostgresBackend`: a `postgresql://` (or `postgres://`) URL, over psycopg 3
  (memory/postgres.py gives it aiosqlite's surface).

`in_lists` cuts lists of ids into `IN (...)` lists that either database takes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def backend_for(location: str | Path) -> Any:
    """The backend for a database location: a PostgreSQL URL, else an SQLite path."""
    if is_postgres(location):
        from .postgres import PostgresBackend

        return PostgresBackend(str(location))
    from .sqlite import SQLiteBackend

    return SQLiteBackend(str(location))


def in_lists(ids: Sequence[T], size: int = 500) -> Iterator[tuple[list[T], str]]:
    """`ids` in chunks small enough for one `IN (...)` on either backend, each with its `?`s."""
    for start in range(0, len(ids), size):
        chunk = list(ids[start : start + size])
        yield chunk, ", ".join("?" * len(chunk))


def redacted(location: str | Path) -> str:
    """The location to show a person: a URL's password left out."""
    text = str(location)
    if not is_postgres(text):
        return text
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
