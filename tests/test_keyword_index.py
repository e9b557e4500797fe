"""The keyword index shared by every user (memory/keyword_index.py): BM25 with each user's own
statistics (as a reference from the definition computes it; FTS5's exactly with FTS5's k1 / b), no schema object per user, and databases of the per-user FTS5 era
migrated."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from memoir.memory import keyword_index
from memoir.memory.ranking import query_terms
from memoir.memory.schema import MIGRATIONS, SCHEMA_VERSION
from memoir.memory.backends.sqlite import _statements
from memoir.memory.store import Store

WORDS = ["ski", "skiing", "tea", "green", "coffee", "lisbon", "pottery", "market", "ava", "bob", "run", "runs"]


DOCS = st.lists(
    st.tuples(
        st.lists(st.sampled_from(WORDS + ["the", "to", "and"]), min_size=1, max_size=12).map(" ".join),
        st.lists(st.sampled_from(WORDS), max_size=3, unique=True),
    ),
    min_size=1, max_size=25,
)
OTHERS = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join), max_size=30)
QUERY = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


def fts5_scores(docs: list[tuple[str, list[str]]], query: str) -> list[float]:
    """What the per-user FTS5 table of migration 4 ranked: `bm25(index, 1.0, 0.5)`, negated."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5 (memory, topics, tokenize = 'porter unicode61')")
    db.executemany("INSERT INTO f (memory, topics) VALUES (?, ?)", [(m, json.dumps(t)) for m, t in docs])
    match = " OR ".join(f'"{t}"' for t in query_terms(query))
    return sorted(-r[0] for r in db.execute("SELECT bm25(f, 1.0, 0.5) FROM f WHERE f MATCH ?", (match,)))


def reference_bm25(docs: list[tuple[str, list[str]]], query: str, k1: float, b: float) -> list[float]:
    """BM25 written out from its definition, over the words FTS5's tokenizer finds (its
    fts5vocab tables): a word in the topics counts half, a memory's length is all its tokens,
    idf = ln((N - n + 0.5) / (n + 0.5)) floored at 1e-6, as FTS5's bm25."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5 (memory, topics, tokenize = 'porter unicode61')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab (f, instance)")
    db.executemany("INSERT INTO f (memory, topics) VALUES (?, ?)", [(m, json.dumps(t)) for m, t in docs])
    tf: dict[int, dict[str, float]] = {}
    length: dict[int, int] = {}
    for doc, term, col in db.execute("SELECT doc, term, col FROM v"):
        tf.setdefault(doc, {})
        tf[doc][term] = tf[doc].get(term, 0.0) + (1.0 if col == "memory" else 0.5)
        length[doc] = length.get(doc, 0) + 1
    n_docs = len(docs)
    average = sum(length.values()) / n_docs
    db.execute("CREATE VIRTUAL TABLE q USING fts5 (t, tokenize = 'porter unicode61')")
    db.execute("CREATE VIRTUAL TABLE qv USING fts5vocab (q, instance)")
    db.execute("INSERT INTO q (t) VALUES (?)", (" ".join(query_terms(query)),))
    # Every occurrence: two query words of one stem ("ski skiing") count twice, as FTS5 scores them.
    terms = [t for (t,) in db.execute("SELECT term FROM qv ORDER BY offset")]
    scores = []
    for doc, words in tf.items():
        held = [t for t in terms if t in words]
        if not held:
            continue
        score = 0.0
        for t in held:
            n = sum(1 for w in tf.values() if t in w)
            idf = max(math.log((n_docs - n + 0.5) / (n + 0.5)), 1e-6)
            score += idf * words[t] * (k1 + 1) / (words[t] + k1 * (1 - b + b * length.get(doc, 0) / average))
        scores.append(score)
    return sorted(scores)


DOCS = st.lists(
    st.tuples(
        st.lists(st.sampled_from(WORDS + ["the", "to", "and"]), min_size=1, max_size=12).map(" ".join),
        st.lists(st.sampled_from(WORDS), max_size=3, unique=True),
    ),
    min_size=1, max_size=25,
)
OTHERS = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join), max_size=30)
QUERY = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


_RUNS = itertools.count()  # one database per example (hypothesis may run an example again)


async def _scores(docs, others, query, path: Path) -> list[float]:
    store = await Store.open(path)
    try:
        for text in others:
            await store.add("bob", text)
        for text, topics in docs:
            await store.add("ava", text, topics)
        return sorted(m.score for m in await store.keyword("ava", query, limit=100))
    finally:
        await store.close()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=DOCS, others=OTHERS, query=QUERY)
@example(docs=[("ava likes to ski", ["skiing"]), ("tea and coffee", [])], others=["ski ski ski"], query="ski skiing tea")
async def test_scores_are_bm25_over_the_users_own_memories(docs, others, query, tmp_path: Path) -> None:
    """Whatever another user stores, a user's scores are BM25 (k1 and b of keyword_index) over
    that user's memories only, as a reference written from the definition computes it."""
    ours = await _scores(docs, others, query, tmp_path / f"ref-{next(_RUNS)}.db")
    theirs = reference_bm25(docs, query, keyword_index.K1, keyword_index.B)
    assert len(ours) == len(theirs)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=DOCS, others=OTHERS, query=QUERY)
