"""The operator decides what the assistant may do (issue 13, part 5): which tools are offered
(MEMOIR_TOOLS / --tools), which operations extraction may apply (MEMOIR_EXTRACT_OPS), and asking
the human (elicitation, both protocol eras) before clear_memories or an extraction that deletes
more than a few memories."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mcp.types as types
import pytest
from mcp import Client

from memoir.server.app import build_server, running_app
from memoir.server.settings import Settings
from memoir.tools.context import AppContext

from .conftest import ERAS
from .fake_anthropic import FakeAnthropic, fake_anthropic, tool_use  # noqa: F401
from .helpers import op, TOOLS, call, call_error


# -- MEMOIR_TOOLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_a_read_only_server_offers_search_and_list_only(db_path: Path, mode: str) -> None:
    settings = Settings.from_env({"MEMOIR_DB": str(db_path), "MEMOIR_TOOLS": "read-only"})
    async with running_app(settings) as app:
        await app.store.add("default", "Ava likes to ski")
        async with Client(build_server(app), mode=mode) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            assert listed == {"search_memories", "list_memories"}
            result = await client.call_tool("add_memory", {"memory": "Ava likes tea"})
            assert result.is_error and "Unknown tool" in result.content[0].text
            result = await client.call_tool("clear_memories", {"confirm": True})
            assert result.is_error and "Unknown tool" in result.content[0].text
            found = await call(client, "search_memories", query="ski")
            assert [r["memory"] for r in found["results"]] == ["Ava likes to ski"]
        assert await app.store.count() == 1


@pytest.mark.parametrize("spec,expected", [
    ("all", TOOLS),
    ("no-delete", TOOLS - {"delete_memory", "clear_memories"}),
    ("read-only, add_memory", {"search_memories", "list_memories", "add_memory"}),
    ("add_memory,add_memory", {"add_memory"}),
])
async def test_names_and_presets_combine(db_path: Path, spec: str, expected: set[str]) -> None:
    async with running_app(Settings.from_env({"MEMOIR_DB": str(db_path), "MEMOIR_TOOLS": spec})) as app:
        async with Client(build_server(app), mode="legacy") as client:
            assert {t.name for t in (await client.list_tools()).tools} == expected


@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_unknown_tool_name_refuses_to_start_in_one_line(tmp_path: Path, how: str) -> None:
    env = {"MEMOIR_DB": str(tmp_path / "x.db"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    args = [sys.executable, "-m", "memoir.server.cli", "serve"]
    if how == "env":
        env["MEMOIR_TOOLS"] = "search_memories,forget_everything"
    else:
        args += ["--tools", "search_memories,forget_everything"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "'forget_everything'" in line and "add_memory" in line and "read-only" in line


# -- MEMOIR_EXTRACT_OPS -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("dry_run", [False, True])
async def test_operations_not_allowed_are_skipped_with_the_reason(
    llm_settings: Settings, fake_anthropic: FakeAnthropic, mode: str, dry_run: bool
) -> None:
    settings = replace(llm_settings, extraction=replace(llm_settings.extraction, allowed_ops=("add",)))
    async with running_app(settings) as app, Client(build_server(app), mode=mode) as client:
        old = await app.store.add("default", "Ava smokes")
        tea = await app.store.add("default", "Ava likes tea")
        fake_anthropic.push(tool_use({"operations": [
            op("add", "Ava works at Acme"),
            op("delete", memory_id=old.memory_id, reason="she quit"),
            op("update", "Ava likes green tea", memory_id=tea.memory_id),
        ]}))
        result = await call(client, "extract_memories", message="I quit smoking; I like green tea; I work at Acme",
                            dry_run=dry_run)
        assert [o["op"] for o in result["operations"]] == ["add"]
        assert [(s["op"], s["memory_id"]) for s in result["skipped"]] == [
            ("delete", old.memory_id), ("update", tea.memory_id)
        ]
        assert all("MEMOIR_EXTRACT_OPS=add" in s["reason"] for s in result["skipped"])
        assert "does not let extraction delete" in result["skipped"][0]["reason"]
        # The model was told which operations apply here.
        assert "only these operations are applied: add" in fake_anthropic.requests[-1].body["system"]
        texts = sorted(m.memory for m in (await app.store.list("default")).memories)
        assert texts == (["Ava likes tea", "Ava smokes"] if dry_run else ["Ava likes tea", "Ava smokes", "Ava works at Acme"])


async def test_forget_all_counts_as_delete(llm_settings: Settings, fake_anthropic: FakeAnthropic) -> None:
    settings = replace(llm_settings, extraction=replace(llm_settings.extraction, allowed_ops=("add", "update")))
    async with running_app(settings) as app, Client(build_server(app), mode="legacy") as client:
        await app.store.add("default", "Ava smokes")
        fake_anthropic.push(tool_use({"operations": [op("forget_all", reason="asked to forget everything")]}))
        result = await call(client, "extract_memories", message="forget everything about me")
        assert result["operations"] == [] and [s["op"] for s in result["skipped"]] == ["forget_all"]
        assert await app.store.count() == 1


def test_bad_extract_ops_are_refused() -> None:
    with pytest.raises(ValueError, match="MEMOIR_EXTRACT_OPS: unknown operation 'purge'; valid: add, update, delete"):
        Settings.from_env({"MEMOIR_EXTRACT_OPS": "add,purge"})
    assert Settings.from_env({"MEMOIR_EXTRACT_OPS": "add, delete"}).extraction.allowed_ops == ("add", "delete")
    assert Settings.from_env({"MEMOIR_EXTRACT_CONFIRM_OVER": "off"}).extraction.confirm_over is None


# -- elicitation --------------------------------------------------------------------------------


class Human:
    """A client's elicitation callback: answers every question the same way and records it."""

    def __init__(self, action: str, confirm: bool = True) -> None:
        self.action = action
        self.confirm = confirm
        self.questions: list[types.ElicitRequestParams] = []

    async def __call__(self, context, params) -> types.ElicitResult:
        self.questions.append(params)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return types.ElicitResult(action=self.action, content=content)


