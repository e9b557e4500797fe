"""Limits every tool call and resource read obeys: the per-token request rate and the time limit.

The rate applies to calls made with a bearer token (SSE / streamable HTTP); stdio and an open
loopback server are a single trusted local user and are not rate-limited. The time limit
(`MEMOIR_CALL_TIMEOUT`) applies everywhere; memoir.memory.deadline makes sure a call that is
stopped changed nothing, and that a call whose write has committed is never reported as failed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

from memoir.memory.deadline import bounded
from memoir.memory.errors import CallTimedOut, RateLimited

from .context import AppContext, app_context

P = ParamSpec("P")
R = TypeVar("R")

# JSON-RPC "server error" range; resources cannot answer with a tool error.
RATE_LIMITED = -32029
TIMED_OUT = -32028


def admit(app: AppContext) -> None:
    """Spend one request of the caller's allowance, or raise `RateLimited`."""
    if app.rate_limiter is None:
        return
    caller = app.caller()
    if caller.token_id is not None:
        app.rate_limiter.take(caller.token_id)


def guarded(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A tool handler under the rate and time limits (raises memoir's typed errors)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        ctx = kwargs.get("ctx")
        if not isinstance(ctx, Context):
            return await fn(*args, **kwargs)
        app = app_context(ctx)
        admit(app)
        async with bounded(app.call_timeout):
            return await fn(*args, **kwargs)

    return wrapper


def guarded_resource(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A resource handler under the same limits; a refusal is a JSON-RPC error carrying the same text."""
    inner = guarded(fn)

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await inner(*args, **kwargs)
        except RateLimited as exc:
            raise MCPError(code=RATE_LIMITED, message=str(exc), data={"retry_after": exc.retry_after}) from None
        except CallTimedOut as exc:
            raise MCPError(code=TIMED_OUT, message=str(exc)) from None

    return wrapper
