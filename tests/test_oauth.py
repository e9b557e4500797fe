"""memoir as an OAuth 2.1 authorization server (issue 14), over real HTTP against `memoir serve`.

The SDK's own OAuth client drives the flow; `tests.oauthflow.Person` plays the browser on memoir's
consent page. Every refusal is checked at the HTTP level with the error the spec names.
"""

from __future__ import annotations

import asyncio
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


# -- the steps one by one, and every refusal --------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class Flow:
    """A client of the OAuth endpoints, step by step (registration, authorize, token, revoke)."""

    def __init__(self, server, http: httpx2.AsyncClient) -> None:  # noqa: ANN001
        self.base = server.base_url
        self.resource = server.url
        self.http = http

    async def register(self, **metadata: object) -> dict:
        body = {"client_name": "flow", "redirect_uris": [REDIRECT_URI], **metadata}
        response = await self.http.post(self.base + "/register", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def authorize_url(self, client: dict, challenge: str, **extra: str) -> str:
        params = {
            "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "st-1", "resource": self.resource,
            **extra,
        }
        return f"{self.base}/authorize?{urlencode(params)}"

    async def code(self, client: dict, credential: str, **extra: str) -> tuple[str, str]:
        """(authorization code, its PKCE verifier), approved by a person holding `credential`."""
        verifier, challenge = pkce()
        location = await Person(credential).answer(self.authorize_url(client, challenge, **extra))
        query = parse_qs(urlsplit(location).query)
        assert location.startswith(REDIRECT_URI) and query["state"] == ["st-1"], location
        assert query["iss"] == [self.base]  # RFC 9207
        return query["code"][0], verifier

    async def token(self, client: dict, **data: str) -> httpx2.Response:
        form = {"client_id": client["client_id"], "client_secret": client.get("client_secret") or "", **data}
        return await self.http.post(self.base + "/token", data=form)

    async def exchange(self, client: dict, code: str, verifier: str, **data: str) -> httpx2.Response:
        form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI}
        return await self.token(client, **{**form, **data})

    async def grant(self, client: dict, credential: str) -> dict:
        response = await self.exchange(client, *await self.code(client, credential))
        assert response.status_code == 200, response.text
        return response.json()

    async def status(self, access_token: str) -> int:
        return (await post_initialize(self.resource, access_token)).status_code


def error_of(response: httpx2.Response) -> str:
    assert response.status_code == 400, (response.status_code, response.text)
    return response.json()["error"]


def sql(db: Path, statement: str, *params: object) -> None:
    """A change made beside the running server, as another process would (the server reads the file each time)."""
    connection = sqlite3.connect(db)
    try:
        with connection:
            connection.execute(statement, params)
    finally:
        connection.close()


