"""Memory embeddings: computed when memories are written, kept in SQLite, searched in memory.

Each user's vectors live in one float32 matrix, in timeline order (created_at, id), loaded on
the first semantic search for that user and kept in step with writes afterwards: the store
tells the index what every committed transaction changed; new texts are embedded in a group
(one trip to a worker thread, one transaction to save them), new memories are appended,
changed ones replaced, deleted ones masked out.

Vectors carry the name of the model that made them. A memory whose vector is missing or from
another model (written with embeddings off, by another process, or before a model change) is
embedded again when its user's matrix is loaded - never compared across models. Another
process writing to the same database is noticed through `PRAGMA data_version`, and the
matrices are then reloaded.

A matrix is kept only if it is known to be in step. Loading one reads the user's rows, then
may embed for a while; writes committed meanwhile are applied by the background task to no
matrix (none is loaded yet), so the task records them for the load (`_Loading`), which
replays them onto what it read. A load that cannot be brought in step that way (a restored
memory, a failed embedding, another process's write noticed meanwhile) still answers its own
search, which began before those writes, but is not kept: the next search loads again.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import anyio
import numpy as np

from . import keyword_index, spelling, subjects
from .embeddings import Embedder, embedding_text, limit_blas_threads
from .ranking import is_question, query_terms, vocabulary
from .store import Changed, Filters, Store

log = logging.getLogger("memoir.vectors")

EMBED_BATCH = 64

#: The semantic ranking's cosine is centred (memory/ranking.py, "third round") from this many
#: live memories on; below it, raw. A guard, not a tuned value: the mean of a few vectors is
#: mostly the memories themselves (of one memory it is that memory; of two, the centred vectors
#: are opposite). LoCoMo's stores, where centring was measured, hold 190-690 memories.
CENTRE_MIN = 50


def text_words(text: str) -> list[str]:
    """A memory's words that a misspelt query word may be respelt as (memory/spelling.py)."""
    return vocabulary(keyword_index.surface_words(text))


