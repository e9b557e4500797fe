"""add_memory: remember one fact about the user."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.models import Memory
from memoir.memory.store import Change

from .context import app_context
from .fields import Topics, UserId

ANNOTATIONS = ToolAnnotations(
    title="Add a memory", read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)


async def add_memory(
    memory: Annotated[
        str, Field(description="The fact to remember, as one short sentence about the user (1-2,000 characters).")
    ],
    ctx: Context,
    topics: Topics = [],
    user_id: UserId = None,
) -> Memory:
    """Remember one fact about the user, for later conversations.

    Use it when the user shares something lasting about themselves: who they are, what they
    like, their plans, people and places in their life. Store one fact per memory, phrased
    on its own ("Ava lives in San Francisco", not "lives there"). Search first: if a memory
    on the same subject exists, call update_memory on it instead of adding a near-duplicate.

    Examples:
      add_memory(memory="Ava likes to ski", topics=["hobbies", "sports"])
      add_memory(memory="Ava is allergic to peanuts", topics=["health", "food"])

    Returns the stored memory with its memory_id.
    """
    app = app_context(ctx)
    return await app.store.add(app.user(user_id), memory, topics, change=Change(actor="tool"))
