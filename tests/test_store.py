"""The SQLite store on its own: schema, transactions, persistence, history and undo."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from memoir.memory.errors import CannotUndo, EventNotFound, InvalidArgument, MemoryNotFound
from memoir.memory.schema import SCHEMA_VERSION
from memoir.memory import keyword_index
from memoir.memory.store import Change, Store


@pytest.fixture
async def store(db_path: Path):
    store = await Store.open(db_path)
    yield store
    await store.close()


async def fts_rows(store: Store, user_id: str = "ava") -> list[tuple]:
    """The user's keyword index, once its queued changes are applied: (row id, words) per memory."""
    await store.sync_index(user_id)
    with sqlite3.connect(store.path) as db:
        assert keyword_index.problems(db) == []
        return db.execute(
            "SELECT doc, terms FROM keyword_docs JOIN keyword_users USING (uid) WHERE user_id = ? ORDER BY doc", (user_id,)
        ).fetchall()


async def test_a_new_database_is_migrated_and_configured(store: Store, db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    assert {"memories", "history", "fts_pending", "memories_index_insert", "memories_index_update"} <= tables
    async with store._writer.execute("PRAGMA synchronous") as cur:
        assert (await cur.fetchone())[0] == 2  # FULL
    async with store._writer.execute("PRAGMA foreign_keys") as cur:
        assert (await cur.fetchone())[0] == 1


@pytest.mark.both_backends
async def test_reopening_keeps_data_and_does_not_migrate_again(db_path: Path) -> None:
    store = await Store.open(db_path)
    added = await store.add("ava", "Ava likes to ski", ["hobbies"])
    await store.close()
    store = await Store.open(db_path)
    try:
        assert await store.get("ava", added.memory_id) == added
        assert [m.memory_id for m in await store.keyword("ava", "ski", limit=5)] == [added.memory_id]
    finally:
        await store.close()


async def test_a_database_from_a_newer_memoir_is_refused(db_path: Path) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(db_path)


async def test_the_full_text_index_follows_every_change(store: Store, db_path: Path) -> None:
    a = await store.add("ava", "Ava likes to ski")
    b = await store.add("ava", "Ava lives in San Francisco")
    await store.update("ava", a.memory_id, memory="Ava likes to snowboard")
    await store.delete("ava", b.memory_id)
    assert [r[1] for r in await fts_rows(store)] == ["ava like to snowboard"]  # stemmed, once each
    assert await store.keyword("ava", "ski", limit=5) == []
    assert len(await store.keyword("ava", "snowboarding", limit=5)) == 1  # porter stemming
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM fts_pending").fetchone()[0] == 0


@pytest.mark.both_backends
async def test_each_users_ranking_depends_on_their_own_memories_only(store: Store) -> None:
    """BM25 weighs words by how rare they are: in the user's own memories, not in everyone's."""
    await store.add("ava", "Ava likes green tea")
    await store.add("ava", "Ava likes black coffee")
    before = [(m.memory, m.score) for m in await store.keyword("ava", "green coffee", limit=5)]
    for i in range(30):  # another user writes "green" a lot
        await store.add("bob", f"Bob painted the fence green, coat {i}")
    after = [(m.memory, m.score) for m in await store.keyword("ava", "green coffee", limit=5)]
    assert after == before


async def test_a_failed_transaction_leaves_nothing_behind(store: Store, db_path: Path) -> None:
    await store.add("ava", "first")
    await fts_rows(store)
    with pytest.raises(ZeroDivisionError):
        async with store.transaction() as db:
            await db.execute(
                "INSERT INTO memories (memory_id, user_id, memory, created_at, updated_at) VALUES ('x', 'ava', 'half', '', '')"
            )
            1 / 0
    assert await store.count() == 1
    assert len(await fts_rows(store)) == 1
    await store.add("ava", "second")  # the writer is usable again
    assert await store.count() == 2


@pytest.mark.both_backends
async def test_validation_happens_before_any_write(store: Store) -> None:
    with pytest.raises(InvalidArgument, match="memory"):
        await store.add("ava", "")
    with pytest.raises(MemoryNotFound):
        await store.update("ava", "nope", memory="x")
    assert await store.count() == 0
    assert await store.user_history("ava") == []


@pytest.mark.both_backends
async def test_concurrent_writes_are_serialised_and_all_kept(store: Store) -> None:
    await asyncio.gather(*(store.add(f"user{i % 3}", f"fact {i}") for i in range(60)))
    assert await store.count() == 60
    assert sorted([await store.count(f"user{i}") for i in range(3)]) == [20, 20, 20]
    assert await store.integrity_check() == "ok"


@pytest.mark.both_backends
async def test_undo_reverts_update_delete_clear_and_add(store: Store) -> None:
    memory = await store.add("ava", "Ava lives in San Francisco", ["home"])
    updated = await store.update("ava", memory.memory_id, memory="Ava lives in Denver")
    update_event = (await store.history(memory.memory_id))[-1]
    assert update_event.operation == "update"

    undo = await store.undo(update_event.event_id)
    assert undo.operation == "update" and undo.actor == "undo" and undo.undoes == update_event.event_id
    assert (await store.get("ava", memory.memory_id)).memory == "Ava lives in San Francisco"
    assert (await store.get("ava", memory.memory_id)).updated_at > updated.updated_at

    await store.delete("ava", memory.memory_id)
    delete_event = (await store.history(memory.memory_id))[-1]
    restored = await store.undo(delete_event.event_id)
    assert restored.operation == "restore"
    back = await store.get("ava", memory.memory_id)
    assert back.memory == "Ava lives in San Francisco" and back.created_at == memory.created_at
    assert len(await store.keyword("ava", "francisco", limit=5)) == 1

    await store.clear("ava")
    clear_event = (await store.history(memory.memory_id))[-1]
    assert clear_event.operation == "clear"
    await store.undo(clear_event.event_id)
    assert await store.count("ava") == 1

    other = await store.add("ava", "Ava likes to ski")
    add_event = (await store.history(other.memory_id))[0]
    await store.undo(add_event.event_id)
    with pytest.raises(MemoryNotFound):
        await store.get("ava", other.memory_id)
    assert [e.operation for e in await store.history(memory.memory_id)] == [
        "add", "update", "update", "delete", "restore", "clear", "restore",
    ]


@pytest.mark.both_backends
async def test_undo_refuses_when_the_memory_changed_since(store: Store) -> None:
    memory = await store.add("ava", "v1")
    await store.update("ava", memory.memory_id, memory="v2")
    await store.update("ava", memory.memory_id, memory="v3")
    first_update = (await store.history(memory.memory_id))[1]
    with pytest.raises(CannotUndo, match="changed since"):
        await store.undo(first_update.event_id)
    assert (await store.get("ava", memory.memory_id)).memory == "v3"
    with pytest.raises(EventNotFound):
        await store.undo(999_999)
    with pytest.raises(EventNotFound):
        await store.undo(first_update.event_id, user_id="bob")


async def test_purge_forgets_memories_and_history_of_one_user(store: Store) -> None:
    ava = await store.add("ava", "Ava likes to ski")
    bob = await store.add("bob", "Bob likes chess")
    await store.update("ava", ava.memory_id, memory="Ava likes to snowboard")
    assert len(await store.keyword("ava", "snowboard", limit=1)) == 1  # the user's index exists
    async with store.transaction() as db:  # what the host hooks keep of a session (server/hooks.py)
        await db.execute("INSERT INTO hook_sessions VALUES ('s1', 'ava', '/t.jsonl', 3, 'now')")
        await db.execute("INSERT INTO hook_recalls VALUES (?, 'ava', 1, 'now')", (ava.memory_id,))
    assert await store.purge("ava") == 1
    assert await store.history(ava.memory_id) == []
    assert await store.count("ava") == 0
    assert len(await store.history(bob.memory_id)) == 1
    with sqlite3.connect(store.path) as db:
        dump = "\n".join(db.iterdump())
    assert "snowboard" not in dump and "Ava likes to ski" not in dump and "'ava'" not in dump
    assert "Bob likes chess" in dump


async def test_in_memory_database_works(tmp_path: Path) -> None:
    store = await Store.open(":memory:")
    try:
        await store.add("ava", "Ava likes to ski")
        assert len(await store.keyword("ava", "ski", limit=3)) == 1
    finally:
        await store.close()


@pytest.mark.both_backends
async def test_change_records_actor_reason_and_source(store: Store) -> None:
    memory = await store.add(
        "ava", "Ava likes to ski", change=Change(actor="extraction", reason="user said so", source="I ski")
    )
    event = (await store.history(memory.memory_id))[0]
    assert (event.actor, event.reason, event.source) == ("extraction", "user said so", "I ski")


async def test_words_in_most_memories_do_not_decide_or_slow_a_search(store: Store) -> None:
    from memoir.memory.store import Edit

    await store.apply("ava", [Edit("add", memory=f"Ava went to market number {i}") for i in range(200)])
    pottery = await store.add("ava", "Ava tried pottery in Lisbon")
    assert await store.sync_index("ava")
    # "ava" is in every memory: BM25 gives it no weight, and it is left out of the match.
    with sqlite3.connect(store.path) as db:
        def ranked(*terms: str) -> list[str]:
            stats = keyword_index.stats(db, "ava", None)
            words = [w for ws in keyword_index.query_words(terms).values() for w in ws]
            keyword_index.count_matches(db, stats, words)
            return keyword_index.ranked_words(stats, words)

        assert ranked("ava", "pottery") == ["potteri"]
        assert ranked("pottery", "lisbon") == ["potteri", "lisbon"]
        assert ranked("ava", "market") == ["ava", "market"]  # all common: keep all
        assert ranked("ava", "unknown") == ["ava"]  # a word no memory holds ranks nothing
    found = await store.keyword("ava", "Did Ava try pottery?", limit=5)
    assert [m.memory_id for m in found][:1] == [pottery.memory_id]  # (then its neighbour, market 199)


@pytest.mark.both_backends
async def test_what_a_search_learned_about_an_index_is_forgotten_when_another_process_changes_it(
    store: Store, db_path: Path
) -> None:
    """The index's size and word counts are kept between searches only while nothing else commits."""
    from memoir.memory.store import Edit

    await store.add("ava", "Ava tried pottery in Lisbon")
    assert await store.keyword("ava", "Did Ava try pottery?", limit=5)  # applies the queue: learns nothing
    assert await store.keyword("ava", "Did Ava try pottery?", limit=5)
    assert store._index_stats["ava"].size == 1
    other = await Store.open(db_path)  # another process: it also applies the queue to the index itself
    try:
        await other.apply("ava", [Edit("add", memory=f"Ava went to market number {i}") for i in range(200)])
        assert len(await other.keyword("ava", "market", limit=300)) == 201  # the pottery one: beside market 0
    finally:
        await other.close()
    # No queued changes are left for this store to see; the index grew all the same.
    found = await store.keyword("ava", "Did Ava try pottery?", limit=5)
    assert found[0].memory == "Ava tried pottery in Lisbon"
    stats = store._index_stats["ava"]
    assert stats.size == 201 and stats.matches == {"ava": 101, "try": 0, "potteri": 1}  # "ava" stops at half + 1: left out
    assert stats.expanded_matches == {"ava": 101, "try": 0, "potteri": 2}  # its neighbour is indexed with "pottery" too


@pytest.mark.both_backends
async def test_undo_clear_restores_the_whole_clear_in_one_step(store: Store) -> None:
    kept = [await store.add("ava", f"fact {i}", ["t"]) for i in range(3)]
    bob = await store.add("bob", "Bob's fact")
    await store.clear("ava", change=Change(actor="tool"))
    await store.clear("bob")
    events = [e for e in await store.user_history("ava") if e.operation == "clear"]
    assert len(events) == 3
    # One memory brought back on its own first: the group undo leaves it and restores the rest.
    await store.undo(events[0].event_id)
    restored = await store.undo_clear("ava", events[-1].event_id, change=Change(actor="dashboard"))
    assert len(restored) == 2 and {e.operation for e in restored} == {"restore"}
    assert {e.actor for e in restored} == {"dashboard"}
    assert restored[1].part_of == restored[0].event_id
    assert sorted(m.memory_id for m in (await store.list("ava")).memories) == sorted(m.memory_id for m in kept)
    assert await store.count("bob") == 0  # another user's clear is not part of it
    with pytest.raises(CannotUndo, match="nothing to restore"):
        await store.undo_clear("ava", events[1].event_id)
    with pytest.raises(EventNotFound):  # bob's clear, named with ava's user
        await store.undo_clear("ava", (await store.history(bob.memory_id))[-1].event_id)
    with pytest.raises(CannotUndo, match="not a clear"):
        await store.undo_clear("ava", (await store.history(kept[0].memory_id))[0].event_id)
    # The restores are one change: undoing one removes them all again, in one step.
    await store.undo(restored[1].event_id)
    assert await store.count("ava") == 1


@pytest.mark.both_backends
async def test_undo_clear_is_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        await store.add("ava", f"fact {i}")
    await store.clear("ava")
    event = (await store.user_history("ava"))[0]
    calls = 0
    original = store._undo_one

    async def failing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk on fire")
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "_undo_one", failing)
    with pytest.raises(RuntimeError):
        await store.undo_clear("ava", event.event_id)
    assert await store.count("ava") == 0
