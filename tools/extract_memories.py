"""extract_memories: let an LLM decide what to remember, change or forget from a conversation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import mcp.types as types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from memoir.memory.errors import InvalidArgument
from memoir.memory.extraction import ExtractionRejected, ExtractionRequest, ExtractionResult, Message, repair_messages
from memoir.memory.limits import Limits

from . import sampling
from .context import app_context, tool_errors
from .fields import UserId, max_items, strict_bool

ANNOTATIONS = ToolAnnotations(
    title="Extract memories from a conversation",
    read_only_hint=False,
    destructive_hint=True,
    idempotent_hint=False,
    open_world_hint=True,
)


class ChatMessage(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str


MessageArg = Annotated[str | None, Field(description="One message from the user to learn from.")]
# The message count is bounded in the schema itself: pydantic then refuses 30,000 messages before it
# builds 30,000 objects (about 75 ms of the event loop), and the model reads the bound as maxItems.
MESSAGES_MAX_COUNT = Limits().messages_max_count
MessagesArg = Annotated[
    list[ChatMessage] | None,
    Field(
        max_length=MESSAGES_MAX_COUNT,
        description=f"A conversation to learn from: [{{role: 'user' | 'assistant' | 'system', content}}], up to "
        f"{MESSAGES_MAX_COUNT} messages and 100,000 characters in all; send a longer one in several calls.",
    ),
    max_items(MESSAGES_MAX_COUNT, "messages", "send the conversation in several calls"),
]
DryRunArg = Annotated[
    bool,
    Field(strict=True, description="Only report the operations, apply nothing (JSON true or false)."),
    strict_bool("send dry_run=true to only see the operations, or false (or omit it) to apply them"),
]


def _messages(message: str | None, messages: list[ChatMessage] | None) -> list[Message]:
    if (message is None) == (messages is None):
        raise InvalidArgument("message", "give exactly one of message (a single text) or messages (a conversation)")
    if message is not None:
        return [Message("user", message)]
    return [Message(m.role, m.content) for m in messages or []]


async def _request(ctx: Context, message: str | None, messages: list[ChatMessage] | None, user_id: str | None):
    app = app_context(ctx)
    return await app.extractor.prepare(app.user(user_id), _messages(message, messages))


# Two resolvers, run only when the client's model is used (no API key): the question, then -
# if the answer fails the checks - one repair question. With an API key both return None.
# The SDK runs them before the handler, outside its `tool_errors`: they need their own.


@tool_errors
async def _ask(
    ctx: Context, message: MessageArg = None, messages: MessagesArg = None, user_id: UserId = None
) -> Sample | None:
    app = app_context(ctx)
    if not sampling.needs_sampling(app, ctx):
        return None
    request = await _request(ctx, message, messages, user_id)
    return sampling.sample(request.system, request.messages, request.tool, app.extractor.settings.max_tokens)


@tool_errors
async def _repair(
    ctx: Context,
    first: Annotated[types.CreateMessageResult | None, Resolve(_ask)],
    message: MessageArg = None,
    messages: MessagesArg = None,
    user_id: UserId = None,
) -> Sample | dict[str, Any] | None:
    if first is None:
        return None
    app = app_context(ctx)
    request = await _request(ctx, message, messages, user_id)
    proposed, text = sampling.tool_input(first, request.tool)
    try:
        app.extractor.check(request, proposed)
    except ExtractionRejected as rejected:
        retry = request.messages + repair_messages(proposed, text, rejected)
        return sampling.sample(request.system, retry, request.tool, app.extractor.settings.max_tokens)
    return {"answer": proposed}


async def extract_memories(
    ctx: Context,
    sampled: Annotated[Any, Resolve(_repair)],
    message: MessageArg = None,
    messages: MessagesArg = None,
    user_id: UserId = None,
    dry_run: DryRunArg = False,
) -> ExtractionResult:
    """Hand a message or a conversation to memoir's memory manager (an LLM), which decides what
    to remember about the user: it adds new facts, updates memories the conversation changes,
    and deletes what the user retracts or asks to forget - each with a reason, recorded in
    history. Give exactly one of `message` or `messages`.

    It sees only the user's related memories, so the cost of one call stays bounded. Use
    dry_run=true to see the operations without applying them.

    Examples:
      extract_memories(message="I moved to Denver last month and I've started climbing")
      extract_memories(messages=[{"role": "user", "content": "My name is Jane"},
                                 {"role": "assistant", "content": "Nice to meet you, Jane!"},
                                 {"role": "user", "content": "Please forget that I smoke"}])

    Returns the operations applied and the memories added or updated.
    """
    app = app_context(ctx)
    if sampled is None:  # the configured API model, called here
        user = app.user(user_id)
        return await app.extractor.extract(user, _messages(message, messages), app.llm, dry_run=dry_run)  # type: ignore[arg-type]
    request: ExtractionRequest = await _request(ctx, message, messages, user_id)
    if isinstance(sampled, dict):  # the first answer passed the checks
        return await app.extractor.settle(request, sampled["answer"], dry_run=dry_run, final=True)
    proposed, text = sampling.tool_input(sampled, request.tool)  # the repair round's answer
    return await app.extractor.settle(request, proposed, dry_run=dry_run, final=True, raw_text=text)
