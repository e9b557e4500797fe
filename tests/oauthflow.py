"""The SDK's own OAuth client (`OAuthClientProvider`) against a running `memoir serve`, and a `Person`
who plays the browser: follows the authorize redirect to memoir's consent page, pastes a credential
into its form, answers, and hands the code from the redirect back to the client. No browser, no
mocks: every step is an HTTP request to the real server.

    person = Person(credential=code)
    async with oauth_connect(server.url, person) as client:
        await client.call_tool("add_memory", {"memory": "..."})
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import Client, ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from memoir.memory.oauth_store import OAuthStore
from memoir.memory.store import Store

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the Person reads the redirect's Location


class MemoryStorage:
    """The SDK's `TokenStorage`, in memory (one host's keychain)."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Refused(Exception):
    """The consent step did not produce a code: the redirect carried an error, or the page refused."""


def hidden_fields(page: str) -> dict[str, str]:
    return {m[1]: html.unescape(m[2]) for m in re.finditer(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page)}


@dataclass
class Person:
    """Answers memoir's consent page with `credential` (a memoir token or a sign-in code)."""

    credential: str
    action: str = "allow"
    pages: list[httpx2.Response] = field(default_factory=list)  # every consent page seen
    _authorization_url: str | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        self._authorization_url = authorization_url

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self._authorization_url is not None
        location = await self.answer(self._authorization_url)
        query = parse_qs(urlsplit(location).query)
        if "error" in query:
            raise Refused(f"{query['error'][0]}: {query.get('error_description', [''])[0]}")
        return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0], iss=query.get("iss", [None])[0])

    async def answer(self, authorization_url: str, **override: str) -> str:
        """Open the authorization URL, answer the page; returns where the browser is sent (the Location)."""
        async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as browser:
            start = await browser.get(authorization_url)
            if start.status_code != 302:
                raise Refused(f"/authorize answered {start.status_code}: {start.text}")
            page_url = start.headers["location"]
            page = await browser.get(page_url)
            self.pages.append(page)
            assert page.status_code == 200, page.text
            form = {**hidden_fields(page.text), "credential": self.credential, "action": self.action, **override}
            answered = await browser.post(page_url.split("?")[0], data=form)
            self.pages.append(answered)
            if answered.status_code != 303:
                raise Refused(f"the consent page answered {answered.status_code}")
            return answered.headers["location"]


def client_metadata(**extra: object) -> OAuthClientMetadata:
    values: dict[str, object] = {
        "client_name": "memoir tests",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    values.update(extra)
    return OAuthClientMetadata.model_validate(values)


@asynccontextmanager
async def oauth_connect(
    url: str, person: Person, *, mode: str = "auto", storage: MemoryStorage | None = None, **metadata: object
) -> AsyncIterator[Client | ClientSession]:
    """An MCP session whose HTTP requests carry the SDK's OAuth client: on the first 401 it discovers,
    registers, sends `person` through the consent page, exchanges the code, and retries."""
    auth = OAuthClientProvider(
        url, client_metadata(**metadata), storage or MemoryStorage(), person.redirect_handler, person.callback_handler
    )
    if url.endswith("/sse"):
        async with sse_client(url, timeout=10, auth=auth) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
        return
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            yield client


async def make_login_code(db_path, user: str) -> str:  # noqa: ANN001
    """A one-time sign-in code, made in this process while the server runs in another one."""
    store = await Store.open(db_path)
    try:
        _, code = await OAuthStore(store).create_login_code(user)
    finally:
        await store.close()
    return code
