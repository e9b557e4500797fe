"""Who may use an SSE / streamable HTTP server, and how much: bearer tokens, exposure, limits.

The rules (DESIGN.md, "Transports and identity"):

- As soon as one token exists (`memoir token create`), every request needs a valid bearer token
  (otherwise 401), and the identity comes from the token: a user token acts for its user only,
  an admin token may name any user.
- With no token at all, a loopback server is open: a single local user, as on stdio.
- A non-loopback bind with no token refuses to start unless `--allow-unauthenticated` is given.
- Tokens are looked up in the database on every request, so a token created while the server
  runs works at once, and a revoked one stops working at once - also for a connection that is
  already open, whose next request is refused. The first token created beside an open loopback
  server closes it on the next request.

The SDK's resource-server support does the checking: `MCPServer(token_verifier=..., auth=...)`
puts every endpoint behind `RequireAuthMiddleware`. Open mode is one ASGI wrapper: a request
that brings no Authorization header, while no token exists and openness is allowed, is given a
per-process secret the verifier maps to the open (trusted local) caller. That secret is random,
never leaves the process, and is refused as soon as any real token exists.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from memoir.memory.errors import AccessDenied
from memoir.memory.tokens import Tokens
from memoir.tools.context import Caller

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("memoir")

SCOPE = "memoir"
OPEN_CLIENT_ID = "memoir-open"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # extraction's 100,000 characters fit with room to spare


@dataclass(frozen=True)
class AccessSettings:
    """| variable | default | meaning |
    |---|---|---|
    | MEMOIR_ALLOW_UNAUTHENTICATED | off | serve a non-loopback address with no token (anyone who can reach it can use it) |
    | MEMOIR_ALLOWED_HOSTS | the bound address | comma-separated Host names clients use, for DNS-rebinding protection on non-loopback binds |
    | MEMOIR_RATE_LIMIT | 600 | tool calls and resource reads per minute per token (0: no limit) |
    | MEMOIR_RATE_BURST | 60 | how many of them may come at once |
    | MEMOIR_CALL_TIMEOUT | 180 | seconds one tool call may take (0: no limit); a stopped call changed nothing |
    | MEMOIR_MAX_BODY_BYTES | 1048576 | the largest HTTP request body accepted (413 above it) |
    """

    allow_unauthenticated: bool = False
    allowed_hosts: tuple[str, ...] = ()
    rate_per_minute: float = 600.0
    rate_burst: int = 60
    call_timeout: float = 180.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AccessSettings:
        values: dict[str, object] = {}
        if env.get("MEMOIR_ALLOW_UNAUTHENTICATED"):
            values["allow_unauthenticated"] = env["MEMOIR_ALLOW_UNAUTHENTICATED"].strip().lower() in ("1", "true", "yes")
        if env.get("MEMOIR_ALLOWED_HOSTS"):
            values["allowed_hosts"] = tuple(h.strip() for h in env["MEMOIR_ALLOWED_HOSTS"].split(",") if h.strip())
        for name, key, kind in (
            ("MEMOIR_RATE_LIMIT", "rate_per_minute", float),
            ("MEMOIR_RATE_BURST", "rate_burst", int),
            ("MEMOIR_CALL_TIMEOUT", "call_timeout", float),
            ("MEMOIR_MAX_BODY_BYTES", "max_body_bytes", int),
        ):
            if env.get(name):
                try:
                    values[key] = kind(env[name])
                except ValueError:
                    raise ValueError(f"{name} must be a number, not {env[name]!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    def check(self) -> None:
        if self.rate_per_minute < 0 or self.rate_burst < 0:
            raise ValueError("MEMOIR_RATE_LIMIT and MEMOIR_RATE_BURST must be 0 (no limit) or more")
        if self.rate_per_minute > 0 and self.rate_burst < 1:
            raise ValueError("MEMOIR_RATE_BURST must be at least 1 when MEMOIR_RATE_LIMIT is set")
        if self.call_timeout < 0:
            raise ValueError("MEMOIR_CALL_TIMEOUT must be 0 (no limit) or a number of seconds")
        if self.max_body_bytes < 1024:
            raise ValueError("MEMOIR_MAX_BODY_BYTES must be at least 1024")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class NeedsAuthentication(ValueError):
    """A non-loopback bind with no token and no explicit --allow-unauthenticated."""


def check_exposure(host: str, tokens_exist: bool, allow_unauthenticated: bool) -> None:
    if is_loopback(host) or tokens_exist or allow_unauthenticated:
        return
    raise NeedsAuthentication(
        f"refusing to serve on {host} without authentication: no token exists, so anyone who can reach this "
        "address could read and change every user's memories. Create a token first (`memoir token create USER`), "
        "bind 127.0.0.1, or pass --allow-unauthenticated if the network is trusted"
    )


def transport_security(host: str, allowed_hosts: tuple[str, ...]) -> TransportSecuritySettings | None:
    """DNS-rebinding protection: the SDK's own for loopback; for other binds, the names clients use."""
    if is_loopback(host):
        return None  # the SDK turns it on for loopback hosts itself
    names = list(allowed_hosts)
    if not names:
        try:
            wildcard = ipaddress.ip_address(host.strip("[]")).is_unspecified
        except ValueError:
            wildcard = False  # a host name: clients use it
        if wildcard:
            log.warning(
                "memoir: bound to %s with no MEMOIR_ALLOWED_HOSTS: Host/Origin checks are off (bearer tokens still "
                "apply); set MEMOIR_ALLOWED_HOSTS to the names clients use to turn them on",
                host,
            )
            return TransportSecuritySettings(enable_dns_rebinding_protection=False)
        names = [f"[{host.strip('[]')}]" if ":" in host else host]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*names, *(f"{n}:*" for n in names)],
        allowed_origins=[f"{scheme}://{n}{port}" for n in names for scheme in ("http", "https") for port in ("", ":*")],
    )


