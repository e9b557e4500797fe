"""memoir as an OAuth 2.1 authorization server (issue 14), over real HTTP against `memoir serve`.

The SDK's own OAuth client drives the flow; `tests.oauthflow.Person` plays the browser on memoir's
consent page. Every refusal is checked at the HTTP level with the error the spec names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from memoir.server import cli
from memoir.server.oauth import _redirect_problem, oauth_issuer_ok, same_resource
from tests.netclients import connect, make_token, post_initialize
from tests.oauthflow import REDIRECT_URI, Person, Refused, hidden_fields, make_login_code, oauth_connect
from tests.servers import MEMOIR, clean_env, serve  # noqa: F401  (serve: fixture)


def ok(result) -> dict:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def refused(result) -> str:
    assert result.is_error
    return result.content[0].text


@pytest.mark.parametrize(("transport", "mode"), [("http", "auto"), ("http", "legacy"), ("sse", "legacy")])
async def test_the_sdk_oauth_client_completes_the_flow_and_acts_as_that_user_only(
    serve, tmp_path: Path, transport: str, mode: str  # noqa: F811
) -> None:
    db = tmp_path / "m.db"
    _, admin = await make_token(db, None, admin=True)
    server = serve(transport, db)
    async with connect(server.url, admin) as admin_session:
        ok(await admin_session.call_tool("add_memory", {"memory": "Bob likes chess", "user_id": "bob"}))

    person = Person(credential=await make_login_code(db, "ava"))
    async with oauth_connect(server.url, person, mode=mode) as session:
        added = ok(await session.call_tool("add_memory", {"memory": "Ava likes to ski"}))
        assert added["user_id"] == "ava"  # the identity comes from the grant
        text = refused(await session.call_tool("list_memories", {"user_id": "bob"}))
        assert "'ava'" in text and "'bob'" in text
        found = ok(await session.call_tool("search_memories", {"query": "chess"}))["results"]
        assert {r["user_id"] for r in found} <= {"ava"} and "Bob likes chess" not in {r["memory"] for r in found}
    assert person.pages[0].status_code == 200 and "memoir tests" in person.pages[0].text

    # Bearer tokens keep working beside OAuth: the admin sees what ava wrote, and bob is untouched.
    async with connect(server.url, admin) as admin_session:
        memories = ok(await admin_session.call_tool("list_memories", {"user_id": "ava"}))["memories"]
        assert [m["memory"] for m in memories] == ["Ava likes to ski"]
        bobs = ok(await admin_session.call_tool("list_memories", {"user_id": "bob"}))["memories"]
        assert [m["memory"] for m in bobs] == ["Bob likes chess"]
