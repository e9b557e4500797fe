"""Shared fixtures: a fresh store per test, the MCP server over it, and clients in both protocol eras."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
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
from .pgcluster import Cluster, DatabasePool, pg_bin

# The Python Client defaults to the 2026-07-28 era; real hosts and the Inspector use the
# 2025-11-25 initialize handshake ("legacy"). Every tool test runs in both.
ERAS = ["auto", "legacy"]

T = TypeVar("T")


# The backends a test marked `both_backends` runs on (through the `db_path` fixture, or
# `new_database` for more than one database).
BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: run on SQLite and on PostgreSQL (db_path, new_database)")
    config.addinivalue_line("markers", "sqlite_only: in a both_backends module, a test that does not reach the store")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (
        definition.get_closest_marker("both_backends") and not definition.get_closest_marker("sqlite_only")
        and "backend" in metafunc.fixturenames
    ):
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture
def backend() -> str:
    """The backend of a test not marked `both_backends`."""
    return "sqlite"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole session (tests/pgcluster.py)."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql")
    cluster = Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_pool(pg_cluster: Cluster) -> DatabasePool:
    """Databases with memoir's schema, each emptied before a test takes it again (tests/pgcluster.py)."""
    return DatabasePool(pg_cluster)


@pytest.fixture
def new_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], Path | str]]:
    """Makes a new, empty database of the test's backend: an SQLite path, or a PostgreSQL URL."""
    names = iter(range(1, 1_000))
    taken: list[str] = []

    def new() -> Path | str:
        if backend == "postgresql":
            pool: DatabasePool = request.getfixturevalue("pg_pool")
            taken.append(pool.take())
            return taken[-1]
        return tmp_path / f"memoir-{next(names)}.db"

    yield new
    if taken:
        request.getfixturevalue("pg_pool").give_back(taken)


@pytest.fixture
def db_path(new_database: Callable[[], Path | str]) -> Path | str:
    """The test's database: a path in tmp_path, or (`both_backends`, postgresql) a fresh PostgreSQL database's URL."""
    return new_database()


@pytest.fixture
async def app(db_path: Path | str) -> AsyncIterator[AppContext]:
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
def llm_settings(db_path: Path | str, fake_anthropic: FakeAnthropic) -> Settings:
    """Settings whose model is the local fake Messages API (tests/fake_anthropic.py)."""
    return Settings(
        db_path=db_path, anthropic_api_key="sk-test", anthropic_base_url=fake_anthropic.url,
        # A generous timeout: these tests are not about timeouts, and on a loaded machine a 0.5 s one
        # timed out, retried, and left the abandoned connection's socket to the garbage collector.
        model="claude-test-small", llm_timeout=10, llm_max_retries=1,
    )
