"""DNS-rebinding protection decided by memoir for every bind (issue 10, defect 4).

The SDK protects only binds named 127.0.0.1, localhost or ::1. On 127.0.0.2 (Linux routes all of
127/8 to lo) a page on an attacker's name re-pointed at the server could write for any user, and
MEMOIR_ALLOWED_HOSTS was ignored on loopback binds, so a local TLS proxy forwarding
`Host: memoir.internal` got 421. Real `memoir serve` processes, both transports, both eras.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.netclients import post_initialize
from tests.servers import serve  # noqa: F401  (serve: fixture)

ERAS = {"auto": "2026-07-28", "legacy": "2025-11-25"}


def port_of(server) -> str:
    return server.base_url.rsplit(":", 1)[1]


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_any_loopback_address_refuses_foreign_host_and_origin(serve, tmp_path: Path, transport: str) -> None:  # noqa: F811
    server = serve(transport, tmp_path / "m.db", host="127.0.0.2")  # no token: an open local server
    assert server.url.startswith("http://127.0.0.2:")
    port = port_of(server)

    refused_host = await post_initialize(server.url, Host="evil.example")
    assert refused_host.status_code == 421
    assert "MEMOIR_ALLOWED_HOSTS" in refused_host.text and "\n" not in refused_host.text.strip()
    assert (await post_initialize(server.url, Host=f"evil.example:{port}")).status_code == 421
    assert (await post_initialize(server.url, Origin="http://evil.example")).status_code == 403
    assert (await post_initialize(server.url, Origin=f"http://evil.example:{port}")).status_code == 403
    # The server's own names, with or without a same-origin page; non-browser clients send no Origin.
    assert (await post_initialize(server.url)).status_code == 200
    assert (await post_initialize(server.url, Origin=f"http://127.0.0.2:{port}")).status_code == 200
    assert (await post_initialize(server.url, Host=f"localhost:{port}")).status_code == 200


@pytest.mark.parametrize("mode", ERAS)
async def test_a_rebound_page_cannot_write_on_127_0_0_2(serve, tmp_path: Path, mode: str) -> None:  # noqa: F811
    """The write the attack made: a tool call through the rebound name, in both protocol eras."""
    server = serve("http", tmp_path / "m.db", host="127.0.0.2")
    user = f"u-{uuid.uuid4().hex[:8]}"
    for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
        async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
            with pytest.raises(Exception):  # noqa: B017  (the SDK surfaces the 421/403 as its own error types)
                async with Client(streamable_http_client(server.url, http_client=http), mode=mode) as client:
                    await client.call_tool("add_memory", {"memory": "planted", "user_id": user})
    async with Client(server.url, mode=mode) as client:
        assert client.protocol_version == ERAS[mode]
        listed = await client.call_tool("list_memories", {"user_id": user})
        assert listed.structured_content["memories"] == []


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_allowed_hosts_apply_on_loopback(serve, tmp_path: Path, transport: str, mode: str) -> None:  # noqa: F811
    """A local TLS proxy forwards `Host: memoir.internal` to 127.0.0.1: MEMOIR_ALLOWED_HOSTS must count."""
    server = serve(transport, tmp_path / "m.db", env={"MEMOIR_ALLOWED_HOSTS": "memoir.internal"})
    headers = {"Host": "memoir.internal", "Origin": "https://memoir.internal"}
    user = f"u-{uuid.uuid4().hex[:8]}"
    if transport == "http":
        async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
            async with Client(streamable_http_client(server.url, http_client=http), mode=mode) as client:
                assert client.protocol_version == ERAS[mode]
                added = await client.call_tool("add_memory", {"memory": "Ava skis", "user_id": user})
                assert not added.is_error, added.content[0].text
    else:
        async with Client(sse_client(server.url, headers=headers), mode=mode) as client:
            assert client.protocol_version == ERAS[mode]
            added = await client.call_tool("add_memory", {"memory": "Ava skis", "user_id": user})
            assert not added.is_error, added.content[0].text
    # The server's own names still work, and other names are still refused.
    assert (await post_initialize(server.url)).status_code == 200
    assert (await post_initialize(server.url, Host="evil.example")).status_code == 421
    assert (await post_initialize(server.url, Origin="https://evil.example")).status_code == 403
