"""Read-only views of the memory as MCP resources.

On a trusted connection (stdio, open loopback) any user may be read; on an authenticated one
only the token's user - another user's memory reads as not found, never as forbidden.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import Context
from mcp_types import Resource
from mcp.server.mcpserver.exceptions import ResourceNotFoundError

from memoir.memory.errors import InvalidArgument
from memoir.memory.limits import parse_time
from memoir.memory.store import Filters

from .context import app_context

# A resource has no paging, so the user listing is capped; list_memories pages through the rest.
USER_MEMORIES_CAP = 1_000


async def user_memories(
    user_id: str, ctx: Context, as_of: str | None = None, include_superseded: str | None = None
) -> str:
    """What is remembered about one user (the newest 1,000), as JSON: the current memories, or
    with `?as_of=ISO-8601` those valid then, or with `?include_superseded=true` both."""
    app = app_context(ctx)
    try:
        app.limits.user_id(user_id)
        filters = Filters(as_of=parse_time(as_of, "as_of"), include_superseded=_flag(include_superseded))
    except InvalidArgument as exc:
        raise ResourceNotFoundError(str(exc)) from None
    if not app.may_read(user_id):
        return json.dumps({"user_id": user_id, "memories": [], "truncated": False})
    page = await app.store.list(user_id, limit=USER_MEMORIES_CAP, filters=filters)
    return json.dumps(
        {
            "user_id": user_id,
            "memories": [m.model_dump() for m in page.memories],
            "truncated": page.next_cursor is not None,
        }
    )


def _flag(value: str | None) -> bool:
    if value is None or value.lower() in ("false", "0", ""):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise InvalidArgument("include_superseded", f"{value!r} is not true or false")


async def memory(memory_id: str, ctx: Context) -> str:
    """One memory, as JSON."""
    app = app_context(ctx)
    found = await app.store.find(memory_id)
    if found is None or not app.may_read(found.user_id):
        raise ResourceNotFoundError(f"no memory '{memory_id}'")
    return found.model_dump_json()


async def memory_history(memory_id: str, ctx: Context) -> str:
    """Every recorded change of one memory, oldest first: operation, before, after, actor, reason, time.

    Only one user's events: on an authenticated connection the token's user's (another user's
    memory has no history for it), on a trusted one the owner's (`Store.history`).
    """
    app = app_context(ctx)
    caller = app.caller()
    events = await app.store.history(memory_id, user_id=None if caller.trusted else caller.user_id)
    if not events:
        raise ResourceNotFoundError(f"no history for memory '{memory_id}'")
    return json.dumps({"memory_id": memory_id, "events": [e.model_dump() for e in events]})


def own_memories(app) -> list[Resource]:  # app: AppContext
    """What `resources/list` offers besides the templates: the caller's own memories (the
    token's user on an authenticated connection, else the configured user), so a host's
    resource picker has something to show."""
    from memoir.memory.errors import MemoirError

    try:
        caller = app.caller()
    except MemoirError:  # no verified identity on this request: list nothing of anyone's
        return []
    user_id = caller.user_id or app.default_user_id
    return [
        Resource(
            uri=f"memoir://users/{user_id}/memories",
            name="memories",
            title=f"What memoir remembers about {user_id}",
            description="The current memories of this user, newest first (at most 1,000), as JSON.",
            mime_type="application/json",
        )
    ]
