"""What the domain hands out: memories, search hits, history events, pages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

Operation = Literal["add", "update", "delete", "clear", "restore"]
Actor = Literal["tool", "cli", "extraction", "undo", "import", "dashboard"]


class PlainSchema(BaseModel):
    """A tool result whose JSON schema is self-contained and plain.

    Clients validate every tool result against its outputSchema. The SDK's client spent 0.58 ms
    validating ten search results when each was a `$ref` with `anyOf` for its optional fields,
    and 0.38 ms once they were inlined and written as type lists: the same constraints.
    """

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        reference = handler(core_schema)
        schema = handler.resolve_ref_schema(reference)
        plain = _plain(schema, handler)
        schema.clear()
        schema.update(plain)
        return reference


def _plain(node: Any, handler: GetJsonSchemaHandler) -> Any:
    """`node` with `$ref`s inlined and `anyOf: [{type: a}, {type: b}]` written `type: [a, b]`."""
    if isinstance(node, list):
        return [_plain(item, handler) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _plain(dict(handler.resolve_ref_schema(node)), handler)
    options = node.get("anyOf")
    if options and all(set(option) == {"type"} and isinstance(option["type"], str) for option in options):
        node = {key: value for key, value in node.items() if key != "anyOf"} | {"type": [o["type"] for o in options]}
    return {key: _plain(value, handler) for key, value in node.items()}


class Memory(PlainSchema):
    """One fact about a user, as stored."""

    memory_id: str = Field(description="Opaque id made by the server; pass it to update_memory or delete_memory.")
    user_id: str
    memory: str = Field(description="The fact, in one or two sentences.")
    topics: list[str] = Field(default_factory=list)
    input: str | None = Field(default=None, description="The text the memory came from, when known.")
    agent_id: str | None = None
    created_at: str = Field(description="UTC, ISO-8601.")
    updated_at: str = Field(description="UTC, ISO-8601.")
    valid_from: str = Field(description="When the fact became true (UTC, ISO-8601); by default when it was stored.")
    # Present only on a superseded memory (absent: current). Every output property costs a client
    # time to validate: two always-null ones made a 10-result search ~0.4 ms slower over stdio.
    valid_to: str | None = Field(
        default=None,
        description="When it stopped being true (another memory superseded it); absent while current.",
        exclude_if=lambda value: value is None,
    )
    superseded_by: str | None = Field(
        default=None,
        description="The memory_id of the memory that superseded it; absent while current.",
        exclude_if=lambda value: value is None,
    )

    @model_validator(mode="before")
    @classmethod
    def _valid_from_defaults_to_created_at(cls, data: Any) -> Any:
        # Memories recorded before validity existed (history events, older exports) have none.
        if isinstance(data, dict) and data.get("valid_from") is None and "created_at" in data:
            data = {**data, "valid_from": data["created_at"]}
        return data


class ScoredMemory(Memory):
    """A memory found by a search; higher scores rank first (the scale depends on the method)."""

    score: float
    relevance: float | None = Field(
        default=None,
        description="How likely the memory is about the query, 0-1, comparable across queries and methods "
        "(memory/ranking.py); null for last_n / first_n, which have no query.",
    )


class HistoryEvent(PlainSchema):
    """One recorded change of one memory."""

    event_id: int
    memory_id: str
    user_id: str
    operation: Operation
    before: Memory | None = None
    after: Memory | None = None
    actor: Actor
    reason: str | None = None
    source: str | None = Field(default=None, description="What prompted the change (e.g. the extracted messages).")
    undoes: int | None = Field(default=None, description="The event this one reverted, for undo events.")
    part_of: int | None = Field(
        default=None,
        description="The first event of the change this one belongs to (e.g. the add that superseded this "
        "memory); undo reverts such events together.",
    )
    created_at: str


class MemoryPage(PlainSchema):
    memories: list[Memory]
    next_cursor: str | None = None
