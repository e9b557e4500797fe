"""add_memory: remember one fact about the user."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from memoir.memory.models import Memory
from memoir.memory.store import Change

from .context import app_context
from .fields import Topics, UserId, ValidFrom

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
    supersedes: Annotated[
        str | None,
        Field(
            description="The memory_id of the user's current memory that this one replaces because the world "
            "changed (she moved, changed jobs). That memory is kept as history: it stops being current at this "
            "one's valid_from."
        ),
    ] = None,
    valid_from: ValidFrom = None,
) -> Memory:
    """Remember one fact about the user, for later conversations.

    Use it when the user shares something lasting about themselves: who they are, what they
    like, their plans, people and places in their life. Store one fact per memory, phrased
    on its own ("Ava lives in San Francisco", not "lives there"). Search first: if a memory
    on the same subject exists, do not add a near-duplicate:
    - the world changed (Ava moved, changed jobs, broke up): add the new fact with
      supersedes=<the old memory_id>. The old memory stays as history (valid until the new
      one's valid_from) and searches stop returning it unless asked for as_of a past time;
    - the old memory was wrong or imprecise (a typo, a misheard name): update_memory instead.
    valid_from says since when the fact holds, when the user tells you (ISO-8601, e.g.
    '2026-03-01'; default now; not in the future, nor before the memory it supersedes).

    Examples:
      add_memory(memory="Ava likes to ski", topics=["hobbies", "sports"])
      add_memory(memory="Ava is allergic to peanuts", topics=["health", "food"])
      add_memory(memory="Ava lives in Denver", topics=["home"], supersedes="3f9a1c2b7d4e", valid_from="2026-03-01")

    Returns the stored memory with its memory_id and valid_from.
    """
    app = app_context(ctx)
    return await app.store.add(
        app.user(user_id), memory, topics, change=Change(actor="tool"), supersedes=supersedes, valid_from=valid_from
    )
