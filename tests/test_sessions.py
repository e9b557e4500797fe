"""Sessions and SSE streams per token and per address, idle expiry, quick shutdown (issue 10, defect 5).

One token opened 10,000 stateful HTTP sessions (the 2025-11-25 handshake) in 28 s, until every
other user's handshake-era client got 503; SIGTERM then took 13 s. Real `memoir serve` processes
on 127.0.0.1, real concurrent clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.netclients import bearer, make_token
from tests.servers import serve  # noqa: F401  (serve: fixture)

CAP = 32  # the documented default of MEMOIR_MAX_SESSIONS_PER_TOKEN and _PER_ADDRESS
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def raw_http(token: str | None = None, local_address: str | None = None, connections: int = 200) -> httpx2.AsyncClient:
    transport = httpx2.AsyncHTTPTransport(local_address=local_address, limits=httpx2.Limits(max_connections=connections))
    return httpx2.AsyncClient(headers={**MCP_HEADERS, **bearer(token)}, timeout=20, transport=transport)


async def open_sessions(http: httpx2.AsyncClient, url: str, n: int) -> list[httpx2.Response]:
    """`n` concurrent handshake-era initialize POSTs (what the attack sent), each opening a session."""
    return await asyncio.gather(*(http.post(url, json=INITIALIZE) for _ in range(n)))


def session_ids(responses: list[httpx2.Response]) -> list[str]:
    return [r.headers["mcp-session-id"] for r in responses if r.status_code == 200]


async def delete(http: httpx2.AsyncClient, url: str, session_id: str) -> int:
    return (await http.delete(url, headers={"mcp-session-id": session_id})).status_code


def assert_refusal(response: httpx2.Response, variable: str) -> None:
    assert response.status_code == 429, (response.status_code, response.text)
    message = json.loads(response.text)["error"]["message"] if response.text.startswith("{") else response.text
    assert "\n" not in message and variable in message and str(CAP) in message and "close" in message, message


async def add(client, user: str, text: str) -> None:
    result = await client.call_tool("add_memory", {"memory": text, "user_id": user})
    assert not result.is_error, result.content[0].text


async def test_one_token_cannot_take_every_session(serve, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    server = serve("http", db)
    url = server.url
    _, greedy = await make_token(db, "greedy")
    _, other = await make_token(db, "other")
    _, burst = await make_token(db, "burst")

    async with raw_http(greedy) as http:
        opened = session_ids(await open_sessions(http, url, CAP))
        assert len(opened) == CAP
        assert_refusal(await http.post(url, json=INITIALIZE), "MEMOIR_MAX_SESSIONS_PER_TOKEN")

        # Other tokens are unaffected, in both eras; so is the greedy token's 2026-07-28 client,
        # whose requests hold no session.
        for mode in ("legacy", "auto"):
            async with httpx2.AsyncClient(headers=bearer(other), timeout=20) as h:
                async with Client(streamable_http_client(url, http_client=h), mode=mode) as client:
                    await add(client, "other", f"other's memory ({mode})")
        async with httpx2.AsyncClient(headers=bearer(greedy), timeout=20) as h:
            async with Client(streamable_http_client(url, http_client=h), mode="auto") as client:
                await add(client, "greedy", "a 2026-07-28 call needs no session")

        # Closing a session frees its slot, once: a second DELETE of it frees nothing.
        assert await delete(http, url, opened[0]) == 200
        assert await delete(http, url, opened[0]) == 404
        assert (await http.post(url, json=INITIALIZE)).status_code == 200
        assert_refusal(await http.post(url, json=INITIALIZE), "MEMOIR_MAX_SESSIONS_PER_TOKEN")
        # Requests that open nothing (refused, or not an initialize) never hold a slot.
        for _ in range(5):
            assert_refusal(await http.post(url, json=INITIALIZE), "MEMOIR_MAX_SESSIONS_PER_TOKEN")
        for session_id in opened[1:]:
            assert await delete(http, url, session_id) == 200
        not_initialize = await asyncio.gather(
            *(http.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}) for _ in range(CAP + 5))
        )
        assert all(r.status_code >= 400 for r in not_initialize)
        assert len(session_ids(await open_sessions(http, url, CAP - 1))) == CAP - 1

    # Concurrent openings cannot overshoot: of CAP + 8 at once, exactly CAP get a session.
    async with raw_http(burst) as http:
        responses = await open_sessions(http, url, CAP + 8)
        assert sorted(r.status_code for r in responses) == [200] * CAP + [429] * 8

    # A well-behaved handshake-era client that opens and closes sessions in a loop is never locked out.
    for i in range(CAP + 8):
        async with httpx2.AsyncClient(headers=bearer(other), timeout=20) as h:
            async with Client(streamable_http_client(url, http_client=h), mode="legacy") as client:
                if i % 10 == 0:
                    await add(client, "other", f"loop {i}")


async def test_open_server_counts_per_address(serve, tmp_path: Path) -> None:  # noqa: F811
    """No token: the per-address limit applies; another address (127.0.0.2 -> 127.0.0.1) still connects."""
    server = serve("http", tmp_path / "m.db")
    async with raw_http() as http:
        assert len(session_ids(await open_sessions(http, server.url, CAP))) == CAP
        assert_refusal(await http.post(server.url, json=INITIALIZE), "MEMOIR_MAX_SESSIONS_PER_ADDRESS")
    elsewhere = httpx2.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx2.AsyncClient(transport=elsewhere, timeout=20) as h:
        async with Client(streamable_http_client(server.url, http_client=h), mode="legacy") as client:
            await add(client, f"u-{uuid.uuid4().hex[:8]}", "from another address")


async def test_idle_sessions_expire_and_give_their_slots_back(serve, tmp_path: Path) -> None:  # noqa: F811
    server = serve(
        "http", tmp_path / "m.db", env={"MEMOIR_SESSION_IDLE_TIMEOUT": "1", "MEMOIR_MAX_SESSIONS_PER_ADDRESS": "2"}
    )
    async with raw_http() as http:
        idle = session_ids(await open_sessions(http, server.url, 2))
        assert len(idle) == 2
        refused = await http.post(server.url, json=INITIALIZE)
        assert refused.status_code == 429 and "idle ones close after 1 s" in refused.text
        started = time.monotonic()
        while (await http.post(server.url, json=INITIALIZE)).status_code != 200:
            assert time.monotonic() - started < 10, "idle sessions never gave their slots back"
            await asyncio.sleep(0.1)
        for session_id in idle:  # expired: their ids are unknown now
            ping = await http.post(server.url, json={"jsonrpc": "2.0", "id": 3, "method": "ping"},
                                   headers={"mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"})
            assert ping.status_code == 404


async def test_sse_streams_per_token(serve, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    server = serve("sse", db)
    _, greedy = await make_token(db, "greedy")
    _, other = await make_token(db, "other")
    async with contextlib.AsyncExitStack() as streams, raw_http(greedy) as http:
        async def hold() -> httpx2.Response:
            return await streams.enter_async_context(http.stream("GET", server.url, headers={"Accept": "text/event-stream"}))

        held = await asyncio.gather(*(hold() for _ in range(CAP)))
        assert all(r.status_code == 200 for r in held)
        async with asyncio.timeout(10), http.stream("GET", server.url) as refused:
            assert refused.status_code == 429, "one stream too many was opened"
            await refused.aread()
            assert_refusal(refused, "MEMOIR_MAX_SESSIONS_PER_TOKEN")
        for mode in ("legacy", "auto"):
            async with Client(sse_client(server.url, headers=bearer(other)), mode=mode) as client:
                await add(client, "other", f"over SSE ({mode})")
        # The greedy client goes away: its slots come back as the server notices.
        await streams.aclose()
        started = time.monotonic()
        while True:
            async with http.stream("GET", server.url) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() - started < 10, "closed SSE streams never gave their slots back"
            await asyncio.sleep(0.1)
    # Opening and closing SSE connections in a loop never locks a client out.
    for _ in range(CAP + 8):
        async with sse_client(server.url, headers=bearer(other)):
            pass


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_sigterm_with_many_sessions_exits_quickly(serve, tmp_path: Path, transport: str) -> None:  # noqa: F811
    """SIGTERM -> exit under 2 s with 600 open HTTP sessions or 400 SSE streams, and the store closed.

    Shutdown no longer grows with them (0.2 s for 3,000 sessions or 1,500 streams, against 2.5 s and
    2.8 s before; 13 s for 10,000 sessions); these numbers keep the test to a few seconds."""
    db = tmp_path / "m.db"
    n = 600 if transport == "http" else 400
    server = serve(transport, db, env={"MEMOIR_MAX_SESSIONS_PER_ADDRESS": "0"})
    async with contextlib.AsyncExitStack() as held, raw_http(connections=n + 50) as http:
        # A live client of each era, with a write, as well as the idle sessions / streams.
        legacy = await held.enter_async_context(Client(server.url if transport == "http" else sse_client(server.url), mode="legacy"))
        await add(legacy, "ava", "written before the stop")
        limit = asyncio.Semaphore(64)

        async def one() -> int:
            async with limit:
                if transport == "http":
                    return (await http.post(server.url, json=INITIALIZE)).status_code
                response = await held.enter_async_context(http.stream("GET", server.url))
                return response.status_code

        assert set(await asyncio.gather(*(one() for _ in range(n)))) == {200}
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 30)
        elapsed = time.monotonic() - started
    assert code == 0, server.stderr
    assert elapsed < 2.0, f"SIGTERM with {n} open took {elapsed:.2f} s"
    assert "Traceback" not in server.stderr
    assert not Path(f"{db}-wal").exists()  # the store was closed (the last connection checkpoints)
