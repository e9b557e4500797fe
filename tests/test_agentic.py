"""search_memories(retrieval_method="agentic"): hybrid candidates judged by a model."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from memoir.memory.judge import AGENTIC_CANDIDATES
from memoir.server.app import build_server, running_app
from memoir.server.settings import Settings
from memoir.tools.context import AppContext

from .conftest import ERAS, held
from .fake_anthropic import FakeAnthropic, fake_anthropic, text, tool_use  # noqa: F401
from .helpers import call, call_error
from .test_extraction import SamplingClient


@pytest.fixture
async def llm_client(db_path: Path, fake_anthropic: FakeAnthropic) -> AsyncIterator[Client]:
    settings = Settings(db_path=db_path, anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url, llm_max_retries=0)
    async with running_app(settings) as app:
        async for c in held(Client(build_server(app), mode="legacy")):
            yield c


def listed_ids(prompt: str) -> list[str]:
    return re.findall(r"id=([0-9a-f]+)", prompt)


async def test_the_model_orders_the_results_and_unknown_ids_are_dropped(
    llm_client: Client, fake_anthropic: FakeAnthropic
) -> None:
    run = await call(llm_client, "add_memory", memory="Ava wakes up at 5 am to run")
    tea = await call(llm_client, "add_memory", memory="Ava drinks green tea every morning")
    await call(llm_client, "add_memory", memory="Ava lives in Denver")
    other = await call(llm_client, "add_memory", memory="Bob wakes at noon", user_id="bob")
    fake_anthropic.push(tool_use({"memory_ids": [tea["memory_id"], "feedfacecafe", other["memory_id"], run["memory_id"]]}))
    found = await call(llm_client, "search_memories", query="What is Ava's morning routine?", retrieval_method="agentic")
    assert found["retrieval_method"] == "agentic"
    assert [r["memory_id"] for r in found["results"]] == [tea["memory_id"], run["memory_id"]]
    assert found["results"][0]["score"] > found["results"][1]["score"]
    body = fake_anthropic.requests[0].body
    assert body["tool_choice"] == {"type": "tool", "name": "select_relevant_memories"}
    prompt = body["messages"][0]["content"]
    assert "morning routine" in prompt and other["memory_id"] not in prompt


async def test_results_are_cut_to_the_limit_and_candidates_are_bounded(
    llm_client: Client, fake_anthropic: FakeAnthropic
) -> None:
    ids = [(await call(llm_client, "add_memory", memory=f"Ava visited city number {i}"))["memory_id"] for i in range(60)]
    fake_anthropic.push(tool_use({"memory_ids": list(reversed(ids))}))
    found = await call(llm_client, "search_memories", query="which cities", retrieval_method="agentic", limit=3)
    assert len(found["results"]) == 3
    shown = listed_ids(fake_anthropic.requests[0].body["messages"][0]["content"])
    assert len(shown) == AGENTIC_CANDIDATES < len(ids)
    assert [r["memory_id"] for r in found["results"]] == [i for i in reversed(ids) if i in shown][:3]


async def test_an_answer_without_ids_falls_back_to_the_candidates_and_says_so(
    llm_client: Client, fake_anthropic: FakeAnthropic
) -> None:
    ski = await call(llm_client, "add_memory", memory="Ava likes to ski")
    fake_anthropic.push(text("I cannot decide."))
    found = await call(llm_client, "search_memories", query="skiing", retrieval_method="agentic")
    assert found["retrieval_method"] == "hybrid"
    assert found["results"][0]["memory_id"] == ski["memory_id"]


@pytest.mark.parametrize("mode", ERAS)
async def test_agentic_through_the_clients_model(app: AppContext, mode: str) -> None:
    await call_direct_adds(app)
    ids = {m.memory: m.memory_id for m in (await app.store.list("default")).memories}
    model = SamplingClient(json.dumps({"memory_ids": [ids["Ava hates cilantro"]]}))
    async with Client(build_server(app), mode=mode, sampling_callback=model) as client:
        found = await call(client, "search_memories", query="What should I not cook for Ava?", retrieval_method="agentic")
        assert [r["memory"] for r in found["results"]] == ["Ava hates cilantro"]
        assert found["retrieval_method"] == "agentic"
        assert "select_relevant_memories" in model.requests[0].system_prompt
        # Other methods never ask the client's model.
        asked = len(model.requests)
        await call(client, "search_memories", query="cook")
        assert len(model.requests) == asked


@pytest.mark.parametrize("mode", ERAS)
async def test_agentic_without_any_model_is_a_clear_error(app: AppContext, mode: str) -> None:
    await call_direct_adds(app)
    async with Client(build_server(app), mode=mode) as client:
        error = await call_error(client, "search_memories", query="cook", retrieval_method="agentic")
    assert "ANTHROPIC_API_KEY" in error and "sampling" in error


async def call_direct_adds(app: AppContext) -> None:
    for text_ in ("Ava hates cilantro", "Ava likes to ski", "Ava lives in Denver"):
        await app.store.add("default", text_)
