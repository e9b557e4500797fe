"""server/stdio.py: stdio served on the event loop, over real pipes to a real subprocess.

A toy server (written to tmp_path) runs memoir's `run_stdio` with a tool that writes to stdout
behind the transport's back, the way a stray `print` or a child process would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from memoir.server.stdio import _is_pipe_or_socket
from tests.conftest import ERAS
from tests.servers import MEMOIR, clean_env

TOY = """
import logging, os, subprocess, sys
import anyio
# As `memoir serve` does (server/cli.py): plain log lines on stderr. Without it the SDK, finding
# rich installed, logs through rich's handler, which wraps lines to the terminal width.
logging.basicConfig(level="WARNING", stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
from mcp.server.mcpserver import MCPServer
from memoir.server import stdio

stdio.MAX_LINE_BYTES = int(os.environ.get("TOY_MAX_LINE", stdio.MAX_LINE_BYTES))
server = MCPServer("toy")

@server.tool()
def noisy(text: str) -> str:
    print("stray print", flush=True)
    os.write(1, b"stray write on fd 1\\n")
    subprocess.run(["echo", "a child's output"], check=True)
    return text.upper()

anyio.run(stdio.run_stdio, server)
os.write(1, b'{"after": "the wire is back on fd 1"}\\n')
print("blocking:", os.get_blocking(0), os.get_blocking(1), file=sys.stderr)
"""


def send(proc: subprocess.Popen, message: dict | str) -> None:
    """One JSON-RPC message, as a line on the server's stdin."""
    line = message if isinstance(message, str) else json.dumps(message)
    proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
    proc.stdin.flush()  # type: ignore[union-attr]


def handshake(proc: subprocess.Popen) -> None:
    """The 2025-11-25 initialize exchange, as a host does it."""
    send(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
    assert json.loads(proc.stdout.readline())["id"] == 1  # type: ignore[union-attr]
    send(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    path = tmp_path / "toy_server.py"
    path.write_text(TOY)
    return path


@pytest.mark.parametrize("mode", ERAS)
async def test_stray_output_never_reaches_the_wire(toy: Path, mode: str) -> None:
    async with Client(StdioServerParameters(command=sys.executable, args=[str(toy)]), mode=mode) as client:
        for word in ("ski", "snow"):
            result = await client.call_tool("noisy", {"text": word})
            assert not result.is_error
            assert result.content[0].text == word.upper()


def test_overlong_line_is_dropped_and_the_wire_restored(toy: Path) -> None:
    """A line over the limit is skipped with a warning; the next request is answered; on exit fd 1 is the wire again."""
    proc = subprocess.Popen(
        [sys.executable, str(toy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TOY_MAX_LINE": "4096"},
    )
    assert proc.stdin and proc.stdout
    try:
        handshake(proc)
        send(proc, '{"jsonrpc": "2.0", "id": 99, "method": "ping", "pad": "' + "x" * 20_000 + '"}')
        send(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "noisy", "arguments": {"text": "ok"}}})
        reply = json.loads(proc.stdout.readline())
        assert reply["id"] == 2 and reply["result"]["content"][0]["text"] == "OK"
        proc.stdin.close()
        # After serving, the script writes to fd 1 itself: the wire was put back.
        assert json.loads(proc.stdout.readline()) == {"after": "the wire is back on fd 1"}
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()  # type: ignore[union-attr]
    assert "dropped a message longer than 4096 bytes" in err
    assert "stray print" in err and "stray write on fd 1" in err and "a child's output" in err
    assert "blocking: True True" in err


def test_a_client_that_goes_away_ends_the_server_quietly(tmp_path: Path) -> None:
    """The host closes its end of stdout with calls in flight, then stdin: exit 0, no traceback."""
    proc = subprocess.Popen(
        [*MEMOIR, "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env({"MEMOIR_DB": str(tmp_path / "m.db"), "MEMOIR_EMBEDDINGS": "off"}),
    )
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        handshake(proc)
        for i in range(50):
            call = {"name": "add_memory", "arguments": {"memory": f"Ava likes tea number {i}"}}
            send(proc, {"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": call})
        proc.stdout.close()
        time.sleep(0.3)
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert "Traceback" not in err, err


def test_only_pipes_and_sockets_are_served_on_the_loop(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    left, right = socket.socketpair()
    regular = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    try:
        assert _is_pipe_or_socket(read_end) and _is_pipe_or_socket(write_end)
        assert _is_pipe_or_socket(left.fileno())
        assert not _is_pipe_or_socket(regular)  # a file (or a terminal) gets the SDK's own transport
        assert not _is_pipe_or_socket(12345)  # not open at all
    finally:
        for fd in (read_end, write_end, regular):
            os.close(fd)
        left.close()
        right.close()
