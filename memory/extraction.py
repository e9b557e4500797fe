"""Deciding what to remember from a conversation, with an LLM, at a bounded cost.

The model sees the new messages and only the user's *related* memories (the top K by search,
K from settings), never the whole store, so the input of one call stays flat however many
memories the user has. It answers by calling one tool whose schema allows only add / update /
delete operations (plus `forget_all` for "forget everything about me"), each with a reason.

Every operation is checked before anything is written: ids must be memories of that user,
texts and topics must be within the limits, the count within the cap. A reply that fails the
checks is sent back once with the problems listed; a second failure is an error that shows
what the model proposed, so no fact is dropped silently. Valid operations are applied in one
transaction and recorded in history with the reason and the source messages.

The work is split in `prepare` (what to ask) and `settle` (check and apply an answer) so that a
caller can also route the question through a client's own model (MCP sampling), which may
answer in a later round of the protocol.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from .errors import InvalidArgument, MemoirError
from .limits import Limits
from .llm import LLMBadOutput, LLMProvider, ToolSpec, Usage
from .models import Memory, PlainSchema
from .retrieval import Retriever
from .store import Change, Edit

DEFAULT_CAPTURE_INSTRUCTIONS = """\
Capture lasting facts about the user that will help personalise future conversations: who they
are (name, age, job, where they live), their preferences and dislikes, hobbies, goals and plans,
important people, places and events in their life, health or dietary needs they mention.
Do not capture small talk, one-off requests, the assistant's own statements, secrets such as
passwords, or facts that only concern other people."""

SYSTEM_PROMPT = """\
You maintain a long-term memory about one user. From the new conversation, decide which
memories to add, update or delete.

What to capture:
{capture}

Rules:
- One fact per memory, phrased so it stands on its own in the third person
  (e.g. "Ava likes to ski", "Ava moved to Denver in 2024"); use the user's name if known,
  otherwise "The user".
- If a new fact changes or refines an existing memory, UPDATE that memory (by its id) instead of
  adding a second one. If the user contradicts or retracts a memory, update or delete it.
- If the user asks to forget something, DELETE the matching memories. If the user asks to forget
  everything about them, use one `forget_all` operation.
