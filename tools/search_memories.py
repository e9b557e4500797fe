"""search_memories: find what is known about the user."""

from __future__ import annotations

from typing import Annotated, Any

import mcp.types as types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.limits import parse_time
from memoir.memory.models import PlainSchema, ScoredMemory
from memoir.memory.ranking import DEFAULT_MIN_RELEVANCE
from memoir.memory.retrieval import Method
from memoir.memory.store import Filters

from . import sampling
from .context import AppContext, app_context
from .fields import TopicFilter, UserId

ANNOTATIONS = ToolAnnotations(
    title="Search memories", read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


class SearchResult(PlainSchema):
    results: list[ScoredMemory]
    retrieval_method: str = Field(description="The method that actually ran.")


QueryArg = Annotated[str | None, Field(description="What you want to know, in plain words (up to 1,000 characters).")]
LimitArg = Annotated[int, Field(description="How many memories at most, 1-100.")]
MethodArg = Annotated[
    Method | None,
    Field(
        description="'hybrid' (default with a query): meaning and shared words combined; 'semantic': meaning "
        "only; 'keyword': shared words only (BM25); 'agentic': an LLM judges the best hybrid candidates "
        "(slower, costs a model call); 'last_n' / 'first_n' (default without a query): the newest / oldest "
        "memories, ignoring the query."
    ),
]
AfterArg = Annotated[str | None, Field(description="Only memories created at or after this ISO-8601 date/time.")]
BeforeArg = Annotated[str | None, Field(description="Only memories created before this ISO-8601 date/time.")]
MinRelevanceArg = Annotated[
    float | None,
    Field(
        description="Drop results whose relevance (0-1, how likely a memory is about the query) is below this. "
        f"Default {DEFAULT_MIN_RELEVANCE}: an unrelated query finds nothing. 0 keeps every result (best guesses). "
        "Not used by last_n / first_n."
    ),
]


def _filters(app: AppContext, topics: list[str] | None, after: str | None, before: str | None) -> Filters:
    return Filters(
        topics=tuple(app.limits.topics(topics or [])),
        created_after=parse_time(after, "created_after"),
        created_before=parse_time(before, "created_before"),
    )


async def _judge_with_client_model(
    ctx: Context,
    query: QueryArg = None,
    user_id: UserId = None,
    limit: LimitArg = 10,
    retrieval_method: MethodArg = None,
    topics: TopicFilter = None,
    created_after: AfterArg = None,
    created_before: BeforeArg = None,
    min_relevance: MinRelevanceArg = None,
) -> Sample | None:
    """For `agentic` without an API key: ask the client's model to judge the candidates."""
    app = app_context(ctx)
    if retrieval_method != "agentic":
        return None
    query, _, limit = app.retriever.check(query, retrieval_method, limit)
    app.retriever.check_min_relevance(min_relevance)
    if not sampling.needs_sampling(app, ctx):
        return None
    request = await app.judge.prepare(
        app.user(user_id), query or "", limit, _filters(app, topics, created_after, created_before), min_relevance
    )
    if not request.candidates:
        return None  # nothing passed min_relevance: no question for the client's model
    return sampling.sample(request.system, request.messages, request.tool, app.judge.max_tokens)


async def search_memories(
    ctx: Context,
    sampled: Annotated[Any, Resolve(_judge_with_client_model)],
    query: QueryArg = None,
    user_id: UserId = None,
    limit: LimitArg = 10,
    retrieval_method: MethodArg = None,
    topics: TopicFilter = None,
    created_after: AfterArg = None,
    created_before: BeforeArg = None,
    min_relevance: MinRelevanceArg = None,
) -> SearchResult:
    """Search the user's memories. Call it before answering anything that depends on who the
    user is, what they like or what they told you before.

    The default finds memories by meaning as well as by words, so "Is the user a morning
    person?" finds "Ava wakes at 5 am every day". A query of only common words ("the",
    "what is") finds nothing. Each result carries a score (higher is better; its scale depends
    on the method) and a relevance from 0 to 1 that means the same for every query: results
    under min_relevance (default 0.3) are left out, so a query about something the user never
    mentioned returns nothing. If you expected a match, search again with min_relevance=0 to
    see the best guesses.

    Examples:
      search_memories(query="where does the user live")
      search_memories(query="sports", topics=["hobbies"], limit=5)
      search_memories(retrieval_method="last_n", limit=3)
      search_memories(query="what should I cook for Ava", retrieval_method="agentic")
    """
    app = app_context(ctx)
    user = app.user(user_id)
    filters = _filters(app, topics, created_after, created_before)
    if retrieval_method == "agentic":
        query, _, limit = app.retriever.check(query, retrieval_method, limit)
        app.retriever.check_min_relevance(min_relevance)
        if isinstance(sampled, types.CreateMessageResult):
            request = await app.judge.prepare(user, query or "", limit, filters, min_relevance)
            chosen, _ = sampling.tool_input(sampled, request.tool)
            results, method = app.judge.settle(request, chosen)
        else:
            sampling.needs_sampling(app, ctx)
            results, method = await app.judge.search(user, query or "", limit, app.llm, filters, min_relevance)  # type: ignore[arg-type]
        return SearchResult(results=results, retrieval_method=method)
    outcome = await app.retriever.search(
        user, query, method=retrieval_method, limit=limit, filters=filters, min_relevance=min_relevance
    )
    return SearchResult(results=outcome.results, retrieval_method=outcome.retrieval_method)
