"""Every acknowledged write is found by the next search, whatever ran beside it.

Each test below pins one interleaving that lost a write, made deterministic: another process
committing at the very moment a search reads (an SQLite trace callback on the reader's
thread), writes landing while a user's vectors load (an embedder gated by the test), a call
stopped while its COMMIT runs. tests/test_consistency_property.py explores interleavings at random.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from memoir.memory.embeddings import Embedder, load_embedder
from memoir.memory.retrieval import Retriever
from memoir.memory.store import Change, Edit, Store, _in_thread, _new_memory, event_statement, insert_statement
from memoir.memory.vectors import VectorIndex


def write_as_another_process(path: str, user_id: str, text: str) -> str:
    """Add a memory through a connection of its own, as another memoir process would."""
    memory = _new_memory(user_id, text, [], None, None)
    with sqlite3.connect(path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")
        other.execute(*insert_statement(memory))
        other.execute(*event_statement(memory.memory_id, user_id, "add", None, memory, Change("cli"), memory.created_at))
        other.execute("COMMIT")
    return memory.memory_id


async def on_statement(db, starts: str, nth: int, action: Callable[[], None]) -> None:
    """Run `action` on the connection's own thread as the `nth` statement starting with `starts` begins."""
    seen = 0

    def trace(sql: str) -> None:
        nonlocal seen
        if sql.startswith(starts):
            seen += 1
            if seen == nth:
                action()

    await _in_thread(db, lambda conn: conn.set_trace_callback(trace))


async def test_a_write_committed_while_a_search_rereads_is_found_by_the_next_search(db_path: Path) -> None:
    store = await Store.open(db_path)
    try:
        await store.add("ava", "Ava likes to ski")  # queued for ava's index: the search applies it, then reads again
        late: list[str] = []
        # The second read of that search begins by reading the database's version: another
        # process commits an add right then, after the queue was applied.
        await on_statement(
            store._reader, "PRAGMA data_version", 2,
            lambda: late.append(write_as_another_process(store.path, "ava", "Ava collects vinyl records")),
        )
        assert [m.memory for m in await store.keyword("ava", "ski", limit=5)] == ["Ava likes to ski"]
        assert late, "the interleaving did not happen"
        await _in_thread(store._reader, lambda conn: conn.set_trace_callback(None))
        found = await store.keyword("ava", "vinyl records", limit=5)
        assert [m.memory_id for m in found][:1] == late  # (then its neighbour, the ski one)
    finally:
        await store.close()


class GatedEmbedder:
    """The real model, except that a call of more than `hold_over` texts waits for the test."""

    def __init__(self, model: Embedder, hold_over: int) -> None:
        self.model = model
        self.name, self.dim = model.name, model.dim
        self.hold_over = hold_over
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) > self.hold_over and not self.release.is_set():
            self.entered.set()
            assert self.release.wait(30), "the test never released the embedder"
        return self.model.embed(texts)


async def test_writes_during_a_users_vector_load_reach_the_matrix(db_path: Path) -> None:
    model = GatedEmbedder(load_embedder("hashing"), hold_over=10)
    store = await Store.open(db_path)
    retriever = Retriever(store, VectorIndex(store, lambda: model))
    try:
        await store.add("ava", "Ava likes to ski")
        await retriever.search("ava", "skiing", method="semantic")  # ava's vectors are loaded
        # Another process imports memories with no vectors: the next search reloads ava's
        # vectors and embeds them, which the gate holds up while this process writes.
        other = await Store.open(db_path)
        try:
            await other.apply("ava", [Edit("add", memory=f"Ava imported note {i}") for i in range(30)])
        finally:
            await other.close()
        search = asyncio.ensure_future(retriever.search("ava", "notes", method="semantic", limit=100, min_relevance=0))
        await asyncio.to_thread(model.entered.wait, 30)
        added = [(await store.add("ava", f"Ava added while loading {i}")).memory_id for i in range(20)]
        await retriever.vectors.settled()  # the background task has applied those adds (to no loaded matrix)
        model.release.set()
        await search
        found = await retriever.search("ava", "notes", method="semantic", limit=100, min_relevance=0)
        assert set(added) <= {m.memory_id for m in found.results}
        assert len(found.results) == 1 + 30 + 20
    finally:
        model.release.set()
        await store.close()


async def test_a_call_stopped_while_its_commit_runs_still_reaches_the_vectors(db_path: Path) -> None:
    store = await Store.open(db_path)
    retriever = Retriever(store, VectorIndex(store, lambda: load_embedder("hashing")))
    try:
        await store.add("ava", "Ava likes to ski")
        await retriever.search("ava", "skiing", method="semantic")  # loaded: kept in step by notifications
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(30)

        await on_statement(store._writer, "COMMIT", 1, hold)
        write = asyncio.ensure_future(store.apply("ava", [Edit("add", memory="Ava plays the cello")]))
        await asyncio.to_thread(entered.wait, 30)
        write.cancel()  # the call's time limit, say, while COMMIT runs on the connection's thread
        await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await write
        await _in_thread(store._writer, lambda conn: conn.set_trace_callback(None))
        listed = {m.memory for m in (await store.list("ava")).memories}
        assert listed == {"Ava likes to ski", "Ava plays the cello"}  # committed, though the call was stopped
        found = await retriever.search("ava", "cello", method="semantic", limit=10, min_relevance=0)
        assert {m.memory for m in found.results} == listed
    finally:
        release.set()
        await store.close()
