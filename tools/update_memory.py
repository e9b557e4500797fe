"""update_memory: change the text or topics of a memory."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.models import Memory
from memoir.memory.store import Change

from .context import app_context
from .fields import MemoryId, UserId

ANNOTATIONS = ToolAnnotations(
    title="Update a memory", read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


async def update_memory(
    memory_id: MemoryId,
    ctx: Context,
    memory: Annotated[str | None, Field(description="The new text, replacing the old one.")] = None,
    topics: Annotated[list[str] | None, Field(description="The new topics, replacing the old ones.")] = None,
    user_id: UserId = None,
) -> Memory:
    """Correct the text and/or the topics of an existing memory; give at least one of them.

    Use it when the memory was wrong or imprecise (a typo, a misheard name, a detail the user
    adds), instead of adding a second memory that contradicts the first: the old text is
    replaced, as if it had never been. When the world changed instead (the user moved, changed
    jobs), keep the old fact as history: add_memory(..., supersedes=<its memory_id>). The
    change is recorded in the memory's history and can be undone.

    Examples:
      update_memory(memory_id="3f9a1c2b7d4e", memory="Ava lives in San Francisco, in the Mission")
      update_memory(memory_id="3f9a1c2b7d4e", topics=["home", "location"])

    Returns the memory after the change.
    """
    app = app_context(ctx)
    return await app.store.update(app.user(user_id), memory_id, memory=memory, topics=topics, change=Change())
