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

ValidFrom = Annotated[
    str | None,
    Field(
        description="Since when the fact holds, ISO-8601 ('2026-03-01' or '2026-03-01T09:30:00Z'; naive times "
        "are UTC). Omit it to mean now. Not in the future (5 minutes of clock skew allowed)."
    ),
]

AsOf = Annotated[
    str | None,
    Field(
        description="Return what was valid at this moment (ISO-8601, e.g. '2025-12-31'): memories with "
        "valid_from <= as_of < valid_to, superseded ones included. Omit it for the current memories."
    ),
]

IncludeSuperseded = Annotated[
    bool,
    Field(description="Also return superseded memories (their valid_to and superseded_by say when and by what)."),
]
