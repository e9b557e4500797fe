"""search_memories: find what is known about the user."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from memoir.memory.limits import parse_time
from memoir.memory.models import ScoredMemory
from memoir.memory.retrieval import Method
from memoir.memory.store import Filters

from .context import app_context
from .fields import TopicFilter, UserId

ANNOTATIONS = ToolAnnotations(
    title="Search memories", read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


class SearchResult(BaseModel):
    results: list[ScoredMemory]
    retrieval_method: str = Field(description="The method that actually ran.")


async def search_memories(
    ctx: Context,
    query: Annotated[
        str | None, Field(description="What you want to know, in plain words (up to 1,000 characters).")
    ] = None,
    user_id: UserId = None,
    limit: Annotated[int, Field(description="How many memories at most, 1-100.")] = 10,
    retrieval_method: Annotated[
        Method | None,
        Field(
            description="'keyword' ranks by shared words (BM25); 'last_n' / 'first_n' return the newest / "
            "oldest memories and ignore the query. Default: 'keyword' with a query, 'last_n' without."
        ),
    ] = None,
    topics: TopicFilter = None,
    created_after: Annotated[
        str | None, Field(description="Only memories created at or after this ISO-8601 date/time.")
    ] = None,
    created_before: Annotated[
        str | None, Field(description="Only memories created before this ISO-8601 date/time.")
    ] = None,
) -> SearchResult:
    """Search the user's memories. Call it before answering anything that depends on who the
    user is, what they like or what they told you before.

    A query of only common words ("the", "what is") finds nothing. Each result carries a
    score (higher is better; its scale depends on the method).

    Examples:
      search_memories(query="where does the user live")
      search_memories(query="sports", topics=["hobbies"], limit=5)
      search_memories(retrieval_method="last_n", limit=3)
    """
    app = app_context(ctx)
    filters = Filters(
        topics=tuple(app.limits.topics(topics or [])),
        created_after=parse_time(created_after, "created_after"),
        created_before=parse_time(created_before, "created_before"),
    )
    outcome = await app.retriever.search(
        app.user(user_id), query, method=retrieval_method, limit=limit, filters=filters
    )
    return SearchResult(results=outcome.results, retrieval_method=outcome.retrieval_method)
