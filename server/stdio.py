"""stdio without a thread hop per message.

The SDK's `stdio_server()` reads and writes stdin/stdout through `anyio.wrap_file`: every line
read, every write and every flush runs in a worker thread and wakes the event loop from there.
For a small tool call that is three thread hand-offs, about 0.3 ms of the ~0.7 ms a call costs
end to end over stdio. When stdin and stdout are pipes or sockets (what every MCP host gives a
server it spawns), asyncio reads and writes them on the event loop itself; the SDK still does
the framing and JSON, through `stdio_server(stdin, stdout)`. Anything else (a terminal, a file)
gets the SDK's own transport.

Like the SDK, the wire is moved off fds 0 and 1 while serving: a stray `print` or a child
process then writes to stderr instead of corrupting the JSON-RPC stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

log = logging.getLogger("memoir")

# One JSON-RPC message per line. Tool arguments are bounded far below this (extraction takes
# 100,000 characters: at most 1.2 MB even JSON-escaped); a longer line is dropped with a warning
# instead of filling memory. The bound is also a CPU bound: the SDK parses a line on the event
# loop (about 10 ms a MiB), so 32 MiB held every other request for a third of a second.
MAX_LINE_BYTES = 2 * 1024 * 1024


def _is_pipe_or_socket(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def loop_native_possible() -> bool:
    """True when stdin and stdout are pipes or sockets, which asyncio can serve on its loop (POSIX)."""
    return sys.platform != "win32" and _is_pipe_or_socket(0) and _is_pipe_or_socket(1)


async def run_stdio(server: MCPServer) -> None:
    """Serve `server` on stdin/stdout until the client closes stdin."""
    lowlevel = getattr(server, "_lowlevel_server", None)  # MCPServer.run_stdio_async's own target
    if lowlevel is None or not loop_native_possible():
        await server.run_stdio_async()
        return
    async with loop_native_stdio() as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


class _Lines:
    """stdin as the async iterator of text lines `stdio_server` reads."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        overlong = False
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:  # EOF: a last line without its newline, or nothing
                line = end.partial
                if not line:
                    raise StopAsyncIteration from None
            except asyncio.LimitOverrunError as over:
                # Drop what is buffered of the line; the next line read is the rest of it.
                await self._reader.readexactly(over.consumed)
                overlong = True
                continue
            if overlong:
                log.warning("dropped a message longer than %d bytes read on stdin", MAX_LINE_BYTES)
                overlong = False
                continue
            return line.decode("utf-8", errors="replace")


class _Output:
    """stdout as the async file `stdio_server` writes to; `flush` waits while the pipe is full."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        if self._writer.transport.is_closing():
            raise anyio.ClosedResourceError  # the client went away: stdio_server ends its writer quietly
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as gone:
            raise anyio.ClosedResourceError from gone


@asynccontextmanager
async def loop_native_stdio() -> AsyncIterator[tuple[object, object]]:
    """`stdio_server`'s (read, write) streams over fds 0 and 1, read and written on the event loop."""
    import fcntl  # POSIX only: loop_native_possible() is False elsewhere

    loop = asyncio.get_running_loop()
    saved = {fd: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in (0, 1)}  # to put the wire back
    wire_in, wire_out = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in (0, 1))  # the transports own these
    _divert(0, os.open(os.devnull, os.O_RDONLY))
    _divert(1, os.dup(2))
    read_transport = writer = None
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES, loop=loop)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(wire_in, "rb", buffering=0)
        )
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop), os.fdopen(wire_out, "wb", buffering=0)
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        async with stdio_server(_Lines(reader), _Output(writer)) as streams:  # type: ignore[arg-type]
            yield streams
    finally:
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
        if read_transport is not None:
            read_transport.close()
        for fd, wire in saved.items():
            with contextlib.suppress(OSError):
                os.dup2(wire, fd)
                os.set_blocking(fd, True)  # asyncio made the shared file description non-blocking
            os.close(wire)


def _divert(fd: int, to: int) -> None:
    os.dup2(to, fd)
    os.close(to)
