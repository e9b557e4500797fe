"""Running the MCP server on SSE or streamable HTTP (stdio: server/stdio.py)."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from memoir.memory.tokens import Tokens
from memoir.tools.context import AppContext

from .access import HttpAccess, http_caller
from .app import build_server
from .settings import Settings

log = logging.getLogger("memoir")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def http_app(server: MCPServer, settings: Settings, access: HttpAccess | None = None) -> Starlette:
    """The Starlette app for SSE (`/sse` + `/messages/`) or streamable HTTP (`/mcp`).

    Passing the host lets the SDK turn on DNS-rebinding protection for loopback binds; `access`
    (server/access.py) adds the body-size limit and, for other binds, the allowed Host names.
    """
    options: dict[str, object] = {"host": settings.host}
    if access is not None:
        options.update(max_request_body_size=access.max_body_bytes, transport_security=access.security)
    if settings.transport == "sse":
        return server.sse_app(**options)  # type: ignore[arg-type]
    return server.streamable_http_app(**options)  # type: ignore[arg-type]


def bind(settings: Settings) -> socket.socket:
    """The listening socket (port 0: any free port), bound before serving so its real address is known."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def endpoint(settings: Settings, sock: socket.socket) -> tuple[str, str]:
    """(`http://host:port`, path) of a bound socket."""
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if sock.family == socket.AF_INET6 else settings.host
    return f"http://{host}:{port}", "/sse" if settings.transport == "sse" else "/mcp"


async def run_http(
    server: MCPServer, settings: Settings, sock: socket.socket | None = None, access: HttpAccess | None = None
) -> None:
    sock = sock or bind(settings)
    app = http_app(server, settings, access)
    if access is not None:
        app = access.wrap(app)
    base, path = endpoint(settings, sock)
    print(f"memoir: serving {settings.transport} on {base}{path}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=settings.log_level.lower(), lifespan="on", access_log=False)
    await _Server(config).serve(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGTERM/SIGINT once it has shut down.

    uvicorn re-raises the captured signal after its graceful shutdown: SIGTERM then killed the
    process before `memoir serve` closed the store, and SIGINT hung in the KeyboardInterrupt it
    raised. Returning normally lets the caller close the store and exit 0.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()


async def serve_http(app: AppContext, settings: Settings) -> None:
    """SSE or streamable HTTP with memoir's access rules (server/access.py) over an open `app`."""
    access = await HttpAccess.prepare(Tokens(app.store), settings)
    sock = bind(settings)
    try:
        base, path = endpoint(settings, sock)
        app.caller = http_caller
        server = build_server(app, **access.server_options(base, path))
        await run_http(server, settings, sock, access)
    finally:
        sock.close()