@example(docs=[("ava likes to ski", ["skiing"]), ("tea and coffee", [])], others=["ski ski ski"], query="ski skiing tea")
async def test_with_fts5s_parameters_scores_are_fts5_bm25_over_the_users_own_memories(
    docs, others, query, tmp_path: Path
) -> None:
    """With FTS5's k1 1.2 and b 0.75 the scores are exactly those of an FTS5 table holding only
    the user's memories (the index these replace): the same words, counts and lengths."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keyword_index, "K1", 1.2)
        patch.setattr(keyword_index, "B", 0.75)
        ours = await _scores(docs, others, query, tmp_path / f"fts-{next(_RUNS)}.db")
    theirs = fts5_scores(docs, query)
    assert len(ours) == len(theirs)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert reference_bm25(docs, query, 1.2, 0.75) == pytest.approx(theirs, rel=1e-9, abs=1e-12)  # the reference too


async def test_no_schema_object_per_user(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "many.db")
    try:
        await store.add("user-0", "Ava likes to ski")
        await store.keyword("user-0", "ski", limit=5)
        with sqlite3.connect(store.path) as db:
            objects = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        for i in range(1, 60):
            await store.add(f"user-{i}", f"User {i} likes to ski")
            assert [m.memory for m in await store.keyword(f"user-{i}", "skiing", limit=5)] == [f"User {i} likes to ski"]
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == objects
            assert keyword_index.problems(db) == []
    finally:
        await store.close()


@pytest.mark.parametrize("first", ["ava", "bob"])
async def test_a_row_id_reused_by_another_user_is_indexed_for_its_new_owner(tmp_path: Path, first: str) -> None:
    """SQLite reuses the largest row id once its row is deleted: ava's deleted memory and bob's
    new one share it, and their users' queues are applied in either order."""
    store = await Store.open(tmp_path / "reuse.db")
    try:
        await store.add("ava", "Ava keeps bees")
        await store.keyword("ava", "bees", limit=5)  # indexed for ava
        gone = await store.add("ava", "Ava plays the cello")
        await store.keyword("ava", "cello", limit=5)
        reused = (await store.rowids([gone.memory_id]))[gone.memory_id]
        await store.delete("ava", gone.memory_id)
        bob = await store.add("bob", "Bob plays the cello too")
        assert (await store.rowids([bob.memory_id]))[bob.memory_id] == reused
        for user in (first, "bob" if first == "ava" else "ava"):
            await store.keyword(user, "cello", limit=5)
        assert await store.keyword("ava", "cello", limit=5) == []
        assert [m.memory_id for m in await store.keyword("bob", "cello", limit=5)] == [bob.memory_id]
        assert [m.memory for m in await store.keyword("ava", "bees", limit=5)] == ["Ava keeps bees"]
        with sqlite3.connect(store.path) as db:
            assert keyword_index.problems(db) == []
    finally:
        await store.close()


