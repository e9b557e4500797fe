"""A database file deleted or replaced under a running memoir (issue 10, defect 9).

SQLite goes on writing to the file it opened; on 649139a such writes were acknowledged and then
vanished at exit. Now every write is refused with DatabaseFileGone, a tool error over MCP; reads
go on from the open file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from mcp import Client

from memoir.memory.errors import DatabaseFileGone
from memoir.memory.store import Edit, Store
from memoir.memory.tokens import Tokens
from memoir.memory.transfer import import_lines
from tests.conftest import ERAS
from tests.helpers import call, call_error
from tests.servers import stdio_params


async def make_other(path: Path) -> None:
    """A memoir database with one memory of its own (what a restore by hand would move into place)."""
    other = await Store.open(path)
    await other.add("ava", "from the other file")
    await other.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_every_write_is_refused_once_the_file_is_gone(tmp_path: Path, how: str) -> None:
    path = tmp_path / "memoir.db"
    store = await Store.open(path)
    kept = await store.add("ava", "Ava likes to ski")
    if how == "deleted":
        path.unlink()
    else:
        await make_other(tmp_path / "other.db")
        os.replace(tmp_path / "other.db", path)

    expected = "was deleted" if how == "deleted" else "was replaced by another file"
    writes = {
        "add": lambda: store.add("ava", "Ava lives in Denver"),
        "update": lambda: store.update("ava", kept.memory_id, memory="Ava loves to ski"),
        "delete": lambda: store.delete("ava", kept.memory_id),
        "apply": lambda: store.apply("ava", [Edit("add", memory="batch")]),
        "clear": lambda: store.clear("ava"),
        "undo": lambda: store.undo(1),
        "import": lambda: import_lines(store, ['{"type":"entity","name":"Ava","entityType":"person","observations":["x"]}']),
        "token": lambda: Tokens(store).create("ava"),
    }
    for name, write in writes.items():
        with pytest.raises(DatabaseFileGone) as refused:
            await write()
        message = str(refused.value)
        assert f"{path} {expected} while memoir had it open; nothing was written" in message, name
        assert "Restart memoir" in message and "backup" in message

    # Reads go on from the file that was opened: it holds every acknowledged write, and nothing else.
    assert [m.memory for m in (await store.list("ava")).memories] == ["Ava likes to ski"]
    await store.close()
    # What the path holds now never saw the refused writes.
    if how == "replaced":
        reopened = await Store.open(path)
        assert [m.memory for m in (await reopened.list("ava")).memories] == ["from the other file"]
        await reopened.close()
    else:
        assert not path.exists()


async def test_an_in_memory_store_is_not_checked() -> None:
    store = await Store.open(":memory:")
    await store.add("ava", "Ava likes to ski")
    assert await store.count() == 1
    await store.close()


@pytest.mark.parametrize(("mode", "how"), [("auto", "deleted"), ("legacy", "replaced")])
async def test_a_stdio_server_refuses_writes_as_a_tool_error(tmp_path: Path, mode: str, how: str) -> None:
    """A real `memoir serve` process: the next add after the file goes is a tool error saying what
    happened and what to do; nothing is acknowledged."""
    path = tmp_path / "memoir.db"
    async with Client(stdio_params(path), mode=mode) as client:
        first = await call(client, "add_memory", memory="Ava likes to ski")
        if how == "deleted":
            path.unlink()
        else:
            await make_other(tmp_path / "other.db")
            os.replace(tmp_path / "other.db", path)
        text = await call_error(client, "add_memory", memory="Ava lives in Denver")
        assert f"the file {path} " in text and ("was deleted" if how == "deleted" else "replaced by another file") in text
        assert "nothing was written" in text and "Restart memoir" in text
        assert "Ava lives in Denver" not in text
        # A read still answers, from the open file.
        listed = await call(client, "list_memories")
        assert [m["memory_id"] for m in listed["memories"]] == [first["memory_id"]]
    if how == "replaced":
        with sqlite3.connect(path) as db:
            assert [r[0] for r in db.execute("SELECT memory FROM memories")] == ["from the other file"]
        db.close()
    else:
        assert not path.exists()
