"""Many memoir instances on one PostgreSQL database (real `memoir serve --transport http`
processes, a real throwaway cluster: tests/pgcluster.py).

- a write through one instance is found by every search method through the other on its next
  search, though the other had loaded (and cached) that user's vectors and keyword statistics;
- a token created or revoked anywhere takes effect on every instance at once;
- SIGKILL one instance again and again while clients write through both: every acknowledged
  write is in the database, and the keyword index is in step with the memories;
- the connection layer itself: placeholders, rows, errors.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import sqlite3
from collections.abc import Callable

import httpx2
import psycopg
import pytest

from hypothesis import HealthCheck, given, settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from memoir.memory import keyword_index, postgres
from memoir.memory.store import Store
from tests.netclients import Ledger, connect, make_token, post_initialize, revoke_token, writer
from tests.servers import start_server
from tests.test_keyword_index import DOCS, OTHERS, QUERY, reference_bm25


@pytest.fixture
def backend() -> str:
    return "postgresql"


ENV = {"MEMOIR_EMBEDDINGS": "hashing"}
METHODS = ("keyword", "semantic", "hybrid", "last_n", "first_n")


async def tool(session, name: str, **arguments: object) -> dict:  # noqa: ANN001
    result = await session.call_tool(name, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def found_by(session, query: str, method: str) -> list[str]:  # noqa: ANN001
    out = await tool(session, "search_memories", query=query, retrieval_method=method, limit=10)
    assert out["retrieval_method"] == method
    return [r["memory"] for r in out["results"]]


async def test_two_instances_see_each_others_writes_and_tokens(db_path: str) -> None:
    a = start_server("http", db_path, env=ENV)
    b = start_server("http", db_path, env=ENV)
    try:
        _, token = await make_token(db_path, "ava")
        async with connect(a.url, token) as on_a, connect(b.url, token) as on_b:
            await tool(on_a, "add_memory", memory="Ava plays the cello in an orchestra")
            for method in METHODS:  # B loads ava's vectors and keyword statistics
                assert "Ava plays the cello in an orchestra" in await found_by(on_b, "cello orchestra", method)

            written = await tool(on_a, "add_memory", memory="Ava adopted a greyhound named Comet")
            for method in METHODS:
                assert "Ava adopted a greyhound named Comet" in await found_by(on_b, "greyhound Comet", method), method

            await tool(on_b, "update_memory", memory_id=written["memory_id"], memory="Ava adopted a whippet named Comet")
            for method in ("keyword", "semantic", "hybrid"):
                results = await found_by(on_a, "whippet Comet", method)
                assert "Ava adopted a whippet named Comet" in results and "Ava adopted a greyhound named Comet" not in results

            await tool(on_a, "delete_memory", memory_id=written["memory_id"])
            for method in METHODS:
                assert not any("Comet" in r for r in await found_by(on_b, "whippet Comet", method)), method

            # Undo through the other instance: history is one, whichever instance wrote it.
            history = (await on_b.read_resource(f"memoir://memories/{written['memory_id']}/history")).contents[0].text
            assert '"delete"' in history and '"update"' in history

            # A 2026-07-28 client behind a round-robin balancer: each request to the next instance.
            ports = itertools.cycle([httpx2.URL(a.url).port, httpx2.URL(b.url).port])
            seen: list[int] = []

            async def balance(request: httpx2.Request) -> None:
                request.url = request.url.copy_with(port=next(ports))
                seen.append(request.url.port)

            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                          event_hooks={"request": [balance]}) as http:
                async with Client(streamable_http_client(a.url, http_client=http)) as spread:
                    for i in range(3):
                        await tool(spread, "add_memory", memory=f"Ava visited museum {i} in Oslo")
                        assert len(await found_by(spread, "museum Oslo", "keyword")) == i + 1
            assert len(set(seen)) == 2 and len(seen) >= 6

            # The initialize handshake's session lives in the instance that made it (README: route by
            # mcp-session-id); a request carrying it to another instance is told to start again.
            session = (await post_initialize(a.url, token)).headers["mcp-session-id"]
            async with httpx2.AsyncClient(timeout=10) as http:
                listed = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
                headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}",
                           "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
                assert (await http.post(b.url, json=listed, headers=headers)).status_code == 404

            # A token revoked through one instance's database is refused by both at once.
            other_id, other = await make_token(db_path, "bob")
            for server in (a, b):
                assert (await post_initialize(server.url, other)).status_code == 200
            await revoke_token(db_path, other_id)
            for server in (a, b):
                assert (await post_initialize(server.url, other)).status_code == 401
                assert (await post_initialize(server.url)).status_code == 401  # tokens exist: no open access
    finally:
        assert a.stop() == 0, a.stderr
        assert b.stop() == 0, b.stderr


WRITERS = 2
KILLS = 3
CALL_TIMEOUT = 5.0


async def test_acknowledged_writes_survive_sigkill_of_one_instance_while_another_writes(db_path: str) -> None:
    env = {"MEMOIR_EMBEDDINGS": "off"}
    survivor = start_server("http", db_path, env=env)
    ledger = Ledger()  # adds only: every acknowledged one must be there
    rng = random.Random(12)
    steady_stop = asyncio.Event()
    adding = {"timeout": CALL_TIMEOUT, "delete_share": 0.0}
    steady = [
        asyncio.create_task(writer(survivor.url, f"steady{w}", "steady", ledger, steady_stop, **adding)) for w in range(WRITERS)
    ]
    try:
        for round_ in range(KILLS):
            victim = start_server("http", db_path, env=env)
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(writer(victim.url, f"user{w}", f"round {round_}", ledger, stop, **adding))
                for w in range(WRITERS)
            ]
            await asyncio.sleep(rng.uniform(0.4, 0.8))
            assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
            stop.set()
            await asyncio.gather(*tasks)
        steady_stop.set()
        await asyncio.gather(*steady)
        assert all(not t.exception() for t in steady)
    finally:
        steady_stop.set()
        assert survivor.stop() == 0, survivor.stderr

    store = await Store.open(db_path)
    try:
        rows = {r["memory_id"]: r["memory"] for r in await store.fetch("SELECT memory_id, memory FROM memories")}
        lost = [m for m, text in ledger.added.items() if rows.get(m) != text]
        assert not lost, f"{len(lost)} acknowledged writes lost"
        # The keyword index, brought up to date, holds exactly each user's memories.
        for user in {r["user_id"] for r in await store.fetch("SELECT DISTINCT user_id FROM memories")}:
            count = await store.count(user)
            assert len(await store.keyword(user, "fact", limit=100)) == min(count, 100)
    finally:
        await store.close()
    db = postgres.connect_sync(db_path)
    try:
        assert keyword_index.problems(db) == []
    finally:
        db.close()
    print(f"{KILLS} SIGKILLs of one instance, {len(ledger.added)} acknowledged adds over 2 instances, {len(rows)} present")
    assert len(ledger.added) > KILLS * WRITERS


# -- the connection layer ------------------------------------------------------------------


def test_placeholders_are_translated_and_literal_percents_kept() -> None:
    assert postgres.translate("SELECT a FROM t WHERE b = ? AND c LIKE 'x%'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%'", None
    )
    assert postgres.translate("SELECT ?2, ?1, ?1") == ("SELECT %s, %s, %s", (1, 0, 0))
    with pytest.raises(ValueError):
        postgres.translate("SELECT ?1, ?")


async def test_the_connection_speaks_like_aiosqlite(new_database: Callable[[], str]) -> None:
    db = await postgres.Connection.connect(new_database())
    try:
        await db.execute("CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name TEXT UNIQUE, n REAL)")
        cursor = await db.execute("INSERT INTO t (name, n) VALUES (?, ?) RETURNING id", ("a", 1.5))
        assert (await cursor.fetchone())["id"] == 1
        await db.executemany("INSERT INTO t (name, n) VALUES (?, ?)", [("b", 2), ("c%", 3)])
        async with db.execute("SELECT name, n FROM t WHERE name LIKE 'c%' OR n < ?1 ORDER BY ?1, name", (2,)) as cur:
            rows = await cur.fetchall()
        assert [(r["name"], r[1], tuple(r)) for r in rows] == [("a", 1.5, ("a", 1.5)), ("c%", 3.0, ("c%", 3.0))]
        assert (await db.execute("UPDATE t SET n = n + 1")).rowcount == 3
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute("INSERT INTO t (name) VALUES (?)", ("a",))
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.execute_fetchall("SELECT * FROM nowhere")
        await db.execute("BEGIN")
        assert db.in_transaction
        await db.execute("DELETE FROM t")
        await db.execute("ROLLBACK")
        assert not db.in_transaction
        assert len(await db.execute_fetchall("SELECT * FROM t")) == 3
        assert await db._execute(lambda c, q: c.execute(q).fetchone()[0], db._conn, "SELECT count(*) FROM t") == 3
    finally:
        await db.close()
    with pytest.raises(ValueError, match="closed"):
        await db.execute("SELECT 1")


async def test_a_database_from_a_newer_memoir_is_refused(new_database: Callable[[], str]) -> None:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(RuntimeError, match="newer"):
        await Store.open(url)


async def test_an_unreachable_server_is_a_clear_error(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(sqlite3.OperationalError, match="connection"):
        await Store.open(f"postgresql://nobody@/nowhere?host={tmp_path}")


async def test_connections_the_server_dropped_are_made_again(db_path: str) -> None:
    store = await Store.open(db_path)
    try:
        first = await store.add("ava", "Ava likes tea")
        with psycopg.connect(db_path, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'memoir' AND datname = current_database()"
            ).fetchone()[0]
        assert killed == 2  # the writer and the reader
        second = await store.add("ava", "Ava likes coffee")  # BEGIN on a new connection
        assert [m.memory_id for m in (await store.list("ava")).memories] == [second.memory_id, first.memory_id]
        await store.update("ava", first.memory_id, memory="Ava likes green tea")
    finally:
        await store.close()


_users = iter(range(1_000_000))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=DOCS, others=OTHERS, query=QUERY)
async def test_scores_are_the_sqlite_backends_over_the_users_own_memories(docs, others, query, db_path: str) -> None:  # noqa: ANN001
    """PostgreSQL ranks exactly as SQLite, and both as the reference written from BM25's
    definition with neighbour expansion (tests/test_keyword_index.py, where SQLite also equals
    FTS5's BM25 without it), whatever another user stores (one database, fresh users per example)."""
    n = next(_users)
    scores = []
    for location in (db_path, ":memory:"):
        store = await Store.open(location)
        try:
            for text in others:
                await store.add(f"bob{n}", text)
            for text, topics in docs:
                await store.add(f"ava{n}", text, topics)
            scores.append([(m.memory, m.score) for m in await store.keyword(f"ava{n}", query, limit=100)])
        finally:
            await store.close()
    ours, sqlite_ = scores
    assert [m for m, _ in ours] == [m for m, _ in sqlite_]
    assert [s for _, s in ours] == pytest.approx([s for _, s in sqlite_], rel=1e-9, abs=1e-12)
    reference = reference_bm25(docs, query, keyword_index.K1, keyword_index.B, keyword_index.NEIGHBOUR_WEIGHT)
    assert sorted(s for _, s in ours) == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_the_command_line_takes_a_postgresql_url(
    db_path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import json

    from memoir.server import cli

    monkeypatch.setenv("MEMOIR_EMBEDDINGS", "off")
    monkeypatch.setenv("MEMOIR_DB", db_path)

    def memoir(*args: str, ok: bool = True) -> tuple[str, str]:
        assert (cli.main(list(args)) == 0) == ok
        said = capsys.readouterr()
        return said.out, said.err

    memoir("add", "Ava likes to ski", "--topic", "hobbies", "--user", "ava")
    memoir("add", "Bob plays chess", "--user", "bob", "--db", db_path)
    assert [u["user_id"] for u in json.loads(memoir("users", "--json")[0])] == ["ava", "bob"]
    found = json.loads(memoir("search", "skiing", "--user", "ava", "--json")[0])
    assert [r["memory"] for r in found["results"]] == ["Ava likes to ski"]
    doctor = memoir("doctor")[0]
    assert "PostgreSQL" in doctor and "2 memories of 2 users" in doctor and "(current)" in doctor, doctor
    assert "in step with the memories" in doctor, doctor
    assert "keyword index" in memoir("reindex")[1]
    refused = memoir("backup", "/tmp/never.db", ok=False)[1]
    assert "pg_dump" in refused and "/tmp/never.db" not in refused


async def test_the_dashboards_counts(db_path: str) -> None:
    from memoir.memory.stats import per_day, topic_counts

    store = await Store.open(db_path)
    try:
        await store.add("ava", "Ava likes to ski", ["hobbies", "winter"])
        await store.add("ava", "Ava likes tea", ["hobbies"])
        assert await topic_counts(store, "ava") == [("hobbies", 2), ("winter", 1)]
        assert [n for _, n in await per_day(store, "ava")] == [2]
    finally:
        await store.close()


async def test_writes_wait_for_another_instances_write_lock_within_the_busy_timeout(db_path: str) -> None:
    from memoir.memory.backends.postgres import WRITE_LOCK

    store = await Store.open(db_path, busy_timeout_ms=300)
    try:
        kept = await store.add("ava", "Ava likes tea")
        with psycopg.connect(db_path) as other:  # another instance, in the middle of a write
            other.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            with pytest.raises(TimeoutError):  # one trip: memory/deadline.py makes it the call's timeout
                await store.add("ava", "Ava likes coffee")
            with pytest.raises(sqlite3.OperationalError, match="lock timeout"):
                await store.update("ava", kept.memory_id, memory="Ava likes green tea")
            other.rollback()
        await store.update("ava", kept.memory_id, memory="Ava likes green tea")
        assert [m.memory for m in (await store.list("ava")).memories] == ["Ava likes green tea"]
    finally:
        await store.close()


async def test_the_host_hooks_on_postgresql(db_path: str, tmp_path) -> None:  # noqa: ANN001
    """`memoir hook user-prompt` and `session-start` as Claude Code runs them, on a PostgreSQL URL."""
    from tests.test_hooks import env_for, hook

    store = await Store.open(db_path)
    try:
        peanuts = await store.add("default", "Ava is allergic to peanuts")
        await store.add("default", "Ava plays the cello")
    finally:
        await store.close()
    env = env_for(db_path, tmp_path / "hooks.log")  # type: ignore[arg-type]
    done = await asyncio.to_thread(hook, "user-prompt", {"prompt": "peanuts allergy"}, env)
    assert done.returncode == 0 and "- Ava is allergic to peanuts" in done.stdout.splitlines(), done
    started = await asyncio.to_thread(hook, "session-start", {"session_id": "s", "source": "startup"}, env)
    assert started.stdout.splitlines()[2] == "- Ava is allergic to peanuts"  # the most recalled first
    store = await Store.open(db_path)
    try:
        assert [tuple(r) for r in await store.fetch("SELECT memory_id, recalls FROM hook_recalls")] == [(peanuts.memory_id, 1)]
    finally:
        await store.close()
    assert not (tmp_path / "hooks.log").exists() or "Traceback" not in (tmp_path / "hooks.log").read_text()
