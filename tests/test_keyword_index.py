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


def reference_bm25(docs: list[tuple[str, list[str]]], query: str, k1: float, b: float, neighbour: float) -> list[float]:
    """BM25 written out from its definition, over the words FTS5's tokenizer finds (its
    fts5vocab tables): a word in the topics counts half, a memory's length is all its own tokens,
    idf = ln((N - n + 0.5) / (n + 0.5)) floored at 1e-6, as FTS5's bm25; and each memory's
    words counted with its timeline neighbours' (the memories stored just before and after it)
    at `neighbour` (memory/keyword_index.py NEIGHBOUR_WEIGHT), n counting the memories whose
    count of the word so expanded is above 0."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5 (memory, topics, tokenize = 'porter unicode61')")
    db.execute("CREATE VIRTUAL TABLE v USING fts5vocab (f, instance)")
    db.executemany("INSERT INTO f (memory, topics) VALUES (?, ?)", [(m, json.dumps(t)) for m, t in docs])
    own: dict[int, dict[str, float]] = {}
    length: dict[int, int] = {}
    for doc, term, col in db.execute("SELECT doc, term, col FROM v"):
        own.setdefault(doc, {})
        own[doc][term] = own[doc].get(term, 0.0) + (1.0 if col == "memory" else 0.5)
        length[doc] = length.get(doc, 0) + 1
    tf: dict[int, dict[str, float]] = {}
    for doc in own:  # row ids 1..N in the order stored: the timeline
        tf[doc] = dict(own[doc])
        for other in (doc - 1, doc + 1) if neighbour else ():
            for term, x in own.get(other, {}).items():
                tf[doc][term] = tf[doc].get(term, 0.0) + neighbour * x
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
    """Whatever another user stores, a user's scores are BM25 (k1, b and neighbour expansion of
    keyword_index) over that user's memories only, as a reference written from the definition
    computes it."""
    ours = await _scores(docs, others, query, tmp_path / f"ref-{next(_RUNS)}.db")
    theirs = reference_bm25(docs, query, keyword_index.K1, keyword_index.B, keyword_index.NEIGHBOUR_WEIGHT)
    assert len(ours) == len(theirs)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=DOCS, others=OTHERS, query=QUERY)
@example(docs=[("ava likes to ski", ["skiing"]), ("tea and coffee", [])], others=["ski ski ski"], query="ski skiing tea")
async def test_with_fts5s_parameters_scores_are_fts5_bm25_over_the_users_own_memories(
    docs, others, query, tmp_path: Path
) -> None:
    """With FTS5's k1 1.2 and b 0.75, and no neighbour expansion, the scores are exactly those of
    an FTS5 table holding only the user's memories (the index these replace): the same words,
    counts and lengths."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keyword_index, "K1", 1.2)
        patch.setattr(keyword_index, "B", 0.75)
        patch.setattr(keyword_index, "NEIGHBOUR_WEIGHT", 0.0)
        ours = await _scores(docs, others, query, tmp_path / f"fts-{next(_RUNS)}.db")
    theirs = fts5_scores(docs, query)
    assert len(ours) == len(theirs)
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert reference_bm25(docs, query, 1.2, 0.75, 0.0) == pytest.approx(theirs, rel=1e-9, abs=1e-12)  # the reference too


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
        # (and, a neighbour, the other memory below it: the index is of the newest version)
        assert [m.memory for m in await store.keyword("ava", "skiing", limit=5)] == ["Ava likes to ski", "Ava lives in Lisbon"]
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


# -- neighbour document expansion ------------------------------------------------------------


async def _found(store: Store, user: str, query: str) -> list[str]:
    return [m.memory for m in await store.keyword(user, query, limit=10)]


def _memory_line(memory_id: str, text: str, created_at: str, user: str = "ava") -> str:
    """A line of `memoir import` (memory/transfer.py): a memory with its own created_at."""
    return json.dumps({"type": "memory", "memory_id": memory_id, "user_id": user, "memory": text, "created_at": created_at})