async def test_purging_a_user_leaves_nothing_of_them_in_the_index(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "purge.db")
    try:
        await store.add("ava", "Ava likes to ski")
        await store.add("ava", "!!!")  # no words: indexed with none
        await store.add("bob", "Bob likes to ski")
        await store.keyword("ava", "ski", limit=5)
        await store.purge("ava")
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT count(*) FROM keyword_users WHERE user_id = 'ava'").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM keyword_docs").fetchone()[0] == 0  # bob's is still queued
            assert db.execute("SELECT count(*) FROM fts_pending WHERE user_id = 'ava'").fetchone()[0] == 0
        assert [m.memory for m in await store.keyword("bob", "ski", limit=5)] == ["Bob likes to ski"]
        with sqlite3.connect(store.path) as db:
            assert keyword_index.problems(db) == []
    finally:
        await store.close()


async def test_a_database_of_per_user_fts5_tables_is_migrated(tmp_path: Path) -> None:
    """A version-6 database (one FTS5 table per user, some changes still queued) opens at the
    current version: the old tables are gone and every memory is found as before."""
    path = tmp_path / "v6.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:6]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version = 6")
    texts = {"ava": ["Ava likes to ski", "Ava lives in Lisbon"], "bob": ["Bob runs marathons"]}
    for i, (user, memories) in enumerate((u, ms) for u, ms in texts.items()):
        for j, text in enumerate(memories):
            db.execute(
                "INSERT INTO memories (memory_id, user_id, memory, created_at, updated_at, valid_from)"
                " VALUES (?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                (f"m{i}{j}", user, text),
            )
    # ava's changes were applied to her own FTS5 table (the old store's way); bob's are still queued.
    db.execute("CREATE VIRTUAL TABLE fts_user_0123456789abcdef01234567 USING fts5 (memory, topics, tokenize = 'porter unicode61')")
    db.execute("INSERT INTO fts_user_0123456789abcdef01234567 (rowid, memory, topics) SELECT id, memory, topics FROM memories WHERE user_id = 'ava'")
    db.execute("DELETE FROM fts_pending WHERE user_id = 'ava'")
    db.close()

    store = await Store.open(path)
    try:
        assert [m.memory for m in await store.keyword("ava", "skiing", limit=5)] == ["Ava likes to ski"]
        assert [m.memory for m in await store.keyword("bob", "marathon", limit=5)] == ["Bob runs marathons"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name GLOB 'fts_user_*'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM fts_pending").fetchone()[0] == 0
        assert keyword_index.problems(db) == []


@pytest.mark.parametrize("text", [
    "Skiing in Zürich, e-mail: ÉTÉ_2024!",
    "is as s a I'm don't",
    "Caroline's LGBTQ support-group meetings, 3x a week (2023)",
    "naïve café résumé CRÈME brûlée",
    "running runner runs ran; generalizations relational conditional",
])
def test_words_are_fts5_porter_unicode61_words(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5 (t, tokenize = 'porter unicode61')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab (f, 'instance')")
    db.execute("INSERT INTO f (t) VALUES (?)", (text,))
    assert keyword_index.words(text) == [r[0] for r in db.execute("SELECT term FROM v ORDER BY offset")]


def test_a_documents_topics_count_half_and_its_length_is_every_token() -> None:
    assert keyword_index.document("Ava skis, Ava runs", '["running"]') == keyword_index.Document(
        length=5, tf={"ava": 2.0, "ski": 1.0, "run": 1.5}
    )


async def test_indexing_at_search_time_keeps_the_writers_durability_setting(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "sync.db", synchronous="FULL")
    try:
        await store.add("ava", "Ava likes to ski")
        assert [m.memory for m in await store.keyword("ava", "ski", limit=5)] == ["Ava likes to ski"]  # indexed here
        async with store._writer.execute("PRAGMA synchronous") as cur:
            assert (await cur.fetchone())[0] == 2  # FULL again for the writes that follow
        with sqlite3.connect(store.path) as db:
            assert db.execute("SELECT count(*) FROM fts_pending").fetchone()[0] == 0
    finally:
        await store.close()
