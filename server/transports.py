"""Running the MCP server on stdio, SSE or streamable HTTP."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from .settings import Settings

log = logging.getLogger("memoir")

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


async def run_stdio(server: MCPServer) -> None:
    await server.run_stdio_async()


def http_app(server: MCPServer, settings: Settings) -> Starlette:
    """The Starlette app for SSE (`/sse` + `/messages/`) or streamable HTTP (`/mcp`).

    Passing the host lets the SDK turn on DNS-rebinding protection for loopback binds.
    """
    if settings.transport == "sse":
        return server.sse_app(host=settings.host)
    return server.streamable_http_app(host=settings.host)


async def run_http(server: MCPServer, settings: Settings) -> None:
    app = http_app(server, settings)
    # Binding the socket here (port 0 included) lets us print the real address before serving.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if family == socket.AF_INET6 else settings.host
    path = "/sse" if settings.transport == "sse" else "/mcp"
    print(f"memoir: serving {settings.transport} on http://{host}:{port}{path}", file=sys.stderr, flush=True)
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