- Never repeat a fact that an existing memory already states.
- Give each operation 1-4 short lower-case topics and a one-sentence reason.
- Only use ids from the existing memories listed. If nothing is worth remembering, return an
  empty list of operations.{additional}"""

TOOL_NAME = "record_memory_operations"


class ProposedOperation(BaseModel):
    """One operation as the model proposes it."""

    op: Literal["add", "update", "delete", "forget_all"]
    memory_id: str | None = Field(default=None, description="The existing memory's id (update, delete).")
    memory: str | None = Field(default=None, description="The fact, standing on its own (add, update).")
    topics: list[str] = Field(default_factory=list, description="1-4 short lower-case topics.")
    reason: str = Field(description="Why, in one sentence.")


class ProposedOperations(BaseModel):
    operations: list[ProposedOperation]


class Operation(PlainSchema):
    """One operation as applied (or, in a dry run, as it would be applied)."""

    op: Literal["add", "update", "delete"]
    memory_id: str | None = Field(default=None, description="Null for an add in a dry run.")
    memory: str
    topics: list[str]
    reason: str


class ExtractionResult(PlainSchema):
    operations: list[Operation]
    memories: list[Memory] = Field(description="The memories added or updated (empty in a dry run).")
    dry_run: bool = False


@dataclass(frozen=True)
class ExtractionSettings:
    related_k: int = 20
    max_operations: int = 50
    max_tokens: int = 4_096
    capture_instructions: str = DEFAULT_CAPTURE_INSTRUCTIONS
    additional_instructions: str = ""


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant", "system"]
    content: str


@dataclass
class ExtractionRequest:
    """Everything one model call needs, and what checking its answer needs."""

    user_id: str
    system: str
    messages: list[dict[str, Any]]
    tool: ToolSpec
    related: dict[str, Memory]
    source: str
    usage: Usage = field(default_factory=Usage)


def tool_spec() -> ToolSpec:
    return ToolSpec(
        name=TOOL_NAME,
        description="Record the memory operations decided from the conversation (an empty list if none).",
        input_schema=ProposedOperations.model_json_schema(),
    )


class Extractor:
    def __init__(self, retriever: Retriever, settings: ExtractionSettings = ExtractionSettings()) -> None:
        self.retriever = retriever
        self.store = retriever.store
        self.settings = settings

    @property
    def limits(self) -> Limits:
        return self.store.limits

    # -- one call, start to end -----------------------------------------------------------

    async def extract(
        self, user_id: str, messages: Sequence[Message], provider: LLMProvider, *, dry_run: bool = False
    ) -> ExtractionResult:
        request = await self.prepare(user_id, messages)
        tool_input, text = await self._ask(provider, request, request.messages)
        try:
            return await self.settle(request, tool_input, dry_run=dry_run, raw_text=text)
        except ExtractionRejected as first:
            retry = request.messages + repair_messages(tool_input, text, first)
            tool_input, text = await self._ask(provider, request, retry)
            return await self.settle(request, tool_input, dry_run=dry_run, final=True, raw_text=text)

    async def _ask(
        self, provider: LLMProvider, request: ExtractionRequest, messages: list[dict[str, Any]]
    ) -> tuple[Any, str]:
        """The model's tool input (None if it gave none) and its raw text."""
        try:
            reply = await provider.call_tool(
                system=request.system, messages=messages, tool=request.tool, max_tokens=self.settings.max_tokens
            )
        except LLMBadOutput as exc:
            return exc.tool_input, exc.raw_text or str(exc)
        request.usage = request.usage + reply.usage
        return reply.tool_input, reply.text

    # -- the two halves -------------------------------------------------------------------

    async def prepare(self, user_id: str, messages: Sequence[Message]) -> ExtractionRequest:
        """Check the messages, find the related memories, and write the question."""
        checked = self.check_messages(messages)
        texts = [m.content for m in checked if m.role == "user"] or [m.content for m in checked]
        related = await self._related(user_id, texts)
        conversation = "\n".join(f"{m.role}: {m.content}" for m in checked)
        known = "\n".join(
            f"- id={m.memory_id} | {m.memory} | topics: {', '.join(m.topics) or '-'}" for m in related
        ) or "(none)"
        prompt = (
            f"Existing memories about the user that may be related (id | memory | topics):\n{known}\n\n"
            f"New conversation:\n<conversation>\n{conversation}\n</conversation>\n\n"
            f"Call {TOOL_NAME} with the operations to apply."
        )
        additional = self.settings.additional_instructions.strip()
        system = SYSTEM_PROMPT.format(
            capture=self.settings.capture_instructions.strip(),
            additional=f"\n\nAdditional instructions:\n{additional}" if additional else "",
        )
        return ExtractionRequest(
            user_id=user_id,
            system=system,
            messages=[{"role": "user", "content": prompt}],
            tool=tool_spec(),
            related={m.memory_id: m for m in related},
            source=json.dumps([{"role": m.role, "content": m.content} for m in checked], ensure_ascii=False),
        )

    async def settle(
        self,
        request: ExtractionRequest,
        tool_input: Any,
        *,
        dry_run: bool = False,
        final: bool = False,
        raw_text: str = "",
    ) -> ExtractionResult:
        """Check the model's answer and apply it in one transaction (or only report it, in a dry run).

        Raises `ExtractionRejected` (worth one repair round) or, with `final`, `ExtractionFailed`.
        """
        try:
            proposed = self.check(request, tool_input)
        except ExtractionRejected as exc:
            if final:
                raise ExtractionFailed(exc.problems, tool_input if tool_input is not None else raw_text) from None
            raise
        if dry_run:
            return ExtractionResult(operations=await self._preview(request, proposed), memories=[], dry_run=True)
        operations, memories = await self._apply(request, proposed)
        return ExtractionResult(operations=operations, memories=memories)

    # -- checks -----------------------------------------------------------------------------

    def check_messages(self, messages: Sequence[Message]) -> list[Message]:
        limits = self.limits
        if not messages:
            raise InvalidArgument("messages", "is empty; give at least one message")
        if len(messages) > limits.messages_max_count:
            raise InvalidArgument(
                "messages",
                f"has {len(messages)} messages, over the limit of {limits.messages_max_count}; "
                "send the conversation in several calls",
            )
        total = sum(len(m.content) for m in messages)
        if total > limits.messages_max_chars:
            raise InvalidArgument(
                "messages",
                f"hold {total:,} characters, over the limit of {limits.messages_max_chars:,}; "
                "send the conversation in several calls",
            )
        checked = []
        for i, message in enumerate(messages):
            if message.role not in ("user", "assistant", "system"):
                raise InvalidArgument(f"messages[{i}].role", "must be 'user', 'assistant' or 'system'")
            content = message.content.strip()
            if content:
                checked.append(Message(message.role, content))
        if not checked:
            raise InvalidArgument("messages", "are all blank; give the conversation's text")
        return checked

    def check(self, request: ExtractionRequest, tool_input: Any) -> list[ProposedOperation]:
        """The model's answer as operations, or `ExtractionRejected` listing every problem."""
        if tool_input is None:
            raise ExtractionRejected([f"the answer did not call {TOOL_NAME}"])
        # The count is checked on the raw answer, before pydantic builds one object per operation.
        raw = tool_input.get("operations") if isinstance(tool_input, dict) else None
        if isinstance(raw, list) and len(raw) > self.settings.max_operations:
            raise ExtractionRejected(
                [f"{len(raw)} operations is over the cap of {self.settings.max_operations}; keep the most important"]
            )
        try:
            proposed = ProposedOperations.model_validate(tool_input).operations
        except ValidationError as exc:
            raise ExtractionRejected(
                _listed([f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()])
            ) from None
        problems: list[str] = []
        touched: set[str] = set()
        for i, op in enumerate(proposed):
            where = f"operations[{i}] ({op.op})"
            if op.op in ("update", "delete"):
                if not op.memory_id or op.memory_id not in request.related:
                    problems.append(f"{where}: memory_id {op.memory_id!r} is not one of the existing memories listed")
                elif op.memory_id in touched:
                    problems.append(f"{where}: memory_id {op.memory_id!r} is changed twice")
                else:
                    touched.add(op.memory_id)
            if op.op in ("add", "update"):
                try:
                    self.limits.memory_text(op.memory or "", f"{where}.memory")
                except InvalidArgument as exc:
                    problems.append(str(exc))
            if op.op != "forget_all":
                try:
                    self.limits.topics(op.topics, f"{where}.topics")
                except InvalidArgument as exc:
                    problems.append(str(exc))
        if problems:
            raise ExtractionRejected(_listed(problems))
        return proposed

    # -- applying ---------------------------------------------------------------------------

    async def _related(self, user_id: str, texts: list[str]) -> list[Memory]:
        return list(await self.retriever.related(user_id, texts, self.settings.related_k))

    async def _expand(self, request: ExtractionRequest, proposed: list[ProposedOperation]) -> list[ProposedOperation]:
        """`forget_all` becomes one delete per memory of the user, and replaces every other operation."""
        if not any(op.op == "forget_all" for op in proposed):
            return proposed
        reason = next(op.reason for op in proposed if op.op == "forget_all")
        everything: list[ProposedOperation] = []
        cursor = None
        while True:
            page = await self.store.list(request.user_id, limit=self.limits.list_limit_max, cursor=cursor)
            for m in page.memories:
                request.related.setdefault(m.memory_id, m)
                everything.append(ProposedOperation(op="delete", memory_id=m.memory_id, reason=reason))
            cursor = page.next_cursor
            if cursor is None:
                return everything

    async def _preview(self, request: ExtractionRequest, proposed: list[ProposedOperation]) -> list[Operation]:
        out = []
        for op in await self._expand(request, proposed):
            if op.op == "add":
                out.append(Operation(op="add", memory=self.limits.memory_text(op.memory or ""),
                                     topics=self.limits.topics(op.topics), reason=op.reason))
            elif op.op == "update":
                out.append(Operation(op="update", memory_id=op.memory_id, memory=self.limits.memory_text(op.memory or ""),
                                     topics=self.limits.topics(op.topics), reason=op.reason))
            else:
                old = request.related[op.memory_id]  # type: ignore[index]
                out.append(Operation(op="delete", memory_id=old.memory_id, memory=old.memory, topics=old.topics,
                                     reason=op.reason))
        return out

    async def _apply(
        self, request: ExtractionRequest, proposed: list[ProposedOperation]
    ) -> tuple[list[Operation], list[Memory]]:
        operations = await self._expand(request, proposed)
        edits = [
            Edit(
                op.op,  # type: ignore[arg-type]
                memory_id=op.memory_id,
                memory=op.memory if op.op != "delete" else None,
                # An update that gives no topics keeps the memory's own.
                topics=op.topics if op.op == "add" or op.topics else None,
                input=request.source[: self.limits.input_max_chars] if op.op == "add" else None,
                change=Change(actor="extraction", reason=op.reason, source=request.source),
            )
            for op in operations
        ]
        results = await self.store.apply(request.user_id, edits)
        applied = [
            Operation(op=op.op, memory_id=m.memory_id, memory=m.memory, topics=m.topics, reason=op.reason)  # type: ignore[arg-type]
            for op, m in zip(operations, results)
        ]
        memories = [m for op, m in zip(operations, results) if op.op != "delete"]
        return applied, memories


