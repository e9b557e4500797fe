"""MCP clients for a running `memoir serve` (tests/servers.py), with or without a bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
