"""Running the MCP server on SSE or streamable HTTP (stdio: server/stdio.py)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from memoir.memory.tokens import Tokens
from memoir.tools.context import AppContext

from .access import HttpAccess, http_caller
from .app import build_server
from .sessions import SessionLimits, gate_route
from .ui import Dashboard
from .settings import Settings

log = logging.getLogger("memoir")

def http_app(server: MCPServer, settings: Settings, access: HttpAccess) -> Starlette:
    """The Starlette app for SSE (`/sse` + `/messages/`) or streamable HTTP (`/mcp`).

    memoir checks Host and Origin itself, for every bind (`access.wrap`, server/access.py); the
    SDK is told not to, or it would add its own check, which knows only the names 127.0.0.1,
    localhost and ::1. The sessions and SSE streams each token or address holds are counted
    (server/sessions.py), and idle HTTP sessions close after MEMOIR_SESSION_IDLE_TIMEOUT.
    """
    policy = access.settings
    limits = SessionLimits(
        policy.sessions_per_token, policy.sessions_per_address, policy.session_idle_timeout or None
    )
    options: dict[str, Any] = {
        "max_request_body_size": access.max_body_bytes,
        "transport_security": TransportSecuritySettings(enable_dns_rebinding_protection=False),
    }
    if settings.transport == "sse":
        app = server.sse_app(**options)
        gate_route(app, "/sse", limits.sse_gate)
        return app
    app = server.streamable_http_app(session_idle_timeout=policy.session_idle_timeout or None, **options)
    limits.install(server.session_manager)
    gate_route(app, "/mcp", limits.http_gate)
    return app


def bind(settings: Settings) -> socket.socket:
    """The listening socket (port 0: any free port), bound before serving so its real address is known."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                f"port {settings.port} on {settings.host} is in use (another `memoir serve`?): stop that, or choose "
                "another port with --port or MEMOIR_PORT (0 = any free port)"
            ) from None
        raise OSError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def endpoint(settings: Settings, sock: socket.socket) -> tuple[str, str]:
    """(`http://host:port`, path) of a bound socket."""
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if sock.family == socket.AF_INET6 else settings.host
    return f"http://{host}:{port}", "/sse" if settings.transport == "sse" else "/mcp"


async def run_http(
    server: MCPServer, settings: Settings, sock: socket.socket, access: HttpAccess, dashboard: Dashboard | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, then return once the requests in flight are answered (see `_Server`).

    `dashboard`: served at `/ui` beside the MCP endpoint (server/ui.py), behind the same Host/Origin check.
    """
    starlette = http_app(server, settings, access)
    if dashboard is not None:
        starlette.router.routes[0:0] = dashboard.routes()
    in_flight = InFlight(access.wrap(starlette, settings.host, sock.getsockname()[0]))
    base, path = endpoint(settings, sock)
    print(f"memoir: serving {settings.transport} on {base}{path}", file=sys.stderr, flush=True)
    config = uvicorn.Config(in_flight, log_level=settings.log_level.lower(), lifespan="on", access_log=False)
    grace = settings.access.call_timeout or DEFAULT_GRACE
    await _Server(config, in_flight, grace).serve(sockets=[sock])


DEFAULT_GRACE = 180.0  # seconds a stopping server waits for answers in flight when calls have no timeout


class InFlight:
    """ASGI wrapper: knows when no request is being answered, GET streams aside.

    A POST (a tool call on streamable HTTP, a message on SSE) or DELETE is answered and done; a
    GET is a stream (`/sse`, the `/mcp` notification stream) that lasts as long as its client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        self.count += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight (True), or `timeout` seconds (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class _Server(uvicorn.Server):
    """uvicorn's server with memoir's way of stopping.

    On SIGTERM/SIGINT it stops accepting connections, waits for the requests in flight to be
    answered (a tool call that started finishes and answers; at most `grace` seconds, the call
    timeout), and returns - leaving open sessions and streams as they are: the caller closes the
    store and ends the process (`exit_now`). uvicorn's own shutdown would wait for every SSE
    stream to be cancelled and then for the SDK to wind every HTTP session down (the lifespan
    shutdown), one by one, then Python would collect what they left: 13 s for 10,000 sessions,
    2.8 s for 1,500 SSE streams. They live in memory only, and memoir's MCP lifespan holds
    nothing (the store belongs to the process: server/app.py), so nothing is lost by not waiting.

    uvicorn also re-raises the captured signal after shutting down: SIGTERM then killed the
    process before `memoir serve` closed the store, and SIGINT hung in the KeyboardInterrupt it
    raised. Returning normally lets the caller close the store and exit 0.
    """

    def __init__(self, config: uvicorn.Config, in_flight: InFlight, grace: float) -> None:
        super().__init__(config)
        self.in_flight = in_flight
        self.grace = grace
        logging.getLogger("uvicorn.error").addFilter(self._stream_dropped_on_purpose)

    def _stream_dropped_on_purpose(self, record: logging.LogRecord) -> bool:
        """Once stopping, open streams are dropped on purpose (see the class docstring), and
        sse-starlette ends its streams at the signal itself, before `shutdown` runs: uvicorn would
        log each as "ASGI callable returned without completing response", an error that is none."""
        return not (self.should_exit and record.getMessage().startswith("ASGI callable returned without completing"))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        if not await self.in_flight.drained(self.grace):
            log.warning("memoir: %d requests still unanswered after %g s; stopping anyway", self.in_flight.count, self.grace)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


async def serve_http(app: AppContext, settings: Settings) -> None:
    """SSE or streamable HTTP with memoir's access rules (server/access.py) over an open `app`.

    Returns after SIGTERM/SIGINT once the requests in flight are answered, leaving open MCP
    sessions and streams as they are: the caller closes the store, then ends the process (`exit_now`).
    """
    access = await HttpAccess.prepare(Tokens(app.store), settings)
    sock = bind(settings)
    try:
        base, path = endpoint(settings, sock)
        app.caller = http_caller
        server = build_server(app, **access.server_options(base, path))
        access.install(server)
        dashboard = Dashboard(
            app, access.tokens, open_allowed=access.open_secret is not None,
            secure_cookie=(settings.access.public_url or "").startswith("https:"),
        )
        await run_http(server, settings, sock, access, dashboard)
    finally:
        sock.close()


def exit_now(code: int) -> None:
    """End the process at once, after flushing output, without tearing down what `serve_http` left."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