async def _three(app: AppContext, user: str = "ava") -> None:
    for text in ("Ava likes tea", "Ava skis", "Ava lives in Denver"):
        await app.store.add(user, text)
    await app.store.add("bo", "Bo likes coffee")


@pytest.mark.parametrize("mode", ERAS)
async def test_clear_asks_and_proceeds_when_the_user_accepts(app: AppContext, mode: str) -> None:
    await _three(app)
    human = Human("accept")
    async with Client(build_server(app), mode=mode, elicitation_callback=human) as client:
        result = await call(client, "clear_memories", confirm=True, user_id="ava")
    assert result == {"deleted": 3, "declined": None}
    [question] = human.questions
    assert question.message.startswith("Delete all 3 memories of user 'ava'?")
    assert await app.store.count("ava") == 0 and await app.store.count("bo") == 1


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("action,confirm", [("decline", True), ("cancel", True), ("accept", False)])
async def test_clear_changes_nothing_when_the_user_does_not_agree(
    app: AppContext, mode: str, action: str, confirm: bool
) -> None:
    await _three(app)
    human = Human(action, confirm)
    async with Client(build_server(app), mode=mode, elicitation_callback=human) as client:
        result = await call(client, "clear_memories", confirm=True, user_id="ava")
    assert result["deleted"] == 0
    assert "nothing was deleted" in result["declined"]
    assert len(human.questions) == 1
    assert await app.store.count("ava") == 3
    assert await app.store.user_history("ava", limit=10) and all(
        e.operation == "add" for e in await app.store.user_history("ava", limit=10)
    )


