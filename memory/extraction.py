"""Deciding what to remember from a conversation, with an LLM, at a bounded cost.

The model sees the new messages and only the user's *related* memories (the top K by search,
K from settings), never the whole store, so the input of one call stays flat however many
memories the user has. It answers by calling one tool whose schema allows only add / update /
supersede / delete operations (plus `forget_all` for "forget everything about me"), each with a
reason. `update` corrects a memory that was wrong; `supersede` records that the world changed:
a new memory replaces the old one, which stays as history (store.add's `supersedes`).

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

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from .errors import InvalidArgument, MemoirError, SecretRefused
from .limits import Limits
from .llm import LLMBadOutput, LLMProvider, ToolSpec, Usage
from .models import Memory, PlainSchema
from .retrieval import Retriever
from .limits import now
from .secrets import redact, scan
from .store import Change, Edit, Filters, check_valid_from

DEFAULT_CAPTURE_INSTRUCTIONS = """\
Capture lasting facts about the user that will help personalise future conversations: who they
are (name, age, job, where they live), their preferences and dislikes, hobbies, goals and plans,
important people, places and events in their life, health or dietary needs they mention.
Do not capture small talk, one-off requests, the assistant's own statements, secrets such as
passwords, or facts that only concern other people."""

SYSTEM_PROMPT = """\
You maintain a long-term memory about one user. From the new conversation, decide which
memories to add, update, supersede or delete.

What to capture:
{capture}

Rules:
- One fact per memory, phrased so it stands on its own in the third person
  (e.g. "Ava likes to ski", "Ava moved to Denver in 2024"); use the user's name if known,
  otherwise "The user".
- If the world changed - an existing memory WAS true but no longer is (the user moved, changed
  jobs, ended a relationship) - SUPERSEDE it: give its id and the new fact; the old one is kept
  as history. Give valid_from (ISO-8601, e.g. "2026-03-01") when the user says when it
  changed, else omit it.
- If an existing memory was wrong or imprecise all along (a correction, a misheard detail, a
  refinement), UPDATE it (by its id) instead of adding a second one. If the user retracts a
  memory, delete it.
- If the user asks to forget something, DELETE the matching memories. If the user asks to forget
  everything about them, use one `forget_all` operation.
