"""Bearer tokens on real SSE and streamable HTTP servers: open while no token exists, 401 without a
valid one afterwards, identity from the token, admin tokens, revocation at once; exposure rules."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from memoir.server import cli, transports
from memoir.server.access import check_exposure, host_rule, is_loopback
from tests.netclients import connect, make_token, post_initialize, revoke_token
from tests.servers import MEMOIR, clean_env, serve  # noqa: F401  (serve: fixture)

TRANSPORTS = ["http", "sse"]


async def tool(session, name: str, **arguments: object):
    return await session.call_tool(name, arguments)


def ok(result) -> dict:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def refused(result) -> str:
    assert result.is_error
    text = result.content[0].text
    assert "Traceback" not in text
    return text


async def refused_at_http_level(session, text: str) -> None:
    """The request gets a 401. Streamable HTTP reports it as an error; the SSE client never hears back
    (its POST fails outside the session), so there a short wait stands in - the caller then checks
    nothing was written."""
    with pytest.raises((MCPError, TimeoutError)):
        async with asyncio.timeout(1.5):
            result = await tool(session, "add_memory", memory=text)
            if result.is_error:
                raise MCPError(code=0, message=result.content[0].text)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tokens_decide_who_may_do_what(serve, tmp_path: Path, transport: str) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    server = serve(transport, db)
    url = server.url

    # No token yet: a loopback server is open, a single trusted local user.
    async with connect(url) as open_session:
        assert ok(await tool(open_session, "add_memory", memory="Bob likes chess", user_id="bob"))["user_id"] == "bob"
        bob_id = ok(await tool(open_session, "list_memories", user_id="bob"))["memories"][0]["memory_id"]

        # The first token closes the server, on the very next request of an open connection too.
        ava_token_id, ava = await make_token(db, "ava")
        await refused_at_http_level(open_session, "planted by an open connection")

    assert (await post_initialize(url)).status_code == 401
    assert (await post_initialize(url, "memoir_not-a-real-token")).status_code == 401
    assert (await post_initialize(url, "x" * 10_000)).status_code == 401
    response = await post_initialize(url)
    assert "Bearer" in response.headers["www-authenticate"]

    _, admin = await make_token(db, None, admin=True)
    async with connect(url, ava) as session:
        added = ok(await tool(session, "add_memory", memory="Ava likes to ski"))
        assert added["user_id"] == "ava"  # the identity comes from the token
        assert ok(await tool(session, "add_memory", memory="Ava likes tea", user_id="ava"))["user_id"] == "ava"

        # Naming another user is refused, and nothing changes.
        for name, arguments in [
            ("add_memory", {"memory": "planted", "user_id": "bob"}),
            ("list_memories", {"user_id": "bob"}),
            ("search_memories", {"query": "chess", "user_id": "bob"}),
            ("update_memory", {"memory_id": bob_id, "memory": "hijacked", "user_id": "bob"}),
            ("delete_memory", {"memory_id": bob_id, "user_id": "bob"}),
            ("clear_memories", {"confirm": True, "user_id": "bob"}),
        ]:
            text = refused(await tool(session, name, **arguments))
            assert "user_id" in text and "'ava'" in text and "'bob'" in text, text
        # Bob's memory id, used without naming bob, is unknown to ava.
        for name, extra in (("update_memory", {"memory": "hijacked"}), ("delete_memory", {})):
            assert f"no memory '{bob_id}' for user 'ava'" in refused(await tool(session, name, memory_id=bob_id, **extra))
        found = ok(await tool(session, "search_memories", query="chess"))["results"]
        assert {r["user_id"] for r in found} <= {"ava"} and bob_id not in {r["memory_id"] for r in found}
        # Resources answer for the token's user only: bob's memory reads as not found.
        with pytest.raises(MCPError):
            await session.read_resource(f"memoir://memories/{bob_id}")
        with pytest.raises(MCPError):
            await session.read_resource(f"memoir://memories/{bob_id}/history")
        listing = json.loads((await session.read_resource("memoir://users/bob/memories")).contents[0].text)
        assert listing["memories"] == []
        mine = json.loads((await session.read_resource(f"memoir://memories/{added['memory_id']}")).contents[0].text)
        assert mine["memory"] == "Ava likes to ski"

        # An admin token may name anyone.
        async with connect(url, admin) as admin_session:
            bobs = ok(await tool(admin_session, "list_memories", user_id="bob"))["memories"]
            assert [m["memory"] for m in bobs] == ["Bob likes chess"]  # untouched by ava's attempts
            assert len(ok(await tool(admin_session, "list_memories", user_id="ava"))["memories"]) == 2

        # Revoked: the open connection's next request is refused at once.
        await revoke_token(db, ava_token_id)
        await refused_at_http_level(session, "planted with a revoked token")
    assert (await post_initialize(url, ava)).status_code == 401
    async with connect(url, admin) as admin_session:
        for user in ("ava", "bob", "default"):
            texts = [m["memory"] for m in ok(await tool(admin_session, "list_memories", user_id=user))["memories"]]
            assert not any("planted" in t for t in texts), texts


async def test_body_size_limit_is_413(serve, tmp_path: Path) -> None:  # noqa: F811
    server = serve("http", tmp_path / "m.db", env={"MEMOIR_MAX_BODY_BYTES": "4096"})
    response = await post_initialize(server.url, **{"X-Pad": "x"})
    assert response.status_code == 200
    import httpx2

    async with httpx2.AsyncClient(timeout=10) as http:
        big = await http.post(
            server.url,
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 10_000}}),
            headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"},
        )
    assert big.status_code == 413


def test_token_cli_prints_the_token_alone_on_its_last_line(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "m.db")
    created = subprocess.run(
        [*MEMOIR, "token", "create", "ava", "--label", "laptop", "--db", db],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("memoir_") and len(token) > 40 and " " not in token

    assert cli.main(["token", "list", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert "ava" in listed and "laptop" in listed and token not in listed
    assert token not in Path(db).read_bytes().decode("latin-1")  # only its hash is stored
    assert cli.main(["token", "revoke", token, "--db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    assert cli.main(["token", "revoke", token, "--db", db]) == 1
    assert "no token" in capsys.readouterr().err


def test_a_public_bind_without_tokens_refuses_to_start(tmp_path: Path, monkeypatch, capsys) -> None:
    """Checked in-process with binding stubbed out: these tests never listen beyond 127.0.0.1."""

    class Bound(Exception):
        pass

    def no_bind(settings):  # noqa: ANN001
        raise Bound(settings.host)

    monkeypatch.setattr(transports, "bind", no_bind)
    db = str(tmp_path / "m.db")
    args = ["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "0", "--db", db]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0" in err and "memoir token create" in err and "--allow-unauthenticated" in err
    with pytest.raises(Bound):
        cli.main([*args, "--allow-unauthenticated"])
    assert cli.main(["token", "create", "ava", "--db", db]) == 0
    with pytest.raises(Bound):  # with a token it starts (and requires the token)
        cli.main(args)


def test_exposure_rules_and_transport_security() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    check_exposure("127.0.0.1", tokens_exist=False, allow_unauthenticated=False)
    check_exposure("0.0.0.0", tokens_exist=True, allow_unauthenticated=False)
    check_exposure("0.0.0.0", tokens_exist=False, allow_unauthenticated=True)
    with pytest.raises(ValueError, match="refusing"):
        check_exposure("192.168.1.5", tokens_exist=False, allow_unauthenticated=False)

    # Host/Origin: the bound address's own names (any port), plus MEMOIR_ALLOWED_HOSTS, on every bind.
    for bound in ("127.0.0.1", "127.0.0.2", "127.200.1.9"):
        rule = host_rule(bound, bound, ())
        assert rule.allows(f"{bound}:8765") and rule.allows(bound) and rule.allows("localhost:1")
        assert not rule.allows("evil.example") and not rule.allows("evil.example:8765") and not rule.allows("")
        assert not rule.allows(f"{bound}:80@evil.example") and not rule.allows(f"{bound}.evil.example")
        assert rule.allows_origin(None) and rule.allows_origin(f"http://{bound}:8765")
        assert rule.allows_origin("https://localhost") and not rule.allows_origin("http://evil.example")
        assert not rule.allows_origin("null") and not rule.allows_origin(f"ftp://{bound}")
    v6 = host_rule("::1", "::1", ())
    assert v6.allows("[::1]:8765") and v6.allows("localhost") and not v6.allows("127.0.0.1:8765")
    mapped = host_rule("::ffff:127.0.0.2", "::ffff:127.0.0.2", ())
    assert mapped.allows("127.0.0.2:1") and mapped.allows("[::ffff:127.0.0.2]:1") and mapped.allows("localhost")
    assert is_loopback("::ffff:127.0.0.2")
    named = host_rule("localhost", "127.0.0.1", ("Memoir.Internal", "proxy.lan:8443"))
    assert named.allows("memoir.internal") and named.allows("MEMOIR.internal:443") and named.allows("127.0.0.1:9")
    assert named.allows("proxy.lan:8443") and not named.allows("proxy.lan:8444") and not named.allows("proxy.lan")
    assert named.allows_origin("https://memoir.internal") and not named.allows_origin("https://evil.example")
    lan = host_rule("192.168.1.5", "192.168.1.5", ())
    assert lan.allows("192.168.1.5:8765") and not lan.allows("localhost:8765") and not lan.allows("evil.example")
    wildcard = host_rule("0.0.0.0", "0.0.0.0", ("memoir.internal",))
    assert wildcard.allows("memoir.internal:8765") and wildcard.allows("127.0.0.1:8765") and not wildcard.allows("x.example")
    assert host_rule("0.0.0.0", "0.0.0.0", ()) is None  # names unknown: off, with a warning (tokens still apply)
