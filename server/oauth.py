"""memoir as its own OAuth 2.1 authorization server, on the SDK's support (`mcp.server.auth`).

The SDK serves the endpoints and the metadata: `/.well-known/oauth-protected-resource/<path>`
(RFC 9728), `/.well-known/oauth-authorization-server` (RFC 8414), `/authorize` (code flow, PKCE
S256 only), `/token` (authorization_code, refresh_token), `/register` (RFC 7591 dynamic client
registration) and `/revoke` (RFC 7009). It checks the request shapes, the client's
authentication, redirect URIs against the registered ones and the PKCE verifier. This module is
the `OAuthAuthorizationServerProvider` behind them, and the one page the SDK leaves to the
server: `/consent`, where a person proves who they are with something memoir already issues
(their memoir token, or a one-time sign-in code from `memoir token create USER --code`) and
allows or denies the client by name.

What a grant gives: access tokens for that user only (never admin), bound to this server's MCP
endpoint (the RFC 8707 resource), valid MEMOIR_OAUTH_ACCESS_TTL seconds (1 h), with a refresh
token (MEMOIR_OAUTH_REFRESH_TTL, 30 days) that rotates on each use; a rotated-out refresh token
presented again revokes the grant, as does a second use of an authorization code. Everything is
stored hashed (memory/oauth_store.py). Client ID metadata documents are not offered: the SDK's
authorization server has no support for them (its metadata cannot advertise them).

OAuth is offered where its issuer URL can be right: the public URL (MEMOIR_PUBLIC_URL, for a
server behind a TLS proxy) or the bound loopback address (`http://127.0.0.1:PORT`,
`http://localhost:PORT`). While no credential exists a loopback server is open and all of it
answers 404 (`ClosedOnly`): an open server advertises no OAuth.
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.server.transport_security import RequestBodyLimitMiddleware
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from memoir.memory.oauth_store import LOGIN_CODE_TTL, OAuthStore
from memoir.memory.tokens import TOKEN_PREFIX, Tokens

log = logging.getLogger("memoir")

CONSENT_PATH = "/consent"
OAUTH_PATHS = ("/.well-known/oauth-", "/authorize", "/token", "/register", "/revoke", CONSENT_PATH)
SDK_LOOPBACK_ISSUER_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # what mcp.server.auth.routes accepts over http
PENDING_TTL = 600.0  # seconds a person has to answer the consent page
MAX_PENDING = 1000
MAX_TRIES = 5  # wrong credentials per authorization request
MAX_CONSENT_BODY = 16 * 1024
MAX_REDIRECT_URIS = 10
MAX_CLIENT_NAME = 200
FORBIDDEN_SCHEMES = {"javascript", "data", "file", "vbscript", "about", "blob", "filesystem"}
CSRF_COOKIE = "memoir_csrf"


def oauth_issuer_ok(url: str) -> bool:
    """Whether the SDK's authorization server may use `url` as its issuer: https, or http on loopback."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return parts.scheme == "https" or (parts.scheme == "http" and host in SDK_LOOPBACK_ISSUER_HOSTS)


def same_resource(given: str, ours: str) -> bool:
    """RFC 8707: `given` names this server's MCP endpoint (a trailing slash and host case aside;
    on loopback, 127.0.0.1 / localhost / ::1 are the same machine)."""
    a, b = urlsplit(given.strip()), urlsplit(ours)
    if (a.scheme, a.port, a.path.rstrip("/")) != (b.scheme, b.port, b.path.rstrip("/")) or a.query or a.fragment:
        return False
    hosts = {(a.hostname or "").lower(), (b.hostname or "").lower()}
    return len(hosts) == 1 or hosts <= {"localhost", "127.0.0.1", "::1"}


class GrantRefreshToken(RefreshToken):
    grant_id: str


@dataclass
class Pending:
    """An authorization request waiting for the person's answer on the consent page."""

    client: OAuthClientInformationFull
    params: AuthorizationParams
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    tries: int = 0


