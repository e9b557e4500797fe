"""Argument types shared by several tools, with the descriptions the model reads."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

UserId = Annotated[
    str | None,
    Field(
        description="Whose memories. Omit it to use the current user (the configured one, or the one your "
        "token belongs to). Letters, digits and _ . @ : - only, up to 128 characters."
    ),
]

Topics = Annotated[
    list[str],
    Field(
        description="Short labels for the memory, e.g. ['hobbies', 'travel']: at most 16, each up to 64 "
        "characters; stored trimmed and lower-cased."
    ),
]

TopicFilter = Annotated[
    list[str] | None,
    Field(description="Only memories that have at least one of these topics."),
]

MemoryId = Annotated[str, Field(description="The memory_id returned by add_memory, search_memories or list_memories.")]