async def test_each_refusal_names_the_right_error(serve, tmp_path: Path, capsys) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    _, ava = await make_token(db, "ava")  # her memoir token is what she pastes on the consent page
    server = serve("http", db)
    async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as http:
        flow = Flow(server, http)
        client = await flow.register()
        assert client["token_endpoint_auth_method"] == "client_secret_post" and client["scope"] == "memoir"
        verifier, challenge = pkce()

        # A redirect URI that is not registered exactly: refused on the spot, never redirected to.
        for foreign in ("http://127.0.0.1:9/evil", REDIRECT_URI + "/x", "http://127.0.0.1:10/callback", REDIRECT_URI + "?a=1"):
            response = await http.get(flow.authorize_url(client, challenge, redirect_uri=foreign))
            assert response.status_code == 400 and "location" not in response.headers
            assert response.json()["error"] == "invalid_request" and "not registered" in response.json()["error_description"]
        # PKCE is required, S256 only; a token for another resource is refused (RFC 8707).
        for extra, error in (
            ({"code_challenge_method": "plain"}, "invalid_request"),
            ({"code_challenge": ""}, None),
            ({"resource": "http://127.0.0.1:1/mcp"}, "invalid_target"),
            ({"scope": "admin"}, "invalid_scope"),
        ):
            url = flow.authorize_url(client, challenge, **extra)
            if extra.get("code_challenge") == "":
                url = url.replace("code_challenge=&", "")
                error = "invalid_request"
            response = await http.get(url)
            assert response.status_code == 302, response.text
            query = parse_qs(urlsplit(response.headers["location"]).query)
            assert query["error"] == [error] and "code" not in query and query["state"] == ["st-1"], (extra, query)

        # Wrong PKCE verifier; then the right one.
        code, verifier = await flow.code(client, ava)
        response = await flow.exchange(client, code, "x" * 64)
        assert error_of(response) == "invalid_grant" and "code_verifier" in response.json()["error_description"]
        assert error_of(await flow.exchange(client, code, verifier, redirect_uri="http://127.0.0.1:9/other")) == "invalid_request"
        other = await flow.register(client_name="other")
        assert error_of(await flow.exchange(other, code, verifier)) == "invalid_grant"  # another client's code
        first = await flow.exchange(client, code, verifier)
        assert first.status_code == 200, first.text
        tokens = first.json()
        assert tokens["token_type"] == "Bearer" and 3500 <= tokens["expires_in"] <= 3600 and tokens["scope"] == "memoir"
        assert await flow.status(tokens["access_token"]) == 200
        # A reused code is refused, and revokes what its first use got (RFC 6749 §4.1.2).
        assert error_of(await flow.exchange(client, code, verifier)) == "invalid_grant"
        assert await flow.status(tokens["access_token"]) == 401
        assert error_of(await flow.token(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])) == "invalid_grant"

        # An expired code.
        code, verifier = await flow.code(client, ava)
        sql(db, "UPDATE oauth_auth_codes SET expires_at = ? WHERE grant_id IS NULL", time.time() - 1)
        response = await flow.exchange(client, code, verifier)
        assert error_of(response) == "invalid_grant" and "expired" in response.json()["error_description"]

        # An expired access token; the refresh token rotates; a rotated-out one revokes the grant.
        tokens = await flow.grant(client, ava)
        sql(db, "UPDATE oauth_grants SET access_expires_at = ?", time.time() - 1)
        assert await flow.status(tokens["access_token"]) == 401
        refreshed = await flow.token(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        new = refreshed.json()
        assert new["refresh_token"] != tokens["refresh_token"] and await flow.status(new["access_token"]) == 200
        assert error_of(await flow.token(other, grant_type="refresh_token", refresh_token=new["refresh_token"])) == "invalid_grant"
        assert error_of(await flow.token(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])) == "invalid_grant"
        assert await flow.status(new["access_token"]) == 401  # the whole grant went with the reuse
        assert error_of(await flow.token(client, grant_type="refresh_token", refresh_token=new["refresh_token"])) == "invalid_grant"
        # A wrong client secret.
        bad = await flow.token({**client, "client_secret": "nope"}, grant_type="refresh_token", refresh_token="x")
        assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"

        # Revoked through the endpoint (RFC 7009): the access token, and with it the refresh token.
        tokens = await flow.grant(client, ava)
        revoked = await http.post(
            server.base_url + "/revoke",
            data={"token": tokens["access_token"], "client_id": client["client_id"], "client_secret": client["client_secret"]},
        )
        assert revoked.status_code == 200
        assert await flow.status(tokens["access_token"]) == 401
        assert error_of(await flow.token(client, grant_type="refresh_token", refresh_token=tokens["refresh_token"])) == "invalid_grant"
        # Another client cannot revoke this client's tokens (the endpoint answers 200 and does nothing).
        tokens = await flow.grant(client, ava)
        await http.post(server.base_url + "/revoke", data={
            "token": tokens["access_token"], "client_id": other["client_id"], "client_secret": other["client_secret"]})
        assert await flow.status(tokens["access_token"]) == 200

        # Revoked with `memoir token revoke`, beside the running server; `token list` shows the grant.
        assert await asyncio.to_thread(cli.main, ["token", "list", "--db", str(db)]) == 0
        listed = capsys.readouterr().out
        grant_lines = [line for line in listed.splitlines() if "OAuth grant" in line]
        assert len(grant_lines) == 1 and "'flow'" in grant_lines[0] and "ava" in grant_lines[0]
        assert tokens["access_token"] not in listed and tokens["refresh_token"] not in listed
        assert await asyncio.to_thread(cli.main, ["token", "revoke", grant_lines[0].split()[0], "--db", str(db)]) == 0
        assert "revoked OAuth grant" in capsys.readouterr().out
        assert await flow.status(tokens["access_token"]) == 401
        # ... or named by its refresh token.
        tokens = await flow.grant(client, ava)
        assert await asyncio.to_thread(cli.main, ["token", "revoke", tokens["refresh_token"], "--db", str(db)]) == 0
        assert await flow.status(tokens["access_token"]) == 401

        # A public client (no secret) works the same, PKCE being its proof.
        public = await flow.register(token_endpoint_auth_method="none")
        assert "client_secret" not in public
        assert await flow.status((await flow.grant(public, ava))["access_token"]) == 200

    # Nothing secret is stored in the clear: neither the tokens nor the codes.
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b"")
    assert tokens["access_token"].encode() not in raw and tokens["refresh_token"].encode() not in raw


