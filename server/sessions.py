"""How many MCP sessions and SSE streams one token, or one client address, may hold open.

A stateful streamable HTTP session (the initialize handshake, protocol 2025-11-25 and earlier)
and an SSE stream each keep a server task and its memory alive. Uncounted, one token opened
10,000 sessions in 28 s (RSS 84 -> 480 MB) until the SDK's process-wide limit answered 503 to
everybody. memoir counts them per holder and refuses only that holder:

- the holder is the token (its id) when the request carries one, else the client's address (an
  open loopback server, or `--allow-unauthenticated`);
- a holder at its limit (MEMOIR_MAX_SESSIONS_PER_TOKEN / MEMOIR_MAX_SESSIONS_PER_ADDRESS, 32 by
  default) gets 429 with a message naming the limit and the fix; other holders are unaffected;
- the slot is taken before the session exists, so concurrent openings cannot overshoot, and it
  is given back however the session ends: DELETE, idle expiry (MEMOIR_SESSION_IDLE_TIMEOUT), an
  opening request that failed, shutdown. An SSE stream's slot is given back when its request
  ends (the client went away).

Requests of the 2026-07-28 protocol hold no session (each stands alone) and are not counted.

Where a session ends is known only to the SDK's session manager: memoir wraps its two
bookkeeping methods, `_admit_session` (a session is registered, under its lock) and
`_discard_session` (called on every way a session ends, possibly twice). `install` refuses to
start if an SDK version lacks them, rather than count wrong.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import INVALID_REQUEST, ErrorData, JSONRPCError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .access import OPEN_CLIENT_ID, token_id

Holder = tuple[str, str]  # ("token", token id) or ("address", client IP)


@dataclass
class _Opening:
    """A slot taken for a session that does not exist yet; `holder` is cleared once a session owns it."""

    holder: Holder | None


_opening: contextvars.ContextVar[_Opening | None] = contextvars.ContextVar("memoir_opening", default=None)


@dataclass
class SessionLimits:
    per_token: int  # 0: no limit
    per_address: int
    idle_timeout: float | None = None  # only for the message
    _held: dict[Holder, int] = field(default_factory=dict)
    _sessions: dict[str, Holder] = field(default_factory=dict)  # streamable HTTP session id -> holder

    def holder(self, scope: Scope) -> Holder | None:
        """Who the request counts against; None for an unauthenticated one (the SDK answers it 401)."""
        user = scope.get("user")
        if not isinstance(user, AuthenticatedUser):
            return None
        if user.access_token.client_id == OPEN_CLIENT_ID:
            client = scope.get("client")
            return ("address", client[0] if client else "unknown")
        return ("token", token_id(user.access_token))

    def limit(self, holder: Holder) -> int:
        return self.per_token if holder[0] == "token" else self.per_address

    def held(self, holder: Holder) -> int:
        return self._held.get(holder, 0)

    def take(self, holder: Holder) -> bool:
        """One more slot for `holder`, or False at its limit. Synchronous: no await between check and count."""
        limit, held = self.limit(holder), self.held(holder)
        if limit and held >= limit:
            return False
        self._held[holder] = held + 1
        return True

    def give_back(self, holder: Holder) -> None:
        held = self.held(holder) - 1
        if held > 0:
            self._held[holder] = held
        else:
            self._held.pop(holder, None)

    def message(self, holder: Holder) -> str:
        kind, name = holder
        variable = "MEMOIR_MAX_SESSIONS_PER_TOKEN" if kind == "token" else "MEMOIR_MAX_SESSIONS_PER_ADDRESS"
        who = f"token {name}" if kind == "token" else f"address {name} (no token)"
        idle = f"; idle ones close after {self.idle_timeout:g} s" if self.idle_timeout else ""
        return (
            f"memoir: {who} already holds {self.limit(holder)} open sessions/streams, the limit ({variable}); "
            f"close unused ones (end the client, or DELETE the session) or raise {variable}{idle}"
        )

    # -- streamable HTTP ------------------------------------------------------------------------

    def install(self, manager: StreamableHTTPSessionManager) -> None:
        """Hook the session manager's registration and discarding of sessions (see the module docstring)."""
        admit = getattr(manager, "_admit_session", None)
        discard = getattr(manager, "_discard_session", None)
        if not callable(admit) or not callable(discard):
            raise RuntimeError(
                "this version of the mcp SDK has no StreamableHTTPSessionManager._admit_session/_discard_session, "
                "which memoir needs to count sessions per token; install mcp 2.3"
            )

        def admit_counted(requestor: Any) -> Any:
            transport = admit(requestor)
            opening = _opening.get()
            if transport is not None and opening is not None and opening.holder is not None:
                self._sessions[transport.mcp_session_id] = opening.holder  # the session now owns the slot
                opening.holder = None
            return transport

        async def discard_counted(session_id: str, transport: Any) -> None:
            holder = self._sessions.pop(session_id, None)  # a second call finds nothing
            if holder is not None:
                self.give_back(holder)
            await discard(session_id, transport)

        manager._admit_session = admit_counted  # type: ignore[method-assign]
        manager._discard_session = discard_counted  # type: ignore[method-assign]

    def http_gate(self, app: ASGIApp) -> ASGIApp:
        return _HttpSessionGate(app, self)

    def sse_gate(self, app: ASGIApp) -> ASGIApp:
        return _SseStreamGate(app, self)


def _header(scope: Scope, name: str) -> str | None:
    key = name.lower().encode("latin-1")
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == key), None)


def _opens_session(scope: Scope) -> bool:
    """A request the session manager would open a stateful session for: a POST of the handshake era without one."""
    if scope["type"] != "http" or scope["method"] != "POST" or _header(scope, MCP_SESSION_ID_HEADER) is not None:
        return False
    version = _header(scope, MCP_PROTOCOL_VERSION_HEADER)
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


def _json_refusal(message: str) -> Response:
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=INVALID_REQUEST, message=message))
    return Response(body.model_dump_json(by_alias=True, exclude_unset=True), status_code=429, media_type="application/json")


class _HttpSessionGate:
    """Around the /mcp endpoint, inside authentication: a slot for each request that may open a session."""

    def __init__(self, app: ASGIApp, limits: SessionLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        holder = self.limits.holder(scope) if _opens_session(scope) else None
        if holder is None:
            return await self.app(scope, receive, send)
        if not self.limits.take(holder):
            return await _json_refusal(self.limits.message(holder))(scope, receive, send)
        opening = _Opening(holder)
        reset = _opening.set(opening)
        try:
            await self.app(scope, receive, send)
        finally:
            _opening.reset(reset)
            if opening.holder is not None:  # no session was registered: the slot goes back
                self.limits.give_back(holder)


class _SseStreamGate:
    """Around the SSE endpoint (GET /sse), inside authentication: a slot for as long as the stream is open."""

    def __init__(self, app: ASGIApp, limits: SessionLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        holder = self.limits.holder(scope) if scope["type"] == "http" else None
        if holder is None:
            return await self.app(scope, receive, send)
        if not self.limits.take(holder):
            return await PlainTextResponse(self.limits.message(holder), status_code=429)(scope, receive, send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.limits.give_back(holder)


def gate_route(app: Starlette, path: str, wrap: Any) -> None:
    """Wrap the endpoint of `app`'s route at `path` (inside the app's authentication middleware)."""
    for route in app.routes:
        if isinstance(route, Route) and route.path == path:
            route.app = wrap(route.app)
            return
    raise RuntimeError(f"the MCP app has no route {path}")
