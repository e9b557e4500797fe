"""Building the process's services and the one MCP server object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer

import memoir
from memoir import tools
from memoir.memory.extraction import Extractor
from memoir.memory.judge import Judge
from memoir.memory.llm import AnthropicProvider
from memoir.memory.ratelimit import RateLimiter
from memoir.memory.embeddings import load_embedder
from memoir.memory.retrieval import Retriever
from memoir.memory.secrets import SecretsPolicy
from memoir.memory.vectors import VectorIndex
from memoir.memory.store import Store
from memoir.tools.context import AppContext, Caller
from memoir.tools.guidance import instructions
from memoir.tools.resources import own_memories

from .settings import Settings


async def open_app(settings: Settings, caller: Callable[[], Caller] = Caller) -> AppContext:
    """Open the store and everything built on it; once per process, shared by every connection."""
    settings.check()
    store = await Store.open(
        settings.db_path, limits=settings.limits, synchronous=settings.synchronous,
        secrets=SecretsPolicy(settings.secrets),
    )
    llm = None
    if settings.anthropic_api_key:
        llm = AnthropicProvider(
            settings.anthropic_api_key,
            model=settings.model,
            base_url=settings.anthropic_base_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
        )
    vectors = None
    if settings.embeddings != "off":
        kind = "hashing" if settings.embeddings == "hashing" else "default"
        vectors = VectorIndex(store, lambda: load_embedder(kind))
    retriever = Retriever(store, vectors)
    return AppContext(
        store=store,
        retriever=retriever,
        extractor=Extractor(retriever, settings.extraction),
        judge=Judge(retriever),
        default_user_id=settings.user_id,
        caller=caller,
        llm=llm,
        rate_limiter=RateLimiter(settings.access.rate_per_minute, settings.access.rate_burst),
        call_timeout=settings.access.call_timeout or None,
        tools=settings.tools,
    )


@asynccontextmanager
async def running_app(settings: Settings, caller: Callable[[], Caller] = Caller) -> AsyncIterator[AppContext]:
    """`open_app`, then `close_app` however the block ends."""
    app = await open_app(settings, caller)
    try:
        yield app
    finally:
        await close_app(app)


async def close_app(app: AppContext) -> None:
    if app.retriever.vectors is not None:
        await app.retriever.vectors.close()
    if isinstance(app.llm, AnthropicProvider):
        await app.llm.aclose()
    await app.store.close()


def build_server(
    app: AppContext, offered: tuple[str, ...] | None = None, **options: Any
) -> MCPServer[AppContext]:
    """The MCP server: the `offered` tools (default: the operator's choice, `app.tools`, else all), resources and
    prompt over `app`.

    `options` go to `MCPServer` as they are (server/access.py passes the token verifier and auth).

    The lifespan only hands out the already-open app: SSE runs it once per connection, and
    the store must outlive connections.
    """

    offered = offered if offered is not None else app.tools

    @asynccontextmanager
    async def lifespan(_: MCPServer[AppContext]) -> AsyncIterator[AppContext]:
        yield app

    server: MCPServer[AppContext] = MCPServer(
        "memoir",
        title="memoir - long-term memory about the user",
        version=memoir.__version__,
        instructions=instructions(offered),
        website_url="https://pypi.org/project/memoir-mcp/",
        lifespan=lifespan,
        **options,
    )
    tools.register(server, offered or tools.TOOL_NAMES)
    listed = server.list_resources

    async def list_resources() -> list:  # the SDK's resources/list handler calls this attribute
        return [*await listed(), *own_memories(app)]

    server.list_resources = list_resources  # type: ignore[method-assign]
    return server
