"""Nothing lost: export / import (memoir's JSON Lines and the reference memory.jsonl) and backups."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from memoir.memory.store import Change, Store
from memoir.memory.transfer import backup, export_lines, import_lines
from memoir.server import cli


async def lines_of(store: Store, user: str | None = None, history: bool = False) -> list[str]:
    return [line async for line in export_lines(store, user, history=history)]


async def table(store: Store, sql: str) -> list[tuple]:
    return [tuple(r) for r in await store.fetch(sql)]


MEMORIES = "SELECT memory_id, user_id, memory, topics, input, agent_id, created_at, updated_at FROM memories ORDER BY memory_id"
HISTORY = (
    "SELECT memory_id, user_id, operation, before, after, actor, reason, source, created_at FROM history "
    "ORDER BY memory_id, event_id"
)


async def populated(path: Path) -> Store:
    store = await Store.open(path)
    ski = await store.add("ava", "Ava likes to ski", ["hobbies"], input="I love skiing")
    await store.update("ava", ski.memory_id, memory="Ava loves to ski")
    tea = await store.add("ava", "Ava likes tea \u2615 and \u00e9clairs")
    await store.delete("ava", tea.memory_id)
    await store.add("bob", "Bob plays chess", ["games"], change=Change(actor="cli"))
    for i in range(3):
        await store.add("carol", f"Carol fact {i}")
    await store.clear("carol")
    await store.add("carol", "Carol moved to Lisbon", ["home"])
    return store


async def test_export_then_import_restores_everything_and_twice_adds_nothing(tmp_path: Path) -> None:
    source = await populated(tmp_path / "a.db")
    exported = await lines_of(source, history=True)
    header = json.loads(exported[0])
    assert header["type"] == "memoir-export" and header["history"] is True
    assert sum(json.loads(x)["type"] == "memory" for x in exported) == 3

    target = await Store.open(tmp_path / "b.db")
    first = await import_lines(target, exported)
    assert (first.memories, first.history, first.skipped) == (3, 12, [])
    assert await table(target, MEMORIES) == await table(source, MEMORIES)
    assert await table(target, HISTORY) == await table(source, HISTORY)
    # Undo works on imported history: the delete of the tea memory can be reverted.
    deleted = [e for e in await target.user_history("ava") if e.operation == "delete"][0]
    await target.undo(deleted.event_id)
    assert await target.count("ava") == 2

    again = await import_lines(target, await lines_of(source, history=True))
    assert (again.memories, again.history) == (0, 0)
    assert all("already present" in s.reason for s in again.skipped)
    assert await target.count() == 4
    await source.close()
    await target.close()


async def test_export_of_one_user_and_import_filtered_by_user(tmp_path: Path) -> None:
    source = await populated(tmp_path / "a.db")
    only_bob = await lines_of(source, "bob")
    assert [json.loads(x)["user_id"] for x in only_bob[1:]] == ["bob"]
    target = await Store.open(tmp_path / "b.db")
    report = await import_lines(target, await lines_of(source), user_id="carol")
    assert report.memories == 1 and await target.users() == ["carol"]
    assert {s.reason.split(":")[0] for s in report.skipped} == {"user_id"}
    # Without history in the file, each memory gets one 'add' event by the importer.
    events = await target.user_history("carol")
    assert [(e.operation, e.actor) for e in events] == [("add", "import")]
    await source.close()
    await target.close()


async def test_import_validates_every_line_through_the_limits(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "m.db")

    def memory(**fields: object) -> str:
        base = {"type": "memory", "memory_id": "abc123", "user_id": "ava", "memory": "fine",
                "topics": [], "created_at": "2026-01-01T00:00:00Z"}
        return json.dumps(base | fields)

    lines = [
        memory(memory_id="good1", memory="Ava likes to ski"),
        memory(memory_id="blank", memory="   "),
        memory(memory_id="long", memory="x" * 2001),
        memory(memory_id="baduser", user_id="ava smith"),
        memory(memory_id="topics", topics=["t"] * 0 + [f"t{i}" for i in range(17)]),
        memory(memory_id="ctrl", memory="bell\x07"),
        memory(memory_id="bad id!"),
        memory(memory_id="badtime", created_at="yesterday"),
        memory(memory_id="wrongtype", memory=5),
        '{"type": "memory", "memory_id": "sur", "user_id": "ava", "memory": "\\ud800", "created_at": "2026-01-01"}',
        "not json at all",
        "[1, 2]",
        json.dumps({"type": "telepathy"}),
        json.dumps({"type": "memoir-export", "version": 99}),
        memory(memory_id="good2", memory="Ava lives in Denver", topics=["Home", "home "]),
    ]
    report = await import_lines(store, lines)
    assert report.memories == 2
    reasons = {s.line: s.reason for s in report.skipped}
    assert [*reasons] == list(range(2, 15))
    for line, expected in {
        2: "memory: is blank", 3: "2,000", 4: "user_id", 5: "topics", 6: "control characters", 7: "memory_id",
        8: "created_at", 9: "memory: must be a string", 10: "lone surrogate", 11: "JSON", 12: "JSON",
        13: "type", 14: "version",
    }.items():
        assert expected in reasons[line], (line, reasons[line])
    listed = (await store.list("ava")).memories
    assert sorted(m.memory for m in listed) == ["Ava likes to ski", "Ava lives in Denver"]
    assert [m.topics for m in listed if m.memory_id == "good2"] == [["home"]]
    await store.close()


async def test_import_reads_the_reference_memory_server_format(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "m.db")
    reference = [
        '{"type":"entity","name":"Ava","entityType":"person","observations":["likes to ski","lives in Denver"]}',
        '{"type":"entity","name":"Acme Corp","entityType":"organization","observations":["makes anvils"]}',
        '{"type":"relation","from":"Ava","to":"Acme Corp","relationType":"works_at"}',
        '{"type":"entity","name":"Bad","entityType":"person","observations":["' + "y" * 2100 + '"]}',
        '{"type":"relation","from":"Ava","relationType":"knows"}',
    ]
    report = await import_lines(store, reference, user_id="dana")
    assert report.memories == 4
    assert [(s.line, s.reason.split(":")[0]) for s in report.skipped] == [(4, "observations[0]"), (5, "to")]
    memories = {m.memory: m.topics for m in (await store.list("dana")).memories}
    assert memories == {
        "Ava: likes to ski": ["person", "ava"],
        "Ava: lives in Denver": ["person", "ava"],
        "Acme Corp: makes anvils": ["organization", "acme corp"],
        "Ava works at Acme Corp": ["relation", "ava", "acme corp"],
    }
    again = await import_lines(store, reference, user_id="dana")
    assert again.memories == 0 and await store.count() == 4
    # The same file for another user is that user's own copy.
    assert (await import_lines(store, reference, user_id="erin")).memories == 4
    await store.close()


async def test_backup_is_a_consistent_copy_that_passes_integrity_check(tmp_path: Path) -> None:
    store = await populated(tmp_path / "m.db")
    target = tmp_path / "backups" / "memoir.db"
    target.parent.mkdir()
    async with store.transaction() as db:  # a write in progress is not in the copy
        await db.execute("UPDATE memories SET memory = 'half-written' WHERE user_id = 'bob'")
        await backup(store.path, target)
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT memory FROM memories WHERE user_id = 'bob'").fetchone()[0] == "Bob plays chess"
    assert copy.execute("SELECT count(*) FROM memories").fetchone()[0] == 3
    copy.close()
    await store.close()


def test_cli_export_import_backup(tmp_path: Path, capsys) -> None:
    db, other, out = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "export.jsonl"
    assert cli.main(["add", "Ava likes to ski", "--topic", "hobbies", "--user", "ava", "--db", str(db)]) == 0
    assert cli.main(["add", "Bob plays chess", "--user", "bob", "--db", str(db)]) == 0
    capsys.readouterr()
    assert cli.main(["export", "--history", "--db", str(db)]) == 0
    stdout_lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["type"] for x in stdout_lines] == ["memoir-export", "memory", "memory", "history", "history"]
    assert cli.main(["export", "--user", "ava", "--output", str(out), "--db", str(db)]) == 0
    assert len(out.read_text().splitlines()) == 2

    assert cli.main(["import", str(out), "--db", str(other)]) == 0
    assert "imported 1 memories" in capsys.readouterr().out
    assert cli.main(["import", str(out), "--db", str(other)]) == 0
    printed = capsys.readouterr().out
    assert "imported 0 memories" in printed and "already present" in printed

    reference = tmp_path / "memory.jsonl"
    reference.write_text('{"type":"entity","name":"Ava","entityType":"person","observations":["likes tea"]}\n')
    assert cli.main(["import", str(reference), "--user", "ava", "--db", str(other)]) == 0
    assert "imported 1 memories" in capsys.readouterr().out

    assert cli.main(["backup", str(tmp_path / "b.bak"), "--db", str(other)]) == 0
    assert "integrity check ok" in capsys.readouterr().out
    copy = sqlite3.connect(tmp_path / "b.bak")
    assert copy.execute("SELECT count(*) FROM memories").fetchone()[0] == 2
    copy.close()
    assert cli.main(["backup", str(other), "--db", str(other)]) == 1
    assert "the database itself" in capsys.readouterr().err
