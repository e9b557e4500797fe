"""MCP clients for a running `memoir serve` (tests/servers.py), with or without a bearer token."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from memoir.memory.store import Store
from memoir.memory.tokens import Tokens


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@asynccontextmanager
async def connect(url: str, token: str | None = None, *, mode: str = "auto") -> AsyncIterator[Client | ClientSession]:
    """A session with the server at `url` (`.../mcp`: streamable HTTP, `.../sse`: SSE)."""
    if url.endswith("/sse"):
        async with sse_client(url, headers=bearer(token), timeout=10) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
        return
    async with httpx2.AsyncClient(headers=bearer(token), timeout=httpx2.Timeout(30.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def make_token(db_path: Path | str, user: str | None, *, admin: bool = False) -> tuple[str, str]:
    """(token_id, token), made in this process while the server runs in another one."""
    store = await Store.open(db_path)
    try:
        info, token = await Tokens(store).create(user, admin=admin)
    finally:
        await store.close()
    return info.token_id, token


async def revoke_token(db_path: Path | str, key: str) -> None:
    store = await Store.open(db_path)
    try:
        await Tokens(store).revoke(key)
    finally:
        await store.close()


async def post_initialize(url: str, token: str | None = None, **headers: str) -> httpx2.Response:
    """A bare `initialize` POST (or, for SSE, a GET of the stream's first bytes) to see the HTTP status."""
    async with httpx2.AsyncClient(timeout=10) as http:
        if url.endswith("/sse"):
            async with http.stream("GET", url, headers={**bearer(token), **headers}) as response:
                if response.status_code != 200:
                    await response.aread()  # a refusal's text; a stream's is endless
                return response
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }
        return await http.post(
            url,
            json=body,
            headers={"Accept": "application/json, text/event-stream", **bearer(token), **headers},
        )


# -- writing while a server is killed (tests/test_durability.py, tests/test_postgres.py) ------


@dataclass
class Ledger:
    """What the clients were told: acknowledged adds (id -> text), acknowledged deletes."""

    added: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    in_flight_deletes: set[str] = field(default_factory=set)
    acknowledged: int = 0


async def writer(
    url: str, user: str, tag: str, ledger: Ledger, stop: asyncio.Event, *, timeout: float, delete_share: float = 0.33
) -> None:
    """Add memories ("<user> <tag> fact <n>"), deleting about `delete_share` of them, until the
    server dies or `stop` is set; what was acknowledged goes in `ledger`."""
    rng = random.Random(f"{user}-{tag}")
    try:
        async with connect(url, mode="legacy") as client:
            n = 0
            while not stop.is_set():
                n += 1
                text = f"{user} {tag} fact {n}"
                async with asyncio.timeout(timeout):
                    result = await client.call_tool("add_memory", {"memory": text, "user_id": user})
                if result.is_error:
                    raise AssertionError(result.content[0].text)
                memory_id = result.structured_content["memory_id"]
                ledger.added[memory_id] = text
                ledger.acknowledged += 1
                if rng.random() < delete_share:
                    ledger.in_flight_deletes.add(memory_id)
                    async with asyncio.timeout(timeout):
                        result = await client.call_tool("delete_memory", {"memory_id": memory_id, "user_id": user})
                    if result.is_error:
                        raise AssertionError(result.content[0].text)
                    ledger.deleted.add(memory_id)
                    ledger.acknowledged += 1
    except AssertionError:
        raise
    except BaseException:  # noqa: BLE001 - the server was killed under us: whatever was in flight is unacknowledged
        return
