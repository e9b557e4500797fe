"""Relevance (issue 13, part 2) through the MCP tools, in both protocol eras: every result of a
method with a query carries `relevance` in [0, 1]; `min_relevance` (default
memoir.memory.ranking.DEFAULT_MIN_RELEVANCE) drops what is not about the question."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from memoir.memory.ranking import DEFAULT_MIN_RELEVANCE, coverage, relevance, term_weight
from memoir.server.app import build_server, running_app
from memoir.server.settings import Settings

from .conftest import ERAS, held
from .fake_anthropic import FakeAnthropic, fake_anthropic, tool_use  # noqa: F401
from .helpers import call, call_error

SKIING = ["Ava likes to ski in the Alps every winter", "Ava bought new ski boots", "Ava's ski instructor is called Marco"]


async def store(client: Client, texts: list[str] = SKIING) -> list[str]:
    return [(await call(client, "add_memory", memory=t))["memory_id"] for t in texts]


def relevances(found: dict) -> list[float | None]:
    return [r["relevance"] for r in found["results"]]


async def test_every_method_with_a_query_gives_relevance_in_0_1(client: Client) -> None:
    ids = await store(client)
    for method in ("hybrid", "semantic", "keyword"):
        found = await call(client, "search_memories", query="ski boots", retrieval_method=method, min_relevance=0)
        assert found["retrieval_method"] == method
        assert found["results"], method
        assert all(isinstance(r, float) and 0 <= r <= 1 for r in relevances(found)), (method, found)
        assert found["results"][0]["memory_id"] == ids[1]
        assert found["results"][0]["relevance"] > 0.9, (method, found["results"][0])


async def test_last_n_and_first_n_have_no_query_so_relevance_is_null_and_nothing_is_dropped(client: Client) -> None:
    ids = await store(client)
    for method, order in (("last_n", ids[::-1]), ("first_n", ids)):
        found = await call(client, "search_memories", retrieval_method=method, min_relevance=1)
        assert [r["memory_id"] for r in found["results"]] == order
        assert relevances(found) == [None, None, None]


async def test_an_unrelated_query_finds_nothing_by_default(client: Client) -> None:
    await store(client)
    for method in ("hybrid", "semantic", "keyword"):
        found = await call(client, "search_memories", query="tea", retrieval_method=method)
        assert found == {"results": [], "retrieval_method": method, "tokens": 0, "truncated_by_budget": False}
    assert (await call(client, "search_memories", query="Which programming languages does she know?"))["results"] == []


async def test_min_relevance_0_returns_the_best_of_a_bad_lot(client: Client) -> None:
    await store(client)
    found = await call(client, "search_memories", query="tea", min_relevance=0)
    assert found["retrieval_method"] == "hybrid"
    assert len(found["results"]) == 3
    assert all(r < DEFAULT_MIN_RELEVANCE for r in relevances(found))
    # The threshold cuts exactly there: what comes back at t is what had relevance >= t.
    t = sorted(relevances(found))[1]
    cut = await call(client, "search_memories", query="tea", min_relevance=t)
    assert [r["memory_id"] for r in cut["results"]] == [r["memory_id"] for r in found["results"] if r["relevance"] >= t]


async def test_a_related_query_keeps_its_answer_at_the_default(client: Client) -> None:
    ids = await store(client)
    found = await call(client, "search_memories", query="Who teaches Ava to ski?")
    # Not necessarily first: every word of the query is in every memory here, and BM25's scores
    # differ only by neighbour expansion (the middle memory has two neighbours), at idf's floor.
    answer = [r for r in found["results"] if r["memory_id"] == ids[2]]
    assert answer and answer[0]["relevance"] >= DEFAULT_MIN_RELEVANCE


async def test_words_absent_from_the_store_find_nothing(client: Client) -> None:
    await store(client)
    for query in ("quantum chromodynamics", "zucchini", "mortgage refinancing rates"):
        for method in ("hybrid", "semantic", "keyword"):
            assert (await call(client, "search_memories", query=query, retrieval_method=method))["results"] == [], (query, method)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "high"])
async def test_a_bad_min_relevance_is_a_field_error(client: Client, bad: object) -> None:
    await store(client, SKIING[:1])
    text = await call_error(client, "search_memories", query="ski", min_relevance=bad)
    assert "min_relevance" in text
    if isinstance(bad, float):
        assert "from 0 to 1" in text and "pass 0" in text


async def test_keyword_relevance_without_embeddings(db_path: Path) -> None:
    settings = Settings(db_path=db_path, embeddings="off")
    async with running_app(settings) as app:
        for era in ERAS:
            async for client in held(Client(build_server(app), mode=era)):
                if era == ERAS[0]:
                    await store(client)
                found = await call(client, "search_memories", query="ski instructor")
                assert found["retrieval_method"] == "keyword"
                assert found["results"][0]["memory"] == SKIING[2]
                assert all(0 <= r <= 1 for r in relevances(found))
                # "Ava" is in every memory: a memory sharing only the name is not about the question.
                assert (await call(client, "search_memories", query="Ava cello"))["results"] == []
                assert len((await call(client, "search_memories", query="Ava cello", min_relevance=0))["results"]) == 3


async def test_agentic_judges_only_relevant_candidates(db_path: Path, fake_anthropic: FakeAnthropic) -> None:
    settings = Settings(db_path=db_path, anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url, llm_max_retries=0)
    async with running_app(settings) as app:
        async for client in held(Client(build_server(app), mode="legacy")):
            ids = await store(client)
            # Unrelated: no candidate passes, so the model is not asked at all.
            found = await call(client, "search_memories", query="tea", retrieval_method="agentic")
            assert found == {"results": [], "retrieval_method": "agentic", "tokens": 0, "truncated_by_budget": False}
            assert fake_anthropic.requests == []
            fake_anthropic.push(tool_use({"memory_ids": [ids[1]]}))
            found = await call(client, "search_memories", query="ski boots", retrieval_method="agentic")
            assert [r["memory_id"] for r in found["results"]] == [ids[1]]
            assert 0.9 < found["results"][0]["relevance"] <= 1


def test_coverage_weighs_rare_words_and_absent_words_the_most() -> None:
    size = 100
    weights = {"ava": term_weight(100, size), "ski": term_weight(3, size), "tea": term_weight(0, size)}
    assert weights["tea"] > weights["ski"] > weights["ava"] > 0
    assert coverage(weights, {"ava", "ski", "tea"}) == 1.0
    assert coverage(weights, {"ava"}) < 0.1
    assert coverage({}, {"ava"}) == 0.0
    assert relevance(cosine=0.9, coverage=1.0) > 0.99 > relevance(cosine=0.1, coverage=0.0)
    with pytest.raises(ValueError):
        relevance()
