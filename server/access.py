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

OAuth (server/oauth.py): where the issuer URL can be right (MEMOIR_PUBLIC_URL, or a loopback
bind), `server_options` makes memoir its own authorization server through the SDK's
`auth_server_provider`; the verifier then also accepts OAuth access tokens bound to this
resource. "Any token exists" counts OAuth grants and unused sign-in codes too (`Tokens.exist`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from memoir.memory.errors import AccessDenied
from memoir.memory.oauth_store import ACCESS_PREFIX, OAuthStore
from memoir.memory.tokens import Tokens
from memoir.tools.context import Caller

from .access_settings import _HOST, _ORIGIN, _PUBLIC_URL, DEFAULT_MAX_BODY_BYTES, AccessSettings, _parse_host  # noqa: F401
from .oauth import CONSENT_PATH, ClosedOnly, MemoirOAuthProvider, consent_endpoint, oauth_issuer_ok

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("memoir")

SCOPE = "memoir"
OPEN_CLIENT_ID = "memoir-open"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, an IPv4-mapped 127.x address (::ffff:127.0.0.2), or `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


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


def _literal(address: str) -> str:
    """How an IP address appears in a Host header: IPv6 bracketed."""
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True)
class HostRule:
    """The Host names a server answers to, and so the Origins whose pages may call it.

    `names` match any port; `named_ports` only that port. An Origin is allowed when it is http or
    https on an allowed host; a request without Origin (not from a browser page) is allowed.
    """

    names: frozenset[str]
    named_ports: frozenset[tuple[str, str]] = frozenset()

    def allows(self, host: str) -> bool:
        parsed = _parse_host(host)
        if parsed is None:
            return False
        name, port = parsed
        return name in self.names or (port is not None and (name, port) in self.named_ports)

    def allows_origin(self, origin: str | None) -> bool:
        if origin is None:
            return True
        match = _ORIGIN.fullmatch(origin.strip().lower())
        return match is not None and self.allows(match["host"])


def host_rule(host: str, bound_address: str, allowed_hosts: tuple[str, ...]) -> HostRule | None:
    """Which Host headers a server bound at `bound_address` (asked for as `host`) accepts; None: no check.

    The bound address's own names, with any port, plus MEMOIR_ALLOWED_HOSTS always:
    - loopback (all of 127.0.0.0/8, ::1, ::ffff:127.x.y.z, or `localhost`): the address, and `localhost`;
    - another address: that address; a host name bound by name: that name too;
    - a wildcard bind (0.0.0.0, ::): the loopback names, since it answers there too; with no
      MEMOIR_ALLOWED_HOSTS the names clients use are unknown, so the check is off (with a warning;
      bearer tokens still apply).
    """
    address = ipaddress.ip_address(bound_address.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    names = {_literal(str(address))}
    if mapped is not None:
        names.add(str(mapped))
    if is_loopback(host) or is_loopback(str(address)):
        names.add("localhost")
    elif address.is_unspecified:
        if not allowed_hosts:
            log.warning(
                "memoir: bound to %s with no MEMOIR_ALLOWED_HOSTS: Host/Origin checks are off (bearer tokens still "
                "apply); set MEMOIR_ALLOWED_HOSTS to the names clients use to turn them on",
                host,
            )
            return None
        names = {"localhost", "127.0.0.1", "[::1]"}
    given = _parse_host(host)
    if given is not None and not address.is_unspecified:
        names.add(given[0])  # `--host memoir.lan`: clients use that name
    named_ports: set[tuple[str, str]] = set()
    for entry in allowed_hosts:
        parsed = _parse_host(entry)
        if parsed is None:
            continue  # AccessSettings.check refused it already
        name, port = parsed
        if port is None:
            names.add(name)
        else:
            named_ports.add((name, port))
    return HostRule(frozenset(names), frozenset(named_ports))


class HostCheck:
    """ASGI wrapper: DNS-rebinding protection, before anything else sees the request.

    A web page on an attacker's name that was re-pointed at this address sends that name as Host
    (refused: 421) and its own origin as Origin (refused: 403). Clients that are not browsers send
    no Origin and the Host they connected to.
    """

    def __init__(self, app: ASGIApp, rule: HostRule) -> None:
        self.app = app
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k: v for k, v in scope["headers"] if k in (b"host", b"origin")}
            host = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin")
            if not self.rule.allows(host):
                shown = host[:100] or "(none)"
                message = (
                    f"memoir: Host {shown!r} is not a name of this server; if clients really use it, "
                    "add it to MEMOIR_ALLOWED_HOSTS"
                )
                return await PlainTextResponse(message, status_code=421)(scope, receive, send)
            if origin is not None and not self.rule.allows_origin(origin.decode("latin-1")):
                shown = origin.decode("latin-1")[:100]
                message = (
                    f"memoir: Origin {shown!r} may not call this server (DNS-rebinding protection); "
                    "if that page should, add its host to MEMOIR_ALLOWED_HOSTS"
                )
                return await PlainTextResponse(message, status_code=403)(scope, receive, send)
        await self.app(scope, receive, send)


class DatabaseTokenVerifier:
    """The SDK's `TokenVerifier`: a bearer token -> an `AccessToken` carrying memoir's identity.

    Knows memoir's bearer tokens and, when `resource` is given (OAuth is on), the OAuth access
    tokens issued for that resource (server/oauth.py); a token bound to another resource is refused.
    """

    def __init__(self, tokens: Tokens, open_secret: str | None, resource: str | None = None) -> None:
        self.tokens = tokens
        self.open_secret = open_secret
        self.resource = resource
        self.oauth = OAuthStore(tokens.store)

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.open_secret is not None and hmac.compare_digest(token.encode(), self.open_secret.encode()):
            if await self.tokens.exist():
                return None  # a token was created since the request came in: no longer open
            return AccessToken(token="open", client_id=OPEN_CLIENT_ID, scopes=[SCOPE])
        info = await self.tokens.verify(token)
        if info is None:
            return await self._oauth(token)
        return AccessToken(
            token=info.token_id,  # the id, not the secret: nothing downstream needs the secret
            client_id=info.token_id,
            scopes=[SCOPE],
            subject=info.user_id,
            claims={"user_id": info.user_id, "admin": info.admin},
        )


    async def _oauth(self, token: str) -> AccessToken | None:
        if self.resource is None or not token.startswith(ACCESS_PREFIX):
            return None
        grant = await self.oauth.verify_access(token)
        if grant is None or grant.resource != self.resource:
            return None
        return AccessToken(
            token=grant.grant_id,
            client_id=grant.client_id,  # the OAuth client: what the SDK's revocation endpoint compares
            scopes=list(grant.scopes),
            expires_at=int(grant.access_expires_at),
            resource=grant.resource,
            subject=grant.user_id,
            claims={"user_id": grant.user_id, "admin": False, "token_id": grant.grant_id, "grant_id": grant.grant_id},
        )


def token_id(token: AccessToken) -> str:
    """The public id of the credential behind a verified request: a bearer token's id or an OAuth grant's."""
    return (token.claims or {}).get("token_id") or token.client_id


def http_caller() -> Caller:
    """The caller of the request being served, from its verified token (fails closed without one)."""
    token = get_access_token()
    if token is None:
        raise AccessDenied("this request carries no verified credentials; send a bearer token")
    if token.client_id == OPEN_CLIENT_ID:
        return Caller()
    claims = token.claims or {}
    return Caller(user_id=claims.get("user_id"), admin=bool(claims.get("admin")), token_id=token_id(token))


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
    settings: AccessSettings
    oauth: MemoirOAuthProvider | None = None  # set by server_options when OAuth is on

    @classmethod
    async def prepare(cls, tokens: Tokens, settings: Settings) -> HttpAccess:
        access = settings.access
        check_exposure(settings.host, await tokens.exist(), access.allow_unauthenticated)
        open_allowed = is_loopback(settings.host) or access.allow_unauthenticated
        return cls(
            tokens=tokens,
            open_secret=secrets.token_urlsafe(32) if open_allowed else None,
            settings=access,
        )

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    def server_options(self, base_url: str, path: str) -> dict[str, object]:
        """Keyword arguments for `MCPServer(...)`: the verifier, and memoir's OAuth authorization server
        where it can have a right issuer URL (server/oauth.py), else resource-server settings only."""
        public = self.settings.public_url or base_url
        resource = public + path
        if not oauth_issuer_ok(public):
            log.warning(
                "memoir: OAuth is off: %s is not https or a loopback address, so it cannot be an OAuth issuer; "
                "bearer tokens work as before. Behind a TLS proxy, set MEMOIR_PUBLIC_URL=https://... to offer OAuth",
                public,
            )
            return {
                "token_verifier": DatabaseTokenVerifier(self.tokens, self.open_secret),
                "auth": AuthSettings(  # no resource metadata: nothing to discover, the 401 names no issuer
                    issuer_url=public, resource_server_url=None, required_scopes=[SCOPE], validate_token_resource=False
                ),
            }
        verifier = DatabaseTokenVerifier(self.tokens, self.open_secret, resource)
        self.oauth = MemoirOAuthProvider(
            verifier, self.tokens, verifier.oauth, issuer=public, resource=resource,
            access_ttl=self.settings.oauth_access_ttl, refresh_ttl=self.settings.oauth_refresh_ttl,
        )
        return {
            "auth_server_provider": self.oauth,
            "auth": AuthSettings(
                issuer_url=public,
                resource_server_url=resource,
                required_scopes=[SCOPE],
                # The verifier checks each OAuth token's resource itself; bearer tokens have none.
                validate_token_resource=False,
                client_registration_options=ClientRegistrationOptions(
                    enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
                ),
                revocation_options=RevocationOptions(enabled=True),
            ),
        }

    def install(self, server: MCPServer) -> None:
        """The routes memoir adds beside the SDK's: the OAuth consent page, when OAuth is on."""
        if self.oauth is not None:
            server.custom_route(CONSENT_PATH, methods=["GET", "POST"])(consent_endpoint(self.oauth))  # type: ignore[arg-type]

    def wrap(self, app: ASGIApp, host: str, bound_address: str) -> ASGIApp:
        """`app` behind the Host/Origin check for this bind and, where allowed, open mode."""
        if self.open_secret is not None:
            app = OpenWhenNoTokens(app, self.tokens, self.open_secret)
            if self.oauth is not None:
                app = ClosedOnly(app, self.tokens)
        allowed = self.settings.allowed_hosts
        if self.settings.public_url:
            allowed = (*allowed, _PUBLIC_URL.fullmatch(self.settings.public_url)["host"])  # type: ignore[index]
        rule = host_rule(host, bound_address, allowed)
        return app if rule is None else HostCheck(app, rule)
