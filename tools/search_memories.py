"""search_memories: find what is known about the user."""

from __future__ import annotations

from typing import Annotated, Any

import mcp.types as types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.budget import MAX_TOKENS_LIMIT, check_max_tokens, fit
from memoir.memory.limits import parse_time
from memoir.memory.models import PlainSchema, ScoredMemory
from memoir.memory.ranking import DEFAULT_MIN_RELEVANCE
from memoir.memory.retrieval import Method
from memoir.memory.store import Filters

from . import sampling
from .context import AppContext, app_context, tool_errors
from .fields import AsOf, IncludeSuperseded, TopicFilter, UserId

ANNOTATIONS = ToolAnnotations(
    title="Search memories", read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


class SearchResult(PlainSchema):
    results: list[ScoredMemory]
    retrieval_method: str = Field(description="The method that actually ran.")
    tokens: int = Field(
        description="The results' memory text in tokens, counted as max_tokens counts them (see its description)."
    )
    truncated_by_budget: bool = Field(
        default=False, description="True when max_tokens left out results the search found (skipped, never cut)."
    )


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
MaxTokensArg = Annotated[
    int | None,
    Field(
        description=f"A budget for the results' memory text, 1-{MAX_TOKENS_LIMIT:,} tokens: each ASCII character "
        "counts 1/4 token (rounded up per memory), each other character 1. The best results that fit, in rank "
        "order; a memory that does not fit is skipped (never cut) and smaller ones after it may still fit."
    ),
]
MinRelevanceArg = Annotated[
    float | None,
    Field(
        description="Drop results whose relevance (0-1, how likely a memory is about the query) is below this. "
        f"Default {DEFAULT_MIN_RELEVANCE}: an unrelated query finds nothing. 0 keeps every result (best guesses). "
        "Not used by last_n / first_n."
    ),
]


def _filters(
    app: AppContext, topics: list[str] | None, after: str | None, before: str | None,
    as_of: str | None = None, include_superseded: bool = False,
) -> Filters:
    return Filters(
        topics=tuple(app.limits.topics(topics or [])),
        created_after=parse_time(after, "created_after"),
        created_before=parse_time(before, "created_before"),
        as_of=parse_time(as_of, "as_of"),
        include_superseded=include_superseded,
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
    as_of: AsOf = None,
    include_superseded: IncludeSuperseded = False,
    max_tokens: MaxTokensArg = None,
    min_relevance: MinRelevanceArg = None,
) -> Sample | None:
    """For `agentic` without an API key: ask the client's model to judge the candidates."""
    app = app_context(ctx)
    if retrieval_method != "agentic":
        return None
    query, _, limit = app.retriever.check(query, retrieval_method, limit)
    check_max_tokens(max_tokens)
    app.retriever.check_min_relevance(min_relevance)
    filters = _filters(app, topics, created_after, created_before, as_of, include_superseded)
    if not sampling.needs_sampling(app, ctx):
        return None
    request = await app.judge.prepare(app.user(user_id), query or "", limit, filters, min_relevance)
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
    as_of: AsOf = None,
    include_superseded: IncludeSuperseded = False,
    max_tokens: MaxTokensArg = None,
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

    Only current memories are returned: one superseded by a newer fact (add_memory with
    supersedes) is left out. as_of returns what was valid at a past moment instead
    (valid_from <= as_of < valid_to); include_superseded=true returns both. Every result
    carries valid_from; a superseded one also valid_to and superseded_by (absent on current
    memories).

    max_tokens caps the memory text returned, for putting it in a prompt: a memory counts a
    quarter token per ASCII character (rounded up) plus one per other character (accents, CJK,
    emoji); results are taken best first, one that does not fit is skipped whole and smaller
    ones after it may still fit;
    `tokens` is what the results use and `truncated_by_budget` says whether the budget left
    any out. `limit` still caps the number.

    Examples:
      search_memories(query="where does the user live")
      search_memories(query="sports", topics=["hobbies"], limit=5)
      search_memories(retrieval_method="last_n", limit=3)
      search_memories(query="what should I cook for Ava", retrieval_method="agentic")
      search_memories(query="where did Ava live", as_of="2025-06-01")
      search_memories(query="Ava's preferences", max_tokens=300)
    """
    app = app_context(ctx)
    user = app.user(user_id)
    max_tokens = check_max_tokens(max_tokens)
    filters = _filters(app, topics, created_after, created_before, as_of, include_superseded)
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
        return _budgeted(results, method, max_tokens)
    outcome = await app.retriever.search(
        user, query, method=retrieval_method, limit=limit, filters=filters, min_relevance=min_relevance
    )
    return _budgeted(outcome.results, outcome.retrieval_method, max_tokens)


def _budgeted(results: list[ScoredMemory], method: str, max_tokens: int | None) -> SearchResult:
    kept, tokens, cut = fit(results, max_tokens)
    return SearchResult(results=kept, retrieval_method=method, tokens=tokens, truncated_by_budget=cut)