@pytest.mark.both_backends
async def test_a_word_only_a_neighbour_holds_makes_a_memory_match_below_its_holder(db_path) -> None:  # noqa: ANN001
    """A memory is indexed with its timeline neighbours' words at NEIGHBOUR_WEIGHT: a word only a
    neighbour holds makes it match with a smaller score; two places away, no match. BM25's n
    counts the memories indexed with the word (3 of 10 here), its N the memories."""
    store = await Store.open(db_path)
    try:
        for text in ["Ava keeps bees", "Ava lives in Lisbon", "She moved there in May", "Ava bakes bread", "Ava plays chess",
                     "Ava runs marathons", "Ava grows tomatoes", "Ava sings in a choir", "Ava owns a kayak", "Ava reads poetry"]:
            await store.add("ava", text)
        found = await store.keyword("ava", "Lisbon", limit=10)
        # The two neighbours score alike; ties go to the newer memory.
        assert [m.memory for m in found] == ["Ava lives in Lisbon", "She moved there in May", "Ava keeps bees"]
        idf = math.log((10 - 3 + 0.5) / (3 + 0.5))
        k1, w = keyword_index.K1, keyword_index.NEIGHBOUR_WEIGHT
        assert [m.score for m in found] == pytest.approx([idf, idf * w * (k1 + 1) / (w + k1), idf * w * (k1 + 1) / (w + k1)])
        assert await store.keyword_index_problems() == []
    finally:
        await store.close()


@pytest.mark.both_backends
async def test_deleting_a_memory_indexes_its_former_neighbours_again(db_path) -> None:  # noqa: ANN001
    store = await Store.open(db_path)
    try:
        bees = await store.add("ava", "Ava keeps bees")
        cello = await store.add("ava", "Ava plays the cello")
        await store.add("ava", "Ava grows tomatoes")
        await store.add("ava", "Ava runs marathons")
        assert await _found(store, "ava", "cello") == ["Ava plays the cello", "Ava grows tomatoes", "Ava keeps bees"]
        await store.delete("ava", cello.memory_id)
        assert await _found(store, "ava", "cello") == []  # the word it lent is gone from both
        # bees and tomatoes are neighbours now
        assert await _found(store, "ava", "tomatoes") == ["Ava grows tomatoes", "Ava runs marathons", "Ava keeps bees"]
        await store.delete("ava", bees.memory_id)  # the first one: its one neighbour
        assert await _found(store, "ava", "bees") == []
        assert await store.keyword_index_problems() == []
    finally:
        await store.close()


@pytest.mark.both_backends
async def test_a_memory_added_in_the_middle_of_a_timeline_indexes_both_new_neighbours_again(db_path) -> None:  # noqa: ANN001
    from memoir.memory.transfer import import_lines

    store = await Store.open(db_path)
    try:
        await import_lines(store, [
            _memory_line("a", "Ava keeps bees", "2026-01-01T00:00:00Z"),
            _memory_line("c", "Ava grows tomatoes", "2026-01-03T00:00:00Z"),
            _memory_line("d", "Ava runs marathons", "2026-01-04T00:00:00Z"),
        ])
        assert await _found(store, "ava", "bees") == ["Ava keeps bees", "Ava grows tomatoes"]
        await import_lines(store, [_memory_line("b", "Ava plays the cello", "2026-01-02T00:00:00Z")])  # a later row id
        assert await _found(store, "ava", "bees") == ["Ava keeps bees", "Ava plays the cello"]
        assert await _found(store, "ava", "cello") == ["Ava plays the cello", "Ava grows tomatoes", "Ava keeps bees"]
        assert await _found(store, "ava", "tomatoes") == ["Ava grows tomatoes", "Ava runs marathons", "Ava plays the cello"]
        assert await store.keyword_index_problems() == []
        before = {q: await store.keyword("ava", q, limit=10) for q in ("bees", "cello", "tomatoes", "marathons")}
        assert await store.rebuild_keyword_index() == 4  # memoir reindex: the same index
        assert {q: await store.keyword("ava", q, limit=10) for q in before} == before
        assert await store.keyword_index_problems() == []
    finally:
        await store.close()


