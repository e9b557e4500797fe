"""Real `memoir serve` processes for tests: stdio parameters, and SSE / streamable HTTP servers on 127.0.0.1.

    from tests.servers import memoir_server, stdio_params

    with memoir_server("http", db_path) as server:      # port 0: the OS picks a free port
        async with Client(server.url) as client: ...
    assert server.returncode == 0                       # stopped with SIGTERM, store closed

or, in a test, the `serve` fixture (a factory; every server it started is stopped at teardown):

    from tests.servers import serve  # noqa: F401  (pytest finds the fixture by name)

    async def test_x(serve, tmp_path):
        server = serve("sse", tmp_path / "m.db", env={"MEMOIR_USER_ID": "ava"})

The server's stderr is drained by a thread into `server.stderr_lines`, so a chatty server never
blocks on a full pipe and a failing test can show what it said.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mcp import StdioServerParameters

# `python -m memoir.server.cli` works wherever memoir is importable (editable or wheel install),
# without relying on the console script being on PATH.
MEMOIR = [sys.executable, "-m", "memoir.server.cli"]

READY = re.compile(r"memoir: serving (?P<transport>\w+) on (?P<url>http://\S+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any MEMOIR_* setting of the developer's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOIR_")}
    env.update(extra or {})
    return env


def stdio_params(db_path: Path | str, *, env: Mapping[str, str] | None = None, args: Sequence[str] = ()) -> StdioServerParameters:
    """Parameters for the SDK's stdio client: `memoir serve` on `db_path` (via MEMOIR_DB).

    The SDK passes only HOME, LOGNAME, PATH, SHELL, TERM and USER to the child, plus `env`.
    """
    return StdioServerParameters(
        command=MEMOIR[0], args=[*MEMOIR[1:], "serve", *args], env={"MEMOIR_DB": str(db_path), **(env or {})}
    )


@dataclass
class ServerProcess:
    """A running `memoir serve --transport sse|http`."""

    proc: subprocess.Popen[str]
    transport: str
    url: str = ""
    stderr_lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`, without the endpoint path."""
        return self.url.rsplit("/", 1)[0]

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if not self._ready.is_set() and (m := READY.search(line)):
                self.url = m["url"]
                self._ready.set()
        self._ready.set()  # EOF: the process is gone; wait_ready() reports it

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        if not self._ready.wait(timeout) or not self.url:
            self.stop()
            raise RuntimeError(
                f"memoir serve --transport {self.transport} did not report its address within {timeout:.0f} s "
                f"(exit code {self.proc.returncode}); stderr:\n{self.stderr}"
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Ask the server to stop (SIGTERM by default); kill it if it has not exited after `timeout` s.

        Returns the exit code: 0 when it shut down cleanly, -9 when it had to be killed.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


def start_server(
    transport: str,
    db_path: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = START_TIMEOUT,
) -> ServerProcess:
    """Start `memoir serve --transport <transport>` on `host` (127.0.0.1; any 127/8 address is local) and wait until it listens."""
    proc = subprocess.Popen(
        [*MEMOIR, "serve", "--transport", transport, "--host", host, "--port", str(port), "--db", str(db_path), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(env),
    )
    server = ServerProcess(proc=proc, transport=transport)
    server._reader = threading.Thread(target=server._drain, name=f"memoir-{transport}-stderr", daemon=True)
    server._reader.start()
    server.wait_ready(timeout)
    return server


@contextmanager
def memoir_server(transport: str, db_path: Path | str, **kwargs: object) -> Iterator[ServerProcess]:
    """`start_server` as a context manager that always stops the process."""
    server = start_server(transport, db_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def serve() -> Iterator:
    """Factory fixture: `serve(transport, db_path, env=..., args=...)` -> a running ServerProcess."""
    started: list[ServerProcess] = []

    def start(transport: str, db_path: Path | str, **kwargs: object) -> ServerProcess:
        server = start_server(transport, db_path, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` s passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if value := predicate():
            return value
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)
