"""memoir.memory.llm against a real local Anthropic-speaking HTTP server (tests/fake_anthropic.py).

The real ``anthropic`` client does the HTTP, the retries and the back-off; nothing is patched.
Timeouts are tiny and error replies carry ``retry-after-ms: 1`` so the file runs in seconds.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import pytest
from tests.fake_anthropic import (  # noqa: F401  (fake_anthropic is a fixture)
    FakeAnthropic,
    RecordedRequest,
    delay,
    error,
    fake_anthropic,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_use,
)

from memoir.memory.errors import MemoirError
from memoir.memory.llm import (
    DEFAULT_MODEL,
    AnthropicProvider,
    CallbackProvider,
    Completion,
    LLMBadOutput,
    LLMError,
    LLMProvider,
    LLMUnavailable,
    ToolSpec,
    Usage,
    extract_json_object,
    json_tool_system,
    tool_input_from_text,
)

TOOL = ToolSpec(
    name="record_operations",
    description="Record the memory operations to apply.",
    input_schema={
        "type": "object",
        "properties": {
            "operations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"op": {"enum": ["add", "update", "delete"]}, "memory": {"type": "string"}},
                    "required": ["op"],
                },
            }
        },
        "required": ["operations"],
    },
)
SYSTEM = "You maintain a user's long-term memories."
MESSAGES = [{"role": "user", "content": "I moved to Lisbon last month."}]
OPS = {"operations": [{"op": "add", "memory": "Lives in Lisbon"}]}

Fake = FakeAnthropic
Make = Callable[..., AnthropicProvider]


@pytest.fixture
async def provider(fake_anthropic: Fake) -> AsyncIterator[Make]:
    """Builds AnthropicProviders aimed at the fake server; closes them after the test."""
    made: list[AnthropicProvider] = []

    def make(**kw: Any) -> AnthropicProvider:
        kw.setdefault("base_url", fake_anthropic.url)
        kw.setdefault("timeout", 2.0)
        kw.setdefault("max_retries", 2)
        made.append(AnthropicProvider("sk-test-key", **kw))
        return made[-1]

    yield make
    for p in made:
        await p.aclose()


async def call(p: LLMProvider, messages=MESSAGES, max_tokens: int = 512):
    return await p.call_tool(system=SYSTEM, messages=messages, tool=TOOL, max_tokens=max_tokens)


# --------------------------------------------------------------------------- happy path


async def test_request_shape_reply_and_usage(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(tool_use(OPS))
    p = provider(model="claude-test-model")
    assert isinstance(p, LLMProvider)
    assert p.base_url == fake_anthropic.url

    reply = await call(p)

    assert reply.tool_input == OPS
    assert reply.model == "claude-test-model"
    assert reply.stop_reason == "tool_use"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    assert fake_anthropic.problems == []
    [req] = fake_anthropic.requests
    assert (req.method, req.path) == ("POST", "/v1/messages")
    # anthropic 2.14 sends the key as a bearer token; older SDKs used x-api-key. Either is the key.
    assert req.headers.get("authorization") == "Bearer sk-test-key" or req.headers.get("x-api-key") == "sk-test-key"
    assert "anthropic-version" in req.headers
    body = req.body
    assert body["model"] == "claude-test-model"
    assert body["max_tokens"] == 512
    assert body["system"] == SYSTEM
    assert body["messages"] == MESSAGES
    assert body["tools"] == [
        {"name": TOOL.name, "description": TOOL.description, "input_schema": TOOL.input_schema}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": TOOL.name}


async def test_default_model_and_running_usage_total(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(tool_use(OPS), tool_use(OPS))
    p = provider()
    r1 = await call(p)
    longer = [{"role": "user", "content": "I moved to Lisbon last month. " * 50}]
    r2 = await call(p, messages=longer)

    assert fake_anthropic.bodies[0]["model"] == DEFAULT_MODEL == "claude-haiku-4-5"
    assert r2.usage.input_tokens > r1.usage.input_tokens  # the fake counts len(prompt json) // 4
    assert p.usage == r1.usage + r2.usage
    assert p.calls == 2
    assert p.usage.total_tokens == p.usage.input_tokens + p.usage.output_tokens


async def test_responder_hook_sees_each_request(fake_anthropic: Fake, provider: Make) -> None:
    def responder(req: RecordedRequest):
        said = req.body["messages"][-1]["content"]
        return tool_use({"operations": [{"op": "add", "memory": said.upper()}]})

    fake_anthropic.responder = responder
    p = provider()
    reply = await call(p, messages=[{"role": "user", "content": "likes tea"}])
    assert reply.tool_input == {"operations": [{"op": "add", "memory": "LIKES TEA"}]}


# --------------------------------------------------------------------------- retries and failures


async def test_429_then_success_is_retried(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(rate_limited(), tool_use(OPS))
    p = provider(max_retries=2)
    reply = await call(p)
    assert reply.tool_input == OPS
    assert len(fake_anthropic.requests) == 2
    assert fake_anthropic.requests[1].body == fake_anthropic.requests[0].body
    assert [r.headers["x-stainless-retry-count"] for r in fake_anthropic.requests] == ["0", "1"]
    assert p.calls == 1 and p.usage == reply.usage


async def test_overloaded_then_success_is_retried(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(overloaded(), server_error(), tool_use(OPS))
    reply = await call(provider(max_retries=2))
    assert reply.tool_input == OPS
    assert len(fake_anthropic.requests) == 3


async def test_persistent_429_is_unavailable_with_advice(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(*[rate_limited()] * 3)
    p = provider(max_retries=2)
    with pytest.raises(LLMUnavailable) as exc:
        await call(p)
    msg = str(exc.value)
    assert "429" in msg and "rate_limit_error" in msg and "3 attempts" in msg and "try again" in msg
    assert len(fake_anthropic.requests) == 3
    assert isinstance(exc.value, LLMError) and isinstance(exc.value, MemoirError)
    assert p.calls == 0


async def test_persistent_500_is_unavailable(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(*[server_error()] * 3)
    with pytest.raises(LLMUnavailable) as exc:
        await call(provider(max_retries=2))
    assert "HTTP 500 api_error" in str(exc.value) and "try again later" in str(exc.value)
    assert "request-id req_fake" in str(exc.value)
    assert len(fake_anthropic.requests) == 3


async def test_sdk_backoff_without_retry_after(fake_anthropic: Fake, provider: Make) -> None:
    # No retry header at all: the SDK's own exponential back-off (0.5 s, jittered -25 %) applies.
    fake_anthropic.push(server_error(retry_after_ms=None), tool_use(OPS))
    t0 = time.monotonic()
    reply = await call(provider(max_retries=1))
    assert reply.tool_input == OPS
    assert 0.3 < time.monotonic() - t0 < 1.5


async def test_timeout_is_unavailable_and_fast(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(delay(5), delay(5))
    p = provider(timeout=0.2, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable) as exc:
        await call(p)
    elapsed = time.monotonic() - t0
    assert "did not answer within 0.2 s (2 attempts)" in str(exc.value)
    assert "try again later" in str(exc.value)
    assert len(fake_anthropic.requests) == 2
    assert elapsed < 2.0


async def test_timeout_then_success_is_retried(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(delay(5), tool_use(OPS))
    reply = await call(provider(timeout=0.2, max_retries=1))
    assert reply.tool_input == OPS
    assert len(fake_anthropic.requests) == 2


async def test_connection_refused_is_unavailable(provider: Make) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = provider(base_url=f"http://127.0.0.1:{port}", timeout=1, max_retries=0)
    with pytest.raises(LLMUnavailable) as exc:
        await call(p)
    assert f"cannot connect to the Anthropic API at http://127.0.0.1:{port}" in str(exc.value)
    assert "ANTHROPIC_BASE_URL" in str(exc.value)


async def test_bad_key_is_unavailable_and_not_retried(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(error(401, "authentication_error", "invalid x-api-key"))
    with pytest.raises(LLMUnavailable) as exc:
        await call(provider())
    assert "ANTHROPIC_API_KEY" in str(exc.value) and "invalid x-api-key" in str(exc.value)
    assert len(fake_anthropic.requests) == 1


async def test_invalid_request_is_plain_llm_error(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(error(400, "invalid_request_error", "messages: text content blocks must be non-empty"))
    with pytest.raises(LLMError) as exc:
        await call(provider())
    assert not isinstance(exc.value, LLMUnavailable)
    assert "rejected the request" in str(exc.value) and "non-empty" in str(exc.value)
    assert len(fake_anthropic.requests) == 1


async def test_unknown_model_says_how_to_fix(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(error(404, "not_found_error", "model: claude-nope"))
    with pytest.raises(LLMError) as exc:
        await call(provider(model="claude-nope"))
    assert "'claude-nope'" in str(exc.value) and "MEMOIR_MODEL" in str(exc.value)


def test_missing_api_key_is_unavailable() -> None:
    for key in (None, ""):
        with pytest.raises(LLMUnavailable) as exc:
            AnthropicProvider(key)
        assert "ANTHROPIC_API_KEY" in str(exc.value) and "sampling" in str(exc.value)
    assert "ANTHROPIC_API_KEY" in str(LLMUnavailable())


# --------------------------------------------------------------------------- bad output


async def test_text_instead_of_tool_call_is_bad_output(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(text("I don't think anything is worth remembering."))
    p = provider()
    with pytest.raises(LLMBadOutput) as exc:
        await call(p)
    assert "did not call the tool 'record_operations'" in str(exc.value)
    assert exc.value.raw_text == "I don't think anything is worth remembering."
    assert p.usage.input_tokens > 0  # tokens were spent all the same


async def test_non_object_tool_input_is_bad_output(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(tool_use('{"operations": [}'))
    with pytest.raises(LLMBadOutput) as exc:
        await call(provider())
    assert "not a JSON object" in str(exc.value)
    assert exc.value.tool_input == '{"operations": [}'


async def test_other_tool_name_is_bad_output(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(tool_use(OPS, name="something_else"))
    with pytest.raises(LLMBadOutput):
        await call(provider())


async def test_cut_off_at_max_tokens_is_bad_output(fake_anthropic: Fake, provider: Make) -> None:
    fake_anthropic.push(text('{"operations": [{"op": "ad', stop_reason="max_tokens"))
    with pytest.raises(LLMBadOutput) as exc:
        await call(provider(), max_tokens=16)
    assert "cut off at max_tokens=16" in str(exc.value)


async def test_schema_mismatch_passes_through_for_the_caller_to_validate(fake_anthropic: Fake, provider: Make) -> None:
    # The provider guarantees a dict; checking it against the schema is the caller's pydantic model's job.
    fake_anthropic.push(tool_use({"ops": "nope"}, text="Here you go."))
    reply = await call(provider())
    assert reply.tool_input == {"ops": "nope"}
    assert reply.text == "Here you go."


# --------------------------------------------------------------------------- the fake itself


async def test_fake_rejects_what_the_api_rejects(fake_anthropic: Fake) -> None:
    async with anthropic.AsyncAnthropic(api_key="k", base_url=fake_anthropic.url, max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as exc:
            await client.messages.create(
                model="m",
                max_tokens=10,
                messages=[{"role": "assistant", "content": "hi"}],
                tools=[{"name": "a", "input_schema": {"type": "object"}}],
                tool_choice={"type": "tool", "name": "b"},
            )
    assert exc.value.type == "invalid_request_error"
    assert any("first message must be 'user'" in p for p in fake_anthropic.problems)
    assert any("'b' is not one of the tools" in p for p in fake_anthropic.problems)


async def test_fake_answers_loudly_when_the_script_runs_out(fake_anthropic: Fake, provider: Make) -> None:
    with pytest.raises(LLMUnavailable) as exc:
        await call(provider(max_retries=2))
    assert "no scripted reply left" in str(exc.value)
    assert len(fake_anthropic.requests) == 1  # x-should-retry: false


# --------------------------------------------------------------------------- CallbackProvider


class Recorder:
    """A completion function that records its arguments and answers from a list."""

    def __init__(self, *answers: str | Completion) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, list[dict], int]] = []

    async def __call__(self, system: str, messages: list[dict], max_tokens: int) -> str | Completion:
        self.calls.append((system, messages, max_tokens))
        return self.answers.pop(0)


async def test_callback_provider_asks_for_json_and_parses_fenced_reply() -> None:
    rec = Recorder('Sure! Here is the input:\n```json\n{"operations": [{"op": "add", "memory": "Lives in Lisbon"}]}\n```\n')
    p = CallbackProvider(rec)
    assert isinstance(p, LLMProvider) and p.name == "mcp-sampling"
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"},
    ]
    reply = await p.call_tool(system=SYSTEM, messages=messages, tool=TOOL, max_tokens=300)

    assert reply.tool_input == OPS
    [(system, sent, max_tokens)] = rec.calls
    assert system.startswith(SYSTEM)
    assert "record_operations" in system and json.dumps(TOOL.input_schema, separators=(",", ":"), sort_keys=True) in system
    assert sent == [
        {"role": "user", "content": "part one\npart two"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"},
    ]
    assert max_tokens == 300


async def test_callback_provider_bare_json_and_completion_object() -> None:
    rec = Recorder(Completion(text=json.dumps(OPS), model="client-model", usage=Usage(10, 5)))
    p = CallbackProvider(rec, name="sampling")
    reply = await p.call_tool(system="", messages=MESSAGES, tool=TOOL, max_tokens=100)
    assert reply.tool_input == OPS and reply.model == "client-model" and reply.usage == Usage(10, 5)
    assert p.usage == Usage(10, 5) and p.calls == 1
    assert rec.calls[0][0].startswith("Answer by calling the tool `record_operations`")


@pytest.mark.parametrize(
    "junk", ["I cannot help with that.", "", "```json\n{not json}\n```", '["a", "list"]', "{'single': 'quotes'}"]
)
async def test_callback_provider_junk_is_bad_output(junk: str) -> None:
    with pytest.raises(LLMBadOutput) as exc:
        await CallbackProvider(Recorder(junk)).call_tool(system=SYSTEM, messages=MESSAGES, tool=TOOL, max_tokens=50)
    assert exc.value.raw_text == junk
    assert "no JSON object" in str(exc.value)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  \n{"a": {"b": [1, 2]}}\n', {"a": {"b": [1, 2]}}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('```JSON\n{"a": 1}```', {"a": 1}),
        ('Here: {"a": "has } brace"} — done.', {"a": "has } brace"}),
        ('Example {bad} then ```json\n{"a": 2}\n``` and {"c": 3}', {"a": 2}),
        ('noise { "a": 1 } trailing {"b": 2}', {"a": 1}),
        ("[1, 2]", None),
        ("nothing", None),
    ],
)
def test_extract_json_object(reply: str, expected: dict | None) -> None:
    assert extract_json_object(reply) == expected


def test_resolver_building_blocks() -> None:
    # The pieces the MCP layer uses with Resolve(...)/Sample: the prompt is deterministic (a
    # 2026-07-28 sampling round is re-asked when its rendering changes) and the parse is strict.
    assert json_tool_system(SYSTEM, TOOL) == json_tool_system(SYSTEM, TOOL)
    assert json_tool_system(SYSTEM, TOOL).startswith(SYSTEM + "\n\nAnswer by calling the tool")
    assert tool_input_from_text('```json\n{"operations": []}\n```', TOOL) == {"operations": []}
    with pytest.raises(LLMBadOutput) as exc:
        tool_input_from_text("no idea", TOOL)
    assert "'record_operations'" in str(exc.value) and exc.value.raw_text == "no idea"
