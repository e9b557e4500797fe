"""Shared fixtures: a fresh store per test, the MCP server over it, and clients in both protocol eras."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

import pytest
from mcp import Client

from memoir.server.app import build_server, close_app, open_app
from memoir.server.settings import Settings
from memoir.tools.context import AppContext

# The Python Client defaults to the 2026-07-28 era; real hosts and the Inspector use the
# 2025-11-25 initialize handshake ("legacy"). Every tool test runs in both.
ERAS = ["auto", "legacy"]

T = TypeVar("T")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memoir.db"


@pytest.fixture
async def app(db_path: Path) -> AsyncIterator[AppContext]:
    app = await open_app(Settings(db_path=db_path))
    try:
        yield app
    finally:
        await close_app(app)


@pytest.fixture(params=ERAS)
async def client(request: pytest.FixtureRequest, app: AppContext) -> AsyncIterator[Client]:
    async for c in held(Client(build_server(app), mode=request.param)):
        yield c


async def held(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit `manager` in one task of its own.

    pytest-asyncio sets a fixture up and tears it down in different tasks, which anyio's
    cancel scopes (inside every MCP client) refuse; a dedicated task keeps them together.
    """
    entered: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def hold() -> None:
        try:
            async with manager as value:
                entered.set_result(value)
                await release.wait()
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc)
            raise

    task = asyncio.create_task(hold())
    try:
        yield await entered
    finally:
        release.set()
        await task