@dataclass
class UserVectors:
    """One user's vectors in timeline order; `alive` masks rows deleted since loading, `retired`
    the rows of superseded memories (left out unless a search asks for them).

    `questions` holds the memories whose text is a question (memory.ranking.is_question), a
    signal for fusion that is cheapest to keep where every text passes on its way to the model.
    """

    memory_ids: list[str]
    matrix: np.ndarray
    alive: np.ndarray
    rows: dict[str, int] = field(default_factory=dict)
    size: int = 0
    questions: set[str] = field(default_factory=set)
    retired: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # The mean of the live rows and every row's dot product with it (`centre`), or None until
    # the next search needs them: any change of the rows or of which are live resets it.
    _centre: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    # What each row's text says (`RowText`), and over the live rows: how many memories hold each
    # word (the vocabulary, for respelling: memory/spelling.py; `_words` lists it, until a row
    # changes) and write it capitalised / in lower case (names, for subjects: memory/subjects.py).
    row_text: list[RowText] = field(default_factory=list, repr=False)
    word_count: dict[str, int] = field(default_factory=dict, repr=False)
    _words: list[str] | None = field(default=None, repr=False)
    capitalised: dict[str, int] = field(default_factory=dict, repr=False)
    lower: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, memory_ids: list[str], matrix: np.ndarray, questions: set[str] | None = None,
        retired: set[str] | None = None, texts: Sequence[str] | None = None,
    ) -> UserVectors:
        """`texts`: the memories', in the same order (their words and subjects)."""
        n = len(memory_ids)
        capacity = max(64, n + n // 4)
        full = np.zeros((capacity, matrix.shape[1] if n else 384), dtype=np.float32)
        full[:n] = matrix
        alive = np.zeros(capacity, dtype=bool)
        alive[:n] = True
        rows = {m: i for i, m in enumerate(memory_ids)}
        retired_rows = np.zeros(capacity, dtype=bool)
        retired_rows[[rows[m] for m in retired or () if m in rows]] = True
        built = cls(list(memory_ids), full, alive, rows, n, set(questions or ()), retired_rows)
        built.row_text = [built._count(text) for text in texts] if texts is not None else [NO_TEXT] * n
        return built

    def append(self, memory_id: str, vector: np.ndarray, question: bool = False, text: str | None = None) -> None:
        """`text`: the memory's, for its words and subject (None: none)."""
        if self.replace(memory_id, vector, question, text):  # already loaded from the database meanwhile
            return
        if self.size == len(self.matrix):
            grown = np.zeros((len(self.matrix) * 2, self.matrix.shape[1]), dtype=np.float32)
            grown[: self.size] = self.matrix[: self.size]
            alive = np.zeros(len(grown), dtype=bool)
            alive[: self.size] = self.alive[: self.size]
            retired = np.zeros(len(grown), dtype=bool)
            retired[: self.size] = self.retired[: self.size]
            self.matrix, self.alive, self.retired = grown, alive, retired
        self._centre = None
        self.matrix[self.size] = vector
        self.alive[self.size] = True
        self.retired[self.size] = False
        self.rows[memory_id] = self.size
        self.memory_ids.append(memory_id)
        self.row_text[self.size :] = [self._count(text)]
        self.size += 1
        self._mark(memory_id, question)

    def replace(self, memory_id: str, vector: np.ndarray, question: bool = False, text: str | None = None) -> bool:
        row = self.rows.get(memory_id)
        if row is None:
            return False
        self.matrix[row] = vector
        self._centre = None
        self._uncount(row)
        self.row_text[row] = self._count(text)
        self._mark(memory_id, question)
        return True

    def remove(self, memory_id: str) -> None:
        row = self.rows.pop(memory_id, None)
        self.questions.discard(memory_id)
        if row is not None:
            self.alive[row] = False
            self.retired[row] = False
            self._centre = None
            self._uncount(row)

    def retire(self, memory_id: str, retired: bool) -> bool:
        """Mark a memory superseded (or current again); False if it is not among the rows."""
        row = self.rows.get(memory_id)
        if row is None:
            return False
        self.retired[row] = retired
        return True

    def _mark(self, memory_id: str, question: bool) -> None:
        if question:
            self.questions.add(memory_id)
        else:
            self.questions.discard(memory_id)

    @property
    def live(self) -> int:
        return len(self.rows)

    def centre(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """`(mu, m, inverse)`: mu the mean of the live rows (superseded ones included), m every
        row's dot product with it, `inverse` every row's 1 / |v - mu|; None under CENTRE_MIN live
        rows. Two passes over the matrix, made at the first search after a change."""
        if self.live < CENTRE_MIN:
            return None
        if self._centre is None:
            rows = self.matrix[: self.size]
            mu = rows[self.alive[: self.size]].mean(axis=0, dtype=np.float64).astype(np.float32)
            m = rows @ mu
            inverse = 1.0 / np.sqrt(np.maximum(1.0 - 2.0 * m + float(mu @ mu), 1e-12))
            self._centre = (mu, m, inverse.astype(np.float32))
        return self._centre

    def scores(self, query: np.ndarray) -> np.ndarray:
        """The ranking score of every row for a query vector: the centred cosine
        cos(v - mu, q - mu) (memory/ranking.py, "third round"), or the raw cosine under
        CENTRE_MIN live rows. From the raw cosines s = M q and the kept m = M mu, since the rows
        are unit vectors: (s - m - q.mu + |mu|^2) / (|v - mu| |q - mu|), |v - mu|^2 = 1 - 2 m + |mu|^2."""
        raw = self.matrix[: self.size] @ query
        centre = self.centre()
        if centre is None:
            return raw
        mu, m, inverse = centre
        q_norm = max(float(np.linalg.norm(query - mu)), 1e-6)
        # In place: at 100,000 rows each temporary array is a pass over 400 KB.
        raw -= m
        raw += float(mu @ mu) - float(query @ mu)
        raw *= inverse
        raw /= q_norm
        return raw

    # -- each row's words: the vocabulary and the names --

    def _count(self, text: str | None) -> RowText:
        said = row_text(text)
        _tally(self.word_count, said.words, +1)
        _tally(self.capitalised, said.capitalised, +1)
        _tally(self.lower, said.lower, +1)
        self._words = None
        return said

    def _uncount(self, row: int) -> None:
        said = self.row_text[row]
        _tally(self.word_count, said.words, -1)
        _tally(self.capitalised, said.capitalised, -1)
        _tally(self.lower, said.lower, -1)
        self.row_text[row] = NO_TEXT
        self._words = None

    # -- who the memories are about (memory/subjects.py) --

    def query_names(self, query: str) -> frozenset[str]:
        """The names of the user's memories that `query` holds."""
        return subjects.query_names(query, self.capitalised, self.lower)

    def about_others(self, memory_ids: Iterable[str], names: frozenset[str]) -> set[str]:
        """Of `memory_ids`, those whose subject is only people other than `names`."""
        if not names:
            return set()
        found = set()
        verdicts: dict[tuple[str, ...], bool] = {}  # candidates share a few subjects: judge each once
        for m in memory_ids:
            row = self.rows.get(m)
            words = self.row_text[row].subject if row is not None else ()
            if not words:
                continue
            verdict = verdicts.get(words)
            if verdict is None:
                subject = subjects.subject_of(words, self.capitalised, self.lower)
                verdict = verdicts[words] = subjects.about_others(subject, names)
            if verdict:
                found.add(m)
        return found

    def respelled(self, query: str) -> dict[str, list[str]]:
        """The query's terms that may be misspelt, each with its respellings (`respellings`)."""
        return {t: found for t in query_terms(query) if (found := self.respellings(t))}

    def respellings(self, term: str) -> list[str]:
        """For a query term that is one word nobody knows (memory/spelling.py): the index words
        (stems) of the user's words it may be a misspelling of."""
        words = keyword_index.surface_words(term)
        if len(words) != 1 or words[0] in self.word_count:
            return []  # a phrase, or the user's own word
        if self._words is None:
            self._words = list(self.word_count)
        return list(dict.fromkeys(keyword_index.stem(w) for w in spelling.respellings(words[0], self._words)))

    def cosine(self, memory_id: str, query: np.ndarray) -> float:
        """The raw cosine of a memory's vector and a query vector (0 for a memory not here)."""
        row = self.rows.get(memory_id)
        return float(self.matrix[row] @ query) if row is not None else 0.0

    def neighbours(self, memory_id: str) -> list[str]:
        """The live memories right before and after `memory_id` in the timeline (a deleted
        neighbour leaves a gap: nobody is looked for beyond it)."""
        row = self.rows.get(memory_id)
        if row is None:
            return []
        return [self.memory_ids[j] for j in (row - 1, row + 1) if 0 <= j < self.size and self.alive[j]]

    def position(self) -> dict[str, int]:
        """Each live memory's place in the timeline (deleted rows still count as a step)."""
        return self.rows


class RowText(NamedTuple):
    """What a memory's text says to hybrid search beyond its vector."""

    words: tuple[str, ...]  # its vocabulary words (`text_words`), for respelling
    capitalised: frozenset[str]  # its words written capitalised / in lower case (names)
    lower: frozenset[str]
    subject: tuple[str, ...]  # who it may be about (memory/subjects.py `subject_words`)


NO_TEXT = RowText((), frozenset(), frozenset(), ())


def row_text(text: str | None) -> RowText:
    if not text:
        return NO_TEXT
    body = embedding_text(text)  # as the memory is embedded: without a leading [tag]
    capitalised, lower = subjects.case_words(body)
    # One string per word across the rows (interned), not one per row.
    return RowText(tuple(sys.intern(w) for w in text_words(text)), capitalised, lower, subjects.subject_words(body))


def _tally(counts: dict[str, int], words: Iterable[str], step: int) -> None:
    for w in words:
        left = counts.get(w, 0) + step
        if left > 0:
            counts[w] = left
        else:
            counts.pop(w, None)


@dataclass
class _Loading:
    """A user's matrix being loaded: what the background task applied to the user meanwhile."""

    generation: int  # VectorIndex._generation when the load began
    changes: list[tuple[Changed, np.ndarray | None]] = field(default_factory=list)
    in_step: bool = True  # False: a change could not be recorded; the load must not be kept


def _keep_in_step(vectors: UserVectors, change: Changed, vector: np.ndarray | None) -> bool:
    """Apply one committed change to a user's loaded vectors; False when only a reload can
    (a restored memory goes back to its old place in the timeline)."""
    if change.retired is not None:
        return vectors.retire(change.memory_id, change.retired)
    if change.text is None:
        vectors.remove(change.memory_id)
    elif change.appended:
        vectors.append(change.memory_id, vector, is_question(change.text), change.text)  # type: ignore[arg-type]
    elif not vectors.replace(change.memory_id, vector, is_question(change.text), change.text):  # type: ignore[arg-type]
        return False
    return True


class VectorIndex:
    """Embeds memories on write and answers nearest-neighbour queries per user."""

    def __init__(self, store: Store, load_embedder: Callable[[], Embedder]) -> None:
        self.store = store
        self._load_embedder = load_embedder
        self._embedder: Embedder | None = None
        self._embedder_lock = asyncio.Lock()
        self._users: dict[str, UserVectors] = {}
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._loading: dict[str, _Loading] = {}
        self._data_version: int | None = None
        self._generation = 0  # moves when every matrix is dropped (another process wrote)
        # Committed changes wait here for the background task that embeds them in groups.
        self._pending: list[Changed] = []
        self._worker: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._settled.set()
        store.on_commit(self._on_commit)

    # -- the model ----------------------------------------------------------------------------

    async def embedder(self) -> Embedder:
        """The model, loaded on first use (in a worker thread: it takes about half a second)."""
        if self._embedder is None:
            async with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = await anyio.to_thread.run_sync(self._load_embedder)
                    limit_blas_threads(1)
        return self._embedder

    async def embed(self, texts: list[str]) -> np.ndarray:
        model = await self.embedder()
        return await anyio.to_thread.run_sync(model.embed, [embedding_text(t) for t in texts])

    async def reindex(self, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Embed every memory, of every user, whose vector is missing or from another model (after a
        bulk import, or writes made with embeddings off), `EMBED_BATCH` at a time, each batch saved in
        its own transaction: so no search pays for them later. `on_progress(done, total)` after each
        batch. Returns how many were embedded."""
        model = await self.embedder()
        rows = await self.store.fetch(
            "SELECT m.id, m.memory FROM memories m LEFT JOIN embeddings e ON e.memory_rowid = m.id"
            " WHERE e.vector IS NULL OR e.model IS DISTINCT FROM ? ORDER BY m.id",
            (model.name,),
        )
        for start in range(0, len(rows), EMBED_BATCH):
            batch = rows[start : start + EMBED_BATCH]
            fresh = await self.embed([r["memory"] for r in batch])
            await self._save([(r["id"], r["memory"], fresh[i]) for i, r in enumerate(batch)], model)
            if on_progress is not None:
                on_progress(start + len(batch), len(rows))
        return len(rows)

    @property
    def model_name(self) -> str | None:
        return None if self._embedder is None else self._embedder.name

    # -- search -------------------------------------------------------------------------------

    async def search(
        self, user_id: str, query: str, k: int, filters: Filters = Filters(), *, centred: bool = False
    ) -> tuple[list[tuple[str, float]], UserVectors, np.ndarray]:
        """The user's `k` memories nearest to `query`: `[(memory_id, cosine)]`, best first (the
        centred cosine with `centred`, `UserVectors.scores`), the user's vectors (for the
        timeline position, the questions among the memories and any memory's raw cosine) and the
        query's vector (for that raw cosine: relevance, memory/ranking.py)."""
        # The model runs in its own thread while the user's vectors are checked on SQLite's
        # (that check queues behind hybrid's keyword query, which would otherwise delay the model).
        embedding = asyncio.ensure_future(self.embed([query]))
        try:
            vectors = await self.user_vectors(user_id)
        except BaseException:
            embedding.cancel()
            embedding.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: no warning
            raise
        query_vector = (await embedding)[0]
        return await self.nearest(user_id, vectors, query_vector, k, filters, centred=centred), vectors, query_vector

    async def nearest(
        self, user_id: str, vectors: UserVectors, query_vector: np.ndarray, k: int, filters: Filters = Filters(),
        *, centred: bool = False,
    ) -> list[tuple[str, float]]:
        """`search` with the user's vectors and the query's vector at hand."""
        if vectors.live == 0:
            return []
        scores = vectors.scores(query_vector) if centred else vectors.matrix[: vectors.size] @ query_vector
        allowed = vectors.alive[: vectors.size]
        filtered = filters.narrows
        if filtered:
            permitted = set(await self.store.filtered_ids(user_id, filters))
            allowed = allowed & np.fromiter((m in permitted for m in vectors.memory_ids), bool, vectors.size)
        elif filters.current_only and vectors.retired[: vectors.size].any():
            filtered = True  # superseded memories are left out unless asked for
            allowed = allowed & ~vectors.retired[: vectors.size]
        if filtered or vectors.live < vectors.size:
            scores[~allowed] = -np.inf
        k = min(k, int(allowed.sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(vectors.memory_ids[i], float(scores[i])) for i in top]

    async def settled(self) -> None:
        """Wait until every committed change is in the index, so a search never misses a write."""
        while not self._settled.is_set():
            await self._settled.wait()

    async def close(self) -> None:
        """Finish embedding what is queued (anything left is embedded on demand next time)."""
        await self.settled()

    async def user_vectors(self, user_id: str) -> UserVectors:
        await self.settled()
        await self._notice_other_writers()
        vectors = self._users.get(user_id)
        if vectors is not None:
            return vectors
        lock = self._user_locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            if user_id in self._users:
                return self._users[user_id]
            loading = self._loading[user_id] = _Loading(self._generation)
            try:
                vectors = await self._load(user_id)
            finally:
                del self._loading[user_id]
            if (
                loading.in_step
                and loading.generation == self._generation
                and all(_keep_in_step(vectors, change, vector) for change, vector in loading.changes)
            ):
                self._users[user_id] = vectors
            return vectors

    # -- keeping in step ------------------------------------------------------------------------

    async def _load(self, user_id: str) -> UserVectors:
        model = await self.embedder()
        rows = await self.store.fetch(
            "SELECT m.id, m.memory_id, m.memory, m.valid_to IS NOT NULL AS retired, e.model, e.vector FROM memories m"
            " LEFT JOIN embeddings e ON e.memory_rowid = m.id"
            " WHERE m.user_id = ? ORDER BY m.created_at, m.id",
            (user_id,),
        )
        matrix = np.zeros((len(rows), model.dim), dtype=np.float32)
        stale: list[int] = []
        for i, row in enumerate(rows):
            if row["model"] == model.name and row["vector"] is not None:
                matrix[i] = np.frombuffer(row["vector"], dtype="<f4")
            else:
                stale.append(i)
        if stale:
            fresh = await self.embed([rows[i]["memory"] for i in stale])
            matrix[stale] = fresh
            await self._save([(rows[i]["id"], rows[i]["memory"], fresh[j]) for j, i in enumerate(stale)], model)
            log.info("embedded %d memories of user %s that had no current vector", len(stale), user_id)
        questions = {r["memory_id"] for r in rows if is_question(r["memory"])}
        retired = {r["memory_id"] for r in rows if r["retired"]}
        texts = [r["memory"] for r in rows]
        return UserVectors.build([r["memory_id"] for r in rows], matrix, questions, retired, texts)

    async def _save(self, vectors: list[tuple[int, str, np.ndarray]], model: Embedder) -> None:
        """Store `(memory row id, the text embedded, its vector)`s. A vector is kept only while its
        memory still has that text: a change made meanwhile (by this process or another) deleted
        the memory's old vector (Store._update), and its new text is embedded on its own."""
        if not vectors:
            return
        async with self.store.transaction() as db:
            await db.executemany(
                "INSERT INTO embeddings (memory_rowid, model, dim, vector)"
                " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM memories WHERE id = ? AND memory = ?)"
                " ON CONFLICT (memory_rowid) DO UPDATE SET model = excluded.model, dim = excluded.dim, vector = excluded.vector",
                [(rowid, model.name, model.dim, vec.astype("<f4").tobytes(), rowid, text) for rowid, text, vec in vectors],
            )

    async def _on_commit(self, changes: list[Changed]) -> None:
        """Queue what a transaction changed; the write returns without waiting for the model.

        A background task embeds the queue in groups of up to EMBED_BATCH (one trip to a worker
        thread and one save transaction per group, while adds go on) and updates the loaded
        matrices, in commit order. Searches wait for it (`settled`).
        """
        self._pending.extend(changes)
        self._settled.clear()
        if self._worker is None or self._worker.done():
            # A fresh context: the worker outlives the call that started it, and must not carry
            # that call's deadline (memory/deadline.py) or identity.
            self._worker = asyncio.create_task(
                self._embed_pending(), name="memoir-embed", context=contextvars.Context()
            )

    async def _embed_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:EMBED_BATCH], self._pending[EMBED_BATCH:]
                try:
                    await self._apply(batch)
                except Exception as exc:  # noqa: BLE001 - the memories are committed; vectors can wait
                    # Nothing is lost: the loaded matrices of these users are dropped, and their
                    # memories without a current vector are embedded when the users are next searched.
                    log.warning("could not embed %d changed memories now (%s); they will be embedded on demand",
                                len(batch), exc)
                    for change in batch:
                        self._users.pop(change.user_id, None)
                        if change.user_id in self._loading:
                            self._loading[change.user_id].in_step = False
        finally:
            self._settled.set()

    async def _apply(self, changes: list[Changed]) -> None:
        written = [c for c in changes if c.text is not None and c.retired is None]  # a new text to embed
        vectors_by_id: dict[str, np.ndarray] = {}
        if written:
            model = await self.embedder()
            fresh = await self.embed([c.text for c in written])  # type: ignore[misc]
            rowids = await self.store.rowids([c.memory_id for c in written])
            await self._save(
                [(rowids[c.memory_id], c.text, fresh[i]) for i, c in enumerate(written) if c.memory_id in rowids], model
            )
            vectors_by_id = {c.memory_id: fresh[i] for i, c in enumerate(written)}
        # No await from here on: a matrix cannot be installed between these checks.
        for change in changes:
            vector = vectors_by_id.get(change.memory_id)
            loading = self._loading.get(change.user_id)
            if loading is not None:  # its rows may have been read before this change: replayed after
                loading.changes.append((change, vector))
                continue
            loaded = self._users.get(change.user_id)
            if loaded is not None and not _keep_in_step(loaded, change, vector):
                self._users.pop(change.user_id, None)

    async def _notice_other_writers(self) -> None:
        version = await self.store.data_version()
        if self._data_version is not None and version != self._data_version:
            log.info("the database was changed by another process; reloading vectors")
            self._users.clear()
            self._generation += 1  # and a load under way may have read before that write
        self._data_version = version