# Problems shown to the model (and in the error): enough to fix the answer, bounded however bad it is.
MAX_PROBLEMS_LISTED = 20


def _listed(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS_LISTED:
        return problems
    return problems[:MAX_PROBLEMS_LISTED] + [f"... and {len(problems) - MAX_PROBLEMS_LISTED} more problems"]


def repair_messages(tool_input: Any, text: str, rejected: ExtractionRejected) -> list[dict[str, Any]]:
    """The follow-up turn that shows the model its invalid answer and the problems with it."""
    shown = json.dumps(tool_input, ensure_ascii=False)[:4_000] if tool_input is not None else (text or "")[:4_000]
    problems = "\n".join(f"- {p}" for p in rejected.problems)
    return [
        {"role": "assistant", "content": f"(previous answer) {shown}"},
        {
            "role": "user",
            "content": f"That answer could not be applied:\n{problems}\n"
            f"Call {TOOL_NAME} again with corrected operations (all of them, not only the fixed ones).",
        },
    ]


class ExtractionRejected(MemoirError):
    """The model's answer failed the checks (it may be asked once more)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ExtractionFailed(MemoirError):
    """The model's answer failed the checks twice; nothing was applied. Shows what it proposed."""

    def __init__(self, problems: list[str], tool_input: Any) -> None:
        self.problems = problems
        self.proposed = tool_input
        proposed = json.dumps(tool_input, ensure_ascii=False)[:2_000] if tool_input is not None else "nothing"
        super().__init__(
            "the model's memory operations were invalid twice, so nothing was applied: "
            + "; ".join(problems)
            + f". It proposed: {proposed}. Try again, or add the memories with add_memory."
        )