class MemoirOAuthProvider:
    """The SDK's `OAuthAuthorizationServerProvider` over memoir's tables."""

    def __init__(
        self,
        verifier,  # noqa: ANN001 - server.access.DatabaseTokenVerifier (it also knows bearer tokens)
        tokens: Tokens,
        oauth: OAuthStore,
        *,
        issuer: str,
        resource: str,
        access_ttl: float,
        refresh_ttl: float,
    ) -> None:
        self.verifier = verifier
        self.tokens = tokens
        self.oauth = oauth
        self.issuer = issuer
        self.resource = resource
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.secure_cookie = issuer.startswith("https:")
        self._pending: OrderedDict[str, Pending] = OrderedDict()

    # -- clients -----------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        if len(client_id) > 200:
            return None
        stored = await self.oauth.client_metadata(client_id)
        return None if stored is None else OAuthClientInformationFull.model_validate_json(stored)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        uris = client_info.redirect_uris or []
        if len(uris) > MAX_REDIRECT_URIS:
            raise RegistrationError("invalid_redirect_uri", f"at most {MAX_REDIRECT_URIS} redirect_uris, not {len(uris)}")
        for uri in uris:
            problem = _redirect_problem(str(uri))
            if problem:
                raise RegistrationError("invalid_redirect_uri", f"redirect_uri {str(uri)[:200]!r}: {problem}")
        name = client_info.client_name
        if name is not None and (len(name) > MAX_CLIENT_NAME or not name.isprintable()):
            raise RegistrationError(
                "invalid_client_metadata", f"client_name must be at most {MAX_CLIENT_NAME} printable characters"
            )
        await self.oauth.save_client(client_info.client_id, name, client_info.model_dump_json(exclude_none=True))

    # -- the authorization request and the consent page --------------------------------------

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        if params.resource is not None and not same_resource(params.resource, self.resource):
            raise AuthorizeError("invalid_target", f"this server is the resource {self.resource}, not {params.resource[:200]}")
        self._expire_pending()
        while len(self._pending) >= MAX_PENDING:
            self._pending.popitem(last=False)
        request_id = secrets.token_urlsafe(24)
        self._pending[request_id] = Pending(client, params)
        return f"{self.issuer}{CONSENT_PATH}?request={request_id}"

    def _expire_pending(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL
        while self._pending and next(iter(self._pending.values())).created < cutoff:
            self._pending.popitem(last=False)

    async def consent(self, request: Request) -> Response:
        """GET: the page asking the person; POST: their answer."""
        self._expire_pending()
        if request.method == "GET":
            request_id = request.query_params.get("request", "")
            pending = self._pending.get(request_id)
            if pending is None:
                return _message_page(
                    "This sign-in request is unknown or expired",
                    f"Requests last {PENDING_TTL / 60:.0f} minutes. Start again from your app.",
                    400,
                )
            return self._page(request_id, pending)
        form = await request.form(max_files=0, max_fields=10)
        request_id = str(form.get("request", ""))
        pending = self._pending.get(request_id)
        if pending is None:
            return _message_page(
                "This sign-in request is unknown or expired",
                f"Requests last {PENDING_TTL / 60:.0f} minutes, and each can be answered once. Start again from your app.",
                400,
            )
        sent, cookie = str(form.get("csrf", "")), request.cookies.get(CSRF_COOKIE, "")
        if not (hmac.compare_digest(sent.encode(), pending.csrf.encode()) and hmac.compare_digest(cookie.encode(), pending.csrf.encode())):
            return _message_page(
                "This form is stale or was not sent from memoir's page",
                "Reload the page your app opened, then answer again.",
                403,
            )
        if form.get("action") != "allow":
            self._pending.pop(request_id, None)
            return self._back(pending, error="access_denied", error_description="the person denied access")
        user_id = await self._sign_in(str(form.get("credential", "")))
        if isinstance(user_id, _Refusal):
            pending.tries += 1
            if pending.tries >= MAX_TRIES:
                self._pending.pop(request_id, None)
                return self._back(pending, error="access_denied", error_description="too many wrong credentials")
            return self._page(request_id, pending, error=user_id.text, status=401)
        self._pending.pop(request_id, None)
        params = pending.params
        code, _ = await self.oauth.save_auth_code(
            pending.client.client_id,
            user_id,
            {
                "redirect_uri": str(params.redirect_uri),
                "redirect_uri_provided_explicitly": params.redirect_uri_provided_explicitly,
                "code_challenge": params.code_challenge,
                "scopes": params.scopes or ["memoir"],
                "resource": self.resource,
            },
        )
        log.info("memoir: user '%s' allowed OAuth client %s", user_id, pending.client.client_id)
        return self._back(pending, code=code)

    async def _sign_in(self, credential: str) -> str | _Refusal:
        credential = credential.strip()[:300]
        if not credential:
            return _Refusal("Paste your memoir token or a sign-in code first.")
        if credential.startswith(TOKEN_PREFIX):
            info = await self.tokens.verify(credential)
            if info is not None and info.admin:
                return _Refusal(
                    "An admin token cannot sign in: a grant acts for one user. Create a code for that user with "
                    "`memoir token create USER --code`."
                )
            if info is not None and info.user_id:
                return info.user_id
        else:
            user_id = await self.oauth.use_login_code(credential)
            if user_id is not None:
                return user_id
        return _Refusal(
            "That is not a current memoir token or sign-in code of this server. Create a code with "
            f"`memoir token create USER --code` and paste it within {LOGIN_CODE_TTL / 60:.0f} minutes."
        )

    def _back(self, pending: Pending, **values: str) -> Response:
        """Send the browser back to the client's redirect URI (RFC 9207: with the issuer)."""
        target = construct_redirect_uri(
            str(pending.params.redirect_uri), **values, state=pending.params.state, iss=self.issuer
        )
        return RedirectResponse(target, status_code=303, headers=_page_headers(_origin_of(str(pending.params.redirect_uri))))

    def _page(self, request_id: str, pending: Pending, *, error: str | None = None, status: int = 200) -> Response:
        client = pending.client
        name = client.client_name or "An unnamed app"
        redirect = str(pending.params.redirect_uri)
        nonce = secrets.token_urlsafe(16)
        e = html.escape
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin"><title>memoir: allow access?</title>
<style nonce="{nonce}">{_STYLE}</style></head>
<body><main>
<h1>Allow <q>{e(name)}</q> to use your memoir?</h1>
<p><strong>{e(name)}</strong> (the name the app gave itself; memoir has not checked it) asks to read and change
the memories this server keeps about you, at <code>{e(self.resource)}</code>.</p>
<p>After you answer, your browser goes back to <code>{e(redirect)}</code>. Allow only if you started this from that app.</p>
<form method="post" action="{CONSENT_PATH}">
<input type="hidden" name="request" value="{e(request_id)}">
<input type="hidden" name="csrf" value="{e(pending.csrf)}">
<label for="credential">Your memoir token, or a sign-in code from <code>memoir token create YOU --code</code></label>
<input id="credential" name="credential" type="password" autocomplete="off" spellcheck="false" autofocus>
{f'<p class="error" role="alert">{e(error)}</p>' if error else ''}
<p><button type="submit" name="action" value="allow">Allow</button>
<button type="submit" name="action" value="deny">Deny</button></p>
</form>
<p class="small">Client id <code>{e(client.client_id)}</code>. The app gets access for you only, and
<code>memoir token revoke</code> ends it at any time (<code>memoir token list</code> shows it).</p>
</main></body></html>"""
        headers = _page_headers(_origin_of(redirect), nonce)
        response = HTMLResponse(body, status_code=status, headers=headers)
        response.set_cookie(
            CSRF_COOKIE, pending.csrf, max_age=int(PENDING_TTL), path=CONSENT_PATH,
            httponly=True, samesite="strict", secure=self.secure_cookie,
        )
        return response

    # -- codes and tokens --------------------------------------------------------------------

    async def load_authorization_code(self, client: OAuthClientInformationFull, authorization_code: str) -> AuthorizationCode | None:
        record = await self.oauth.load_auth_code(authorization_code)
        if record is None or record.client_id != client.client_id:
            return None
        request = record.request
        return AuthorizationCode(
            code=authorization_code,
            scopes=request["scopes"],
            expires_at=record.expires_at,
            client_id=record.client_id,
            code_challenge=request["code_challenge"],
            redirect_uri=request["redirect_uri"],
            redirect_uri_provided_explicitly=request["redirect_uri_provided_explicitly"],
            resource=request["resource"],
            subject=record.user_id,
        )

    async def exchange_authorization_code(self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode) -> OAuthToken:
        issued = await self.oauth.exchange_auth_code(
            authorization_code.code, client_name=client.client_name, access_ttl=self.access_ttl, refresh_ttl=self.refresh_ttl
        )
        if issued is None:
            raise TokenError("invalid_grant", "authorization code was already used or has expired; authorize again")
        log.info("memoir: OAuth grant %s for user '%s' to client %s", issued.grant.grant_id, issued.grant.user_id, client.client_id)
        return self._token_response(issued)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> GrantRefreshToken | None:
        grant = await self.oauth.find_refresh(refresh_token)
        if grant is None or grant.client_id != client.client_id:
            return None
        return GrantRefreshToken(
            token=refresh_token,
            client_id=grant.client_id,
            scopes=list(grant.scopes),
            expires_at=int(grant.refresh_expires_at),
            resource=grant.resource,
            subject=grant.user_id,
            grant_id=grant.grant_id,
        )

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: GrantRefreshToken, scopes: list[str]
    ) -> OAuthToken:
        issued = await self.oauth.rotate(
            refresh_token.grant_id, refresh_token.token, access_ttl=self.access_ttl, refresh_ttl=self.refresh_ttl
        )
        if issued is None:
            raise TokenError("invalid_grant", "refresh token was already used or revoked; authorize again")
        return self._token_response(issued)

    def _token_response(self, issued) -> OAuthToken:  # noqa: ANN001 - oauth_store.IssuedTokens
        return OAuthToken(
            access_token=issued.access_token,
            token_type="Bearer",
            expires_in=int(issued.grant.access_expires_at - time.time()),
            scope=" ".join(issued.grant.scopes),
            refresh_token=issued.refresh_token,
        )

    async def load_access_token(self, token: str) -> AccessToken | None:
        return await self.verifier.verify_token(token)

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        """Revoking either token of a grant revokes the grant. Bearer tokens are not revoked here
        (their `client_id` never matches an OAuth client's, so the SDK does not get this far)."""
        grant_id = token.grant_id if isinstance(token, GrantRefreshToken) else (token.claims or {}).get("grant_id")
        if grant_id:
            await self.oauth.revoke_grant(grant_id)


@dataclass(frozen=True)
class _Refusal:
    text: str


def _redirect_problem(uri: str) -> str | None:
    """Why a redirect URI may not be registered, or None: https anywhere, http only on loopback (RFC 8252
    §7.3), or an app's private-use scheme (§7.1); never a scheme that runs or reads something in the browser."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.fragment:
        return "must not have a fragment"
    if scheme in FORBIDDEN_SCHEMES or not scheme:
        return f"the scheme {scheme or '(none)'!r} is not allowed"
    if scheme == "http" and (parts.hostname or "").lower() not in ("localhost", "127.0.0.1", "::1"):
        return "http is only allowed on a loopback address (127.0.0.1, [::1], localhost); use https"
    if scheme in ("http", "https") and not parts.hostname:
        return "has no host"
    return None


def _origin_of(uri: str) -> str:
    """A CSP source for the redirect target: `scheme://host:port`, or `scheme:` for an app's scheme."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    return f"{parts.scheme}:"


def _page_headers(redirect_origin: str, nonce: str | None = None) -> dict[str, str]:
    # form-action must allow the redirect the form's answer leads to (browsers apply it to redirects too).
    style = f"'nonce-{nonce}'" if nonce else "'none'"
    csp = (
        f"default-src 'none'; style-src {style}; form-action 'self' {redirect_origin}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _message_page(title: str, text: str, status: int) -> Response:
    nonce = secrets.token_urlsafe(16)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>memoir</title>'
        f'<style nonce="{nonce}">{_STYLE}</style></head><body><main><h1>{html.escape(title)}</h1>'
        f"<p>{html.escape(text)}</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=_page_headers("'self'", nonce))


_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}"
    "code{background:#f3f3f3;padding:0 .2em;word-break:break-all}label{display:block;margin:1rem 0 .3rem}"
    "input[type=password]{width:100%;padding:.4rem;font:inherit}button{font:inherit;padding:.4rem 1.2rem;margin-right:.5rem}"
    ".error{color:#a00}.small{font-size:.85rem;color:#555}"
)


def consent_endpoint(provider: MemoirOAuthProvider) -> ASGIApp:
    """The consent page as an ASGI app, its request body capped (it is a small form)."""
    from starlette.routing import request_response

    return RequestBodyLimitMiddleware(request_response(provider.consent), MAX_CONSENT_BODY)


class ClosedOnly:
    """ASGI wrapper: the OAuth endpoints and metadata answer 404 while no credential exists (open server)."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(OAUTH_PATHS) and not await self.tokens.exist():
            response = Response(
                "memoir: this server is open (no token exists), so it offers no OAuth; "
                "`memoir token create USER` closes it\n",
                status_code=404,
                media_type="text/plain",
            )
            return await response(scope, receive, send)
        await self.app(scope, receive, send)
