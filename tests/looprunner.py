"""An event loop that outlives one call, so a sync (hypothesis) test can keep MCP clients open
across examples: each client is entered and exited in one task of its own (see conftest.held)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from tests.helpers import enter_in_own_task

T = TypeVar("T")


class LoopRunner:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._exits: list[Callable[[], Awaitable[None]]] = []

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def enter(self, manager: AbstractAsyncContextManager[T]) -> T:
        value, exit_ = self.run(enter_in_own_task(manager))
        self._exits.append(exit_)
        return value

    def close(self, then: Callable[[], Awaitable[object]] | None = None) -> None:
        """Exit the clients, run `then()` (e.g. closing the app), and close the loop.

        Whatever the app started on this loop (the vector index's embedding task) must end on it:
        closed from a fresh loop, the app waited forever for a task that died with this one.
        """

        async def stop() -> None:
            for exit_ in reversed(self._exits):
                try:
                    await asyncio.wait_for(exit_(), 10)
                except Exception:  # noqa: BLE001 - a client that failed already reported it
                    pass

        try:
            self.run(stop())
            if then is not None:
                self.run(then())
        finally:
            self.loop.close()
