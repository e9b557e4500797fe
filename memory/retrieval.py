"""Choosing and running a retrieval method for `search_memories`.

Methods: `keyword` (FTS5 BM25), `last_n` / `first_n` (by time). The default is `keyword` with
a query and `last_n` without. The result always says which method actually ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import InvalidArgument
from .models import ScoredMemory
from .store import Filters, Store

Method = Literal["keyword", "last_n", "first_n"]
METHODS: tuple[Method, ...] = ("keyword", "last_n", "first_n")


@dataclass
class SearchOutcome:
    results: list[ScoredMemory]
    retrieval_method: str


class Retriever:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def search(
        self,
        user_id: str,
        query: str | None,
        *,
        method: Method | None = None,
        limit: int = 10,
        filters: Filters = Filters(),
    ) -> SearchOutcome:
        limits = self.store.limits
        limit = limits.limit(limit, limits.search_limit_max)
        if query is not None:
            query = limits.query(query)
            if not query.strip():
                query = None
        if method is None:
            method = "keyword" if query is not None else "last_n"
        if method in ("last_n", "first_n"):
            results = await self.store.by_time(user_id, newest_first=method == "last_n", limit=limit, filters=filters)
            return SearchOutcome(results, method)
        if query is None:
            raise InvalidArgument(
                "query", f"is required for retrieval_method '{method}'; give a query, or use 'last_n' / 'first_n'"
            )
        return SearchOutcome(await self.store.keyword(user_id, query, limit=limit, filters=filters), "keyword")
