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
from memoir.memory.retrieval import Method
from memoir.memory.store import Filters

from . import sampling
from .context import AppContext, app_context, tool_errors
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


def _filters(app: AppContext, topics: list[str] | None, after: str | None, before: str | None) -> Filters:
    return Filters(
        topics=tuple(app.limits.topics(topics or [])),
        created_after=parse_time(after, "created_after"),
        created_before=parse_time(before, "created_before"),
    )


@tool_errors  # the SDK runs resolvers before the handler, outside its own `tool_errors`
async def _judge_with_client_model(
    ctx: Context,
    query: QueryArg = None,
    user_id: UserId = None,
    limit: LimitArg = 10,
    retrieval_method: MethodArg = None,
    topics: TopicFilter = None,
    created_after: AfterArg = None,
    created_before: BeforeArg = None,
) -> Sample | None:
    """For `agentic` without an API key: ask the client's model to judge the candidates."""
    app = app_context(ctx)
    if retrieval_method != "agentic":
        return None
    query, _, limit = app.retriever.check(query, retrieval_method, limit)
    if not sampling.needs_sampling(app, ctx):
        return None
    request = await app.judge.prepare(
        app.user(user_id), query or "", limit, _filters(app, topics, created_after, created_before)
    )
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
) -> SearchResult:
    """Search the user's memories. Call it before answering anything that depends on who the
    user is, what they like or what they told you before.

    The default finds memories by meaning as well as by words, so "Is the user a morning
    person?" finds "Ava wakes at 5 am every day". A query of only common words ("the",
    "what is") finds nothing. Each result carries a score: higher is better, and its scale
    depends on the method.

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
        if isinstance(sampled, types.CreateMessageResult):
            request = await app.judge.prepare(user, query or "", limit, filters)
            chosen, _ = sampling.tool_input(sampled, request.tool)
            results, method = app.judge.settle(request, chosen)
        else:
            sampling.needs_sampling(app, ctx)
            results, method = await app.judge.search(user, query or "", limit, app.llm, filters)  # type: ignore[arg-type]
        return SearchResult(results=results, retrieval_method=method)
    outcome = await app.retriever.search(user, query, method=retrieval_method, limit=limit, filters=filters)
    return SearchResult(results=outcome.results, retrieval_method=outcome.retrieval_method)
