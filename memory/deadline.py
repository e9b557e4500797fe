"""A time limit per call that never splits a write: it either commits or it does not.

`bounded(seconds)` runs a block under `asyncio.timeout`. The store calls `commit_point()` just
before it commits a transaction: if the deadline has already passed, the pending cancellation is
taken there, inside the transaction, which rolls back; otherwise the deadline is switched off,
so the commit and the rest of the call run to the end and the caller gets its result. A caller
is therefore told "timed out" only when nothing was written.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from .errors import CallTimedOut

_current: ContextVar[asyncio.Timeout | None] = ContextVar("memoir_call_deadline", default=None)


@asynccontextmanager
async def bounded(seconds: float | None) -> AsyncIterator[None]:
    """Run the block within `seconds` (None or <= 0: no limit); raises `CallTimedOut` past it."""
    if not seconds or seconds <= 0:
        yield
        return
    try:
        async with asyncio.timeout(seconds) as timeout:
            token = _current.set(timeout)
            try:
                yield
            finally:
                _current.reset(token)
    except TimeoutError:
        raise CallTimedOut(seconds) from None


async def commit_point() -> float | None:
    """Called by the store right before COMMIT, inside its transaction (or right before a write
    of one trip that begins and commits). Returns the seconds that were left (None: no limit),
    for a wait the store can still bound itself, such as SQLite's for another writer's lock."""
    timeout = _current.get()
    if timeout is None:
        return None
    if timeout.expired():
        # The cancellation is already on its way; take it here, where the transaction rolls back.
        await asyncio.sleep(0)
    when = timeout.when()
    left = None if when is None else when - asyncio.get_running_loop().time()
    if left is not None and left <= 0:
        raise TimeoutError  # due, though the loop has not fired it yet: stop here all the same
    timeout.reschedule(None)
    return left