@pytest.mark.parametrize("mode", ERAS)
async def test_clear_without_elicitation_keeps_todays_rule(app: AppContext, mode: str) -> None:
    await _three(app)
    async with Client(build_server(app), mode=mode) as client:
        error = await call_error(client, "clear_memories", user_id="ava")
        assert "confirm: must be true" in error
        assert await app.store.count("ava") == 3
        assert await call(client, "clear_memories", confirm=True, user_id="ava") == {"deleted": 3, "declined": None}


@pytest.mark.parametrize("mode", ERAS)
async def test_clear_does_not_ask_without_confirm_or_with_nothing_to_delete(app: AppContext, mode: str) -> None:
    human = Human("accept")
    async with Client(build_server(app), mode=mode, elicitation_callback=human) as client:
        assert "confirm: must be true" in await call_error(client, "clear_memories")
        assert await call(client, "clear_memories", confirm=True) == {"deleted": 0, "declined": None}
    assert human.questions == []


def _deletes(app_memories: list) -> dict:
    return {"operations": [op("delete", memory_id=m.memory_id, reason="she asked") for m in app_memories]
            + [op("add", "Ava moved to Lisbon")]}


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("action", ["accept", "decline"])
async def test_an_extraction_deleting_many_asks_first(
    llm_settings: Settings, fake_anthropic: FakeAnthropic, mode: str, action: str
) -> None:
    async with running_app(llm_settings) as app:
        gone = [await app.store.add("default", f"Ava fact {i}") for i in range(4)]
        fake_anthropic.push(tool_use(_deletes(gone)))
        human = Human(action)
        async with Client(build_server(app), mode=mode, elicitation_callback=human) as client:
            result = await call(client, "extract_memories", message="forget those four facts; I moved to Lisbon")
        [question] = human.questions
        assert "delete 4 memories of user 'default'" in question.message
        assert len(fake_anthropic.requests) == 1  # the model is asked once, whatever the era
        texts = sorted(m.memory for m in (await app.store.list("default")).memories)
        if action == "accept":
            assert [o["op"] for o in result["operations"]] == ["delete"] * 4 + ["add"]
            assert texts == ["Ava moved to Lisbon"]
        else:
            assert result["operations"] == [] and len(result["skipped"]) == 5
            assert all("the user declined when asked; nothing was changed" in s["reason"] for s in result["skipped"])
            assert texts == [f"Ava fact {i}" for i in range(4)]


@pytest.mark.parametrize("mode", ERAS)
async def test_an_extraction_under_the_threshold_or_without_elicitation_does_not_ask(
    llm_settings: Settings, fake_anthropic: FakeAnthropic, mode: str
) -> None:
    async with running_app(llm_settings) as app:
        few = [await app.store.add("default", f"Ava fact {i}") for i in range(3)]
        fake_anthropic.push(tool_use(_deletes(few)))
        human = Human("decline")
        async with Client(build_server(app), mode=mode, elicitation_callback=human) as client:
            result = await call(client, "extract_memories", message="forget those")
        assert human.questions == [] and len(result["operations"]) == 4
        many = [await app.store.add("default", f"Ava other {i}") for i in range(5)]
        fake_anthropic.push(tool_use(_deletes(many)))
        async with Client(build_server(app), mode=mode) as client:  # no elicitation: today's rules
            result = await call(client, "extract_memories", message="forget those too")
        assert len(result["operations"]) == 6


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("action", ["accept", "decline"])
async def test_an_extraction_through_sampling_asks_too(app: AppContext, mode: str, action: str) -> None:
    gone = [await app.store.add("default", f"Ava fact {i}") for i in range(4)]
    answer = json.dumps(_deletes(gone))

    async def model(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", model="client-model", content=types.TextContent(type="text", text=answer)
        )

    human = Human(action)
    async with Client(build_server(app), mode=mode, sampling_callback=model, elicitation_callback=human) as client:
        result = await call(client, "extract_memories", message="forget those four; I moved to Lisbon")
    assert len(human.questions) == 1
    assert await app.store.count("default") == (1 if action == "accept" else 4)
    assert (result["operations"] == []) == (action == "decline")