@pytest.mark.both_backends
async def test_coverage_sees_a_memorys_own_words_only(db_path) -> None:  # noqa: ANN001
    """Relevance's coverage (`term_matches`): how many memories hold a word, and which of them
    hold it, counts what each memory says itself, not what it is indexed with from a neighbour."""
    store = await Store.open(db_path)
    try:
        bees = await store.add("ava", "Ava keeps bees")
        cello = await store.add("ava", "Ava plays the cello")
        assert len(await store.keyword("ava", "cello bees", limit=5)) == 2  # each matches both words
        size, counts, held = await store.term_matches("ava", ["cello", "bees", "piano"], [bees.memory_id, cello.memory_id])
        assert (size, counts) == (2, {"cello": 1, "bees": 1, "piano": 0})
        assert held == {bees.memory_id: {"bees"}, cello.memory_id: {"cello"}}
    finally:
        await store.close()


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["ava", "bob"]), st.sampled_from(WORDS)),
        st.tuples(st.just("import"), st.sampled_from(["ava", "bob"]), st.sampled_from(WORDS), st.integers(1, 3)),
        st.tuples(st.just("update"), st.sampled_from(["ava", "bob"]), st.sampled_from(WORDS), st.integers(0, 30)),
        st.tuples(st.just("delete"), st.sampled_from(["ava", "bob"]), st.integers(0, 30)),
        st.tuples(st.just("supersede"), st.sampled_from(["ava", "bob"]), st.sampled_from(WORDS), st.integers(0, 30)),
        st.tuples(st.just("search"), st.sampled_from(["ava", "bob"])),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
@example(ops=[  # ava's newest memory deleted, its row id taken by bob's next one; either user's queue applied first
    ("add", "ava", "tea"), ("add", "ava", "ski"), ("search", "ava"), ("delete", "ava", 1), ("add", "bob", "run"),
    ("search", "bob"), ("search", "ava"),
])
@example(ops=[
    ("add", "ava", "tea"), ("add", "ava", "ski"), ("search", "ava"), ("delete", "ava", 1), ("add", "bob", "run"),
    ("search", "ava"), ("search", "bob"),
])
async def test_the_index_stays_in_step_with_the_memories_through_any_changes(ops, tmp_path: Path) -> None:
    """Adds (at the end, or imported earlier in the timeline), updates, deletes and supersedes of
    two users, searches between them: after each search, and at the end, every memory is indexed
    with its own words and its current neighbours' (keyword_index.problems checks each one)."""
    store = await Store.open(tmp_path / f"ops-{next(_RUNS)}.db")
    try:
        from memoir.memory.transfer import import_lines

        mine: dict[str, list[str]] = {"ava": [], "bob": []}
        for n, op in enumerate(ops):
            kind, user = op[0], op[1]
            ids = mine[user]
            if kind == "add":
                ids.append((await store.add(user, f"{user} {op[2]} {n}")).memory_id)
            elif kind == "import":
                at = f"2026-01-0{op[3]}T00:00:00Z"  # often the same created_at: ties go by row id
                await import_lines(store, [_memory_line(f"imp{n}", f"{user} {op[2]} {n}", at, user)])
                ids.append(f"imp{n}")
            elif kind == "search":
                await store.keyword(user, " ".join(WORDS), limit=100)
                assert await store.keyword_index_problems() == []
            elif ids:
                target = ids[op[-1] % len(ids)]
                if kind == "update":
                    await store.update(user, target, memory=f"{user} {op[2]} {n}")
                elif kind == "delete":
                    await store.delete(user, target)
                    ids.remove(target)
                elif (await store.get(user, target)).valid_to is None:  # supersede a current one
                    ids.append((await store.add(user, f"{user} {op[2]} {n}", supersedes=target)).memory_id)
        for user in mine:
            await store.sync_index(user)
        assert await store.keyword_index_problems() == []
    finally:
        await store.close()


