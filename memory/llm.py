"""LLM access for the memory core (extraction, agentic search) — free of MCP.

One operation: :meth:`LLMProvider.call_tool` asks a model to answer by calling exactly one tool
and returns the tool's input (a dict the caller validates with its own pydantic model).

Providers:

- :class:`AnthropicProvider` — the Anthropic Messages API through the official ``anthropic``
  client (forced ``tool_choice``). Retries 408/409/429/5xx/529, connection errors and timeouts
  with the SDK's own exponential back-off (``max_retries``; a ``retry-after`` header is obeyed);
  what still fails becomes a typed :class:`LLMError`.
- :class:`CallbackProvider` — adapts a text-only completion function by asking for the tool
  input as a JSON object in the reply and parsing it. It needs a function it can await
  mid-call: MCP push-style sampling (``ctx.session.create_message``) is one, but only on
  2025-11-25-era connections. For sampling in both eras the MCP layer uses ``Resolve(...)``
  resolvers returning ``Sample`` and the same three pieces: :func:`json_tool_system`,
  :func:`flatten_messages` (the prompt) and :func:`tool_input_from_text` (the parse).

Messages are Anthropic-style dicts: ``{"role": "user" | "assistant", "content": str | [blocks]}``.

Errors: :class:`LLMUnavailable` (no provider, or it cannot be reached/used now: the message says
what happened and what to do), :class:`LLMBadOutput` (the model answered, but not with a valid
call of the tool; carries the raw text so a caller can repair or retry once), and the base
:class:`LLMError` (anything else, e.g. the API rejected the request as invalid).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


from memoir.memory.errors import MemoirError

__all__ = [
    "DEFAULT_MODEL",
    "AnthropicProvider",
    "CallbackProvider",
    "Completion",
    "CompletionFn",
    "LLMBadOutput",
    "LLMError",
    "LLMProvider",
    "LLMReply",
    "LLMUnavailable",
    "ToolSpec",
    "Usage",
    "NO_PROVIDER_MESSAGE",
    "extract_json_object",
    "flatten_messages",
    "json_tool_system",
    "tool_input_from_text",
]

DEFAULT_MODEL = "claude-haiku-4-5"

NO_PROVIDER_MESSAGE = (
    "no LLM is available: set ANTHROPIC_API_KEY (and optionally MEMOIR_MODEL) for the memoir "
    "server, or use an MCP client that supports sampling"
)


# --------------------------------------------------------------------------- errors


class LLMError(MemoirError):
    """Base class of every LLM failure the memory core reports."""


class LLMUnavailable(LLMError):
    """No LLM is configured, or the configured one cannot be reached or used right now."""

    def __init__(self, message: str = NO_PROVIDER_MESSAGE) -> None:
        super().__init__(message)


class LLMBadOutput(LLMError):
    """The model answered, but not with a valid call of the requested tool."""

    def __init__(self, message: str, *, raw_text: str = "", tool_input: Any = None) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.tool_input = tool_input


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ToolSpec:
    """The one tool the model must call. ``input_schema`` is a JSON schema of type object
    (e.g. ``SomeModel.model_json_schema()``)."""

    name: str
    description: str
    input_schema: dict[str, Any]

    def to_anthropic(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


@dataclass(frozen=True)
class LLMReply:
    tool_input: dict[str, Any] | None
    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    stop_reason: str | None = None


@runtime_checkable
class LLMProvider(Protocol):
    name: str

    async def call_tool(
        self, *, system: str, messages: list[dict[str, Any]], tool: ToolSpec, max_tokens: int
    ) -> LLMReply:
        """Ask the model to answer by calling ``tool``; return its input.

        Raises :class:`LLMUnavailable`, :class:`LLMBadOutput` or :class:`LLMError`.
        """
        ...


# --------------------------------------------------------------------------- Anthropic


class AnthropicProvider:
    """The Anthropic Messages API.

    ``base_url`` defaults to ``ANTHROPIC_BASE_URL`` (read by the SDK), then the public API.
    ``timeout`` is per attempt; ``max_retries`` extra attempts follow a 408/409/429/5xx/529, a
    connection error or a timeout, with the SDK's exponential back-off (0.5 s doubling, at most
    8 s, jittered) or the server's ``retry-after``. So a call takes at most about
    ``(max_retries + 1) * timeout`` plus back-off.

    ``usage`` is the running total of tokens over this provider's calls (``calls`` counts them).
    """

    name = "anthropic"

    def __init__(
        self,
        api_key: str | None,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not api_key:
            raise LLMUnavailable("ANTHROPIC_API_KEY is not set: " + NO_PROVIDER_MESSAGE)
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        # api_key passed explicitly, so the SDK reads no other credential source.
        import anthropic  # imported here: it takes most of a second, and only API users need it

        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )
        self.base_url = str(self._client.base_url).rstrip("/")
        self.usage = Usage()
        self.calls = 0

    async def aclose(self) -> None:
        await self._client.close()

    def _attempts(self) -> str:
        n = self.max_retries + 1
        return f"{n} attempt{'s' if n != 1 else ''}"

    async def call_tool(
        self, *, system: str, messages: list[dict[str, Any]], tool: ToolSpec, max_tokens: int
    ) -> LLMReply:
        import anthropic

        try:
            msg = await self._client.messages.create(
                model=self.model,
                max_tokens=max_tokens,
                system=system,
                messages=messages,  # type: ignore[arg-type]
                tools=[tool.to_anthropic()],  # type: ignore[list-item]
                tool_choice={"type": "tool", "name": tool.name},
            )
        except anthropic.APITimeoutError as e:
            raise LLMUnavailable(
                f"the Anthropic API at {self.base_url} did not answer within {self.timeout:g} s "
                f"({self._attempts()}); try again later, or raise the timeout setting"
            ) from e
        except anthropic.APIConnectionError as e:
            raise LLMUnavailable(
                f"cannot connect to the Anthropic API at {self.base_url} ({self._attempts()}: "
                f"{_cause(e)}); check the network, or ANTHROPIC_BASE_URL if you use a gateway"
            ) from e
        except anthropic.APIStatusError as e:
            raise self._status_error(e) from e

        self.calls += 1
        u = msg.usage
        usage = Usage(u.input_tokens or 0, u.output_tokens or 0)
        self.usage = self.usage + usage

        texts = [b.text for b in msg.content if getattr(b, "type", None) == "text"]
        text = "\n".join(texts)
        calls = [b for b in msg.content if getattr(b, "type", None) == "tool_use" and b.name == tool.name]
        if not calls:
            why = (
                f"the reply was cut off at max_tokens={max_tokens}"
                if msg.stop_reason == "max_tokens"
                else f"stop_reason={msg.stop_reason}"
            )
            raise LLMBadOutput(
                f"model {msg.model} did not call the tool {tool.name!r} ({why}); it said: {_clip(text)!r}",
                raw_text=text,
            )
        tool_input = calls[0].input
        if not isinstance(tool_input, dict):
            raise LLMBadOutput(
                f"model {msg.model} called {tool.name!r} with a {type(tool_input).__name__}, not a JSON object",
                raw_text=text,
                tool_input=tool_input,
            )
        if msg.stop_reason == "max_tokens":
            raise LLMBadOutput(
                f"model {msg.model}'s call of {tool.name!r} was cut off at max_tokens={max_tokens}",
                raw_text=text,
                tool_input=tool_input,
            )
        return LLMReply(
            tool_input=dict(tool_input), text=text, usage=usage, model=msg.model, stop_reason=msg.stop_reason
        )

    def _status_error(self, e: Any) -> LLMError:  # an anthropic.APIStatusError
        status = e.status_code
        detail = f"HTTP {status} {e.type or 'error'}: {e.api_message or e.message}"
        if e.request_id:
            detail += f" (request-id {e.request_id})"
        if status in (401, 403):
            return LLMUnavailable(
                f"the Anthropic API refused the credentials ({detail}); check ANTHROPIC_API_KEY"
            )
        if status == 429:
            return LLMUnavailable(
                f"the Anthropic API is rate limiting this key ({detail}; {self._attempts()}); "
                "wait a minute and try again, or raise the key's rate limit"
            )
        if status >= 500 or status in (408, 409):
            return LLMUnavailable(
                f"the Anthropic API failed ({detail}; {self._attempts()}); it is likely temporary, try again later"
            )
        if status == 404:
            return LLMError(f"the Anthropic API does not know model {self.model!r} ({detail}); set MEMOIR_MODEL")
        return LLMError(f"the Anthropic API rejected the request ({detail})")


def _cause(e: BaseException) -> str:
    c = e.__cause__ or e.__context__
    return f"{type(c).__name__}: {c}" if c is not None else str(e)


def _clip(s: str, n: int = 200) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


# --------------------------------------------------------------------------- callback (MCP sampling)


@dataclass(frozen=True)
class Completion:
    """What a completion function may return instead of a bare string."""

    text: str
    model: str = ""
    usage: Usage = field(default_factory=Usage)


CompletionFn = Callable[[str, list[dict[str, Any]], int], Awaitable["str | Completion"]]
"""``(system, messages, max_tokens) -> text``. ``messages`` are ``{"role", "content": str}``."""


_JSON_INSTRUCTIONS = """\
Answer by calling the tool `{name}`: {description}
Reply with ONLY the tool's input: one JSON object that validates against this JSON schema — \
no prose, no explanation, no wrapper object around it.
{schema}"""


class CallbackProvider:
    """Turns a text-only completion function into :meth:`call_tool`.

    The tool's JSON schema is appended to the system prompt and the model is asked to reply
    with just the JSON object; the first JSON object in the reply (a fenced ```json block
    preferred) becomes ``tool_input``. The caller still validates it against its own model.
    """

    def __init__(self, complete: CompletionFn, *, name: str = "mcp-sampling") -> None:
        self._complete = complete
        self.name = name
        self.usage = Usage()
        self.calls = 0

    async def call_tool(
        self, *, system: str, messages: list[dict[str, Any]], tool: ToolSpec, max_tokens: int
    ) -> LLMReply:
        out = await self._complete(json_tool_system(system, tool), flatten_messages(messages), max_tokens)
        done = out if isinstance(out, Completion) else Completion(text=str(out))
        self.calls += 1
        self.usage = self.usage + done.usage
        tool_input = tool_input_from_text(done.text, tool)
        return LLMReply(tool_input=tool_input, text=done.text, usage=done.usage, model=done.model)


# The three pieces CallbackProvider is made of, public so that the MCP layer can run the same
# protocol as `Resolve(...)` resolvers returning `Sample` (which, in the 2026-07-28 era, cannot
# await a completion mid-call: the prompt is returned, the answer arrives in a later round).


def json_tool_system(system: str, tool: ToolSpec) -> str:
    """``system`` plus the instruction to answer with only the JSON input of ``tool``.
    Deterministic (same inputs, same text), as a 2026-07-28 sampling round requires."""
    instructions = _JSON_INSTRUCTIONS.format(
        name=tool.name,
        description=tool.description,
        schema=json.dumps(tool.input_schema, separators=(",", ":"), sort_keys=True),
    )
    return f"{system}\n\n{instructions}" if system else instructions


def flatten_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic-style messages -> ``[{"role", "content": str}]`` (text blocks joined)."""
    return [_flatten(m) for m in messages]


# A text-only model's reply is checked for size before it is searched for JSON. memoir asks for at
# most a few thousand tokens (extraction: 4,096), a few tens of thousands of characters; the cap
# leaves ample room and stops a client's "model" (MCP sampling: whatever the client sends) from
# handing the event loop megabytes to scan.
MAX_REPLY_CHARS = 200_000


def tool_input_from_text(text: str, tool: ToolSpec) -> dict[str, Any]:
    """The JSON object a text-only model gave as ``tool``'s input; :class:`LLMBadOutput` if none."""
    if len(text) > MAX_REPLY_CHARS:
        raise LLMBadOutput(
            f"the model's reply is {len(text):,} characters, over the {MAX_REPLY_CHARS:,} a reply may have; "
            f"it should hold only the JSON input of the tool {tool.name!r}",
            raw_text=text[:4_000],
        )
    obj = extract_json_object(text)
    if obj is None:
        raise LLMBadOutput(
            f"the model's reply holds no JSON object for the tool {tool.name!r}: {_clip(text)!r}",
            raw_text=text,
        )
    return obj


def _flatten(message: dict[str, Any]) -> dict[str, Any]:
    """Anthropic-style message -> ``{"role", "content": str}`` (text blocks joined)."""
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                if block.get("type") == "text":
                    parts.append(str(block.get("text", "")))
                elif block.get("type") == "tool_use":
                    parts.append(json.dumps(block.get("input"), ensure_ascii=False))
                elif block.get("type") == "tool_result":
                    inner = block.get("content")
                    parts.append(inner if isinstance(inner, str) else json.dumps(inner, ensure_ascii=False))
            else:
                parts.append(str(block))
        content = "\n".join(parts)
    return {"role": message.get("role", "user"), "content": "" if content is None else str(content)}


_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n?(.*?)```", re.DOTALL)
# Each attempt may read to the end of the text, so the number of `{` tried is capped: a reply made
# of thousands of unclosed `{"a":[` would otherwise cost time quadratic in its length. A real
# reply puts its object among the first few braces.
MAX_BRACES_TRIED = 32


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text``: the whole text, else the first fenced code block that
    holds one, else the first ``{...}`` that decodes (among the first few). ``None`` when there is none."""
    stripped = text.strip()
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    for c in [stripped] + [f.strip() for f in fenced]:
        obj = _decoded(json.loads, c)
        if isinstance(obj, dict):
            return obj
    decoder = json.JSONDecoder()
    for c in fenced + [text]:
        start = c.find("{")
        for _ in range(MAX_BRACES_TRIED):
            if start < 0:
                break
            found = _decoded(lambda at: decoder.raw_decode(c, at)[0], start)
            if isinstance(found, dict):
                return found
            start = c.find("{", start + 1)
    return None


def _decoded(decode: Callable[[Any], Any], arg: Any) -> Any:
    """`decode(arg)`, or None when it is not JSON - including JSON nested too deep to decode,
    which raises RecursionError rather than ValueError."""
    try:
        return decode(arg)
    except (ValueError, RecursionError):
        return None
