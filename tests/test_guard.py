"""The per-token request rate and the per-call time limit: clear tool errors, and a stopped call
changed nothing while a committed one is never reported as failed."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from memoir.memory.deadline import bounded, commit_point
from memoir.memory.errors import CallTimedOut, RateLimited
from memoir.memory.ratelimit import RateLimiter
from memoir.server.app import build_server
from memoir.tools.context import AppContext, Caller

from .helpers import call, call_error
from .test_tools import snapshot


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.retry_after == pytest.approx(1.0)
    limiter.take("b")  # buckets are per token
    clock.now += 0.5
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    limiter.take("a")
    clock.now += 3600
    for _ in range(3):  # refilled to the burst, no further
        limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")
    RateLimiter(rate_per_minute=0, burst=0).take("a")  # 0: no limit


async def test_rate_limit_is_a_tool_error_saying_when_to_retry(app: AppContext) -> None:
    clock = FakeClock()
    app.rate_limiter = RateLimiter(rate_per_minute=120, burst=2, clock=clock)
    app.caller = lambda: Caller(user_id="ava", token_id="tok1")
    async with Client(build_server(app)) as client:
        await call(client, "add_memory", memory="Ava likes to ski")
        await call(client, "search_memories", query="ski")
        before = await snapshot(app)
        text = await call_error(client, "add_memory", memory="Ava likes tea")
        assert "rate limit" in text and "120 calls a minute" in text and "retry in 0.5 s" in text, text
        assert await snapshot(app) == before
        with pytest.raises(MCPError, match="rate limit"):
            await client.read_resource("memoir://users/ava/memories")
        clock.now += 0.5
        await call(client, "add_memory", memory="Ava likes tea")
    # Trusted local connections (stdio, open loopback) carry no token and are not limited.
    app.caller = Caller
    async with Client(build_server(app)) as client:
        for _ in range(5):
            await call(client, "list_memories")


async def test_a_call_waiting_too_long_times_out_and_changes_nothing(app: AppContext) -> None:
    app.call_timeout = 0.3
    async with Client(build_server(app)) as client:
        await call(client, "add_memory", memory="Ava likes to ski")
        before = await snapshot(app)
        async with app.store._write_lock:  # another writer holds the store
            started = time.monotonic()
            text = await call_error(client, "add_memory", memory="Ava likes tea")
            assert time.monotonic() - started < 3
        assert "timeout" in text and "0.3 s" in text and "MEMOIR_CALL_TIMEOUT" in text and "nothing was changed" in text
        assert await snapshot(app) == before
        await call(client, "add_memory", memory="Ava likes tea")  # the store is usable afterwards


async def test_a_call_stopped_inside_its_transaction_rolls_back(app: AppContext, monkeypatch) -> None:
    app.call_timeout = 0.3
    real_update = app.store._update

    async def slow_update(*args, **kwargs):  # noqa: ANN002, ANN003
        memory = await real_update(*args, **kwargs)  # the row and its history event are written...
        await asyncio.sleep(2)  # ...but the call runs out of time before it commits
        return memory

    async with Client(build_server(app)) as client:
        added = await call(client, "add_memory", memory="Ava likes tea")
        before = await snapshot(app)
        monkeypatch.setattr(app.store, "_update", slow_update)
        text = await call_error(client, "update_memory", memory_id=added["memory_id"], memory="Ava likes coffee")
        assert "timeout" in text
        monkeypatch.undo()
        assert await snapshot(app) == before
        assert await app.store.integrity_check() == "ok"
        await call(client, "update_memory", memory_id=added["memory_id"], memory="Ava likes coffee")
        assert (await app.store.get("default", added["memory_id"])).memory == "Ava likes coffee"


async def test_an_add_waiting_for_another_process_times_out_and_changes_nothing(app: AppContext) -> None:
    """Another connection (as another process would) holds the database's write lock."""
    app.call_timeout = 0.3
    async with Client(build_server(app)) as client:
        await call(client, "add_memory", memory="Ava likes to ski")
        before = await snapshot(app)
        other = sqlite3.connect(app.store.path, isolation_level=None, check_same_thread=False)
        try:
            # In a thread: the server's own writes (embeddings saved in the background) need the
            # event loop to finish before this lock can be had.
            await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
            started = time.monotonic()
            text = await call_error(client, "add_memory", memory="Ava likes tea")
            assert time.monotonic() - started < 3  # the call's limit, not SQLite's 10 s busy timeout
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert "timeout" in text and "nothing was changed" in text
        assert await snapshot(app) == before
        # The wait was shortened for that call only: SQLite's usual busy timeout is back.
        assert (await app.store._writer.execute_fetchall("PRAGMA busy_timeout"))[0][0] == 10_000
        await call(client, "add_memory", memory="Ava likes tea")
        assert await app.store.count() == 2


async def test_the_deadline_never_splits_a_commit() -> None:
    # Reached before the deadline: the deadline is off from the commit on, the call finishes.
    async with bounded(0.05):
        await commit_point()
        await asyncio.sleep(0.1)
    # Passed before the commit point (the loop was blocked): the commit point stops the call.
    with pytest.raises(CallTimedOut):
        async with bounded(0.05):
            await asyncio.sleep(0)
            time.sleep(0.1)
            await commit_point()
            pytest.fail("must not get past the commit point")
    async with bounded(None):  # no limit
        await commit_point()