async def test_the_doctor_finds_a_memory_indexed_with_a_neighbour_it_no_longer_has(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "stale.db")
    try:
        for text in ("Ava keeps bees", "Ava plays the cello", "Ava grows tomatoes"):
            await store.add("ava", text)
        await store.keyword("ava", "cello", limit=5)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "stale.db") as db:
        db.execute("DELETE FROM memories WHERE memory = 'Ava plays the cello'")
        db.execute("DELETE FROM fts_pending")  # as if the queued change were lost
        found = keyword_index.problems(db)
    assert len(found) == 2, found
    assert "1 memories indexed wrongly or not at all" in found[0]
    assert "2 memories indexed with other words" in found[1]


async def test_a_version_8_database_is_indexed_again_with_its_neighbours_words(tmp_path: Path) -> None:
    """A version-8 database (postings without own counts, no places in the timeline; some changes
    still queued) opens at the current version, and each user's index is rebuilt at their next
    search, neighbours' words included."""
    path = tmp_path / "v8.db"
    db = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:8]:
        for statement in _statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version = 8")
    texts = {"ava": ["Ava keeps bees", "Ava plays the cello", "Ava grows tomatoes"], "bob": ["Bob runs marathons"]}
    for user, memories in texts.items():
        for j, text in enumerate(memories):
            at = f"2026-01-0{j + 1}T00:00:00Z"
            db.execute(
                "INSERT INTO memories (memory_id, user_id, memory, created_at, updated_at, valid_from) VALUES (?, ?, ?, ?, ?, ?)",
                (f"{user}{j}", user, text, at, at, at),
            )
    # ava's index as version 8 wrote it (each memory's own words); bob's changes still queued.
    db.execute("INSERT INTO keyword_users (uid, user_id, docs, tokens) VALUES (1, 'ava', 0, 0)")
    for doc, memory, topics in db.execute("SELECT id, memory, topics FROM memories WHERE user_id = 'ava'").fetchall():
        d = keyword_index.document(memory, topics)
        db.executemany("INSERT INTO keyword_postings (uid, term, doc, tf, len) VALUES (1, ?, ?, ?, ?)",
                       [(t, doc, x, d.length) for t, x in d.tf.items()])
        db.execute("INSERT INTO keyword_docs (doc, uid, length, terms) VALUES (?, 1, ?, ?)", (doc, d.length, " ".join(d.tf)))
        db.execute("UPDATE keyword_users SET docs = docs + 1, tokens = tokens + ? WHERE uid = 1", (d.length,))
    db.execute("DELETE FROM fts_pending WHERE user_id = 'ava'")
    db.close()

    store = await Store.open(path)
    try:
        assert await _found(store, "ava", "cello") == ["Ava plays the cello", "Ava grows tomatoes", "Ava keeps bees"]
        assert await _found(store, "bob", "marathon") == ["Bob runs marathons"]
        assert await store.keyword_index_problems() == []
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
        assert db.execute("SELECT count(*) FROM fts_pending").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM keyword_postings WHERE own = 0").fetchone()[0] > 0  # neighbours' words


async def test_the_common_word_rule_counts_the_memories_holding_a_word_themselves(tmp_path: Path) -> None:
    """"market" is in every other memory: in half of them itself, in all of them with a
    neighbour's words. The rule leaving out words in over half of the memories counts the first;
    BM25's n (its idf, at the floor here) the second."""
    from memoir.memory.store import Edit

    store = await Store.open(tmp_path / "half.db")
    try:
        texts = [f"Ava went to market number {i}" if i % 2 == 0 else f"Bob read book number {i}" for i in range(200)]
        await store.apply("ava", [Edit("add", memory=t) for t in [*texts, "Ava tried pottery in Lisbon"]])
        assert await store.sync_index("ava")
        with sqlite3.connect(store.path) as db:
            stats = keyword_index.stats(db, "ava", None)
            keyword_index.count_matches(db, stats, ["market", "potteri", "book"])
            assert stats.cap == 101
            assert stats.matches == {"market": 100, "potteri": 1, "book": 100}
            assert stats.expanded_matches == {"market": 101, "potteri": 2, "book": 101}  # stopped at the cap
            assert keyword_index.ranked_words(stats, ["market", "potteri"]) == ["market", "potteri"]  # 100 of 201: kept
            assert keyword_index.idf(stats, "market") == 1e-6
    finally:
        await store.close()