async def test_registration_refuses_dangerous_redirect_uris(serve, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    await make_token(db, "ava")
    server = serve("http", db)
    async with httpx2.AsyncClient(timeout=10) as http:
        for uri in ("javascript:alert(1)", "data:text/html,hi", "http://evil.example/cb", "https://x.example/cb#frag"):
            response = await http.post(server.base_url + "/register", json={"redirect_uris": [uri]})
            assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri", (uri, response.text)
        response = await http.post(server.base_url + "/register", json={"redirect_uris": [REDIRECT_URI], "client_name": "x" * 201})
        assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata"
        for uri in ("https://claude.ai/api/mcp/auth_callback", "cursor://anysphere.cursor-retrieval/oauth/callback",
                    "http://localhost:6274/oauth/callback", "http://[::1]:33418/"):
            response = await http.post(server.base_url + "/register", json={"redirect_uris": [uri]})
            assert response.status_code == 201, (uri, response.text)


async def test_the_consent_page(serve, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    _, ava = await make_token(db, "ava")
    _, admin = await make_token(db, None, admin=True)
    server = serve("http", db)
    async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as http:
        flow = Flow(server, http)
        hostile = "<script>alert(1)</script>\"'&<img src=x onerror=alert(2)>"
        client = await flow.register(client_name=hostile)
        url = flow.authorize_url(client, pkce()[1])

        # The page: every value escaped, no script at all, strict CSP, no framing.
        person = Person(ava)
        await person.answer(url)
        page = person.pages[0]
        assert "<script" not in page.text and "<img" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;&lt;img src=x onerror=alert(2)&gt;" in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert "form-action 'self' http://127.0.0.1:9" in csp and "base-uri 'none'" in csp
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        assert "samesite=strict" in page.headers["set-cookie"].lower() and "httponly" in page.headers["set-cookie"].lower()
        assert client["client_id"] in page.text and REDIRECT_URI in page.text

        async def open_page(browser: httpx2.AsyncClient) -> tuple[str, dict[str, str]]:
            start = await browser.get(flow.authorize_url(client, pkce()[1]))
            page_url = start.headers["location"]
            assert page_url.startswith(server.base_url + "/consent?request=")
            return page_url.split("?")[0], hidden_fields((await browser.get(page_url)).text)

        async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as browser:
            # CSRF: the form's token must match the page's cookie and the request.
            action, form = await open_page(browser)
            assert (await browser.post(action, data={**form, "csrf": "forged", "credential": ava, "action": "allow"})).status_code == 403
            async with httpx2.AsyncClient(timeout=10) as no_cookie:
                assert (await no_cookie.post(action, data={**form, "credential": ava, "action": "allow"})).status_code == 403
            # Wrong credentials: the page says so; the fifth wrong try ends the request with access_denied.
            for attempt in range(1, 6):
                answer = await browser.post(action, data={**form, "credential": f"memoir_wrong{attempt}", "action": "allow"})
                if attempt < 5:
                    assert answer.status_code == 401 and "not a current memoir token or sign-in code" in answer.text
                    assert "<script" not in answer.text
            assert answer.status_code == 303
            assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["access_denied"]
            assert (await browser.post(action, data={**form, "credential": ava, "action": "allow"})).status_code == 400  # gone
            # An admin token signs nobody in.
            action, form = await open_page(browser)
            answer = await browser.post(action, data={**form, "credential": admin, "action": "allow"})
            assert answer.status_code == 401 and "admin token cannot sign in" in answer.text
            # Deny: back to the client with access_denied and its state.
            answer = await browser.post(action, data={**form, "credential": "", "action": "deny"})
            query = parse_qs(urlsplit(answer.headers["location"]).query)
            assert answer.status_code == 303 and query["error"] == ["access_denied"] and query["state"] == ["st-1"]
            assert "code" not in query
            assert (await browser.get(server.base_url + "/consent?request=nope")).status_code == 400

        # A sign-in code works once; an expired one not at all. The code is case- and dash-insensitive.
        code = await make_login_code(db, "ava")
        await flow.code(client, code.lower().replace("-", " "))
        with pytest.raises(Refused):
            await flow.code(client, code)
        expired = await make_login_code(db, "ava")
        sql(db, "UPDATE oauth_login_codes SET expires_at = ?", time.time() - 1)
        with pytest.raises(Refused):
            await flow.code(client, expired)


async def test_an_open_server_advertises_no_oauth_until_a_credential_exists(serve, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    server = serve("http", db)
    async with httpx2.AsyncClient(timeout=10) as http:
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp", "/register"):
            assert (await http.get(server.base_url + path)).status_code == 404, path
        response = await post_initialize(server.url)
        assert response.status_code == 200 and "www-authenticate" not in response.headers

        code = await make_login_code(db, "ava")  # a sign-in code alone closes the server, as a token does
        response = await post_initialize(server.url)
        assert response.status_code == 401
        metadata_url = server.base_url + "/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{metadata_url}"' in response.headers["www-authenticate"]
        resource = (await http.get(metadata_url)).json()
        assert resource["resource"] == server.url and resource["authorization_servers"] == [server.base_url]
        assert resource["scopes_supported"] == ["memoir"]
        metadata = (await http.get(server.base_url + "/.well-known/oauth-authorization-server")).json()
        assert metadata["issuer"] == server.base_url
        assert metadata["authorization_endpoint"] == server.base_url + "/authorize"
        assert metadata["token_endpoint"] == server.base_url + "/token"
        assert metadata["registration_endpoint"] == server.base_url + "/register"
        assert metadata["revocation_endpoint"] == server.base_url + "/revoke"
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token"]
        assert metadata["response_types_supported"] == ["code"]

    # The code's own use keeps it closed all the way through the token exchange.
    async with oauth_connect(server.url, Person(code)) as session:
        assert ok(await session.call_tool("add_memory", {"memory": "Ava reads"}))["user_id"] == "ava"


async def test_public_url_names_the_issuer_and_plain_http_elsewhere_turns_oauth_off(serve, tmp_path: Path) -> None:  # noqa: F811
    db = tmp_path / "m.db"
    await make_token(db, "ava")
    server = serve("http", db, env={"MEMOIR_PUBLIC_URL": "https://memoir.example.com/"})
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await post_initialize(server.url, Host="memoir.example.com")  # the proxy's name is an allowed Host
        assert response.status_code == 401
        assert 'resource_metadata="https://memoir.example.com/.well-known/oauth-protected-resource/mcp"' in response.headers["www-authenticate"]
        resource = (await http.get(server.base_url + "/.well-known/oauth-protected-resource/mcp")).json()
        assert resource["resource"] == "https://memoir.example.com/mcp"
        assert resource["authorization_servers"] == ["https://memoir.example.com"]
        metadata = (await http.get(server.base_url + "/.well-known/oauth-authorization-server")).json()
        assert metadata["issuer"] == "https://memoir.example.com"
        assert metadata["authorization_endpoint"] == "https://memoir.example.com/authorize"

    plain = serve("http", tmp_path / "m.db", env={"MEMOIR_PUBLIC_URL": "http://memoir.lan:8080"})
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await post_initialize(plain.url)
        assert response.status_code == 401 and "resource_metadata" not in response.headers["www-authenticate"]
        assert (await http.get(plain.base_url + "/.well-known/oauth-authorization-server")).status_code == 404
        assert (await http.get(plain.base_url + "/.well-known/oauth-protected-resource/mcp")).status_code == 404
    assert "OAuth is off" in plain.stderr and "MEMOIR_PUBLIC_URL=https://" in plain.stderr

    started = subprocess.run(
        [*MEMOIR, "serve", "--transport", "http", "--port", "0", "--db", str(db)],
        capture_output=True, text=True, timeout=60, env=clean_env({"MEMOIR_PUBLIC_URL": "https://memoir.example.com/mcp"}),
    )
    assert started.returncode == 1 and "MEMOIR_PUBLIC_URL must be scheme://host[:port] with no path" in started.stderr
    assert len(started.stderr.strip().splitlines()) == 1


def test_token_cli_makes_lists_and_revokes_sign_in_codes(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "m.db")
    created = subprocess.run(
        [*MEMOIR, "token", "create", "ava", "--code", "--db", db], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert created.returncode == 0, created.stderr
    code = created.stdout.strip().splitlines()[-1]
    assert len(code) == 19 and code.count("-") == 3 and "10 minutes" in created.stdout
    assert cli.main(["token", "list", "--db", db]) == 0
    listed = capsys.readouterr().out
    assert "one-time sign-in code" in listed and "ava" in listed and code not in listed
    assert code.replace("-", "").encode() not in Path(db).read_bytes()
    assert cli.main(["token", "revoke", code, "--db", db]) == 0
    assert "revoked sign-in code" in capsys.readouterr().out
    assert cli.main(["token", "create", "--admin", "--code", "--db", db]) == 1
    assert "a sign-in code signs in one user" in capsys.readouterr().err


def test_resource_and_redirect_rules() -> None:
    assert same_resource("http://127.0.0.1:8765/mcp", "http://127.0.0.1:8765/mcp")
    assert same_resource("http://localhost:8765/mcp/", "http://127.0.0.1:8765/mcp")
    assert same_resource("https://Memoir.Example.com/mcp", "https://memoir.example.com/mcp")
    assert not same_resource("http://127.0.0.1:8766/mcp", "http://127.0.0.1:8765/mcp")
    assert not same_resource("http://127.0.0.1:8765/sse", "http://127.0.0.1:8765/mcp")
    assert not same_resource("https://evil.example/mcp", "https://memoir.example.com/mcp")
    assert not same_resource("http://memoir.example.com/mcp", "https://memoir.example.com/mcp")
    assert oauth_issuer_ok("http://127.0.0.1:1") and oauth_issuer_ok("http://localhost:1") and oauth_issuer_ok("https://a.b")
    assert not oauth_issuer_ok("http://0.0.0.0:1") and not oauth_issuer_ok("http://192.168.1.5:8765")
    assert _redirect_problem("http://127.0.0.1:1/cb") is None and _redirect_problem("myapp://cb") is None
    assert _redirect_problem("JavaScript:alert(1)") and _redirect_problem("http://10.0.0.1/cb")
