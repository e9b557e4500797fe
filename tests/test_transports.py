"""memoir over its real transports: a stdio subprocess, and SSE / streamable HTTP on 127.0.0.1 sockets.

Every exchange runs in both protocol eras: the Python Client's default ("auto" -> 2026-07-28) and
the 2025-11-25 initialize handshake ("legacy") that real hosts and the MCP Inspector use.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client, ClientSession, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from memoir.server.cli import main as cli_main
from tests.helpers import TOOLS
from tests.servers import ServerProcess, memoir_server, serve, stdio_params  # noqa: F401  (serve: fixture)

ERAS = {"auto": "2026-07-28", "legacy": "2025-11-25"}


def new_user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


async def call(client: Client | ClientSession, tool: str, **arguments: object) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return result.structured_content


async def round_trip(client: Client | ClientSession, user: str, text: str) -> str:
    """tools/list, add_memory, search_memories by a keyword of `text`; returns the new memory_id."""
    names = {tool.name for tool in (await client.list_tools()).tools}
    assert names == TOOLS, names
    added = await call(client, "add_memory", memory=text, topics=["Hobbies"], user_id=user)
    assert added["memory"] == text and added["user_id"] == user and added["topics"] == ["hobbies"]
    # min_relevance=0: in a one-memory store "alps", a word it lacks, outweighs "skiing" (memory/ranking.py).
    found = await call(
        client, "search_memories", query="skiing in the alps", retrieval_method="keyword", user_id=user, min_relevance=0
    )
    assert found["retrieval_method"] == "keyword"
    assert [r["memory_id"] for r in found["results"]] == [added["memory_id"]]
    # The keyword must matter: a query with no shared word finds nothing.
    missed = await call(client, "search_memories", query="astronomy telescope", retrieval_method="keyword", user_id=user)
    assert missed["results"] == []
    return added["memory_id"]


def cli_json(*argv: str) -> object:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(list(argv)) == 0
    return json.loads(out.getvalue())


# -- stdio -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
async def test_stdio_tools_search_and_resource(tmp_path: Path, mode: str) -> None:
    params = stdio_params(tmp_path / "m.db", env={"MEMOIR_USER_ID": "ava"})
    async with Client(params, mode=mode) as client:
        assert client.protocol_version == ERAS[mode]
        assert client.server_info is not None and client.server_info.name == "memoir"
        memory_id = await round_trip(client, "ava", "Ava likes to ski in the Alps")
        # No user_id: the call acts for MEMOIR_USER_ID, which reached the child through env.
        mine = await call(client, "list_memories")
        assert [m["memory_id"] for m in mine["memories"]] == [memory_id]
        read = await client.read_resource(f"memoir://memories/{memory_id}")
        body = json.loads(read.contents[0].text)
        assert read.contents[0].mime_type == "application/json"
        assert body["memory_id"] == memory_id and body["memory"] == "Ava likes to ski in the Alps"


async def test_stdio_bare_client_session_handshake(tmp_path: Path) -> None:
    """What the Inspector and most hosts do: initialize, then calls, on the 2025-11-25 handshake."""
    async with stdio_client(stdio_params(tmp_path / "m.db")) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            assert init.server_info.name == "memoir"
            assert init.instructions and "search_memories" in init.instructions
            memory_id = await round_trip(session, "default", "Ava goes skiing every winter")
            history = await session.read_resource(f"memoir://memories/{memory_id}/history")
            events = json.loads(history.contents[0].text)["events"]
            assert [e["operation"] for e in events] == ["add"]


async def test_stdio_data_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    async with Client(stdio_params(db), mode="legacy") as first:
        added = await call(first, "add_memory", memory="Ava's favourite ski resort is Zermatt")
    # The first process has exited (the client closed its stdin and waited); a new one opens the same file.
    async with Client(stdio_params(db)) as second:
        found = await call(second, "search_memories", query="ski resort", retrieval_method="keyword")
        assert [r["memory_id"] for r in found["results"]] == [added["memory_id"]]
        assert found["results"][0]["memory"] == "Ava's favourite ski resort is Zermatt"


# -- streamable HTTP and SSE -------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with memoir_server("http", tmp_path_factory.mktemp("http") / "m.db") as server:
        yield server


@pytest.fixture(scope="module")
def sse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with memoir_server("sse", tmp_path_factory.mktemp("sse") / "m.db") as server:
        yield server


def test_servers_report_their_address(http_server: ServerProcess, sse_server: ServerProcess) -> None:
    assert http_server.url.startswith("http://127.0.0.1:") and http_server.url.endswith("/mcp")
    assert sse_server.url.startswith("http://127.0.0.1:") and sse_server.url.endswith("/sse")
    assert http_server.base_url != sse_server.base_url  # port 0 gave each its own free port


@pytest.mark.parametrize("mode", ERAS)
async def test_streamable_http(http_server: ServerProcess, mode: str) -> None:
    user = new_user()
    async with Client(streamable_http_client(http_server.url), mode=mode) as client:
        assert client.protocol_version == ERAS[mode]
        memory_id = await round_trip(client, user, "Ava likes to ski")
    # A new connection (a new MCP session) sees the same store.
    async with Client(http_server.url, mode=mode) as again:
        listed = await call(again, "list_memories", user_id=user)
        assert [m["memory_id"] for m in listed["memories"]] == [memory_id]


@pytest.mark.parametrize("mode", ERAS)
async def test_sse(sse_server: ServerProcess, mode: str) -> None:
    # The SDK speaks both eras over SSE too: "auto" probes server/discover on the SSE channel.
    async with Client(sse_client(sse_server.url), mode=mode) as client:
        assert client.protocol_version == ERAS[mode]
        await round_trip(client, new_user(), "Ava likes to ski")


async def test_sse_connections_share_one_store(sse_server: ServerProcess) -> None:
    """SSE runs the MCP lifespan once per connection; the store must still be the process's one."""
    user = new_user()
    async with Client(sse_client(sse_server.url), mode="legacy") as one, Client(
        sse_client(sse_server.url), mode="legacy"
    ) as two:
        added = await call(one, "add_memory", memory="Ava skis off-piste", user_id=user)
        found = await call(two, "search_memories", query="ski", retrieval_method="keyword", user_id=user)
        assert [r["memory_id"] for r in found["results"]] == [added["memory_id"]]
        await call(two, "delete_memory", memory_id=added["memory_id"], user_id=user)
        gone = await call(one, "list_memories", user_id=user)
        assert gone["memories"] == []


