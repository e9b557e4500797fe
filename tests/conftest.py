"""Shared fixtures: a fresh store per test, the MCP server over it, and clients in both protocol eras."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TypeVar

import pytest
from mcp import Client

from memoir.server.app import build_server, running_app
from memoir.server.settings import Settings
from memoir.tools.context import AppContext

from .fake_anthropic import FakeAnthropic, fake_anthropic  # noqa: F401  (fixture, for llm_settings)
from .helpers import enter_in_own_task

# The Python Client defaults to the 2026-07-28 era; real hosts and the Inspector use the
# 2025-11-25 initialize handshake ("legacy"). Every tool test runs in both.
ERAS = ["auto", "legacy"]

T = TypeVar("T")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memoir.db"


@pytest.fixture
async def app(db_path: Path) -> AsyncIterator[AppContext]:
    async with running_app(Settings(db_path=db_path)) as app:
        yield app


@pytest.fixture(params=ERAS)
async def client(request: pytest.FixtureRequest, app: AppContext) -> AsyncIterator[Client]:
    async for c in held(Client(build_server(app), mode=request.param)):
        yield c


async def held(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Yield what `manager` enters, entering and exiting it in one task of its own."""
    value, exit_ = await enter_in_own_task(manager)
    try:
        yield value
    finally:
        await exit_()


@pytest.fixture
def llm_settings(db_path: Path, fake_anthropic: FakeAnthropic) -> Settings:
    """Settings whose model is the local fake Messages API (tests/fake_anthropic.py)."""
    return Settings(
        db_path=db_path, anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url,
        # A generous timeout: these tests are not about timeouts, and on a loaded machine a 0.5 s one
        # timed out, retried, and left the abandoned connection's socket to the garbage collector.
        model="claude-test-small", llm_timeout=10, llm_max_retries=1,
    )
