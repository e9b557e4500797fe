"""Validity in time (issue 13, part 1) through the MCP tools, in both protocol eras: superseding,
current-by-default searches and listings, as_of, include_superseded, undo, delete, migration."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from mcp import Client

from memoir.memory.schema import MIGRATIONS
from memoir.memory.store import Store
from memoir.memory import transfer
from memoir.tools.context import AppContext

from .helpers import call, call_error
from .test_tools import snapshot

METHODS = ("hybrid", "keyword", "semantic", "last_n", "first_n")


async def moved(client: Client) -> tuple[dict, dict]:
    """Ava lived in San Francisco until March 2026, then in Denver."""
    sf = await call(client, "add_memory", memory="Ava lives in San Francisco", topics=["home"], valid_from="2024-06-01")
    denver = await call(
        client, "add_memory", memory="Ava lives in Denver", topics=["home"], supersedes=sf["memory_id"],
        valid_from="2026-03-01",
    )
    return sf, denver


def ids(found: dict, key: str = "results") -> list[str]:
    return [m["memory_id"] for m in found[key]]


async def search(client: Client, method: str, **kw: object) -> dict:
    query = None if method in ("last_n", "first_n") else "where does Ava live"
    return await call(client, "search_memories", query=query, retrieval_method=method, **kw)


@pytest.mark.both_backends
async def test_supersede_retires_the_old_memory_and_every_method_returns_current_ones(client: Client) -> None:
    sf, denver = await moved(client)
    assert sf["valid_from"] == "2024-06-01T00:00:00.000000Z" and sf.get("valid_to") is None and sf.get("superseded_by") is None
    assert denver["valid_from"] == "2026-03-01T00:00:00.000000Z"
    # A current memory carries no valid_to / superseded_by at all (absent means current).
    assert "valid_to" not in denver and "superseded_by" not in denver

    for method in METHODS:
        found = await search(client, method)
        assert ids(found) == [denver["memory_id"]], method
        both = await search(client, method, include_superseded=True)
        assert set(ids(both)) == {sf["memory_id"], denver["memory_id"]}, method
        old = next(r for r in both["results"] if r["memory_id"] == sf["memory_id"])
        assert old.get("valid_to") == denver["valid_from"] and old.get("superseded_by") == denver["memory_id"], method
        # valid_from <= as_of < valid_to
        assert ids(await search(client, method, as_of="2026-02-28T23:59:59Z")) == [sf["memory_id"]], method
        assert ids(await search(client, method, as_of="2026-03-01")) == [denver["memory_id"]], method
        assert ids(await search(client, method, as_of="2020-01-01")) == [], method  # before anything was valid
        assert ids(await search(client, method, as_of="2024-06-01")) == [sf["memory_id"]], method

    assert ids(await call(client, "list_memories"), "memories") == [denver["memory_id"]]
    listed = await call(client, "list_memories", include_superseded=True)
    assert ids(listed, "memories") == [denver["memory_id"], sf["memory_id"]]  # newest first
    assert listed["memories"][1].get("superseded_by") == denver["memory_id"]
    assert ids(await call(client, "list_memories", as_of="2026-01-15"), "memories") == [sf["memory_id"]]
    # Topic filters combine with validity (keyword and semantic then filter in SQL).
    for method in ("keyword", "semantic", "hybrid"):
        assert ids(await search(client, method, topics=["home"])) == [denver["memory_id"]], method
        found = await search(client, method, topics=["home"], include_superseded=True)
        assert set(ids(found)) == {sf["memory_id"], denver["memory_id"]}, method


@pytest.mark.both_backends
async def test_the_old_memory_is_retired_in_history_and_undo_restores_both_in_one_step(
    client: Client, app: AppContext
) -> None:
    sf, denver = await moved(client)
    old_events = await app.store.history(sf["memory_id"])
    new_events = await app.store.history(denver["memory_id"])
    assert [e.operation for e in old_events] == ["add", "update"]
    retire = old_events[1]
    assert retire.before.valid_to is None and retire.after.valid_to == denver["valid_from"]
    assert retire.after.superseded_by == denver["memory_id"]
    assert retire.reason == f"superseded by memory '{denver['memory_id']}'"
    assert retire.part_of == new_events[0].event_id  # one change: the add and the retirement

    # Undoing the add (or the retirement: same change) brings the old memory back as current.
    undone = await app.store.undo(retire.event_id)
    assert undone.undoes == retire.event_id
    assert ids(await call(client, "list_memories", include_superseded=True), "memories") == [sf["memory_id"]]
    current = (await call(client, "list_memories"))["memories"][0]
    assert current.get("valid_to") is None and current.get("superseded_by") is None
    assert ids(await search(client, "semantic")) == [sf["memory_id"]]
    # ...and undoing that undo supersedes it again, in one step too.
    await app.store.undo(undone.event_id)
    assert ids(await call(client, "list_memories"), "memories") == [denver["memory_id"]]
    assert ids(await search(client, "keyword")) == [denver["memory_id"]]
    assert ids(await search(client, "semantic")) == [denver["memory_id"]]
    assert (await call(client, "list_memories", include_superseded=True))["memories"][1]["superseded_by"] == denver[
        "memory_id"
    ]


@pytest.mark.both_backends
async def test_deleting_the_superseding_memory_makes_the_old_one_current_again_undoably(
    client: Client, app: AppContext
) -> None:
    sf, denver = await moved(client)
    await search(client, "semantic")  # the user's vectors are loaded: the change reaches them by notification
    await call(client, "delete_memory", memory_id=denver["memory_id"])
    for method in METHODS:
        assert ids(await search(client, method)) == [sf["memory_id"]], method
    events = await app.store.history(sf["memory_id"])
    assert [e.operation for e in events] == ["add", "update", "update"]
    assert events[2].after.valid_to is None and "was deleted" in events[2].reason
    deletion = (await app.store.history(denver["memory_id"]))[-1]
    assert deletion.operation == "delete" and events[2].part_of == deletion.event_id
    await app.store.undo(deletion.event_id)  # both come back: Denver current, San Francisco superseded
    for method in METHODS:
        assert ids(await search(client, method)) == [denver["memory_id"]], method


@pytest.mark.both_backends
async def test_update_is_a_correction_and_keeps_validity(client: Client) -> None:
    sf, denver = await moved(client)
    fixed = await call(client, "update_memory", memory_id=denver["memory_id"], memory="Ava lives in Denver, Colorado")
    assert fixed["valid_from"] == denver["valid_from"] and fixed.get("valid_to") is None
    # A superseded memory may be corrected too; it stays superseded.
    old = await call(client, "update_memory", memory_id=sf["memory_id"], memory="Ava lived in San Francisco")
    assert old.get("superseded_by") == denver["memory_id"]
    assert ids(await call(client, "list_memories"), "memories") == [denver["memory_id"]]


@pytest.mark.both_backends
async def test_bad_supersedes_and_times_are_clear_errors_that_change_nothing(client: Client, app: AppContext) -> None:
    sf, denver = await moved(client)
    other = await call(client, "add_memory", memory="Bob lives in Oslo", user_id="bob")
    before = await snapshot(app)
    cases = {
        # (arguments, what the error must say)
        "unknown": ({"supersedes": "000000000000"}, ["supersedes:", "no memory '000000000000' for user 'default'"]),
        "another user's": ({"supersedes": other["memory_id"]}, ["supersedes:", f"no memory '{other['memory_id']}'"]),
        "malformed": ({"supersedes": "no such id!"}, ["supersedes:", "is not a memory id"]),
        "twice": (
            {"supersedes": sf["memory_id"]},
            ["supersedes:", f"'{sf['memory_id']}' was already superseded by '{denver['memory_id']}'", "only once"],
        ),
        "before its predecessor": (
            {"supersedes": denver["memory_id"], "valid_from": "2026-02-01"},
            ["valid_from:", "2026-02-01T00:00:00.000000Z is before 2026-03-01T00:00:00.000000Z", denver["memory_id"]],
        ),
        "future": ({"valid_from": "2999-01-01"}, ["valid_from:", "is in the future"]),
        "not a time": ({"valid_from": "last March"}, ["valid_from:", "not an ISO-8601", "2026-01-31"]),
    }
    for name, (arguments, expected) in cases.items():
        text = await call_error(client, "add_memory", memory="Ava lives in Boulder", **arguments)
        for part in expected:
            assert part in text, (name, text)
    for tool in ("search_memories", "list_memories"):
        text = await call_error(client, tool, as_of="yesterday")
        assert "as_of:" in text and "ISO-8601" in text, text
        text = await call_error(client, tool, as_of="2026-01-01", include_superseded=True)
        assert "include_superseded:" in text and "as_of" in text, text
    assert await snapshot(app) == before


async def test_a_small_clock_skew_is_allowed_and_valid_from_is_normalised(client: Client) -> None:
    from datetime import datetime, timedelta, timezone

    soon = (datetime.now(timezone.utc) + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    added = await call(client, "add_memory", memory="Ava started a new job", valid_from=soon)
    assert added["valid_from"].endswith("Z")
    naive = await call(client, "add_memory", memory="Ava adopted a cat", valid_from="2025-05-04T10:00:00")
    assert naive["valid_from"] == "2025-05-04T10:00:00.000000Z"


@pytest.mark.both_backends
async def test_listing_pages_with_validity_filters(client: Client) -> None:
    chain = [await call(client, "add_memory", memory="Ava's phone number ends in 10")]
    for n in range(11, 16):
        chain.append(await call(client, "add_memory", memory=f"Ava's phone number ends in {n}",
                                supersedes=chain[-1]["memory_id"]))
    seen, cursor = [], None
    while True:
        page = await call(client, "list_memories", limit=2, include_superseded=True, cursor=cursor)
        seen += ids(page, "memories")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [m["memory_id"] for m in reversed(chain)]
    assert ids(await call(client, "list_memories", limit=2), "memories") == [chain[-1]["memory_id"]]


@pytest.mark.both_backends
async def test_the_user_resource_takes_as_of_and_include_superseded(client: Client) -> None:
    sf, denver = await moved(client)

    async def read(uri: str) -> list[str]:
        contents = (await client.read_resource(uri)).contents
        return [m["memory_id"] for m in json.loads(contents[0].text)["memories"]]

    assert await read("memoir://users/default/memories") == [denver["memory_id"]]
    assert await read("memoir://users/default/memories?include_superseded=true") == [
        denver["memory_id"], sf["memory_id"]
    ]
    assert await read("memoir://users/default/memories?as_of=2026-01-01") == [sf["memory_id"]]
    one = json.loads((await client.read_resource(f"memoir://memories/{sf['memory_id']}")).contents[0].text)
    assert one.get("superseded_by") == denver["memory_id"]


async def test_agentic_candidates_are_current_memories(app: AppContext) -> None:
    sf = await app.store.add("default", "Ava lives in San Francisco", valid_from="2024-01-01")
    denver = await app.store.add("default", "Ava lives in Denver", supersedes=sf.memory_id)
    request = await app.judge.prepare("default", "where does Ava live", 5)
    assert [m.memory_id for m in request.candidates] == [denver.memory_id]
    assert sf.memory_id not in request.messages[0]["content"]
    from memoir.memory.store import Filters

    request = await app.judge.prepare("default", "where does Ava live", 5, Filters(include_superseded=True))
    assert {m.memory_id for m in request.candidates} == {sf.memory_id, denver.memory_id}


async def test_a_version_4_database_is_migrated_with_valid_from_equal_to_created_at(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 4")
    db.execute(
        "INSERT INTO memories (memory_id, user_id, memory, topics, created_at, updated_at)"
        " VALUES ('0123456789ab', 'ava', 'Ava likes tea', '[]', '2025-01-02T03:04:05.000000Z', '2025-01-02T03:04:05.000000Z')"
    )
    db.commit()
    db.close()
    store = await Store.open(path)
    try:
        memory = await store.get("ava", "0123456789ab")
        assert memory.valid_from == "2025-01-02T03:04:05.000000Z" and memory.valid_to is None
        page = await store.list("ava")
        assert [m.memory_id for m in page.memories] == ["0123456789ab"]
        assert [m.memory_id for m in await store.keyword("ava", "tea", limit=5)] == ["0123456789ab"]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("SELECT valid_from FROM memories").fetchone()[0] == "2025-01-02T03:04:05.000000Z"
    plans = {
        "current listing": (
            "SELECT * FROM memories m WHERE m.user_id = ? AND m.valid_to IS NULL ORDER BY m.created_at DESC, m.id DESC LIMIT 5",
            ("ava",), "memories_by_user_time",
        ),
        "superseded rows": (
            "SELECT id FROM memories WHERE user_id = ? AND valid_to IS NOT NULL", ("ava",), "memories_superseded",
        ),
        "predecessor": (
            "SELECT * FROM memories m WHERE m.user_id = ? AND m.superseded_by = ? AND m.valid_to IS NOT NULL",
            ("ava", "x"), "memories_superseded",
        ),
    }
    for name, (sql, params, index) in plans.items():
        plan = " ".join(str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert index in plan and "SCAN m" not in plan and "TEMP B-TREE" not in plan, (name, plan)
    db.close()


async def test_export_and_import_carry_validity_and_older_exports_default_it(tmp_path: Path) -> None:
    source = await Store.open(tmp_path / "a.db")
    try:
        sf = await source.add("ava", "Ava lives in San Francisco", valid_from="2024-01-01")
        denver = await source.add("ava", "Ava lives in Denver", supersedes=sf.memory_id, valid_from="2026-03-01")
        lines = [line async for line in transfer.export_lines(source, history=True)]
    finally:
        await source.close()
    target = await Store.open(tmp_path / "b.db")
    try:
        report = await transfer.import_lines(target, lines)
        assert report.skipped == [] and report.memories == 2
        assert [m.memory_id for m in (await target.list("ava")).memories] == [denver.memory_id]
        old = await target.get("ava", sf.memory_id)
        assert (old.valid_to, old.superseded_by) == (denver.valid_from, denver.memory_id)
        # The linked events came along: undoing the add still restores both.
        add = (await target.history(denver.memory_id))[0]
        await target.undo(add.event_id)
        assert [m.memory_id for m in (await target.list("ava")).memories] == [sf.memory_id]
        # An export from before validity existed: valid from creation, current.
        older = json.dumps({"type": "memory", "memory_id": "feedfacecafe", "user_id": "ava", "memory": "Ava likes tea",
                            "topics": [], "created_at": "2024-05-06T07:08:09Z", "updated_at": "2024-05-06T07:08:09Z"})
        await transfer.import_lines(target, [older])
        tea = await target.get("ava", "feedfacecafe")
        assert tea.valid_from == "2024-05-06T07:08:09.000000Z" and tea.valid_to is None
        bad = json.dumps(json.loads(older) | {"memory_id": "badbadbadbad", "valid_to": "2025-01-01"})
        report = await transfer.import_lines(target, [bad])
        assert "superseded_by" in report.skipped[0].reason
    finally:
        await target.close()


def test_cli_list_and_search_take_as_of_and_include_superseded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from memoir.server.cli import main

    db = ["--db", str(tmp_path / "cli.db"), "--user", "ava"]
    assert main(["add", *db, "Ava lives in San Francisco", "--valid-from", "2024-01-01"]) == 0
    sf = json.loads(capsys.readouterr().out)
    assert main(["add", *db, "Ava lives in Denver", "--supersedes", sf["memory_id"], "--valid-from", "2026-03-01"]) == 0
    denver = json.loads(capsys.readouterr().out)
    assert main(["list", *db]) == 0
    assert [m["memory_id"] for m in json.loads(capsys.readouterr().out)["memories"]] == [denver["memory_id"]]
    assert main(["list", *db, "--include-superseded"]) == 0
    assert len(json.loads(capsys.readouterr().out)["memories"]) == 2
    assert main(["search", *db, "lives", "--method", "keyword", "--as-of", "2026-01-01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["memory_id"] for m in out["results"]] == [sf["memory_id"]]
    assert main(["search", *db, "lives", "--method", "keyword", "--max-tokens", "6"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == 5 and out["truncated_by_budget"] is False
    assert main(["list", *db, "--as-of", "soon"]) == 1
    assert "--as-of:" in capsys.readouterr().err