# -- DNS-rebinding protection ------------------------------------------------------------------

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [("Host", "evil.example.com", 421), ("Origin", "http://evil.example.com", 403), (None, None, 200)],
    ids=["bad-host", "bad-origin", "control"],
)
async def test_http_dns_rebinding_protection(http_server: ServerProcess, header, value, status) -> None:
    headers = dict(MCP_HEADERS)
    if header == "Origin":
        headers["Origin"] = value
    if header is None:
        headers["Origin"] = http_server.base_url  # a same-origin page is allowed
    async with httpx2.AsyncClient(timeout=10) as http:
        extra = {"Host": value} if header == "Host" else {}
        response = await http.post(http_server.url, json=INITIALIZE, headers={**headers, **extra})
    assert response.status_code == status, response.text
    if status == 200:
        assert '"protocolVersion":"2025-11-25"' in response.text


@pytest.mark.parametrize(
    ("header", "value", "status"),
    [("Host", "evil.example.com", 421), ("Origin", "http://evil.example.com", 403), (None, None, 200)],
    ids=["bad-host", "bad-origin", "control"],
)
async def test_sse_dns_rebinding_protection(sse_server: ServerProcess, header, value, status) -> None:
    headers = {"Accept": "text/event-stream"}
    if header is not None:
        headers[header] = value
    async with httpx2.AsyncClient(timeout=10) as http:
        async with http.stream("GET", sse_server.url, headers=headers) as response:
            assert response.status_code == status
            if status == 200:
                # The first event names the per-connection message endpoint.
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        assert "/messages/?session_id=" in line
                        break


# -- shutting down -----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_http_server_stops_cleanly_and_keeps_its_data(serve, tmp_path: Path, sig: int) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    server = serve("http", db)
    async with Client(server.url, mode="legacy") as client:
        added = await call(client, "add_memory", memory="Ava likes to ski")
    assert server.stop(sig) == 0, server.stderr
    # The store was closed (the last connection checkpoints and removes the WAL), and nothing leaked.
    assert not Path(f"{db}-wal").exists()
    assert "Traceback" not in server.stderr
    # Reopened (in-process, through the CLI's own code), the memory is there.
    found = await asyncio.to_thread(cli_json, "search", "ski", "--method", "keyword", "--db", str(db))
    assert [r["memory_id"] for r in found["results"]] == [added["memory_id"]]


async def test_port_in_use_is_a_one_line_error(http_server: ServerProcess, tmp_path: Path) -> None:
    port = int(http_server.base_url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError) as failed:
        with memoir_server("http", tmp_path / "m.db", port=port, timeout=15):
            pass
    message = str(failed.value)
    assert "exit code 1" in message, message
    assert "Traceback" not in message
    assert "memoir: " in message
