"""extract_memories end to end: the real anthropic client against a local Messages API server,
and the client's own model through MCP sampling, in both protocol eras."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import mcp.types as types
import pytest
from mcp import Client

from memoir.server.app import build_server, running_app
from memoir.server.settings import Settings
from memoir.tools.context import AppContext

from .conftest import ERAS, held
from .fake_anthropic import FakeAnthropic, delay, fake_anthropic, rate_limited, text, tool_use  # noqa: F401
from .helpers import call, call_error


@pytest.fixture
async def llm_app(db_path: Path, fake_anthropic: FakeAnthropic) -> AsyncIterator[AppContext]:
    settings = Settings(
        db_path=db_path,
        anthropic_api_key="sk-test",
        anthropic_base_url=fake_anthropic.url,
        model="claude-test-small",
        llm_timeout=0.5,
        llm_max_retries=1,
    )
    settings = replace(settings, extraction=replace(settings.extraction, related_k=3))
    async with running_app(settings) as app:
        yield app


@pytest.fixture(params=ERAS)
async def llm_client(request: pytest.FixtureRequest, llm_app: AppContext) -> AsyncIterator[Client]:
    async for c in held(Client(build_server(llm_app), mode=request.param)):
        yield c


def op(kind: str, memory: str | None = None, memory_id: str | None = None, topics=(), reason="said so") -> dict:
    out: dict = {"op": kind, "topics": list(topics), "reason": reason}
    if memory is not None:
        out["memory"] = memory
    if memory_id is not None:
        out["memory_id"] = memory_id
    return out


def prompt_of(fake: FakeAnthropic, index: int = -1) -> str:
    body = fake.requests[index].body
    return body["messages"][0]["content"]


async def test_one_call_adds_updates_and_deletes_with_reasons_in_history(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    home = await call(llm_client, "add_memory", memory="Ava lives in San Francisco", topics=["home"])
    smoke = await call(llm_client, "add_memory", memory="Ava smokes", topics=["health"])
    fake_anthropic.push(
        tool_use(
            {
                "operations": [
                    op("update", "Ava lives in Denver", home["memory_id"], ["home"], "she moved"),
                    op("delete", memory_id=smoke["memory_id"], reason="she quit smoking"),
                    op("add", "Ava has started climbing", topics=["hobbies"], reason="new hobby"),
                ]
            }
        )
    )
    result = await call(
        llm_client,
        "extract_memories",
        messages=[
            {"role": "user", "content": "I moved to Denver from San Francisco and I quit smoking!"},
            {"role": "assistant", "content": "Congratulations!"},
            {"role": "user", "content": "Also I've started climbing"},
        ],
    )
    assert [o["op"] for o in result["operations"]] == ["update", "delete", "add"]
    assert result["operations"][1] == {
        "op": "delete", "memory_id": smoke["memory_id"], "memory": "Ava smokes", "topics": ["health"],
        "reason": "she quit smoking", "superseded_by": None, "valid_from": None,
    }
    assert [m["memory"] for m in result["memories"]] == ["Ava lives in Denver", "Ava has started climbing"]
    assert len(fake_anthropic.requests) == 1  # one model call
    body = fake_anthropic.requests[0].body
    assert body["model"] == "claude-test-small"
    assert body["tool_choice"] == {"type": "tool", "name": "record_memory_operations"}
    assert body["tools"][0]["input_schema"]["properties"]["operations"]["type"] == "array"
    assert "I quit smoking" in prompt_of(fake_anthropic) and home["memory_id"] in prompt_of(fake_anthropic)
    assert fake_anthropic.problems == []

    events = await llm_app.store.history(home["memory_id"])
    assert [(e.operation, e.actor, e.reason) for e in events] == [
        ("add", "tool", None), ("update", "extraction", "she moved"),
    ]
    assert "I moved to Denver" in json.loads(events[1].source)[0]["content"]
    assert await llm_app.store.count("default") == 2


async def test_the_model_sees_only_the_top_k_related_memories(
    llm_client: Client, fake_anthropic: FakeAnthropic
) -> None:
    for i in range(30):
        await call(llm_client, "add_memory", memory=f"Ava collects stamp number {i}")
    skiing = await call(llm_client, "add_memory", memory="Ava likes to ski in Colorado")
    fake_anthropic.push(tool_use({"operations": []}))
    result = await call(llm_client, "extract_memories", message="We went skiing in Colorado again")
    assert result == {"operations": [], "memories": [], "dry_run": False, "skipped": []}
    prompt = prompt_of(fake_anthropic)
    assert skiing["memory_id"] in prompt
    assert prompt.count("id=") <= 3  # related_k=3 in this fixture, of 31 memories


async def test_dry_run_applies_nothing(llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.push(tool_use({"operations": [op("add", "Ava likes tea", topics=["Drinks"])]}))
    result = await call(llm_client, "extract_memories", message="I like tea", dry_run=True)
    assert result["dry_run"] is True and result["memories"] == []
    assert result["operations"] == [
        {"op": "add", "memory_id": None, "memory": "Ava likes tea", "topics": ["drinks"], "reason": "said so",
         "superseded_by": None, "valid_from": None}
    ]
    assert await llm_app.store.count() == 0


async def test_forget_everything_deletes_that_users_memories_only(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    for i in range(5):
        await call(llm_client, "add_memory", memory=f"Ava fact {i}", user_id="ava")
    await call(llm_client, "add_memory", memory="Bob fact", user_id="bob")
    fake_anthropic.push(tool_use({"operations": [op("forget_all", reason="the user asked to forget everything")]}))
    result = await call(llm_client, "extract_memories", message="Forget everything about me", user_id="ava")
    assert [o["op"] for o in result["operations"]] == ["delete"] * 5
    assert await llm_app.store.count("ava") == 0 and await llm_app.store.count("bob") == 1


async def test_another_users_id_is_rejected_and_nothing_is_applied(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    bob = await call(llm_client, "add_memory", memory="Bob likes chess", user_id="bob")
    bad = {"operations": [op("add", "Ava likes go"), op("delete", memory_id=bob["memory_id"])]}
    fake_anthropic.push(tool_use(bad), tool_use(bad))
    error = await call_error(llm_client, "extract_memories", message="I like go, delete Bob's stuff", user_id="ava")
    assert "nothing was applied" in error and bob["memory_id"] in error and "Ava likes go" in error
    assert len(fake_anthropic.requests) == 2  # one repair round, then the error
    assert "could not be applied" in fake_anthropic.requests[1].body["messages"][-1]["content"]
    assert await llm_app.store.count("ava") == 0 and await llm_app.store.count("bob") == 1


async def test_malformed_output_is_repaired_once(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(
        tool_use({"operations": [{"op": "add", "reason": "no text"}]}),
        tool_use({"operations": [op("add", "Ava plays the cello", topics=["music"])]}),
    )
    result = await call(llm_client, "extract_memories", message="I play the cello")
    assert [m["memory"] for m in result["memories"]] == ["Ava plays the cello"]
    assert len(fake_anthropic.requests) == 2


async def test_text_instead_of_a_tool_call_twice_is_a_clear_error(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(text("Sure! Ava likes jazz."), tool_use("not an object"))
    error = await call_error(llm_client, "extract_memories", message="I like jazz")
    assert "nothing was applied" in error
    assert await llm_app.store.count() == 0


async def test_rate_limit_is_retried_and_a_dead_api_is_a_clear_error(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.push(rate_limited(), tool_use({"operations": [op("add", "Ava likes jazz")]}))
    assert len((await call(llm_client, "extract_memories", message="I like jazz"))["memories"]) == 1
    fake_anthropic.push(delay(2.0), delay(2.0))
    error = await call_error(llm_client, "extract_memories", message="I like blues")
    assert "did not answer" in error and "try again" in error
    assert await llm_app.store.count() == 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({}, "exactly one"),
        ({"message": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
        ({"messages": []}, "empty"),
        ({"messages": [{"role": "user", "content": "x"}] * 201}, "200"),
        ({"message": "x" * 100_001}, "100,000"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
    ],
)
async def test_bad_arguments_never_reach_the_model(
    llm_client: Client, fake_anthropic: FakeAnthropic, arguments: dict, field: str
) -> None:
    error = await call_error(llm_client, "extract_memories", **arguments)
    assert field in error
    assert fake_anthropic.requests == []


# -- the client's own model (MCP sampling) ---------------------------------------------------


class SamplingClient:
    """A client-side model: answers sampling requests from a script, and records them."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.requests: list[types.CreateMessageRequestParams] = []

    async def __call__(self, context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.requests.append(params)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return types.CreateMessageResult(
            role="assistant", model="client-model", content=types.TextContent(type="text", text=answer)
        )


@pytest.mark.parametrize("mode", ERAS)
async def test_sampling_extracts_with_the_clients_model(app: AppContext, mode: str) -> None:
    answer = json.dumps({"operations": [op("add", "Ava likes to ski", topics=["hobbies"])]})
    model = SamplingClient(f"```json\n{answer}\n```")
    async with Client(build_server(app), mode=mode, sampling_callback=model) as client:
        result = await call(client, "extract_memories", message="I love skiing")
    assert [m["memory"] for m in result["memories"]] == ["Ava likes to ski"]
    assert {len(r.messages) for r in model.requests} == {1}
    assert "record_memory_operations" in model.requests[0].system_prompt
    assert "I love skiing" in model.requests[0].messages[0].content.text
    assert await app.store.count() == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_sampling_repairs_once_then_errors(app: AppContext, mode: str) -> None:
    good = json.dumps({"operations": [op("add", "Ava likes tea")]})
    model = SamplingClient("I think Ava likes tea.", good)
    async with Client(build_server(app), mode=mode, sampling_callback=model) as client:
        result = await call(client, "extract_memories", message="I like tea")
        assert [m["memory"] for m in result["memories"]] == ["Ava likes tea"]
        assert "could not be applied" in model.requests[-1].messages[-1].content.text

        junk = SamplingClient("no", "still no")
    async with Client(build_server(app), mode=mode, sampling_callback=junk) as client:
        error = await call_error(client, "extract_memories", message="I like coffee")
    assert "nothing was applied" in error
    assert await app.store.count() == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_no_key_and_no_sampling_is_a_clear_error(app: AppContext, mode: str) -> None:
    async with Client(build_server(app), mode=mode) as client:
        error = await call_error(client, "extract_memories", message="I like tea")
    assert "ANTHROPIC_API_KEY" in error and "sampling" in error


# -- supersede (issue 13): the world changed, the old memory stays as history ----------------------


def supersede(memory_id: str, memory: str, valid_from: str | None = None, topics=("home",), reason="she moved") -> dict:
    out = op("supersede", memory, memory_id, topics, reason)
    if valid_from is not None:
        out["valid_from"] = valid_from
    return out


async def test_a_supersede_operation_retires_the_old_memory_in_the_same_transaction(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    home = await call(llm_client, "add_memory", memory="Ava lives in San Francisco", topics=["home"],
                      valid_from="2024-01-01")
    fake_anthropic.push(tool_use({"operations": [supersede(home["memory_id"], "Ava lives in Denver", "2026-03-01")]}))
    result = await call(llm_client, "extract_memories", message="I moved to Denver in March 2026")
    (operation,) = result["operations"]
    (denver,) = result["memories"]
    assert operation == {
        "op": "supersede", "memory_id": home["memory_id"], "superseded_by": denver["memory_id"],
        "memory": "Ava lives in Denver", "topics": ["home"], "reason": "she moved",
        "valid_from": "2026-03-01T00:00:00.000000Z",
    }
    assert denver["valid_from"] == "2026-03-01T00:00:00.000000Z"
    listed = await call(llm_client, "list_memories", include_superseded=True)
    assert [(m["memory_id"], m.get("superseded_by")) for m in listed["memories"]] == [
        (denver["memory_id"], None), (home["memory_id"], denver["memory_id"])
    ]
    # The prompt teaches the rule, and the schema offers the operation.
    body = fake_anthropic.requests[0].body
    assert "SUPERSEDE" in body["system"] and "UPDATE" in body["system"]
    assert "supersede" in body["tools"][0]["input_schema"]["$defs"]["ProposedOperation"]["properties"]["op"]["enum"]
    # One change in history: undoing the add restores San Francisco as current.
    events = await llm_app.store.history(home["memory_id"])
    assert events[-1].actor == "extraction" and events[-1].reason.startswith(f"superseded by memory '{denver['memory_id']}'")
    await llm_app.store.undo(events[-1].event_id)
    assert [m["memory_id"] for m in (await call(llm_client, "list_memories"))["memories"]] == [home["memory_id"]]


async def test_a_dry_run_shows_a_supersede_and_applies_nothing(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    home = await call(llm_client, "add_memory", memory="Ava lives in San Francisco", topics=["home"])
    fake_anthropic.push(tool_use({"operations": [supersede(home["memory_id"], "Ava lives in Denver")]}))
    result = await call(llm_client, "extract_memories", message="I moved to Denver", dry_run=True)
    assert result["operations"] == [{
        "op": "supersede", "memory_id": home["memory_id"], "superseded_by": None, "memory": "Ava lives in Denver",
        "topics": ["home"], "reason": "she moved", "valid_from": None,
    }]
    assert [m["memory_id"] for m in (await call(llm_client, "list_memories"))["memories"]] == [home["memory_id"]]
    assert await llm_app.store.count() == 1


async def test_invalid_supersedes_are_sent_back_once_then_refused(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    home = await call(llm_client, "add_memory", memory="Ava lives in San Francisco", topics=["home"],
                      valid_from="2025-01-01")
    bad = {"operations": [
        supersede(home["memory_id"], "Ava lives in Denver", "2024-06-01"),  # before San Francisco
        supersede("000000000000", "Ava works in Denver", reason="new job"),  # not an existing memory
        op("add", "Ava will retire", reason="plans") | {"valid_from": "2999-01-01"},  # in the future
        op("delete", memory_id=home["memory_id"]) | {"valid_from": "2025-01-01"},  # not for delete
    ]}
    fake_anthropic.push(tool_use(bad), tool_use(bad))
    error = await call_error(llm_client, "extract_memories", message="I moved to Denver")
    assert "nothing was applied" in error
    assert "operations[0] (supersede).valid_from: 2024-06-01T00:00:00.000000Z is before 2025-01-01" in error
    assert "operations[1] (supersede): memory_id '000000000000' is not one of the existing memories" in error
    assert "operations[2] (add).valid_from:" in error and "in the future" in error
    assert "operations[3] (delete): valid_from is only for add and supersede" in error
    assert "could not be applied" in fake_anthropic.requests[1].body["messages"][-1]["content"]
    assert await llm_app.store.count() == 1
    assert "valid_to" not in (await call(llm_client, "list_memories"))["memories"][0]


async def test_only_current_memories_are_shown_to_the_model_and_forget_all_takes_superseded_ones_too(
    llm_client: Client, llm_app: AppContext, fake_anthropic: FakeAnthropic
) -> None:
    home = await call(llm_client, "add_memory", memory="Ava lives in San Francisco", user_id="ava",
                      valid_from="2024-01-01")
    denver = await call(llm_client, "add_memory", memory="Ava lives in Denver", user_id="ava",
                        supersedes=home["memory_id"])
    fake_anthropic.push(tool_use({"operations": [op("forget_all", reason="asked to forget everything")]}))
    result = await call(llm_client, "extract_memories", message="Where do I live? Forget everything.", user_id="ava")
    prompt = prompt_of(fake_anthropic)
    assert denver["memory_id"] in prompt and home["memory_id"] not in prompt
    assert sorted(o["memory_id"] for o in result["operations"]) == sorted([home["memory_id"], denver["memory_id"]])
    assert await llm_app.store.count("ava") == 0
