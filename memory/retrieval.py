"""Choosing and running a retrieval method for `search_memories`.

- `keyword`: FTS5 BM25 over text and topics (memory/ranking.py builds the safe MATCH).
- `semantic`: cosine similarity of local embeddings (memory/vectors.py).
- `hybrid`: both, fused by memory/ranking.py (score blend + timeline neighbours, recency as the
  tie-break). The default with a query. Without embeddings it runs `keyword` and says so.
- `agentic`: hybrid candidates (at most `AGENTIC_CANDIDATES`) judged by an LLM (memory/judge.py).
- `last_n` / `first_n`: by time; the default without a query.

The result always names the method that actually ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import InvalidArgument, MethodUnavailable
from .models import ScoredMemory
from .ranking import CANDIDATES, build_fts_query, fuse
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

    async def search(
        self,
        user_id: str,
        query: str | None,
        *,
        method: Method | None = None,
        limit: int = 10,
        filters: Filters = Filters(),
    ) -> SearchOutcome:
        """Run any method but `agentic` (which needs a model: see `candidates` and memory/judge.py)."""
        query, method, limit = self.check(query, method, limit)
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
        if build_fts_query(query) is None:  # only stop words: nothing to look for, by any method
            return SearchOutcome([], method if self.vectors is not None or method != "hybrid" else "keyword")
        if method == "keyword" or (method == "hybrid" and self.vectors is None):
            # Without embeddings hybrid is keyword, and the result says so.
            return SearchOutcome(await self.store.keyword(user_id, query, limit=limit, filters=filters), "keyword")
        if method == "semantic":
            return SearchOutcome(await self._semantic(user_id, query, limit, filters), "semantic")
        return SearchOutcome(await self._hybrid(user_id, query, limit, filters), "hybrid")

    async def candidates(
        self, user_id: str, query: str, k: int, filters: Filters = Filters()
    ) -> list[ScoredMemory]:
        """The best `k` memories by the default method (hybrid, or keyword without embeddings)."""
        outcome = await self.search(user_id, query, method="hybrid", limit=k, filters=filters)
        return outcome.results

    async def related(self, user_id: str, texts: Sequence[str], k: int) -> list[ScoredMemory]:
        """Memories related to any of `texts` (each searched on its own; a memory keeps its best rank)."""
        best: dict[str, tuple[int, ScoredMemory]] = {}
        cap = self.store.limits.query_max_chars
        for text in texts:
            query = text[-cap:]
            if build_fts_query(query) is None and self.vectors is None:
                continue
            for rank, hit in enumerate(await self.candidates(user_id, query, k)):
                if hit.memory_id not in best or rank < best[hit.memory_id][0]:
                    best[hit.memory_id] = (rank, hit)
        ordered = sorted(best.values(), key=lambda pair: (pair[0], pair[1].memory_id))
        return [hit for _, hit in ordered[:k]]

    # -- the methods -------------------------------------------------------------------------

    async def _semantic(self, user_id: str, query: str, limit: int, filters: Filters) -> list[ScoredMemory]:
        assert self.vectors is not None
        hits, _ = await self.vectors.search(user_id, query, limit, filters)
        return await self._rows(user_id, hits)

    async def _hybrid(self, user_id: str, query: str, limit: int, filters: Filters) -> list[ScoredMemory]:
        assert self.vectors is not None
        # SQLite and the embedding model each run in a thread of their own: overlap them.
        keyword, (semantic, timeline) = await asyncio.gather(
            self.store.keyword_ranked(user_id, query, limit=CANDIDATES, filters=filters),
            self.vectors.search(user_id, query, CANDIDATES, filters),
        )
        # Timeline position orders memories as created_at does, and covers both lists; only the
        # candidates need a key (the user may have 100,000 memories).
        position = timeline.position()
        candidates = {m for m, _ in keyword}.union(m for m, _ in semantic)
        recency = {m: f"{position[m]:012d}" for m in candidates if m in position}
        fused = fuse(keyword, semantic, recency, position=position, questions=timeline.questions)
        return await self._rows(user_id, fused[:limit])

    async def _rows(self, user_id: str, ranked: Sequence[tuple[str, float]]) -> list[ScoredMemory]:
        """The memories of `ranked` ids, in that order, with its scores (ids deleted meanwhile are left out)."""
        return await self.store.scored(user_id, [(m, round(float(score), 6)) for m, score in ranked])