- Never repeat a fact that an existing memory already states.
- Give each operation 1-4 short lower-case topics and a one-sentence reason.
- Only use ids from the existing memories listed. If nothing is worth remembering, return an
  empty list of operations.{additional}"""

TOOL_NAME = "record_memory_operations"

# The operations extraction may apply (MEMOIR_EXTRACT_OPS chooses among them). `forget_all`
# counts as delete.
EXTRACT_OPS = ("add", "update", "delete", "supersede")


class ProposedOperation(BaseModel):
    """One operation as the model proposes it."""

    op: Literal["add", "update", "supersede", "delete", "forget_all"]
    memory_id: str | None = Field(
        default=None, description="The existing memory's id (update, delete; supersede: the memory that is no longer true)."
    )
    memory: str | None = Field(default=None, description="The fact, standing on its own (add, update, supersede).")
    topics: list[str] = Field(default_factory=list, description="1-4 short lower-case topics.")
    valid_from: str | None = Field(
        default=None, description="add, supersede: since when the fact holds (ISO-8601), if the user said; else omit."
    )
    reason: str = Field(description="Why, in one sentence.")


class ProposedOperations(BaseModel):
    operations: list[ProposedOperation]


class Operation(PlainSchema):
    """One operation as applied (or, in a dry run, as it would be applied)."""

    op: Literal["add", "update", "supersede", "delete"]
    memory_id: str | None = Field(
        default=None, description="Null for an add in a dry run; for a supersede, the memory it retires."
    )
    memory: str
    topics: list[str]
    reason: str
    superseded_by: str | None = Field(
        default=None, description="supersede: the new memory's id (null in a dry run)."
    )
    valid_from: str | None = Field(default=None, description="add, supersede: since when the new fact holds.")


class Skipped(PlainSchema):
    """An operation the model proposed that was not applied, and why (never the secret itself)."""

    op: str
    memory_id: str | None = None
    memory: str | None = Field(default=None, description="The proposed text, with any secret replaced by a marker.")
    reason: str = Field(description="Why it was not applied.")


class ExtractionResult(PlainSchema):
    operations: list[Operation]
    memories: list[Memory] = Field(description="The memories added or updated (empty in a dry run).")
    dry_run: bool = False
    skipped: list[Skipped] = Field(
        default_factory=list,
        description="Proposed operations not applied: not allowed on this server, holding a credential, "
        "or declined by the user.",
    )


@dataclass
class Plan:
    """A checked answer, ready to apply: the operations (forget_all expanded) and those skipped."""

    request: ExtractionRequest
    operations: list[ProposedOperation]
    skipped: list[Skipped]
    answer: Any = None  # the model's answer it was made from

    @property
    def destructive(self) -> int:
        """How many memories it would delete or supersede."""
        return sum(1 for op in self.operations if op.op in ("delete", "supersede"))


@dataclass(frozen=True)
class ExtractionSettings:
    related_k: int = 20
    max_operations: int = 50
    max_tokens: int = 4_096
    capture_instructions: str = DEFAULT_CAPTURE_INSTRUCTIONS
    additional_instructions: str = ""
    allowed_ops: tuple[str, ...] = EXTRACT_OPS  # MEMOIR_EXTRACT_OPS
    confirm_over: int | None = 3  # MEMOIR_EXTRACT_CONFIRM_OVER: ask the user above this many deletes/supersedes


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
    # Where the conversation came from, recorded in history as the source instead of the messages
    # (`memoir hook stop`: "claude-code session <id>"); the messages stay each added memory's input.
    origin: str | None = None


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
        # Answers of the configured model waiting for the user's confirmation, by question: on
        # 2026-07-28 connections the call is made again once the user answered (tools/extract_memories.py).
        self._awaiting: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    @property
    def limits(self) -> Limits:
        return self.store.limits

    # -- one call, start to end -----------------------------------------------------------

    async def extract(
        self, user_id: str, messages: Sequence[Message], provider: LLMProvider, *, dry_run: bool = False,
        origin: str | None = None,
    ) -> ExtractionResult:
        request = await self.prepare(user_id, messages)
        request.origin = origin
        return await self.carry_out(await self.propose(request, provider), dry_run=dry_run)

    async def propose(self, request: ExtractionRequest, provider: LLMProvider) -> Plan:
        """Ask the model (once more if its answer fails the checks) and plan its answer."""
        tool_input, text = await self._ask(provider, request, request.messages)
        try:
            return await self.plan(request, tool_input, raw_text=text)
        except ExtractionRejected as first:
            retry = request.messages + repair_messages(tool_input, text, first)
            tool_input, text = await self._ask(provider, request, retry)
            return await self.plan(request, tool_input, final=True, raw_text=text)

    # -- answers waiting for the user's confirmation ------------------------------------------

    @staticmethod
    def question_key(request: ExtractionRequest) -> str:
        blob = json.dumps([request.user_id, request.system, request.messages], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def keep_awaiting(self, key: str, tool_input: Any, ttl: float = 600.0, most: int = 64) -> None:
        now_ = time.monotonic()
        self._awaiting[key] = (now_ + ttl, tool_input)
        self._awaiting.move_to_end(key)
        while len(self._awaiting) > most or (self._awaiting and next(iter(self._awaiting.values()))[0] < now_):
            self._awaiting.popitem(last=False)

    def awaiting(self, key: str, *, pop: bool = False) -> Any:
        entry = self._awaiting.pop(key, None) if pop else self._awaiting.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

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
        if tuple(self.settings.allowed_ops) != EXTRACT_OPS:
            allowed = list(self.settings.allowed_ops)
            system += (
                f"\n\nOn this server only these operations are applied: {', '.join(allowed)}"
                f"{' (forget_all counts as delete)' if 'delete' in allowed else ''}; do not propose others."
            )
        source = json.dumps([{"role": m.role, "content": m.content} for m in checked], ensure_ascii=False)
        return ExtractionRequest(
            user_id=user_id,
            system=system,
            messages=[{"role": "user", "content": prompt}],
            tool=tool_spec(),
            related={m.memory_id: m for m in related},
            # Kept as each added memory's input and in history: credentials redacted (MEMOIR_SECRETS).
            source=self.store.secrets.scrub(source) or "",
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
        return await self.carry_out(await self.plan(request, tool_input, final=final, raw_text=raw_text), dry_run=dry_run)

    async def plan(self, request: ExtractionRequest, tool_input: Any, *, final: bool = False, raw_text: str = "") -> Plan:
        """The checked answer, with the operations this server does not apply set aside (`skipped`)."""
        try:
            proposed = self.check(request, tool_input)
        except ExtractionRejected as exc:
            if final:
                raise ExtractionFailed(exc.problems, tool_input if tool_input is not None else raw_text) from None
            raise
        kept, skipped = self._filter(proposed)
        return Plan(request, await self._expand(request, kept), skipped, tool_input)

    async def carry_out(self, plan: Plan, *, dry_run: bool = False) -> ExtractionResult:
        if dry_run:
            operations = await self._preview(plan.request, plan.operations)
            return ExtractionResult(operations=operations, memories=[], dry_run=True, skipped=plan.skipped)
        operations, memories = await self._apply(plan.request, plan.operations)
        return ExtractionResult(operations=operations, memories=memories, skipped=plan.skipped)

    def declined(self, plan: Plan, why: str) -> ExtractionResult:
        """Nothing applied: every operation reported as skipped with `why`."""
        skipped = [
            Skipped(op=op.op, memory_id=op.memory_id, memory=self._shown(op), reason=why) for op in plan.operations
        ]
        return ExtractionResult(operations=[], memories=[], skipped=skipped + plan.skipped)

    def _filter(self, proposed: list[ProposedOperation]) -> tuple[list[ProposedOperation], list[Skipped]]:
        """Drop what the operator does not allow (MEMOIR_EXTRACT_OPS) and what holds a credential
        (MEMOIR_SECRETS=refuse; with redact, the secret is replaced); scrub the reasons."""
        allowed = self.settings.allowed_ops
        policy = self.store.secrets
        kept: list[ProposedOperation] = []
        skipped: list[Skipped] = []
        for op in proposed:
            op = op.model_copy(update={"reason": policy.scrub(op.reason) or ""})
            family = "delete" if op.op == "forget_all" else op.op
            if family not in allowed:
                skipped.append(Skipped(
                    op=op.op, memory_id=op.memory_id, memory=self._shown(op),
                    reason=f"this server does not let extraction {family} memories "
                    f"(MEMOIR_EXTRACT_OPS={','.join(allowed)}); proposed because: {op.reason}",
                ))
                continue
            if op.op in ("add", "update", "supersede"):
                try:
                    op = op.model_copy(update={
                        "memory": policy.clean_optional(op.memory, "memory"),
                        "topics": policy.clean_topics(op.topics),
                    })
                except SecretRefused as exc:
                    skipped.append(Skipped(
                        op=op.op, memory_id=op.memory_id, memory=self._shown(op),
                        reason=f"{exc} (MEMOIR_SECRETS=refuse)",
                    ))
                    continue
            kept.append(op)
        return kept, skipped

    @staticmethod
    def _shown(op: ProposedOperation) -> str | None:
        """The proposed text as it may be shown: any secret replaced by its marker."""
        if op.memory is None:
            return None
        findings = scan(op.memory)
        return redact(op.memory, findings) if findings else op.memory

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
        stamp = now()
        for i, op in enumerate(proposed):
            where = f"operations[{i}] ({op.op})"
            if op.op in ("update", "delete", "supersede"):
                if not op.memory_id or op.memory_id not in request.related:
                    problems.append(f"{where}: memory_id {op.memory_id!r} is not one of the existing memories listed")
                elif op.memory_id in touched:
                    problems.append(f"{where}: memory_id {op.memory_id!r} is changed twice")
                else:
                    touched.add(op.memory_id)
            if op.valid_from is not None:
                if op.op not in ("add", "supersede"):
                    problems.append(f"{where}: valid_from is only for add and supersede; leave it out")
                else:
                    try:
                        valid_from = check_valid_from(op.valid_from, stamp)
                        old = request.related.get(op.memory_id or "") if op.op == "supersede" else None
                        if old is not None and valid_from is not None and valid_from < old.valid_from:
                            problems.append(
                                f"{where}.valid_from: {valid_from} is before {old.valid_from}, when memory "
                                f"{op.memory_id!r} became valid; give a later time or omit it"
                            )
                    except InvalidArgument as exc:
                        problems.append(f"{where}.{exc}")
            if op.op in ("add", "update", "supersede"):
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
            page = await self.store.list(
                request.user_id, limit=self.limits.list_limit_max, cursor=cursor, filters=Filters(include_superseded=True)
            )
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
                                     topics=self.limits.topics(op.topics), reason=op.reason,
                                     valid_from=check_valid_from(op.valid_from, now())))
            elif op.op == "update":
                out.append(Operation(op="update", memory_id=op.memory_id, memory=self.limits.memory_text(op.memory or ""),
                                     topics=self.limits.topics(op.topics), reason=op.reason))
            elif op.op == "supersede":
                out.append(Operation(op="supersede", memory_id=op.memory_id, memory=self.limits.memory_text(op.memory or ""),
                                     topics=self.limits.topics(op.topics), reason=op.reason,
                                     valid_from=check_valid_from(op.valid_from, now())))
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
                topics=op.topics if op.op in ("add", "supersede") or op.topics else None,
                input=request.source[: self.limits.input_max_chars] if op.op in ("add", "supersede") else None,
                change=Change(actor="extraction", reason=op.reason, source=request.origin or request.source),
                valid_from=op.valid_from if op.op in ("add", "supersede") else None,
            )
            for op in operations
        ]
        results = await self.store.apply(request.user_id, edits)
        applied = [
            Operation(
                op=op.op,  # type: ignore[arg-type]
                memory_id=op.memory_id if op.op == "supersede" else m.memory_id,
                memory=m.memory,
                topics=m.topics,
                reason=op.reason,
                superseded_by=m.memory_id if op.op == "supersede" else None,
                valid_from=m.valid_from if op.op in ("add", "supersede") else None,
            )
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