class DatabaseTokenVerifier:
    """The SDK's `TokenVerifier`: a bearer token -> an `AccessToken` carrying memoir's identity."""

    def __init__(self, tokens: Tokens, open_secret: str | None) -> None:
        self.tokens = tokens
        self.open_secret = open_secret

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.open_secret is not None and hmac.compare_digest(token.encode(), self.open_secret.encode()):
            if await self.tokens.exist():
                return None  # a token was created since the request came in: no longer open
            return AccessToken(token="open", client_id=OPEN_CLIENT_ID, scopes=[SCOPE])
        info = await self.tokens.verify(token)
        if info is None:
            return None
        return AccessToken(
            token=info.token_id,  # the id, not the secret: nothing downstream needs the secret
            client_id=info.token_id,
            scopes=[SCOPE],
            subject=info.user_id,
            claims={"user_id": info.user_id, "admin": info.admin},
        )


def http_caller() -> Caller:
    """The caller of the request being served, from its verified token (fails closed without one)."""
    token = get_access_token()
    if token is None:
        raise AccessDenied("this request carries no verified credentials; send a bearer token")
    if token.client_id == OPEN_CLIENT_ID:
        return Caller()
    claims = token.claims or {}
    return Caller(user_id=claims.get("user_id"), admin=bool(claims.get("admin")), token_id=token.client_id)


class OpenWhenNoTokens:
    """ASGI wrapper: lets a request without credentials in while no token exists (open mode only)."""

    def __init__(self, app: ASGIApp, tokens: Tokens, open_secret: str) -> None:
        self.app = app
        self.tokens = tokens
        self.header = (b"authorization", f"Bearer {open_secret}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(k == b"authorization" for k, _ in scope["headers"]):
            if not await self.tokens.exist():
                scope = {**scope, "headers": [*scope["headers"], self.header]}
        await self.app(scope, receive, send)


@dataclass
class HttpAccess:
    """Everything the SSE / HTTP server needs to enforce access for one process."""

    tokens: Tokens
    open_secret: str | None  # None: open mode is not allowed here (non-loopback, no --allow-unauthenticated)
    security: TransportSecuritySettings | None
    max_body_bytes: int

    @classmethod
    async def prepare(cls, tokens: Tokens, settings: Settings) -> HttpAccess:
        access = settings.access
        check_exposure(settings.host, await tokens.exist(), access.allow_unauthenticated)
        open_allowed = is_loopback(settings.host) or access.allow_unauthenticated
        return cls(
            tokens=tokens,
            open_secret=secrets.token_urlsafe(32) if open_allowed else None,
            security=transport_security(settings.host, access.allowed_hosts),
            max_body_bytes=access.max_body_bytes,
        )

    def server_options(self, base_url: str, path: str) -> dict[str, object]:
        """Keyword arguments for `MCPServer(...)`: the verifier and resource-server settings."""
        return {
            "token_verifier": DatabaseTokenVerifier(self.tokens, self.open_secret),
            "auth": AuthSettings(
                issuer_url=base_url,  # memoir issues its own tokens (`memoir token create`)
                resource_server_url=base_url + path,
                required_scopes=[SCOPE],
                validate_token_resource=False,  # memoir's tokens are not audience-bound; the database decides
            ),
        }

    def wrap(self, app: ASGIApp) -> ASGIApp:
        return app if self.open_secret is None else OpenWhenNoTokens(app, self.tokens, self.open_secret)
