"""Hostile input: every tool is called with generated arguments - wrong types, huge strings, control
characters, FTS5 syntax, SQL fragments, lone surrogates, deeply nested JSON, unknown keys. No call
may crash, hang or leak a traceback; every rejection is a tool error naming a field, and leaves the
store exactly as it was."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from memoir.server.app import build_server, close_app, open_app
from memoir.server.settings import Settings
from tests.looprunner import LoopRunner
from tests.test_tools import snapshot

EXAMPLES = 1000
CALL_LIMIT_S = 10.0

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "bell\x07",
    "\x1b[31mred",
    "\ud800",
    "a\udfffb",
    '"',
    "*",
    "NEAR(",
    "NEAR(a b, 2)",
    "OR",
    "a OR b AND NOT c",
    '"unterminated',
    "col:ava",
    "^start",
    "-minus",
    "'; DROP TABLE memories; --",
    "1 OR 1=1",
    "') UNION SELECT * FROM tokens --",
    "%",
    "_",
    "\\",
    "memoir://users/../../etc/passwd",
    "ava/../bob",
    "x" * 1001,
    "y" * 2001,
    "z" * 100_000,
    "\u202e\u200b\ufeff",
    "日本語のメモ",
    "😀" * 600,
    # Edge values that once escaped as a bare "Error executing tool" (issue 10, defect 8): times
    # whose UTC conversion leaves the years 1-9999, and cursors holding what SQLite cannot bind.
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01",
    "9999-12-31T23:59:59.999999Z",
    "2026-01-31T09:30:00+23:59",
    "WyIyMDI2LTAxLTMxVDA5OjMwOjAwLjAwMDAwMFoiLCA5MjIzMzcyMDM2ODU0Nzc1ODA4XQ",  # [time, 2**63]
    "WyJcdWQ4MDAiLCAxXQ",  # ["\ud800", 1]
    "W1tbW1tbW1tbW11dXV1dXV1dXV0",  # nested lists
    # Strings a lax bool would read as true (defect 7).
    "true",
    "yes",
    "on",
    "1",
]

deep: object = "deep"
for _ in range(60):  # JSON nested 60+ levels deep
    deep = [deep]
for _ in range(6):
    deep = [deep, {"k": deep}]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),  # SQLite's INTEGER ends at 2**63 - 1
    st.floats(),  # NaN and the infinities too
    st.sampled_from([1.0, 0.0, float("nan"), float("inf")]),
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=50),
)
values = st.one_of(
    scalars,
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20),
    st.just(deep),
    st.lists(st.sampled_from(HOSTILE_STRINGS), max_size=20),
)

VALID = {
    "memory": "Ava likes to ski",
    "topics": ["hobbies"],
    "user_id": "ava",
    "query": "ski",
    "limit": 5,
    "retrieval_method": "keyword",
    "confirm": True,
    "created_after": "2020-01-01",
    "created_before": "2100-01-01",
    "message": "I moved to Denver",
    "messages": [{"role": "user", "content": "I moved to Denver"}],
    "dry_run": True,
}
TIME_EDGES = [s for s in HOSTILE_STRINGS if s[:4] in ("0001", "9999", "2026")] + ["0001-01-01T00:00:00+01:00"]
LAX_TRUE = ["true", "yes", "on", "1", "y", "t", 1, 1.0, "false", 0]
EDGES: dict[str, list[object]] = {
    "created_after": TIME_EDGES,
    "created_before": TIME_EDGES,
    "cursor": [s for s in HOSTILE_STRINGS if s.startswith("W")],
    "confirm": LAX_TRUE,
    "dry_run": LAX_TRUE,
    "limit": [0, 2**63, 2**64, 10**30, float("nan"), float("inf"), 1.5, True],
}
TOOLS = ["add_memory", "update_memory", "delete_memory", "search_memories", "list_memories", "clear_memories",
         "extract_memories"]
# Errors that are about the world, not the arguments: they name what is missing instead of a field.
NOT_ABOUT_A_FIELD = ("no memory '", "ANTHROPIC_API_KEY", "sampling")


def names_field(name: str, text: str) -> bool:
    """memoir's own errors start with the field ("topics[1]: is blank..."); pydantic's put it on a line of its own."""
    return re.search(rf"(?:^|\n|tool \w+: ){re.escape(name)}(?:\[\d+\]|\.\w+)*(?::|\n)", text) is not None


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    tool = draw(st.sampled_from(TOOLS))
    params = PARAMS[tool]
    arguments: dict[str, object] = {}
    for name in params:
        choice = draw(st.sampled_from(["valid", "hostile", "hostile text", "edge", "omit"]))
        if choice == "valid" and name in VALID:
            arguments[name] = VALID[name]
        elif choice == "valid" and name == "memory_id":
            arguments[name] = draw(st.sampled_from(["000000000000", "seed"]))
        elif choice == "hostile":
            arguments[name] = draw(values)
        elif choice == "edge" and name in EDGES:  # values at the edge of what this argument's parser takes
            arguments[name] = draw(st.sampled_from(EDGES[name]))
        elif choice == "hostile text":  # the right type, the wrong content: reaches memoir's own checks
            text = draw(st.sampled_from(HOSTILE_STRINGS) | st.text(max_size=30))
            arguments[name] = [text] if name in ("topics",) else text
    if draw(st.booleans()) and draw(st.booleans()):
        arguments[draw(st.sampled_from(["extra", "__proto__", "user_id ", "limit;"]))] = draw(values)
    return tool, arguments


PARAMS: dict[str, list[str]] = {}


def test_hostile_arguments_never_crash_and_change_nothing_when_refused(tmp_path: Path) -> None:
    runner = LoopRunner()
    app = runner.run(open_app(Settings(db_path=tmp_path / "m.db", synchronous="NORMAL")))
    try:
        client = runner.enter(Client(build_server(app), mode="legacy"))
        for tool in runner.run(client.list_tools()).tools:
            PARAMS[tool.name] = list(tool.input_schema.get("properties", {}))
        seeded = runner.run(client.call_tool("add_memory", {"memory": "Ava likes to ski", "user_id": "ava"}))
        seed_id = seeded.structured_content["memory_id"]
        seen = {"refused": 0, "accepted": 0}

        async def attempt(tool: str, arguments: dict[str, object]) -> None:
            if arguments.get("memory_id") == "seed":
                arguments["memory_id"] = seed_id
            before = await snapshot(app)
            async with asyncio.timeout(CALL_LIMIT_S):
                result = await client.call_tool(tool, arguments)
            if not result.is_error:
                seen["accepted"] += 1
                assert result.structured_content is not None
                if tool == "clear_memories":  # only JSON true deletes (never "yes", 1, 1.0, ...)
                    assert arguments.get("confirm") is True, arguments.get("confirm")
                return
            seen["refused"] += 1
            text = result.content[0].text
            assert "Traceback" not in text and 'File "' not in text, text
            named = [p for p in PARAMS[tool] if names_field(p, text)]
            assert named or any(k in text for k in NOT_ABOUT_A_FIELD), (tool, arguments.keys(), text[:300])
            assert await snapshot(app) == before, (tool, text[:300])

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(call=calls())
        def prop(call: tuple[str, dict[str, object]]) -> None:
            runner.run(attempt(*call))

        prop()
        print(f"fuzz: {EXAMPLES} examples, {seen}")
        assert seen["refused"] > EXAMPLES // 3
        assert runner.run(app.store.integrity_check()) == "ok"
    finally:
        runner.close(then=lambda: close_app(app))


async def test_a_malformed_memory_id_is_a_clear_error_everywhere(client) -> None:  # noqa: ANN001 - conftest fixture
    """Found by the fuzz test: a lone surrogate in memory_id reached SQLite and crashed the call."""
    import pytest
    from mcp.shared.exceptions import MCPError

    for bad in ("\ud800", "x" * 65, "a b", "../x", ""):
        for tool, extra in (("update_memory", {"memory": "new"}), ("delete_memory", {})):
            result = await client.call_tool(tool, {"memory_id": bad, **extra})
            assert result.is_error and "memory_id: is not a memory id" in result.content[0].text
    for bad in ("x" * 65, "a;b", "a~b"):  # (a lone surrogate cannot even be sent as a URI)
        with pytest.raises(MCPError, match="no memory"):
            await client.read_resource(f"memoir://memories/{bad}")
        with pytest.raises(MCPError, match="no history"):
            await client.read_resource(f"memoir://memories/{bad}/history")
