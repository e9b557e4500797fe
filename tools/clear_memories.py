"""clear_memories: forget everything about one user."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.errors import InvalidArgument
from memoir.memory.models import PlainSchema
from memoir.memory.store import Change

from .context import app_context
from .fields import UserId, strict_bool

ANNOTATIONS = ToolAnnotations(
    title="Clear all memories of a user",
    read_only_hint=False,
    destructive_hint=True,
    idempotent_hint=True,
    open_world_hint=False,
)


class Cleared(PlainSchema):
    deleted: int = Field(description="How many memories were deleted.")


async def clear_memories(
    ctx: Context,
    confirm: Annotated[
        bool,
        Field(strict=True, description="Must be the JSON boolean true: deleting everything is deliberate."),
        strict_bool("send confirm=true (a JSON boolean) to delete every memory of the user; nothing was deleted"),
    ] = False,
    user_id: UserId = None,
) -> Cleared:
    """Delete every memory of the user - only when the user clearly asks you to forget
    everything about them. Other users' memories are never touched.

    Example:
      clear_memories(confirm=true)
    """
    if confirm is not True:
        raise InvalidArgument("confirm", "must be true to delete every memory of the user; nothing was deleted")
    app = app_context(ctx)
    return Cleared(deleted=await app.store.clear(app.user(user_id), change=Change(actor="tool")))
