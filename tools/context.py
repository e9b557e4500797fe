"""What every tool handler reaches for: the process's services and the caller's identity.

The server builds one `AppContext` per process and hands it to the MCP lifespan; a handler
gets it with `app_context(ctx)`. Identity rules live here so every tool and resource applies
the same ones.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from memoir.memory.backends import is_postgres, redacted
from memoir.memory.errors import AccessDenied, MemoirError
from memoir.memory.extraction import Extractor
from memoir.memory.judge import Judge
from memoir.memory.limits import Limits
from memoir.memory.ratelimit import RateLimiter
from memoir.memory.llm import LLMProvider
from memoir.memory.retrieval import Retriever
from memoir.memory.store import Store


@dataclass(frozen=True)
class Caller:
    """Who is on the other end. `user_id` None means a trusted local connection (stdio, open loopback)."""

    user_id: str | None = None
    admin: bool = False
    token_id: str | None = None  # the bearer token's public id, on an authenticated connection

    @property
    def trusted(self) -> bool:
        return self.user_id is None or self.admin


@dataclass
class AppContext:
    store: Store
    retriever: Retriever
    default_user_id: str
    extractor: Extractor
    judge: Judge
    caller: Callable[[], Caller] = field(default=Caller)
    # The configured LLM (Anthropic API); None means: use the client's model through sampling.
    llm: LLMProvider | None = None
    # Per-token request rate and per-call time limit (tools/guard.py); None: unlimited.
    rate_limiter: RateLimiter | None = None
    call_timeout: float | None = None
    # The tools the operator offers (MEMOIR_TOOLS / --tools); None: all of them.
    tools: tuple[str, ...] | None = None

    @property
    def limits(self) -> Limits:
        return self.store.limits

    def user(self, requested: str | None) -> str:
        """The user a call acts for: the one named, the token's, or the configured default."""
        caller = self.caller()
        if requested is not None:
            requested = self.limits.user_id(requested)
        if caller.trusted:
            return requested or caller.user_id or self.default_user_id
        if requested is not None and requested != caller.user_id:
            raise AccessDenied(
                f"user_id: this connection's token belongs to user '{caller.user_id}' and cannot act for "
                f"'{requested}'; omit user_id, or use that user's token"
            )
        return caller.user_id  # type: ignore[return-value]

    def may_read(self, user_id: str) -> bool:
        caller = self.caller()
        return caller.trusted or caller.user_id == user_id


def app_context(ctx: Context) -> AppContext:
    return ctx.request_context.lifespan_context


P = ParamSpec("P")
R = TypeVar("R")


def tool_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Report the domain's typed errors to the model as tool errors, with their own text."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except MemoirError as exc:
            raise ToolError(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            # Otherwise the host shows only "Error executing tool ...": name the file and the fix.
            ctx = kwargs.get("ctx")
            path = getattr(getattr(getattr(getattr(ctx, "request_context", None), "lifespan_context", None), "store", None), "path", None)
            raise ToolError(damaged_database(path, exc)) from exc

    return wrapper


def damaged_database(path: str | None, exc: BaseException) -> str:
    if path and is_postgres(path):
        return (
            f"memoir's PostgreSQL database {redacted(path)} failed ({' '.join(str(exc).split())}): the user should "
            "check that the server is up and run `memoir doctor`"
        )
    where = f"memoir's database {path}" if path else "memoir's database"
    return (
        f"{where} cannot be read ({' '.join(str(exc).split())}): the user should stop memoir, run `memoir doctor`, "
        "and restore a backup made by `memoir backup` (or save what is readable with `memoir export`)"
    )
