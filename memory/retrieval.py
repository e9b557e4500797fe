"""Choosing and running a retrieval method for `search_memories`.

- `keyword`: BM25 over text and topics, with the user's own statistics (memory/keyword_index.py).
- `semantic`: cosine similarity of local embeddings (memory/vectors.py).
- `hybrid`: both, fused by memory/ranking.py (score blend + timeline neighbours, recency as the
  tie-break). The default with a query. Without embeddings it runs `keyword` and says so.
- `agentic`: hybrid candidates (at most `AGENTIC_CANDIDATES`) judged by an LLM (memory/judge.py).
- `last_n` / `first_n`: by time; the default without a query.

The result always names the method that actually ran. Each result of a method with a query
carries `relevance` in [0, 1] (memory/ranking.py: fitted from the raw cosine and the share of
the query's words the memory holds); results under `min_relevance` (default
`DEFAULT_MIN_RELEVANCE`, 0 turns it off) are dropped, so an unrelated query finds nothing.
`last_n` / `first_n` have no query: their relevance is null and `min_relevance` does not apply.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidArgument, MethodUnavailable
from .models import ScoredMemory
from .ranking import CANDIDATES, DEFAULT_MIN_RELEVANCE, coverage, fuse, query_terms, relevance, term_weight
from .store import Filters, Store
from .vectors import VectorIndex

Method = Literal["hybrid", "keyword", "semantic", "agentic", "last_n", "first_n"]
METHODS: tuple[Method, ...] = ("hybrid", "keyword", "semantic", "agentic", "last_n", "first_n")

EMBEDDINGS_OFF = (
    "semantic search needs embeddings, which are off on this server: unset MEMOIR_EMBEDDINGS=off "
    "(and install memoir-mcp with its default dependencies), or use retrieval_method 'keyword'"
)


@dataclass
class SearchOutcome:
    results: list[ScoredMemory]
    retrieval_method: str


#: Hybrid candidates whose relevance is worked out together (their neighbours' words in one read).
_RELEVANCE_BATCH = 50


class Retriever:
    def __init__(self, store: Store, vectors: VectorIndex | None = None) -> None:
        self.store = store
        self.vectors = vectors

    def check(
        self, query: str | None, method: Method | None, limit: int
    ) -> tuple[str | None, Method, int]:
        """Validate the arguments; return the query (None if blank), the method to run, the limit."""
        limits = self.store.limits
        limit = limits.limit(limit, limits.search_limit_max)
        if query is not None:
            query = limits.query(query)
            if not query.strip():
                query = None
        if method is None:
            method = "hybrid" if query is not None else "last_n"
        if method not in METHODS:
            raise InvalidArgument("retrieval_method", f"must be one of {', '.join(METHODS)}")
        if method not in ("last_n", "first_n") and query is None:
            raise InvalidArgument(
                "query", f"is required for retrieval_method '{method}'; give a query, or use 'last_n' / 'first_n'"
            )
        if method == "semantic" and self.vectors is None:
            raise MethodUnavailable(EMBEDDINGS_OFF)
        return query, method, limit

    @staticmethod
    def check_min_relevance(min_relevance: float | None) -> float:
        """The threshold to apply: `DEFAULT_MIN_RELEVANCE` for None, else a number from 0 to 1."""
        if min_relevance is None:
            return DEFAULT_MIN_RELEVANCE
        if (
            isinstance(min_relevance, bool)
            or not isinstance(min_relevance, (int, float))
            or not math.isfinite(min_relevance)
            or not 0 <= min_relevance <= 1
        ):
            raise InvalidArgument(
                "min_relevance",
                f"must be a number from 0 to 1, got {min_relevance!r}; leave it out for the default "
                f"{DEFAULT_MIN_RELEVANCE}, or pass 0 to keep every result",
            )
        return float(min_relevance)

    async def search(
        self,
        user_id: str,
        query: str | None,
        *,
        method: Method | None = None,
        limit: int = 10,
        filters: Filters = Filters(),
        min_relevance: float | None = None,
    ) -> SearchOutcome:
        """Run any method but `agentic` (which needs a model: see `candidates` and memory/judge.py).

        `min_relevance`: None for `DEFAULT_MIN_RELEVANCE`; 0 keeps every result."""
        query, method, limit = self.check(query, method, limit)
        threshold = self.check_min_relevance(min_relevance)
        if method == "agentic":
            # The search tool and the CLI send `agentic` to the judge, which needs a model.
            raise MethodUnavailable(
                "retrieval_method 'agentic' needs a model: set ANTHROPIC_API_KEY, or search through an MCP client "
                "that supports sampling"
            )
        if method in ("last_n", "first_n"):
            results = await self.store.by_time(user_id, newest_first=method == "last_n", limit=limit, filters=filters)
            return SearchOutcome(results, method)
        assert query is not None
        if not query_terms(query):  # only stop words: nothing to look for, by any method
            return SearchOutcome([], method if self.vectors is not None or method != "hybrid" else "keyword")
        if method == "keyword" or (method == "hybrid" and self.vectors is None):
            # Without embeddings hybrid is keyword, and the result says so.
            return SearchOutcome(await self._keyword(user_id, query, limit, filters, threshold), "keyword")
        if method == "semantic":
            return SearchOutcome(await self._semantic(user_id, query, limit, filters, threshold), "semantic")
        return SearchOutcome(await self._hybrid(user_id, query, limit, filters, threshold), "hybrid")

    async def candidates(
        self, user_id: str, query: str, k: int, filters: Filters = Filters(), min_relevance: float | None = 0.0
    ) -> list[ScoredMemory]:
        """The best `k` memories by the default method (hybrid, or keyword without embeddings).

        Every candidate by default (`min_relevance` 0): extraction shows the model the user's
        nearest memories, related or not, so that it can tell a new fact from a changed one."""
        outcome = await self.search(user_id, query, method="hybrid", limit=k, filters=filters, min_relevance=min_relevance)
        return outcome.results

    async def related(self, user_id: str, texts: Sequence[str], k: int) -> list[ScoredMemory]:
        """Memories related to any of `texts` (each searched on its own; a memory keeps its best rank)."""
        best: dict[str, tuple[int, ScoredMemory]] = {}
        cap = self.store.limits.query_max_chars
        for text in texts:
            query = text[-cap:]
            if not query_terms(query) and self.vectors is None:
                continue
            for rank, hit in enumerate(await self.candidates(user_id, query, k)):
                if hit.memory_id not in best or rank < best[hit.memory_id][0]:
                    best[hit.memory_id] = (rank, hit)
        ordered = sorted(best.values(), key=lambda pair: (pair[0], pair[1].memory_id))
        return [hit for _, hit in ordered[:k]]

    # -- the methods -------------------------------------------------------------------------

    async def _keyword(
        self, user_id: str, query: str, limit: int, filters: Filters, threshold: float
    ) -> list[ScoredMemory]:
        found = await self.store.keyword(user_id, query, limit=limit, filters=filters)
        covered = await self._coverage(user_id, query, [m.memory_id for m in found])
        for m in found:
            m.relevance = relevance(coverage=covered.get(m.memory_id, 0.0))
        return [m for m in found if m.relevance is not None and m.relevance >= threshold]

    async def _semantic(
        self, user_id: str, query: str, limit: int, filters: Filters, threshold: float
    ) -> list[ScoredMemory]:
        assert self.vectors is not None
        # The raw cosine: centred, as hybrid's semantic list, it would lose 3.6 points of hit@5 on
        # LoCoMo turns for 2.0 on the facts (memory/ranking.py, "third round").
        hits, _, _ = await self.vectors.search(user_id, query, limit, filters)
        rel = {m: relevance(cosine=cos) for m, cos in hits}
        return await self._rows(user_id, [(m, s) for m, s in hits if rel[m] >= threshold], rel)

    async def _hybrid(
        self, user_id: str, query: str, limit: int, filters: Filters, threshold: float
    ) -> list[ScoredMemory]:
        assert self.vectors is not None
        # The model embeds the query in its own thread while the database ranks the keyword side.
        # The user's vectors come first: their one query (has another process written?) is then
        # not queued behind the keyword ranking on a PostgreSQL store's reader (bench/README.md).
        # That side's respellings (memory/spelling.py) need the user's vocabulary, and fusion's
        # subject signal the user's names (memory/subjects.py): both are kept with the vectors.
        embedding = asyncio.ensure_future(self.vectors.embed([query]))
        try:
            timeline = await self.vectors.user_vectors(user_id)
            respelled = timeline.respelled(query)
            keyword = await self.store.keyword_ranked(
                user_id, query, limit=CANDIDATES, filters=filters, respelled=respelled
            )
        except BaseException:
            embedding.cancel()
            embedding.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: no warning
            raise
        query_vector = (await embedding)[0]
        # Hybrid's semantic list ranks by the centred cosine (memory/ranking.py, "third round").
        semantic = await self.vectors.nearest(user_id, timeline, query_vector, CANDIDATES, filters, centred=True)
        # Timeline position orders memories as created_at does, and covers both lists; only the
        # candidates need a key (the user may have 100,000 memories).
        position = timeline.position()
        candidates = {m for m, _ in keyword}.union(m for m, _ in semantic)
        recency = {m: f"{position[m]:012d}" for m in candidates if m in position}
        others = timeline.about_others(candidates, timeline.query_names(query))
        fused = fuse(keyword, semantic, recency, position=position, questions=timeline.questions, about_others=others)
        # Relevance: the raw cosine of every candidate, the words held by the keyword hits
        # (coverage 0 for the others, as in the fit) and by each one's timeline neighbours (see
        # memory/ranking.py). Neighbours' words are counted a batch of candidates at a time: a
        # search usually stops within the first.
        in_list = {m for m, _ in keyword}
        covered: dict[str, float] = {}
        rel: dict[str, float] = {}
        kept: list[tuple[str, float]] = []
        for start in range(0, len(fused), _RELEVANCE_BATCH):
            batch = fused[start : start + _RELEVANCE_BATCH]
            beside = {m: timeline.neighbours(m) for m, _ in batch}
            # The first batch's read also takes the keyword hits' own words: one trip.
            uncounted = sorted(({n for ns in beside.values() for n in ns} | (in_list if not start else set())) - covered.keys())
            covered.update(dict.fromkeys(uncounted, 0.0) | await self._coverage(user_id, query, uncounted, respelled))
            for m, score in batch:
                rel[m] = relevance(
                    cosine=timeline.cosine(m, query_vector),  # the raw cosine (the list ranks by the centred one)
                    coverage=covered.get(m, 0.0) if m in in_list else 0.0,
                    neighbour_coverage=max((covered[n] for n in beside[m]), default=0.0),
                )
                if rel[m] >= threshold:
                    kept.append((m, score))
                    if len(kept) == limit:
                        return await self._rows(user_id, kept, rel)
        return await self._rows(user_id, kept, rel)

    async def _coverage(
        self, user_id: str, query: str, memory_ids: Sequence[str], respelled: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, float]:
        """Each memory's share of the query words' weight (memory/ranking.py `coverage`); a
        misspelt word counts as the words the keyword side read it as (`respelled`)."""
        terms = query_terms(query)
        if not memory_ids or not terms:
            return {}
        size, counts, held = await self.store.term_matches(user_id, terms, memory_ids, respelled)
        weights = {t: term_weight(counts.get(t, 0), size) for t in terms}
        return {m: coverage(weights, words) for m, words in held.items()}

    async def _rows(
        self, user_id: str, ranked: Sequence[tuple[str, float]], rel: dict[str, float]
    ) -> list[ScoredMemory]:
        """The memories of `ranked` ids, in that order, with its scores and `rel`evance (ids
        deleted meanwhile are left out)."""
        found = await self.store.scored(user_id, [(m, round(float(score), 6)) for m, score in ranked])
        for m in found:
            m.relevance = rel.get(m.memory_id)
        return found
