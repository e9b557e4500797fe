"""delete_memory: forget one memory."""

from __future__ import annotations

from typing import Literal

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations

from memoir.memory.models import PlainSchema
from memoir.memory.store import Change

from .context import app_context
from .fields import MemoryId, UserId

ANNOTATIONS = ToolAnnotations(
    title="Delete a memory", read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
)


class Deleted(PlainSchema):
    memory_id: str
    deleted: Literal[True] = True


async def delete_memory(memory_id: MemoryId, ctx: Context, user_id: UserId = None) -> Deleted:
    """Delete one memory, e.g. when the user asks you to forget something or a fact is no longer true.

    Deleting an id that does not exist (or was already deleted) is an error. The deletion is
    recorded in the memory's history, so an operator can undo it. Deleting a memory that
    superseded another makes that other one current again (undone together with the deletion).
    When a fact merely stopped being true, prefer add_memory(..., supersedes=...) with the new
    fact: the old one stays as history.

    Example:
      delete_memory(memory_id="3f9a1c2b7d4e")
    """
    app = app_context(ctx)
    await app.store.delete(app.user(user_id), memory_id, change=Change())
    return Deleted(memory_id=memory_id)
