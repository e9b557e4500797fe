"""`memoir migrate`: SQLite -> PostgreSQL -> SQLite moves everything, verified (real cluster).

The CLI runs its own event loop: here in a thread beside the test's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from memoir.memory.oauth_store import OAuthStore
from memoir.memory.store import Store
from memoir.memory.tokens import Tokens
from memoir.memory.transfer import export_lines
from memoir.server import cli
from memoir.server.app import running_app
from memoir.server.settings import Settings


@pytest.fixture
def backend() -> str:
    return "postgresql"


async def everything(store: Store) -> list[str]:
    """The export with history (without its header's time), tokens, grants, codes and vectors."""
    lines = [line async for line in export_lines(store, history=True)][1:]
    tokens = [tuple(r) for r in await store.fetch("SELECT * FROM tokens ORDER BY token_id")]
    clients = [tuple(r) for r in await store.fetch("SELECT * FROM oauth_clients ORDER BY client_id")]
    codes = [tuple(r) for r in await store.fetch("SELECT * FROM oauth_login_codes ORDER BY code_id")]
    vectors = [
        (r["memory_id"], r["model"], bytes(r["vector"]))
        for r in await store.fetch(
            "SELECT m.memory_id, e.model, e.vector FROM embeddings e JOIN memories m ON m.id = e.memory_rowid ORDER BY m.memory_id"
        )
    ]
    events = [tuple(r) for r in await store.fetch("SELECT * FROM history ORDER BY event_id")]
    return [*lines, repr(tokens), repr(clients), repr(codes), repr(vectors), repr(events)]


async def test_migrate_to_postgresql_and_back_moves_everything(
    tmp_path: Path, new_database: Callable[[], str], capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "a.db"
    async with running_app(Settings(db_path=source, embeddings="hashing")) as app:
        store = app.store
        kept = await store.add("ava", "Ava likes to ski in Colorado", ["hobbies"])
        gone = await store.add("ava", "Ava lives in Boston")
        await store.update("ava", kept.memory_id, memory="Ava loves skiing in Colorado")
        await store.add("ava", "Ava lives in Denver", supersedes=gone.memory_id)
        for i in range(30):
            await store.add(f"user{i % 3}", f"user{i % 3} fact {i} about sailing and chess")
        await store.clear("user2")
        await Tokens(store).create("ava", label="laptop")
        await OAuthStore(store).save_client("client-1", "An app", '{"redirect_uris": ["http://127.0.0.1/cb"]}')
        await OAuthStore(store).create_login_code("ava")
        await app.retriever.vectors.settled()
        await app.retriever.vectors.reindex()
        before = await everything(store)
    assert "embeddings" not in before[-2] and len(before) > 40

    url = new_database()
    assert await asyncio.to_thread(cli.main, ["migrate", "--from", f"sqlite:{source}", "--to", url]) == 0
    said = capsys.readouterr().out
    assert "verified" in said and "embeddings" in said, said
    pg = await Store.open(url)
    try:
        assert await everything(pg) == before
        # The copy is a working database: searches, undo of an event written on SQLite, tokens, new ids.
        assert [m.memory_id for m in await pg.keyword("ava", "skiing", limit=5)] == [kept.memory_id]
        update = [e for e in await pg.history(kept.memory_id) if e.operation == "update"][0]
        await pg.undo(update.event_id)
        assert (await pg.get("ava", kept.memory_id)).memory == "Ava likes to ski in Colorado"
        await pg.undo((await pg.user_history("ava", limit=1))[0].event_id)
        newer = await pg.add("ava", "Ava has a cat")
        assert newer.memory_id in [m.memory_id for m in await pg.keyword("ava", "cat", limit=5)]
        assert [t.label for t in await Tokens(pg).list()] == ["laptop"]
        await pg.delete("ava", newer.memory_id)
        middle = await everything(pg)
    finally:
        await pg.close()

    # A target that holds data is refused, and left as it was.
    assert await asyncio.to_thread(cli.main, ["migrate", "--from", str(source), "--to", url]) == 1
    assert "not empty" in capsys.readouterr().err

    back = tmp_path / "back.db"
    assert await asyncio.to_thread(cli.main, ["migrate", "--from", url, "--to", f"sqlite:{back}"]) == 0
    capsys.readouterr()
    restored = await Store.open(back)
    try:
        assert await everything(restored) == middle
    finally:
        await restored.close()
