"""A memory id belongs to exactly one user forever (issue 10, defect 6).

An import on 649139a could write another user's events under a memory id, and give another
user a deleted memory's id; the history resource then showed both users' events, and undoing
the delete failed with a raw `UNIQUE constraint failed`. Each layer is pinned here: the store's
history and restore, the history resource (both protocol eras, trusted and token connections),
the `memoir history` / `memoir undo` commands (real processes), and the import itself.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from memoir.memory.errors import CannotUndo
from memoir.memory.store import Store
from memoir.memory.transfer import import_lines
from memoir.server.app import build_server
from memoir.tools.context import AppContext, Caller
from tests.conftest import ERAS, held
from tests.test_cli import ok, run

SHARED_IDS = (
    "SELECT memory_id FROM (SELECT memory_id, user_id FROM memories UNION SELECT memory_id, user_id FROM history)"
    " GROUP BY memory_id HAVING count(DISTINCT user_id) > 1"
)


def pollute(db_path: Path, memory_id: str, *, live: bool = True) -> None:
    """What a mallory import on 649139a left: her events under alice's (deleted) memory's id, and
    (live) her own memory holding that id."""
    planted = {"memory_id": memory_id, "user_id": "mallory", "memory": "MALLORY PRIVATE", "topics": [],
               "input": None, "agent_id": None, "created_at": "2026-01-01T00:00:00.000000Z",
               "updated_at": "2026-01-01T00:00:00.000000Z"}
    with sqlite3.connect(db_path) as db:
        db.execute(
            "INSERT INTO history (memory_id, user_id, operation, before, after, actor, created_at)"
            " VALUES (?, 'mallory', 'delete', ?, NULL, 'import', '2026-01-01T00:00:00.000000Z')",
            (memory_id, json.dumps(planted)),
        )
        if live:
            db.execute(
                "INSERT INTO memories (memory_id, user_id, memory, topics, created_at, updated_at)"
                " VALUES (?, 'mallory', 'MALLORY PRIVATE', '[]', ?, ?)",
                (memory_id, planted["created_at"], planted["updated_at"]),
            )
    db.close()


async def alices_deleted_memory(store: Store) -> tuple[str, int]:
    added = await store.add("alice", "Alice keeps her spare key under the mat")
    await store.delete("alice", added.memory_id)
    return added.memory_id, (await store.history(added.memory_id))[-1].event_id


# -- the store ---------------------------------------------------------------------------------


async def test_history_holds_one_users_events_and_restore_refuses_a_taken_id(db_path: Path) -> None:
    store = await Store.open(db_path)
    memory_id, delete_event = await alices_deleted_memory(store)
    pollute(db_path, memory_id)

    # The owner (the first to record the id) sees only her own events; mallory only hers.
    assert [(e.user_id, e.operation) for e in await store.history(memory_id)] == [("alice", "add"), ("alice", "delete")]
    assert [e.user_id for e in await store.history(memory_id, user_id="alice")] == ["alice", "alice"]
    assert [e.user_id for e in await store.history(memory_id, user_id="mallory")] == ["mallory"]

    # Undoing alice's delete while mallory's memory holds the id: a clear CannotUndo, nothing changed.
    before = await store.fetch("SELECT count(*) FROM history")
    with pytest.raises(CannotUndo, match="cannot come back: its id is now taken by another memory; nothing was changed"):
        await store.undo(delete_event)
    assert [tuple(r) for r in await store.fetch("SELECT count(*) FROM history")] == [tuple(r) for r in before]
    assert await store.count("alice") == 0

    # Mallory's planted delete event cannot give her alice's id either, once the id is free.
    planted = (await store.history(memory_id, user_id="mallory"))[0]
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM memories WHERE memory_id = ?", (memory_id,))
    db.close()
    with pytest.raises(CannotUndo, match="belongs to another user's memory"):
        await store.undo(planted.event_id)
    # ... and alice's own undo now works.
    restored = await store.undo(delete_event)
    assert (restored.operation, restored.user_id) == ("restore", "alice")
    assert (await store.get("alice", memory_id)).memory == "Alice keeps her spare key under the mat"
    await store.close()


# -- the history resource, both eras -----------------------------------------------------------


async def read_history(client: Client, memory_id: str) -> list[tuple[str, str]] | None:
    try:
        result = await client.read_resource(f"memoir://memories/{memory_id}/history")
    except MCPError:
        return None
    return [(e["user_id"], e["operation"]) for e in json.loads(result.contents[0].text)["events"]]


@pytest.mark.parametrize("mode", ERAS)
async def test_the_history_resource_shows_only_the_callers_events(app: AppContext, db_path: Path, mode: str) -> None:
    memory_id, _ = await alices_deleted_memory(app.store)
    pollute(db_path, memory_id)
    async for client in held(Client(build_server(app), mode=mode)):
        # A trusted connection (stdio): the owner's events, never mallory's with them.
        assert await read_history(client, memory_id) == [("alice", "add"), ("alice", "delete")]
        # A token connection answers for the token's user only.
        app.caller = lambda: Caller(user_id="alice")
        assert await read_history(client, memory_id) == [("alice", "add"), ("alice", "delete")]
        app.caller = lambda: Caller(user_id="mallory")
        assert await read_history(client, memory_id) == [("mallory", "delete")]
        app.caller = lambda: Caller(user_id="bob")
        assert await read_history(client, memory_id) is None


# -- the command line (real processes) ---------------------------------------------------------


async def test_cli_history_and_undo_on_a_polluted_database(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = await Store.open(db)
    memory_id, delete_event = await alices_deleted_memory(store)
    await store.close()
    pollute(db, memory_id)

    shown = ok("history", memory_id, "--db", str(db))
    assert [(e["user_id"], e["operation"]) for e in shown] == [("alice", "add"), ("alice", "delete")]
    assert "MALLORY" not in json.dumps(shown)
    assert [e["user_id"] for e in ok("history", memory_id, "--user", "mallory", "--db", str(db))] == ["mallory"]

    done = run("undo", str(delete_event), "--db", str(db))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "UNIQUE" not in done.stderr and "cannot come back: its id is now taken" in done.stderr, done.stderr


# -- the import --------------------------------------------------------------------------------


def memory_line(memory_id: str, user_id: str, text: str = "MALLORY PRIVATE") -> str:
    return json.dumps({"type": "memory", "memory_id": memory_id, "user_id": user_id, "memory": text,
                       "topics": [], "created_at": "2026-01-01T00:00:00Z"})


def history_line(memory_id: str, user_id: str, event_id: int = 1) -> str:
    state = {"memory_id": memory_id, "user_id": user_id, "memory": "MALLORY PRIVATE", "topics": [],
             "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
    return json.dumps({"type": "history", "event_id": event_id, "memory_id": memory_id, "user_id": user_id,
                       "operation": "update", "before": state, "after": state | {"memory": "changed"},
                       "actor": "tool", "created_at": "2026-01-02T00:00:00Z"})


async def test_import_never_gives_one_users_memory_id_to_another(db_path: Path) -> None:
    """The attack of issue 10, re-run: mallory's lines naming alice's ids are skipped, with the line
    number and the reason; lines of one import claim ids for their user against later lines too."""
    store = await Store.open(db_path)
    deleted, delete_event = await alices_deleted_memory(store)
    live = (await store.add("alice", "Alice banks with Northwind")).memory_id
    lines = [
        memory_line(deleted, "mallory"),               # 1: alice's deleted memory's id
        history_line(deleted, "mallory"),              # 2: an event in alice's history
        history_line(live, "mallory", 2),              # 3: an event in alice's live memory's history
        memory_line(live, "mallory"),                  # 4: alice's live memory's id
        memory_line("fresh1", "mallory", "Mallory's own fact"),  # 5: fine
        history_line("fresh1", "erin", 3),             # 6: an id line 5 just gave mallory
        history_line("fresh2", "erin", 4),             # 7: fine: erin's (a memory not in the file)
        memory_line("fresh2", "mallory"),              # 8: an id line 7 just gave erin
    ]
    report = await import_lines(store, lines)
    assert (report.memories, report.history) == (1, 1)
    skipped = {s.line: s.reason for s in report.skipped}
    assert sorted(skipped) == [1, 2, 3, 4, 6, 8]
    assert all("is, or was, another user's; a memory id belongs to one user only" in r for r in skipped.values())
    assert skipped[1].startswith(f"memory '{deleted}': ") and skipped[2].startswith("history event 1: ")

    assert [e.user_id for e in await store.history(deleted, user_id="alice")] == ["alice", "alice"]
    assert await store.history(deleted, user_id="mallory") == []
    assert [e.user_id for e in await store.history(live, user_id="alice")] == ["alice"]
    assert await store.fetch(SHARED_IDS) == []
    assert "MALLORY PRIVATE" not in json.dumps([e.model_dump() for e in await store.user_history("alice")])
    # ... and alice's undo works.
    assert (await store.undo(delete_event)).operation == "restore"
    assert await store.count("alice") == 2
    await store.close()
