"""extract_memories: let an LLM decide what to remember, change or forget from a conversation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import mcp.types as types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, ElicitationResult, Resolve, Sample
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from memoir.memory.deadline import bounded
from memoir.memory.errors import InvalidArgument, MemoirError
from memoir.memory.extraction import (
    ExtractionRejected, ExtractionRequest, ExtractionResult, Message, Plan, repair_messages,
)
from memoir.memory.limits import Limits

from . import confirm as asking
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


# Two more, run only when the user may have to confirm (the client can be asked, it is not a dry
# run, and MEMOIR_EXTRACT_CONFIRM_OVER is set): the answer as a plan, then the question when the
# plan deletes or supersedes more memories than the threshold. With an API key the model is asked
# here; on 2026-07-28 connections this runs again once the user answered, so an answer waiting for
# confirmation is kept (Extractor.keep_awaiting) and reused rather than asked for anew.


async def _plan(
    ctx: Context,
    sampled: Annotated[Any, Resolve(_repair)],
    message: MessageArg = None,
    messages: MessagesArg = None,
    user_id: UserId = None,
    dry_run: DryRunArg = False,
) -> Plan | None:
    app = app_context(ctx)
    threshold = app.extractor.settings.confirm_over
    if dry_run or threshold is None or not asking.can_ask(ctx):
        return None
    try:
        request = await _request(ctx, message, messages, user_id)
        if sampled is None:  # the configured API model
            key = app.extractor.question_key(request)
            kept = app.extractor.awaiting(key)
            if kept is not None:
                plan = await app.extractor.plan(request, kept, final=True)
            else:
                async with bounded(app.call_timeout):
                    plan = await app.extractor.propose(request, app.llm)  # type: ignore[arg-type]
                if plan.destructive > threshold:
                    app.extractor.keep_awaiting(key, plan.answer)
            return plan
        if isinstance(sampled, dict):
            return await app.extractor.plan(request, sampled["answer"], final=True)
        proposed, text = sampling.tool_input(sampled, request.tool)
        return await app.extractor.plan(request, proposed, final=True, raw_text=text)
    except MemoirError as exc:
        raise ToolError(str(exc)) from exc


async def _confirm(ctx: Context, plan: Annotated[Plan | None, Resolve(_plan)]) -> Elicit[asking.Confirmation] | None:
    app = app_context(ctx)
    threshold = app.extractor.settings.confirm_over
    if plan is None or threshold is None or plan.destructive <= threshold:
        return None
    deletes = plan.destructive
    adds = len(plan.operations) - deletes
    return Elicit(
        f"memoir's memory manager wants to delete {deletes} memories of user '{plan.request.user_id}'"
        + (f" (and apply {adds} other changes)" if adds else "")
        + ". Go ahead? If not, nothing is changed.",
        asking.Confirmation,
    )


async def extract_memories(
    ctx: Context,
    sampled: Annotated[Any, Resolve(_repair)],
    planned: Annotated[Plan | None, Resolve(_plan)],
    asked: Annotated[ElicitationResult[asking.Confirmation], Resolve(_confirm)],
    message: MessageArg = None,
    messages: MessagesArg = None,
    user_id: UserId = None,
    dry_run: DryRunArg = False,
) -> ExtractionResult:
    """Hand a message or a conversation to memoir's memory manager (an LLM), which decides what
    to remember about the user: it adds new facts, corrects memories that were wrong (update),
    supersedes memories the world has changed (the old fact is kept as history, valid until
    the new one's valid_from), and deletes what the user retracts or asks to forget - each
    with a reason, recorded in history. Give exactly one of `message` or `messages`.

    It sees only the user's related memories, so the cost of one call stays bounded. Use
    dry_run=true to see the operations without applying them.

    Examples:
      extract_memories(message="I moved to Denver last month and I've started climbing")
      extract_memories(messages=[{"role": "user", "content": "My name is Jane"},
                                 {"role": "assistant", "content": "Nice to meet you, Jane!"},
                                 {"role": "user", "content": "Please forget that I smoke"}])

    An extraction that would delete or supersede many memories asks the user first when the
    host can ask; if they do not agree, nothing is changed. Operations this server does not apply
    (the operator's choice, or text holding a password or key) come back in `skipped` with the
    reason.

    Returns the operations applied (a supersede names the retired memory_id and the new
    memory's id as superseded_by), the memories added or updated, and what was skipped.
    """
    app = app_context(ctx)
    if planned is not None:
        app.extractor.awaiting(app.extractor.question_key(planned.request), pop=True)  # answered: drop it
        refused = asking.answer(asked)
        if refused is not None:
            return app.extractor.declined(planned, f"{refused}; nothing was changed")
        return await app.extractor.carry_out(planned)
    if sampled is None:  # the configured API model, called here
        user = app.user(user_id)
        return await app.extractor.extract(user, _messages(message, messages), app.llm, dry_run=dry_run)  # type: ignore[arg-type]
    request: ExtractionRequest = await _request(ctx, message, messages, user_id)
    if isinstance(sampled, dict):  # the first answer passed the checks
        return await app.extractor.settle(request, sampled["answer"], dry_run=dry_run, final=True)
    proposed, text = sampling.tool_input(sampled, request.tool)  # the repair round's answer
    return await app.extractor.settle(request, proposed, dry_run=dry_run, final=True, raw_text=text)
