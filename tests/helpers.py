"""Small assertions shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from mcp import Client

T = TypeVar("T")

# Every tool the server must offer.
TOOLS = {
    "add_memory",
    "update_memory",
    "delete_memory",
    "search_memories",
    "extract_memories",
    "list_memories",
    "clear_memories",
}


async def call(client: Client, tool: str, **arguments: object) -> dict:
    """Call a tool that must succeed; return its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: object) -> str:
    """Call a tool that must fail with a tool error; return the error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    text = result.content[0].text
    assert "Traceback" not in text
    return text


async def enter_in_own_task(manager: AbstractAsyncContextManager[T]) -> tuple[T, Callable[[], Awaitable[None]]]:
    """Enter `manager` in a task of its own; return its value and a coroutine function that exits it.

    anyio's cancel scopes (inside every MCP client) must be entered and exited in the same task,
    which pytest-asyncio fixtures (set up and torn down in different tasks) and a loop driven call
    by call from sync code (tests/looprunner.py) would not otherwise guarantee.
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
    value = await entered

    async def exit_() -> None:
        release.set()
        await task

    return value, exit_


def op(kind: str, memory: str | None = None, memory_id: str | None = None, reason: str = "said so") -> dict:
    """One operation as the model proposes it to extraction (for tests/fake_anthropic.py's tool_use)."""
    out: dict = {"op": kind, "topics": [], "reason": reason}
    if memory is not None:
        out["memory"] = memory
    if memory_id is not None:
        out["memory_id"] = memory_id
    return out
