"""clear_memories: forget everything about one user."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, ElicitationResult, Resolve
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.errors import InvalidArgument, MemoirError
from memoir.memory.models import PlainSchema
from memoir.memory.store import Change

from . import confirm as asking
from .context import app_context
from .fields import UserId, strict_bool

ANNOTATIONS = ToolAnnotations(
    title="Clear all memories of a user",
    read_only_hint=False,
    destructive_hint=True,
    idempotent_hint=True,
    open_world_hint=False,
)

ConfirmArg = Annotated[
    bool,
    Field(strict=True, description="Must be the JSON boolean true: deleting everything is deliberate."),
    strict_bool("send confirm=true (a JSON boolean) to delete every memory of the user; nothing was deleted"),
]


class Cleared(PlainSchema):
    deleted: int = Field(description="How many memories were deleted.")
    declined: str | None = Field(
        default=None, description="Set when the user was asked and did not agree: nothing was deleted."
    )


async def _ask(ctx: Context, confirm: ConfirmArg = False, user_id: UserId = None) -> Elicit[asking.Confirmation] | None:
    """Ask the human first, when the client can show a question and there is something to delete."""
    if confirm is not True or not asking.can_ask(ctx):
        return None
    app = app_context(ctx)
    try:
        user = app.user(user_id)
        count = await app.store.count(user)
    except MemoirError as exc:
        raise ToolError(str(exc)) from exc
    if count == 0:
        return None
    return Elicit(
        f"Delete all {count} memor{'y' if count == 1 else 'ies'} of user '{user}'? The assistant asked to "
        "forget everything memoir keeps about this user.",
        asking.Confirmation,
    )


async def clear_memories(
    ctx: Context,
    asked: Annotated[ElicitationResult[asking.Confirmation], Resolve(_ask)],
    confirm: ConfirmArg = False,
    user_id: UserId = None,
) -> Cleared:
    """Delete every memory of the user - only when the user clearly asks you to forget
    everything about them. Other users' memories are never touched. When the host can ask the
    user, memoir asks them to confirm first; if they do not, nothing is deleted.

    Example:
      clear_memories(confirm=true)
    """
    if confirm is not True:
        raise InvalidArgument("confirm", "must be true to delete every memory of the user; nothing was deleted")
    app = app_context(ctx)
    user = app.user(user_id)
    refused = asking.answer(asked)
    if refused is not None:
        return Cleared(deleted=0, declined=f"{refused}; nothing was deleted")
    return Cleared(deleted=await app.store.clear(user, change=Change(actor="tool")))
