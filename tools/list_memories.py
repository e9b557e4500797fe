"""list_memories: page through everything remembered about the user."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.limits import parse_time
from memoir.memory.models import MemoryPage
from memoir.memory.store import Filters

from .context import app_context
from .fields import AsOf, IncludeSuperseded, TopicFilter, UserId

ANNOTATIONS = ToolAnnotations(
    title="List memories", read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)


async def list_memories(
    ctx: Context,
    user_id: UserId = None,
    topics: TopicFilter = None,
    limit: Annotated[int, Field(description="Memories per page, 1-100.")] = 20,
    cursor: Annotated[
        str | None, Field(description="next_cursor from the previous page; omit it for the first page.")
    ] = None,
    as_of: AsOf = None,
    include_superseded: IncludeSuperseded = False,
) -> MemoryPage:
    """List the user's current memories, newest first, a page at a time.

    When next_cursor is not null, call again with cursor=next_cursor (and the same other
    arguments) for the next page. Memories superseded by a newer fact are left out; as_of
    lists what was valid at that moment instead, include_superseded=true lists both. Each
    memory carries valid_from; a superseded one also valid_to and superseded_by (absent on
    current memories).

    Examples:
      list_memories()
      list_memories(topics=["work"], limit=50)
      list_memories(include_superseded=True)
      list_memories(as_of="2025-12-31")
    """
    app = app_context(ctx)
    user = app.user(user_id)
    limit = app.limits.limit(limit, app.limits.list_limit_max)
    filters = Filters(
        topics=tuple(app.limits.topics(topics or [])),
        as_of=parse_time(as_of, "as_of"),
        include_superseded=include_superseded,
    )
    return await app.store.list(user, limit=limit, cursor=cursor, filters=filters)
