"""Nothing lost: export / import (memoir's JSON Lines and the reference memory.jsonl) and backups."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


async def populated(path: Path | str) -> Store:
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


@pytest.mark.both_backends
async def test_export_then_import_restores_everything_and_twice_adds_nothing(new_database: Callable[[], Path | str]) -> None:
    source = await populated(new_database())
    exported = await lines_of(source, history=True)
    header = json.loads(exported[0])
    assert header["type"] == "memoir-export" and header["history"] is True
    assert sum(json.loads(x)["type"] == "memory" for x in exported) == 3

    target = await Store.open(new_database())
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


@pytest.mark.both_backends
async def test_import_validates_every_line_through_the_limits(db_path: Path | str) -> None:
    store = await Store.open(db_path)

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


# -- a line can hold anything: it is skipped with its number and reason, never an abort (issue 10, defect 8)

UNREADABLE = [
    # 1: year 1 at +14:00 is before year 1 in UTC (the conversion underflows)
    json.dumps({"type": "memory", "memory_id": "under", "user_id": "ava", "memory": "x", "created_at": "0001-01-01T00:00:00+14:00"}),
    # 2: and year 9999 at -14:00 after year 9999
    json.dumps({"type": "memory", "memory_id": "over", "user_id": "ava", "memory": "x",
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "9999-12-31T23:59:59-14:00"}),
    # 3: in a history event's own time, 4: in its 'before' memory
    json.dumps({"type": "history", "event_id": 1, "memory_id": "h", "user_id": "ava", "operation": "delete",
                "created_at": "0001-01-01T00:00:00+14:00"}),
    json.dumps({"type": "history", "event_id": 2, "memory_id": "h", "user_id": "ava", "operation": "delete",
                "created_at": "2026-01-01T00:00:00Z", "before": {"memory_id": "h", "user_id": "ava", "memory": "x",
                                                                 "created_at": "0001-01-01T00:00:00+14:00"}}),
    "[" * 100_000 + "]" * 100_000,  # 5: JSON nested deeper than the parser recurses
    json.dumps({"type": "memory", "memory_id": "fine", "user_id": "ava", "memory": "Ava likes to ski",
                "created_at": "1000-01-01T00:00:00-01:00"}),  # 6: fine
]


async def test_a_line_that_breaks_a_parser_is_skipped_not_fatal(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "m.db")
    report = await import_lines(store, UNREADABLE)
    assert (report.memories, report.history) == (1, 0)
    reasons = {s.line: s.reason for s in report.skipped}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    for line, field in {1: "created_at", 2: "updated_at", 3: "created_at", 4: "before.created_at"}.items():
        assert reasons[line].startswith(f"{field}: "), reasons[line]
        assert "outside the years 1-9999 once converted to UTC" in reasons[line]
    assert reasons[5].startswith("cannot be read (RecursionError")
    assert (await store.get("ava", "fine")).created_at == "1000-01-01T01:00:00.000000Z"
    await store.close()


def test_cli_import_of_unreadable_lines_reports_them(tmp_path: Path) -> None:
    """A real `memoir import` process: exit 0, each bad line reported by number, no traceback."""
    from tests.test_cli import run

    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join(UNREADABLE) + "\n")
    done = run("import", str(source), "--db", str(tmp_path / "m.db"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "imported 1 memories and 0 history events; skipped 5 lines" in done.stdout
    assert "skipped line 1: created_at: '0001-01-01T00:00:00+14:00' is outside the years 1-9999 once converted to UTC" in done.stdout


# Hostile lines, and near-valid records whose fields are hostile, over a store where alice has a live
# and a deleted memory whose ids the lines may reuse.
ALICE_IDS = ["alive0000001", "gone00000001"]
IDS = st.sampled_from(ALICE_IDS + ["m1", "m2", "bad id!", ""])
USERS = st.sampled_from(["alice", "mallory", "erin", "bad user", ""])
TIMES = st.sampled_from([
    "2026-01-01T00:00:00Z", "2026-01-01", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
    "0001-01-01", "9999-12-31T23:59:59.999999", "2026-02-30", "+10000-01-01", "yesterday", "", "2026-01-01T25:00",
    "2026-01-01T00:00:00+24:00", "2026-13-01",
]) | st.text(max_size=30)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def spoiled(draw: st.DrawFn, record: dict) -> dict:
    """`record`, often with one field or two made hostile (a JSON value of any kind) or left out."""
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        key = draw(st.sampled_from(sorted(record)))
        if draw(st.booleans()):
            record[key] = draw(JSON_VALUES)
        else:
            record.pop(key)
        if not record:
            break
    return record


VALID_TIMES = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-02", "2026-01-01T09:30:00+02:00"])
TEXTS = st.sampled_from(["Ava likes tea", "MALLORY PRIVATE", " ", "x" * 2001, "bell\x07"]) | st.text(max_size=40)


@st.composite
def memory_objects(draw: st.DrawFn, memory_id: str | None = None, user_id: str | None = None) -> dict:
    return draw(spoiled({
        "memory_id": memory_id or draw(IDS), "user_id": user_id or draw(USERS), "memory": draw(TEXTS),
        "topics": draw(st.lists(st.text(max_size=70), max_size=3) | st.lists(st.just("t"), max_size=20)),
        "input": draw(st.none() | st.text(max_size=10)), "agent_id": draw(st.none() | st.text(max_size=200)),
        "created_at": draw(VALID_TIMES | TIMES), "updated_at": draw(VALID_TIMES | TIMES),
    }))


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["memory", "memory", "history", "history", "entity", "relation", "memoir-export", "raw", "json"]))
    if kind == "raw":
        return draw(st.text(max_size=60) | st.sampled_from(["[" * 5000, "{" * 3, '{"type": "memory"', "\ud800", "null", "1e999"]))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES))
    record: dict
    if kind == "memory":
        record = draw(memory_objects())
    elif kind == "history":
        memory_id, user_id, operation = draw(IDS), draw(USERS), draw(st.sampled_from(["add", "update", "delete", "clear", "restore", "purge"]))
        state = memory_objects(memory_id, user_id)
        record = draw(spoiled({
            "event_id": draw(st.integers(-5, 2**64)), "memory_id": memory_id, "user_id": user_id, "operation": operation,
            "before": None if operation == "add" else draw(state), "after": None if operation in ("delete", "clear") else draw(state),
            "actor": draw(st.sampled_from(["tool", "cli", "import", "alien"])), "reason": draw(st.none() | st.text(max_size=10)),
            "undoes": draw(st.none() | st.integers(0, 2**64)), "created_at": draw(VALID_TIMES | TIMES),
        }))
    elif kind == "entity":
        record = draw(spoiled({"name": draw(st.sampled_from(["Ava", "Bob"]) | st.text(max_size=30)),
                               "entityType": draw(st.sampled_from(["person"]) | st.text(max_size=70)),
                               "observations": draw(st.lists(TEXTS, max_size=3))}))
    elif kind == "relation":
        record = draw(spoiled({k: draw(st.sampled_from(["Ava", "Bob", "knows"]) | st.text(max_size=30))
                               for k in ("from", "to", "relationType")}))
    else:
        record = draw(spoiled({"version": 1}))
    return json.dumps({"type": kind} | record)


def test_fuzzed_imports_never_abort_and_never_share_an_id(tmp_path: Path) -> None:
    """Whatever the lines, an import returns a report: every bad line skipped with its number and a
    reason; a memory id never ends up with two users; a second import of the same lines adds nothing."""

    async def attempt(batch: list[str]) -> None:
        store = await Store.open(":memory:")
        try:
            async with store.transaction() as db:  # alice's live and deleted memories, with their ids
                for memory_id in ALICE_IDS:
                    await db.execute(
                        "INSERT INTO memories (memory_id, user_id, memory, created_at, updated_at)"
                        " VALUES (?, 'alice', 'Alice secret', '2026-01-01', '2026-01-01')", (memory_id,))
                    await db.execute(
                        "INSERT INTO history (memory_id, user_id, operation, actor, created_at)"
                        " VALUES (?, 'alice', 'add', 'tool', '2026-01-01')", (memory_id,))
                await db.execute("DELETE FROM memories WHERE memory_id = ?", (ALICE_IDS[1],))
            report = await import_lines(store, batch)
            non_blank = {n for n, line in enumerate(batch, start=1) if line.strip()}
            for skipped in report.skipped:
                assert skipped.line in non_blank and skipped.reason and "Traceback" not in skipped.reason
            assert await store.fetch(SHARED_IDS) == []
            assert {r[0] for r in await store.fetch("SELECT user_id FROM history WHERE memory_id IN (?, ?)", ALICE_IDS)} == {"alice"}
            assert (await store.integrity_check()) == "ok"
            again = await import_lines(store, batch)
            assert (again.memories, again.history) == (0, 0)
        finally:
            await store.close()

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(batch=st.lists(lines(), min_size=1, max_size=8))
    def check(batch: list[str]) -> None:
        asyncio.run(attempt(batch))

    check()


SHARED_IDS = (
    "SELECT memory_id FROM (SELECT memory_id, user_id FROM memories UNION SELECT memory_id, user_id FROM history)"
    " GROUP BY memory_id HAVING count(DISTINCT user_id) > 1"
)
