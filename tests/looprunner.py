"""An event loop that outlives one call, so a sync (hypothesis) test can keep MCP clients open
across examples: each client is entered and exited in one task of its own (see conftest.held)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

T = TypeVar("T")


class LoopRunner:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._held: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def enter(self, manager: AbstractAsyncContextManager[T]) -> T:
        async def start() -> T:
            entered: asyncio.Future[T] = self.loop.create_future()
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

            task = self.loop.create_task(hold())
            self._held.append((release, task))
            return await entered

        return self.run(start())

    def close(self) -> None:
        async def stop() -> None:
            for release, task in reversed(self._held):
                release.set()
                try:
                    await asyncio.wait_for(task, 10)
                except Exception:  # noqa: BLE001 - a client that failed already reported it
                    pass

        try:
            self.run(stop())
        finally:
            self.loop.close()
