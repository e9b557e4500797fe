"""The vector index stays in step with the store: writes, deletes, undo, other processes, model changes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from memoir.memory.embeddings import load_embedder
from memoir.memory.ranking import relevance
from memoir.memory.retrieval import Retriever
from memoir.memory.store import Edit, Store
from memoir.memory.vectors import VectorIndex


@pytest.fixture
async def index(db_path: Path):
    store = await Store.open(db_path)
    vectors = VectorIndex(store, lambda: load_embedder("default"))
    yield Retriever(store, vectors)
    await store.close()


def stored_vectors(db_path: Path) -> dict[str, str]:
    with sqlite3.connect(db_path) as db:
        return dict(
            db.execute("SELECT m.memory_id, e.model FROM memories m JOIN embeddings e ON e.memory_rowid = m.id")
        )


async def semantic_ids(retriever: Retriever, user: str, query: str, k: int = 3) -> list[str]:
    outcome = await retriever.search(user, query, method="semantic", limit=k, min_relevance=0)
    return [m.memory_id for m in outcome.results]


async def test_every_write_is_embedded_and_searchable_at_once(index: Retriever, db_path: Path) -> None:
    store = index.store
    run = await store.add("ava", "Ava wakes up at 5 am to go running")
    await store.add("ava", "Ava's favourite colour is green")
    assert (await semantic_ids(index, "ava", "early riser", 1)) == [run.memory_id]
    # Loaded matrix, then more writes: they must show up without a reload.
    tea = await store.add("ava", "Ava drinks green tea")
    assert (await semantic_ids(index, "ava", "a hot drink", 1)) == [tea.memory_id]
    await store.update("ava", tea.memory_id, memory="Ava plays the cello")
    assert (await semantic_ids(index, "ava", "a musical instrument", 1)) == [tea.memory_id]
    await store.delete("ava", run.memory_id)
    assert run.memory_id not in await semantic_ids(index, "ava", "early riser", 5)
    models = stored_vectors(db_path)
    assert set(models) == {m.memory_id for m in (await store.list("ava")).memories}
    assert set(models.values()) == {index.vectors.model_name}


async def test_questions_among_the_memories_are_known_to_fusion(index: Retriever) -> None:
    store, vectors = index.store, index.vectors
    asked = await store.add("ava", "[May 2023] Ben: Where did you go skiing?")
    told = await store.add("ava", "[May 2023] Ava: Zermatt, in March.")
    assert (await vectors.user_vectors("ava")).questions == {asked.memory_id}  # loaded from the database
    later = await store.add("ava", "Did Ava like it?")
    await store.update("ava", told.memory_id, memory="Was it Zermatt?")
    assert (await vectors.user_vectors("ava")).questions == {asked.memory_id, later.memory_id, told.memory_id}
    await store.update("ava", later.memory_id, memory="Ava loved it.")
    await store.delete("ava", asked.memory_id)
    assert (await vectors.user_vectors("ava")).questions == {told.memory_id}


async def test_a_batch_of_edits_is_embedded_together(index: Retriever) -> None:
    results = await index.store.apply("ava", [Edit("add", memory=f"Ava visited city {i}") for i in range(30)])
    assert len(await semantic_ids(index, "ava", "travel", 30)) == 30
    assert {r.memory_id for r in results} == {m.memory_id for m in (await index.store.list("ava", limit=50)).memories}


async def test_undo_and_clear_keep_the_index_in_step(index: Retriever) -> None:
    store = index.store
    cello = await store.add("ava", "Ava plays the cello")
    await store.add("ava", "Ava lives in Denver")
    await semantic_ids(index, "ava", "music")
    await store.delete("ava", cello.memory_id)
    delete_event = (await store.history(cello.memory_id))[-1]
    await store.undo(delete_event.event_id)
    assert (await semantic_ids(index, "ava", "a musical instrument", 1)) == [cello.memory_id]
    await store.clear("ava")
    assert await semantic_ids(index, "ava", "music") == []


async def test_users_never_share_vectors(index: Retriever) -> None:
    await index.store.add("ava", "Ava plays the cello")
    bob = await index.store.add("bob", "Bob plays the violin")
    assert (await semantic_ids(index, "bob", "music", 5)) == [bob.memory_id]


async def test_filters_apply_to_semantic_search(index: Retriever) -> None:
    from memoir.memory.store import Filters

    music = await index.store.add("ava", "Ava plays the cello", ["music"])
    await index.store.add("ava", "Ava plays the violin", ["childhood"])
    outcome = await index.search("ava", "instrument", method="semantic", limit=5, filters=Filters(topics=("music",)), min_relevance=0)
    assert [m.memory_id for m in outcome.results] == [music.memory_id]


async def test_writes_by_another_process_are_noticed(index: Retriever, db_path: Path) -> None:
    await index.store.add("ava", "Ava lives in Denver")
    await semantic_ids(index, "ava", "home")  # matrix loaded
    other = await Store.open(db_path)  # another process: no vector index, so no vectors written
    try:
        cello = await other.add("ava", "Ava plays the cello")
    finally:
        await other.close()
    assert (await semantic_ids(index, "ava", "a musical instrument", 1)) == [cello.memory_id]
    assert cello.memory_id in stored_vectors(db_path)  # embedded on demand, and kept


async def test_vectors_of_another_model_are_never_mixed_in(index: Retriever, db_path: Path) -> None:
    cello = await index.store.add("ava", "Ava plays the cello")
    await index.store.add("ava", "Ava lives in Denver")
    with sqlite3.connect(db_path) as db:  # as if written by an older model: garbage vectors
        db.execute("UPDATE embeddings SET model = 'old-model@0', vector = zeroblob(1536)")
    fresh = await Store.open(db_path)
    try:
        retriever = Retriever(fresh, VectorIndex(fresh, lambda: load_embedder("default")))
        assert (await semantic_ids(retriever, "ava", "a musical instrument", 1)) == [cello.memory_id]
    finally:
        await fresh.close()
    assert set(stored_vectors(db_path).values()) == {index.vectors.model_name}


async def test_embedding_runs_after_the_call_and_outside_its_deadline(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    from mcp import Client

    from memoir.server.app import build_server, running_app
    from memoir.server.settings import Settings

    from .helpers import call

    settings = Settings(db_path=db_path)
    settings = replace(settings, access=replace(settings.access, call_timeout=5.0))
    async with running_app(settings) as app, Client(build_server(app), mode="legacy") as client:
        ids = [(await call(client, "add_memory", memory=f"Ava went on trip number {i}"))["memory_id"] for i in range(40)]
        found = await call(
            client, "search_memories", query="journeys", retrieval_method="semantic", limit=100, min_relevance=0
        )
    assert {r["memory_id"] for r in found["results"]} == set(ids)
    assert not [r for r in caplog.records if "could not embed" in r.getMessage()]
    assert set(stored_vectors(db_path)) == set(ids)


async def test_the_semantic_ranking_is_the_centred_cosine_kept_in_step_with_writes(index: Retriever) -> None:
    """From CENTRE_MIN memories on, hybrid's semantic list ranks by cos(v - mu, q - mu), mu the
    mean of the user's live vectors, after adds, edits and deletes as on a fresh load; relevance
    keeps the raw cosine, and the semantic method ranks by it."""
    store, vectors = index.store, index.vectors
    assert vectors is not None
    added = [await store.add("ava", f"Ava note {i}: {word}") for i, word in enumerate(
        ["tea", "skiing", "cello", "Lisbon", "pottery", "green", "coffee", "market", "running", "football"] * 6
    )]
    await store.add("bob", "Bob plays the violin")  # another user's memory changes nothing of ava's mean

    def check(loaded) -> None:
        live = loaded.matrix[: loaded.size][loaded.alive[: loaded.size]]
        mu = live.mean(axis=0)
        query = vectors_query
        raw = loaded.matrix[: loaded.size] @ query
        expected = ((loaded.matrix[: loaded.size] - mu) @ (query - mu)) / (
            np.linalg.norm(loaded.matrix[: loaded.size] - mu, axis=1) * np.linalg.norm(query - mu)
        )
        assert np.allclose(loaded.scores(query), expected, atol=1e-5)
        assert not np.allclose(expected, raw, atol=1e-3)

    vectors_query = (await vectors.embed(["a musical instrument"]))[0]
    await index.search("ava", "cello", method="semantic", min_relevance=0)  # loaded
    check(await vectors.user_vectors("ava"))
    await store.delete("ava", added[0].memory_id)
    await store.add("ava", "Ava bought a harp")
    await store.update("ava", added[1].memory_id, memory="Ava stopped skiing")
    await index.search("ava", "cello", method="semantic", min_relevance=0)
    kept = await vectors.user_vectors("ava")
    check(kept)
    fresh = VectorIndex(store, lambda: load_embedder("default"))
    reloaded = await fresh.user_vectors("ava")
    assert np.allclose(kept.scores(vectors_query)[kept.alive[: kept.size]], reloaded.scores(vectors_query), atol=1e-5)
    centred, _, _ = await vectors.search("ava", "a musical instrument", 3, centred=True)
    assert [s for _, s in centred] == pytest.approx(sorted(kept.scores(vectors_query)[kept.alive[: kept.size]], reverse=True)[:3], abs=1e-5)
    outcome = await index.search("ava", "a musical instrument", method="semantic", limit=3, min_relevance=0)
    for m in outcome.results:  # the raw cosine
        assert m.relevance == relevance(cosine=kept.cosine(m.memory_id, vectors_query))
        assert m.score == pytest.approx(kept.cosine(m.memory_id, vectors_query), abs=1e-5)


async def test_respelling_uses_the_users_own_words_in_step_with_writes(index: Retriever) -> None:
    """A misspelt query word ("soccre") is respelt as a word of the user's memories only, never
    of another user's, and the vocabulary follows adds and deletes."""
    store, vectors = index.store, index.vectors
    assert vectors is not None
    await store.add("ava", "Ava likes green tea")
    await store.add("bob", "Bob watches soccer")
    ava = await vectors.user_vectors("ava")
    assert ava.respellings("soccre") == []  # "soccer" is bob's
    coach = await store.add("ava", "Ava's brother coaches soccer")
    await vectors.settled()
    ava = await vectors.user_vectors("ava")
    assert ava.respellings("soccre") == ["soccer"]
    assert ava.respellings("soccer") == []  # the user's own word
    outcome = await index.search("ava", "soccre", method="hybrid", limit=5, min_relevance=0)
    assert [m.memory_id for m in outcome.results][:1] == [coach.memory_id]
    keyword = await store.keyword_ranked("ava", "soccre", limit=5, respelled={"soccre": ["soccer"]})
    assert [m for m, _ in keyword][:1] == [coach.memory_id]
    await store.delete("ava", coach.memory_id)
    await vectors.settled()
    assert (await vectors.user_vectors("ava")).respellings("soccre") == []
