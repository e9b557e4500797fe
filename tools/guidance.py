"""What the calling model is taught: the server's instructions and the `remember` prompt.

The habit is the seed's agentic memory: the agent itself keeps the memory current.
"""

from __future__ import annotations

from typing import Annotated

import mcp.types as types
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPError
from pydantic import Field

INSTRUCTIONS = """\
memoir is your long-term memory about the user. Keep it current yourself:
- Before answering anything that depends on the user (who they are, what they like, what they
  told you before), call search_memories with a plain-words query.
- When the user shares something lasting about themselves (name, preferences, plans, people,
  places, work, health), call add_memory with one fact per memory, phrased so it stands on its
  own ("Ava lives in San Francisco"), with a few short topics.
- Never add a duplicate; search first to find the existing memory. When the world changed
  (the user moved, changed jobs), call add_memory with the new fact and supersedes=<the old
  memory_id> (and valid_from if they said when): the old fact stays as history. When a memory
  was wrong or imprecise, correct it with update_memory.
- When the user asks you to forget something, call delete_memory; only when they ask you to
  forget everything, clear_memories(confirm=true).
- To let memoir decide what to remember from a whole conversation, hand it to extract_memories
  when that tool is available.
Do not store passing chatter, secrets such as passwords, or facts about other people that the
user did not share as part of their own life.
"""


def instructions(offered: tuple[str, ...] | None = None) -> str:
    """The instructions, told which tools this server offers when the operator chose a subset (MEMOIR_TOOLS)."""
    if offered is None or set(offered) >= {"add_memory", "update_memory", "delete_memory", "search_memories",
                                           "extract_memories", "list_memories", "clear_memories"}:
        return INSTRUCTIONS
    return INSTRUCTIONS + (
        f"On this server the operator offers only: {', '.join(offered)}. Use only those; the others "
        "described above are not available here.\n"
    )


# The topic is echoed into the prompt: bounded, so a call cannot make the server build and send back
# a megabyte of its own text.
TOPIC_MAX_CHARS = 200


def remember(
    conversation_topic: Annotated[str, Field(description="What the conversation is about (optional).")] = "",
) -> list[UserMessage]:
    """How to use memoir's tools to remember the user across conversations."""
    # Checked here, not with Field(max_length=...): the SDK reports a prompt's validation error as
    # a bare "Internal server error", and only an MCPError reaches the client with its text.
    if len(conversation_topic) > TOPIC_MAX_CHARS:
        raise MCPError(
            code=types.INVALID_PARAMS,
            message=f"conversation_topic: is {len(conversation_topic):,} characters, over the limit of "
            f"{TOPIC_MAX_CHARS}; name the topic in a few words",
        )
    focus = f" Pay attention to what concerns {conversation_topic}." if conversation_topic else ""
    return [UserMessage(INSTRUCTIONS + focus)]
