"""What the domain hands out: memories, search hits, history events, pages."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Operation = Literal["add", "update", "delete", "clear", "restore"]
Actor = Literal["tool", "cli", "extraction", "undo", "import"]


class Memory(BaseModel):
    """One fact about a user, as stored."""

    memory_id: str = Field(description="Opaque id made by the server; pass it to update_memory or delete_memory.")
    user_id: str
    memory: str = Field(description="The fact, in one or two sentences.")
    topics: list[str] = Field(default_factory=list)
    input: str | None = Field(default=None, description="The text the memory came from, when known.")
    agent_id: str | None = None
    created_at: str = Field(description="UTC, ISO-8601.")
    updated_at: str = Field(description="UTC, ISO-8601.")


class ScoredMemory(Memory):
    """A memory found by a search; higher scores rank first (the scale depends on the method)."""

    score: float


class HistoryEvent(BaseModel):
    """One recorded change of one memory."""

    event_id: int
    memory_id: str
    user_id: str
    operation: Operation
    before: Memory | None = None
    after: Memory | None = None
    actor: Actor
    reason: str | None = None
    source: str | None = Field(default=None, description="What prompted the change (e.g. the extracted messages).")
    undoes: int | None = Field(default=None, description="The event this one reverted, for undo events.")
    created_at: str


class MemoryPage(BaseModel):
    memories: list[Memory]
    next_cursor: str | None = None
