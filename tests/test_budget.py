"""search_memories(max_tokens=N) (issue 13, part 3) through the MCP tools, in both protocol eras."""

from __future__ import annotations

from mcp import Client

from memoir.memory.budget import count_tokens
from memoir.tools.context import AppContext

from .helpers import call, call_error


def test_the_counting_rule() -> None:
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    assert count_tokens("a") == 1 and count_tokens("") == 1
    assert count_tokens("Ava likes to ski") == 4  # 16 ASCII characters
    assert count_tokens("Léa") == 1 + 1  # "La" -> 1, "é" -> 1
    assert count_tokens("用户喜欢喝绿茶") == 7
    assert count_tokens("ski 🎿") == 1 + 1


async def test_results_are_taken_in_rank_order_skipping_what_does_not_fit(client: Client) -> None:
    # last_n ranks newest first: short (4 tokens), long (25), short (4), short (3).
    texts = ["Ava skis at dawn", "Ava likes tea", "Ava " + "collects old maps of the Alps and " * 3 + "x", "Ava runs far"]
    added = [await call(client, "add_memory", memory=t) for t in texts]
    costs = [count_tokens(t["memory"]) for t in added]
    assert costs == [4, 4, 27, 3]
    newest_first = list(reversed(added))

    everything = await call(client, "search_memories", retrieval_method="last_n")
    assert everything["tokens"] == sum(costs) and everything["truncated_by_budget"] is False

    found = await call(client, "search_memories", retrieval_method="last_n", max_tokens=12)
    # runs far (3) fits, the 27-token memory is skipped, tea (4) and skis (4) still fit: 11.
    assert [r["memory_id"] for r in found["results"]] == [
        newest_first[0]["memory_id"], newest_first[2]["memory_id"], newest_first[3]["memory_id"]
    ]
    assert found["tokens"] == 11 and found["truncated_by_budget"] is True
    # Never cut: every result is whole.
    assert {r["memory"] for r in found["results"]} <= set(texts)

    exact = await call(client, "search_memories", retrieval_method="last_n", max_tokens=sum(costs))
    assert len(exact["results"]) == 4 and exact["truncated_by_budget"] is False
    tiny = await call(client, "search_memories", retrieval_method="last_n", max_tokens=2)
    assert tiny["results"] == [] and tiny["tokens"] == 0 and tiny["truncated_by_budget"] is True
    # With a query, by keyword and by the default method alike.
    for method in ("keyword", "hybrid", "semantic"):
        ranked = await call(client, "search_memories", query="Ava", retrieval_method=method)
        budget = await call(client, "search_memories", query="Ava", retrieval_method=method, max_tokens=8)
        kept = [r["memory_id"] for r in budget["results"]]
        assert kept == [r["memory_id"] for r in ranked["results"] if r["memory_id"] in kept], method  # rank order
        assert budget["tokens"] <= 8 and budget["truncated_by_budget"] is True, method


async def test_a_bad_budget_is_a_clear_error(client: Client, app: AppContext) -> None:
    await call(client, "add_memory", memory="Ava likes tea")
    for bad in (0, -5, 100_001):
        text = await call_error(client, "search_memories", query="tea", max_tokens=bad)
        assert "max_tokens:" in text and "1 to 100,000" in text and "omit it" in text, text
