"""Agentic search: an LLM judges which of the best hybrid candidates answer a query.

The model sees at most `candidates` memories (the hybrid top, 50 by default), never the whole
store, so a call's cost is bounded. It answers with the ids it finds relevant, best first; ids
it invents or that belong to nobody in the list are dropped, and the list is cut to the limit.

As in extraction, the work is split in `prepare` and `settle` so that the question can also go
through the client's own model (MCP sampling) in a later protocol round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .llm import LLMBadOutput, LLMProvider, ToolSpec
from .models import ScoredMemory
from .retrieval import Retriever
from .store import Filters

AGENTIC_CANDIDATES = 50
TOOL_NAME = "select_relevant_memories"

SYSTEM_PROMPT = """\
You pick, from a user's stored memories, the ones that help answer a question about that user.
Judge by meaning, not shared words: "Is the user a morning person?" is answered by "wakes at
5 am every day". Return the ids of every relevant memory, most useful first; return an empty
list when none is relevant. Use only ids from the list."""


class Selection(BaseModel):
    memory_ids: list[str] = Field(description="Ids of the relevant memories, most useful first.")


@dataclass
class JudgeRequest:
    system: str
    messages: list[dict[str, Any]]
    tool: ToolSpec
    candidates: list[ScoredMemory]
    limit: int
    candidate_method: str


def tool_spec() -> ToolSpec:
    return ToolSpec(
        name=TOOL_NAME,
        description="Record which memories are relevant to the question, most useful first.",
        input_schema=Selection.model_json_schema(),
    )


class Judge:
    def __init__(self, retriever: Retriever, candidates: int = AGENTIC_CANDIDATES, max_tokens: int = 1_024) -> None:
        self.retriever = retriever
        self.candidates = candidates
        self.max_tokens = max_tokens

    async def search(
        self, user_id: str, query: str, limit: int, provider: LLMProvider, filters: Filters = Filters(),
        min_relevance: float | None = None,
    ) -> tuple[list[ScoredMemory], str]:
        request = await self.prepare(user_id, query, limit, filters, min_relevance)
        if not request.candidates:
            return [], "agentic"
        try:
            reply = await provider.call_tool(
                system=request.system, messages=request.messages, tool=request.tool, max_tokens=self.max_tokens
            )
            tool_input: Any = reply.tool_input
        except LLMBadOutput as exc:
            tool_input = exc.tool_input
        return self.settle(request, tool_input)

    async def prepare(
        self, user_id: str, query: str, limit: int, filters: Filters = Filters(), min_relevance: float | None = None
    ) -> JudgeRequest:
        """The question for the model: the hybrid candidates that pass `min_relevance` (None: the
        default; memory/ranking.py). No candidate, no model call: an unrelated query costs nothing.
        The chosen memories keep their candidates' relevance."""
        found = await self.retriever.search(
            user_id, query, method="hybrid", limit=self.candidates, filters=filters, min_relevance=min_relevance
        )
        candidates = found.results
        listing = "\n".join(
            f"- id={m.memory_id} | {m.memory}" + (f" | topics: {', '.join(m.topics)}" if m.topics else "")
            for m in candidates
        )
        prompt = (
            f"Question: {query}\n\nMemories (id | memory | topics):\n{listing}\n\n"
            f"Call {TOOL_NAME} with the relevant ids, at most {limit}."
        )
        return JudgeRequest(
            SYSTEM_PROMPT, [{"role": "user", "content": prompt}], tool_spec(), candidates, limit, found.retrieval_method
        )

    def settle(self, request: JudgeRequest, tool_input: Any) -> tuple[list[ScoredMemory], str]:
        """The chosen candidates in the model's order, scored 1.0 down, unknown ids dropped; and
        the method that ran.

        An answer that is not a list of ids falls back to the candidates' own order, and the
        method is then reported as the candidates' (a judge only re-ranks: nothing is lost).
        """
        try:
            chosen = Selection.model_validate(tool_input).memory_ids
        except ValidationError:
            return request.candidates[: request.limit], request.candidate_method
        by_id = {m.memory_id: m for m in request.candidates}
        picked: list[ScoredMemory] = []
        for memory_id in chosen:
            memory = by_id.pop(memory_id, None)
            if memory is not None:
                picked.append(memory)
            if len(picked) == request.limit:
                break
        n = len(picked)
        return [m.model_copy(update={"score": round(1.0 - i / max(n, 1), 6)}) for i, m in enumerate(picked)], "agentic"
