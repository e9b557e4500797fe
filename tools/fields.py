"""Argument types shared by several tools, with the descriptions the model reads."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

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
        description="Short labels for the memory, e.g. ['hobbies', 'travel']: at most 16 (duplicates count), "
        "each up to 64 characters; stored trimmed and lower-cased."
    ),
]

TopicFilter = Annotated[
    list[str] | None,
    Field(description="Only memories that have at least one of these topics (at most 16)."),
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


def strict_bool(fix: str) -> BeforeValidator:
    """Only JSON true or false: pydantic's lax bool reads "yes", "on", "1", 1 and 1.0 as true, and a
    switch that deletes or applies things must not be turned by a string that merely looks like one.
    Checked before the tool runs, so a refused call has done nothing; `fix` says what to send."""

    def check(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise PydanticCustomError(
            "strict_bool",
            "must be the JSON boolean true or false, not {got}; {fix}",
            {"got": _shown(value), "fix": fix},
        )

    return BeforeValidator(check)


def max_items(limit: int, what: str, fix: str) -> BeforeValidator:
    """Refuse a list longer than `limit` before pydantic builds its items, with memoir's wording
    (`Field(max_length=...)` also refuses early, and puts maxItems in the schema the model reads)."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                "too_long", "has {n} {what}, over the limit of {limit}; {fix}",
                {"n": len(value), "what": what, "limit": limit, "fix": fix},
            )
        return value

    return BeforeValidator(check)


_JSON_TYPES: dict[type, str] = {str: "string", int: "number", float: "number", list: "array", dict: "object"}


def _shown(value: Any) -> str:
    """A wrong value as the caller sent it, in JSON's words and clipped (it may be huge)."""
    if value is None:
        return "null"
    return f"the {_JSON_TYPES.get(type(value), type(value).__name__)} {value!r}"[:80]
