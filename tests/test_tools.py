"""Every tool through an in-process MCP client, in both protocol eras (see conftest.ERAS)."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from memoir.tools.context import AppContext

from .helpers import TOOLS, call, call_error

pytestmark = pytest.mark.both_backends


async def snapshot(app: AppContext) -> tuple:
    """Everything a rejected call must leave unchanged."""
    db = app.store._writer
    async with db.execute("SELECT * FROM memories ORDER BY id") as cur:
        memories = [tuple(r) for r in await cur.fetchall()]
    async with db.execute("SELECT * FROM history ORDER BY event_id") as cur:
        history = [tuple(r) for r in await cur.fetchall()]
    return memories, history


@pytest.mark.sqlite_only  # schemas: no database
async def test_tools_are_listed_with_schemas_and_annotations(client: Client) -> None:
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert TOOLS <= set(listed)
    for tool in listed.values():
        assert tool.description and len(tool.description) > 80, tool.name
        assert tool.output_schema is not None, tool.name
        assert tool.annotations is not None
        # Only extraction reaches outside memoir (to an LLM).
        assert tool.annotations.open_world_hint is (tool.name == "extract_memories")
    assert listed["search_memories"].annotations.read_only_hint is True
    assert listed["list_memories"].annotations.read_only_hint is True
    assert listed["delete_memory"].annotations.destructive_hint is True
    assert listed["delete_memory"].annotations.idempotent_hint is False
    assert listed["clear_memories"].annotations.destructive_hint is True
    assert listed["add_memory"].annotations.read_only_hint is False
    assert "memory" in listed["add_memory"].input_schema["required"]
    # Resolver parameters stay hidden from the model.
    assert set(listed["extract_memories"].input_schema["properties"]) == {"message", "messages", "user_id", "dry_run"}


@pytest.mark.sqlite_only  # schemas: no database
async def test_output_schemas_are_self_contained_and_plain(client: Client) -> None:
    """No `$ref` to resolve and no `anyOf` of bare types: what every client validates each result with."""
    for tool in (await client.list_tools()).tools:
        text = json.dumps(tool.output_schema)
        assert "$ref" not in text and "$defs" not in text, tool.name
        for node in _nodes(tool.output_schema):
            options = node.get("anyOf") or []
            assert not (options and all(set(o) == {"type"} for o in options)), (tool.name, node)
    search = next(t for t in (await client.list_tools()).tools if t.name == "search_memories").output_schema
    item = search["properties"]["results"]["items"]
    assert item["properties"]["input"]["type"] == ["string", "null"]
    assert {"memory_id", "memory", "score"} <= set(item["required"])


def _nodes(schema: object) -> list[dict]:
    if isinstance(schema, list):
        return [n for item in schema for n in _nodes(item)]
    if isinstance(schema, dict):
        return [schema, *(n for value in schema.values() for n in _nodes(value))]
    return []


async def test_add_then_search_by_keyword(client: Client) -> None:
    added = await call(client, "add_memory", memory="  Ava likes to ski ", topics=["Hobbies", " sports", "hobbies"])
    assert added["memory"] == "Ava likes to ski"
    assert added["topics"] == ["hobbies", "sports"]
    assert added["user_id"] == "default"
    assert added["created_at"] == added["updated_at"] and added["created_at"].endswith("Z")
    await call(client, "add_memory", memory="Ava lives in San Francisco", topics=["home"])

    found = await call(client, "search_memories", query="Does she go skiing?", retrieval_method="keyword")
    assert found["retrieval_method"] == "keyword"
    assert [r["memory_id"] for r in found["results"]] == [added["memory_id"]]
    assert isinstance(found["results"][0]["score"], float)
    # Topics are indexed too.
    by_topic = await call(client, "search_memories", query="home", retrieval_method="keyword")
    assert [r["memory"] for r in by_topic["results"]] == ["Ava lives in San Francisco"]


async def test_update_changes_text_and_topics_and_the_index(client: Client) -> None:
    added = await call(client, "add_memory", memory="Ava lives in San Francisco", topics=["home"])
    updated = await call(client, "update_memory", memory_id=added["memory_id"], memory="Ava lives in Denver")
    assert updated["memory"] == "Ava lives in Denver"
    assert updated["topics"] == ["home"]
    assert updated["created_at"] == added["created_at"] and updated["updated_at"] > added["updated_at"]
    retopic = await call(client, "update_memory", memory_id=added["memory_id"], topics=["Location"])
    assert retopic["memory"] == "Ava lives in Denver" and retopic["topics"] == ["location"]
    assert (await call(client, "search_memories", query="francisco", retrieval_method="keyword"))["results"] == []
    assert len((await call(client, "search_memories", query="denver", retrieval_method="keyword"))["results"]) == 1
    error = await call_error(client, "update_memory", memory_id=added["memory_id"])
    assert "memory" in error and "topics" in error


async def test_delete_then_delete_again_is_unknown_id(client: Client) -> None:
    added = await call(client, "add_memory", memory="Ava likes to ski")
    assert await call(client, "delete_memory", memory_id=added["memory_id"]) == {
        "memory_id": added["memory_id"],
        "deleted": True,
    }
    again = await call_error(client, "delete_memory", memory_id=added["memory_id"])
    assert f"no memory '{added['memory_id']}' for user 'default'" in again
    assert (await call(client, "search_memories", query="ski"))["results"] == []


async def test_unknown_id_reads_the_same_for_another_users_id_and_a_made_up_one(client: Client) -> None:
    theirs = await call(client, "add_memory", memory="Bob likes chess", user_id="bob")
    for tool, extra in (("update_memory", {"memory": "hijacked"}), ("delete_memory", {})):
        other = await call_error(client, tool, memory_id=theirs["memory_id"], user_id="ava", **extra)
        made_up = await call_error(client, tool, memory_id="000000000000", user_id="ava", **extra)
        assert other.replace(theirs["memory_id"], "<id>") == made_up.replace("000000000000", "<id>")
        assert "for user 'ava'" in other
    assert (await call(client, "search_memories", query="chess", user_id="bob"))["results"][0]["memory"] == (
        "Bob likes chess"
    )


async def test_users_do_not_see_each_other(client: Client) -> None:
    await call(client, "add_memory", memory="Ava likes to ski", user_id="ava")
    await call(client, "add_memory", memory="Bob likes to ski", user_id="bob")
    for user in ("ava", "bob"):
        found = await call(client, "search_memories", query="ski", user_id=user)
        assert [r["user_id"] for r in found["results"]] == [user]
        listed = await call(client, "list_memories", user_id=user)
        assert [m["user_id"] for m in listed["memories"]] == [user]
    assert (await call(client, "search_memories", query="ski"))["results"] == []  # the default user has none


async def test_clear_empties_only_its_own_user(client: Client, app: AppContext) -> None:
    for i in range(3):
        await call(client, "add_memory", memory=f"Ava fact {i}", user_id="ava")
    await call(client, "add_memory", memory="Bob fact", user_id="bob")
    before = await snapshot(app)
    refused = await call_error(client, "clear_memories", user_id="ava")
    assert "confirm" in refused and "true" in refused
    assert await snapshot(app) == before
    assert await call(client, "clear_memories", confirm=True, user_id="ava") == {"deleted": 3, "declined": None}
    assert await app.store.count("ava") == 0
    assert await app.store.count("bob") == 1
    assert await call(client, "clear_memories", confirm=True, user_id="ava") == {"deleted": 0, "declined": None}


async def test_search_by_time_topics_and_time_range(client: Client) -> None:
    ids = [
        (await call(client, "add_memory", memory=f"fact number {i}", topics=["even" if i % 2 == 0 else "odd"]))[
            "memory_id"
        ]
        for i in range(5)
    ]
    newest = await call(client, "search_memories", limit=2)
    assert newest["retrieval_method"] == "last_n"
    assert [r["memory_id"] for r in newest["results"]] == [ids[4], ids[3]]
    oldest = await call(client, "search_memories", retrieval_method="first_n", limit=2)
    assert [r["memory_id"] for r in oldest["results"]] == [ids[0], ids[1]]
    odd = await call(client, "search_memories", retrieval_method="last_n", topics=["ODD"])
    assert [r["memory_id"] for r in odd["results"]] == [ids[3], ids[1]]
    keyword_odd = await call(client, "search_memories", query="fact", topics=["odd", "nothing"])
    assert {r["memory_id"] for r in keyword_odd["results"]} == {ids[1], ids[3]}
    later = await call(client, "search_memories", retrieval_method="first_n", created_after="2000-01-01")
    assert len(later["results"]) == 5
    none = await call(client, "search_memories", query="fact", created_before="2000-01-01T00:00:00Z")
    assert none["results"] == []


async def test_the_default_search_finds_meaning_not_only_words(client: Client) -> None:
    early = await call(client, "add_memory", memory="Ava wakes up at 5 am every day to run")
    await call(client, "add_memory", memory="Ava lives in San Francisco")
    await call(client, "add_memory", memory="Ava's favourite colour is green")
    assert (await call(client, "search_memories", query="Is she a morning person?", retrieval_method="keyword"))[
        "results"
    ] == []
    # A paraphrase that shares no word ranks first, but reads as unrelated at the default
    # min_relevance (memory/ranking.py: its cosine is under ~0.42): best guesses need 0.
    found = await call(client, "search_memories", query="Is she a morning person?", limit=1, min_relevance=0)
    assert found["retrieval_method"] == "hybrid"
    assert [r["memory_id"] for r in found["results"]] == [early["memory_id"]]
    semantic = await call(
        client, "search_memories", query="early riser", retrieval_method="semantic", limit=1, min_relevance=0
    )
    assert semantic["results"][0]["memory_id"] == early["memory_id"]
    assert 0 < semantic["results"][0]["score"] <= 1


async def test_a_query_of_stop_words_finds_nothing(client: Client) -> None:
    await call(client, "add_memory", memory="What is the thing that the user is about")
    for method in ("hybrid", "keyword", "semantic"):
        found = await call(client, "search_memories", query="what is the", retrieval_method=method)
        assert found == {"results": [], "retrieval_method": method, "tokens": 0, "truncated_by_budget": False}
    assert (await call(client, "search_memories", query="What is the?"))["results"] == []


async def test_fts_syntax_in_a_query_is_inert(client: Client) -> None:
    await call(client, "add_memory", memory='Ava says "NEAR" or OR is fine * really')
    for query in ['"', "*", "NEAR(", "OR", "ava AND", "-ava", "ava:", "^ava", "'; DROP TABLE memories; --"]:
        result = await client.call_tool("search_memories", {"query": query})
        assert not result.is_error, (query, result.content[0].text)
    assert len((await call(client, "search_memories", query='ava"*'))["results"]) == 1


async def test_list_pages_with_a_cursor(client: Client) -> None:
    ids = [(await call(client, "add_memory", memory=f"memory {i}"))["memory_id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        args = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = await call(client, "list_memories", **args)
        seen += [m["memory_id"] for m in page["memories"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))
    bad = await call_error(client, "list_memories", cursor="not-a-cursor")
    assert "cursor" in bad and "next_cursor" in bad


@pytest.mark.sqlite_only  # refused before the store: the same on either backend
@pytest.mark.parametrize(
    ("tool", "arguments", "field", "bound"),
    [
        ("add_memory", {"memory": ""}, "memory", "blank"),
        ("add_memory", {"memory": "   \n "}, "memory", "blank"),
        ("add_memory", {"memory": "x" * 2001}, "memory", "2,000"),
        ("add_memory", {"memory": "ok", "topics": [f"t{i}" for i in range(17)]}, "topics", "16"),
        ("add_memory", {"memory": "ok", "topics": ["x" * 65]}, "topics[0]", "64"),
        ("add_memory", {"memory": "ok", "topics": ["fine", " "]}, "topics[1]", "blank"),
        ("add_memory", {"memory": "bell\x07"}, "memory", "control characters"),
        ("add_memory", {"memory": "ok", "user_id": ""}, "user_id", "non-empty"),
        ("add_memory", {"memory": "ok", "user_id": "u" * 129}, "user_id", "128"),
        ("add_memory", {"memory": "ok", "user_id": "ava smith"}, "user_id", "letters, digits"),
        ("add_memory", {"memory": "ok", "user_id": "ava/../bob"}, "user_id", "letters, digits"),
        ("update_memory", {"memory_id": "x", "memory": "y" * 2001}, "memory", "2,000"),
        ("search_memories", {"query": "q" * 1001}, "query", "1,000"),
        ("search_memories", {"query": "ski", "limit": 0}, "limit", "1 to 100"),
        ("search_memories", {"query": "ski", "limit": 101}, "limit", "1 to 100"),
        ("search_memories", {"query": "ski", "created_after": "yesterday"}, "created_after", "ISO-8601"),
        ("search_memories", {"query": "ski", "user_id": "bad id"}, "user_id", "letters, digits"),
        ("list_memories", {"limit": 101}, "limit", "1 to 100"),
        ("list_memories", {"topics": ["x" * 65]}, "topics[0]", "64"),
        ("clear_memories", {"confirm": False}, "confirm", "true"),
        ("add_memory", {"memory": 5}, "memory", "valid string"),
        ("search_memories", {"retrieval_method": "telepathy", "query": "x"}, "retrieval_method", "hybrid"),
        ("search_memories", {"retrieval_method": "semantic"}, "query", "required"),
    ],
)
async def test_every_limit_is_a_tool_error_that_changes_nothing(
    client: Client, app: AppContext, tool: str, arguments: dict, field: str, bound: str
) -> None:
    await call(client, "add_memory", memory="Ava likes to ski", topics=["hobbies"])
    before = await snapshot(app)
    error = await call_error(client, tool, **arguments)
    assert field in error and bound in error, error
    assert await snapshot(app) == before


async def test_every_change_appends_a_history_event(client: Client, app: AppContext) -> None:
    added = await call(client, "add_memory", memory="Ava lives in San Francisco")
    memory_id = added["memory_id"]
    await call(client, "update_memory", memory_id=memory_id, memory="Ava lives in Denver")
    await call(client, "delete_memory", memory_id=memory_id)
    other = await call(client, "add_memory", memory="Ava likes to ski")
    await call(client, "clear_memories", confirm=True)

    events = await app.store.history(memory_id)
    assert [e.operation for e in events] == ["add", "update", "delete"]
    assert events[0].before is None and events[0].after.memory == "Ava lives in San Francisco"
    assert events[1].before.memory == "Ava lives in San Francisco" and events[1].after.memory == "Ava lives in Denver"
    assert events[2].before.memory == "Ava lives in Denver" and events[2].after is None
    assert all(e.actor == "tool" for e in events)
    cleared = await app.store.history(other["memory_id"])
    assert [e.operation for e in cleared] == ["add", "clear"]

    resource = await client.read_resource(f"memoir://memories/{memory_id}/history")
    shown = json.loads(resource.contents[0].text)
    assert [e["operation"] for e in shown["events"]] == ["add", "update", "delete"]


async def test_resources(client: Client) -> None:
    added = await call(client, "add_memory", memory="Ava likes to ski", user_id="ava")
    templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert templates >= {
        "memoir://users/{user_id}/memories{?as_of,include_superseded}",
        "memoir://memories/{memory_id}",
        "memoir://memories/{memory_id}/history",
    }
    one = json.loads((await client.read_resource(f"memoir://memories/{added['memory_id']}")).contents[0].text)
    assert one["memory"] == "Ava likes to ski"
    listing = json.loads((await client.read_resource("memoir://users/ava/memories")).contents[0].text)
    assert [m["memory_id"] for m in listing["memories"]] == [added["memory_id"]]
    assert listing["truncated"] is False
    with pytest.raises(Exception, match="no memory"):
        await client.read_resource("memoir://memories/000000000000")


async def test_resources_list_offers_the_callers_own_memories(client: Client, app: AppContext) -> None:
    """A host's resource picker shows what resources/list returns: it used to be empty."""
    await call(client, "add_memory", memory="Ava likes to ski")
    listed = (await client.list_resources()).resources
    assert [str(r.uri) for r in listed] == [f"memoir://users/{app.default_user_id}/memories"]
    text = (await client.read_resource(str(listed[0].uri))).contents[0].text
    assert [m["memory"] for m in json.loads(text)["memories"]] == ["Ava likes to ski"]


@pytest.mark.sqlite_only  # text: no database
async def test_instructions_and_prompt_teach_the_memory_habit(app: AppContext) -> None:
    from memoir.server.app import build_server

    for mode in ("auto", "legacy"):
        async with Client(build_server(app), mode=mode) as c:
            prompts = {p.name for p in (await c.list_prompts()).prompts}
            assert "remember" in prompts
            prompt = await c.get_prompt("remember", {})
            text = prompt.messages[0].content.text
            assert "search_memories" in text and "add_memory" in text and "update_memory" in text
