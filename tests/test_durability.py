"""Crash-safety and concurrency on a real `memoir serve --transport http`:

- SIGKILL the server again and again while clients write; after each restart the database passes
  `PRAGMA integrity_check` and holds every write that was acknowledged (and no acknowledged delete
  comes back);
- several clients at once, on shared and separate users: no errors, no "database is locked",
  exact final counts.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from pathlib import Path

import pytest

from memoir.memory.store import Store
from tests.netclients import Ledger, connect, writer
from tests.servers import start_server

KILLS = 6
WRITERS = 3
CALL_TIMEOUT = 3.0


async def check_database(db: Path, ledger: Ledger) -> int:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(con.execute("SELECT memory_id, memory FROM memories").fetchall())
        per_user = dict(con.execute("SELECT user_id, count(*) FROM memories GROUP BY user_id").fetchall())
    finally:
        con.close()
    # Each user's full-text index, once the changes queued before the kill are applied.
    store = await Store.open(db)
    try:
        for user in per_user:
            assert await store.sync_index(user)
    finally:
        await store.close()
    con = sqlite3.connect(db)
    try:
        indexed = {
            user: con.execute(
                "SELECT count(*) FROM keyword_postings JOIN keyword_users USING (uid) WHERE user_id = ? AND term = 'fact'", (user,)
            ).fetchone()[0]
            for user in per_user
        }
    finally:
        con.close()
    for memory_id, text in ledger.added.items():
        if memory_id in ledger.deleted:
            assert memory_id not in rows, f"acknowledged delete of {memory_id} came back"
        elif memory_id not in ledger.in_flight_deletes:
            assert rows.get(memory_id) == text, f"acknowledged write {memory_id} lost"
    assert indexed == per_user  # every user's full-text index is in step with the table
    return len(rows)


async def test_acknowledged_writes_survive_repeated_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    env = {"MEMOIR_EMBEDDINGS": "off", "MEMOIR_SYNCHRONOUS": "FULL"}
    ledger = Ledger()
    rng = random.Random(5)
    for round_ in range(KILLS):
        server = start_server("http", db, env=env)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(writer(server.url, f"user{w}", f"round {round_}", ledger, stop, timeout=CALL_TIMEOUT))
            for w in range(WRITERS)
        ]
        await asyncio.sleep(rng.uniform(0.4, 0.9))
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        stop.set()
        await asyncio.gather(*tasks)
        await check_database(db, ledger)
    # A last clean start: the server opens the database and serves what it holds.
    server = start_server("http", db, env=env)
    try:
        async with connect(server.url, mode="legacy") as client:
            listed = await client.call_tool("list_memories", {"user_id": "user0", "limit": 100})
            assert not listed.is_error
    finally:
        assert server.stop() == 0
    present = await check_database(db, ledger)
    print(f"{KILLS} SIGKILLs, {ledger.acknowledged} acknowledged writes, {present} memories present")
    assert ledger.acknowledged > KILLS * WRITERS  # the clients did write between kills
    assert "database is locked" not in server.stderr


@pytest.mark.both_backends
async def test_concurrent_clients_get_no_errors_and_exact_counts(db_path: Path | str, backend: str) -> None:
    """On PostgreSQL the clients are spread over two instances on the one database."""
    clients, rounds = 8, 12
    env = {"MEMOIR_EMBEDDINGS": "off", "MEMOIR_SYNCHRONOUS": "NORMAL"}
    servers = [start_server("http", db_path, env=env) for _ in range(2 if backend == "postgresql" else 1)]
    server = servers[0]
    errors: list[str] = []

    async def worker(i: int) -> tuple[int, int]:
        own, kept = f"solo{i}", 0
        async with connect(servers[i % len(servers)].url, mode="legacy") as client:

            async def call(tool: str, **arguments: object) -> dict:
                result = await client.call_tool(tool, arguments)
                if result.is_error:
                    errors.append(f"{tool}: {result.content[0].text}")
                    return {}
                return result.structured_content

            for n in range(rounds):
                mine = await call("add_memory", memory=f"solo fact {n} of {i}", user_id=own)
                await call("add_memory", memory=f"shared fact {n} from {i}", user_id="shared", topics=[f"c{i}"])
                await call("search_memories", query="fact", user_id=own, retrieval_method="keyword")
                await call("list_memories", user_id="shared", limit=100)
                await call("update_memory", memory_id=mine["memory_id"], memory=f"solo fact {n} of {i}, updated",
                           user_id=own)
                if n % 3 == 0:
                    await call("delete_memory", memory_id=mine["memory_id"], user_id=own)
                else:
                    kept += 1
            listed = await call("list_memories", user_id=own, limit=100)
            return kept, len(listed["memories"])

    try:
        results = await asyncio.gather(*(worker(i) for i in range(clients)))
        async with connect(server.url, mode="legacy") as client:
            shared = await client.call_tool("list_memories", {"user_id": "shared", "limit": 100})
            assert len(shared.structured_content["memories"]) == clients * rounds
            for i in range(clients):
                mine = await client.call_tool("search_memories", {"user_id": "shared", "topics": [f"c{i}"], "limit": 100})
                assert len(mine.structured_content["results"]) == rounds
    finally:
        assert [s.stop() for s in servers] == [0] * len(servers)
    assert errors == []
    assert all(kept == listed for kept, listed in results), results
    for s in servers:
        assert "database is locked" not in s.stderr and "Traceback" not in s.stderr, s.stderr
