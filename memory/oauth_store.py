"""What memoir's OAuth authorization server keeps (schema migration 5), free of MCP and HTTP.

- Sign-in codes (`memoir token create USER --code`): a person proves who they are on the
  authorize page with one. 80 random bits shown as `ABCD-EFGH-JKMN-PQRS`, valid 10 minutes,
  used once, stored as a SHA-256 hash.
- Clients registered dynamically (RFC 7591), as the SDK validated them.
- Authorization codes: 5 minutes, single use; a second use revokes what the first one got.
- Grants: one per approval (a client acting for one user on one resource), each holding one
  access token (1 hour by default) and one refresh token (30 days by default), both stored
  hashed. A refresh rotates both; presenting a rotated-out refresh token again means it was
  copied, so the whole grant is revoked (RFC 9700 §4.14.2).

Like bearer tokens (memory/tokens.py) every check reads the database, so `memoir token revoke`
beside a running server takes effect on its next request.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument
from .limits import format_time, now
from .store import Store
from .tokens import hash_token

ACCESS_PREFIX = "memoir_at_"
REFRESH_PREFIX = "memoir_rt_"
LOGIN_CODE_TTL = 600.0
AUTH_CODE_TTL = 300.0
DEFAULT_ACCESS_TTL = 3600.0
DEFAULT_REFRESH_TTL = 30 * 24 * 3600.0
CLIENT_IDLE_DAYS = 30  # a registered client with no grant for this long is forgotten

_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a terminal, typed elsewhere


def _when(unix: float) -> str:
    from datetime import datetime, timezone

    return format_time(datetime.fromtimestamp(unix, timezone.utc))


def normalize_login_code(text: str) -> str:
    """A sign-in code as typed (any case, with or without dashes or spaces) in its stored form."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


@dataclass(frozen=True)
class LoginCodeInfo:
    code_id: str
    user_id: str
    created_at: str
    expires_at: float

    def describe(self) -> str:
        return f"{self.code_id}  {self.user_id}  one-time sign-in code, unused, expires {_when(self.expires_at)}"


@dataclass(frozen=True)
class GrantInfo:
    """An OAuth grant, without its secrets."""

    grant_id: str
    client_id: str
    client_name: str | None
    user_id: str
    scopes: tuple[str, ...]
    resource: str
    created_at: str
    access_expires_at: float
    refresh_expires_at: float

    def describe(self) -> str:
        name = repr(self.client_name) if self.client_name else "(unnamed)"
        return (
            f"{self.grant_id}  {self.user_id}  OAuth grant to client {name} ({self.client_id})  "
            f"created {self.created_at}  refresh until {_when(self.refresh_expires_at)}"
        )


@dataclass(frozen=True)
class IssuedTokens:
    grant: GrantInfo
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class AuthCodeRecord:
    client_id: str
    user_id: str
    request: dict[str, Any]
    expires_at: float


class OAuthStore:
    """The OAuth tables of a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- sign-in codes ----------------------------------------------------------------------

    async def create_login_code(self, user_id: str, ttl: float = LOGIN_CODE_TTL) -> tuple[LoginCodeInfo, str]:
        """A one-time sign-in code for `user_id`; returns its description and the code (shown once)."""
        user_id = self.store.limits.user_id(user_id, "USER")
        raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(16))  # 16 * log2(31) = 79 bits
        code = "-".join(raw[i : i + 4] for i in range(0, 16, 4))
        info = LoginCodeInfo("code-" + secrets.token_hex(4), user_id, now(), time.time() + ttl)
        async with self.store.transaction() as db:
            await db.execute("DELETE FROM oauth_login_codes WHERE expires_at < ?", (time.time(),))
            await db.execute(
                "INSERT INTO oauth_login_codes (code_id, code_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (info.code_id, hash_token(raw), user_id, info.created_at, info.expires_at),
            )
        return info, code

    async def use_login_code(self, code: str) -> str | None:
        """The user of a current sign-in code, which is used up by this call; None if there is none."""
        raw = normalize_login_code(code)
        if len(raw) != 16:
            return None
        async with self.store.transaction() as db:
            async with db.execute(
                "DELETE FROM oauth_login_codes WHERE code_hash = ? RETURNING user_id, expires_at", (hash_token(raw),)
            ) as cursor:
                row = await cursor.fetchone()
        if row is None or row["expires_at"] < time.time():
            return None
        return row["user_id"]

    # -- clients -----------------------------------------------------------------------------

    async def save_client(self, client_id: str, client_name: str | None, metadata: str) -> None:
        cutoff = _when(time.time() - CLIENT_IDLE_DAYS * 86400)
        async with self.store.transaction() as db:
            # Registration is open to anyone: clients nobody approved within a month are dropped.
            await db.execute(
                "DELETE FROM oauth_clients WHERE created_at < ? AND client_id NOT IN (SELECT client_id FROM oauth_grants)",
                (cutoff,),
            )
            await db.execute(
                "INSERT INTO oauth_clients (client_id, client_name, metadata, created_at) VALUES (?, ?, ?, ?)",
                (client_id, client_name, metadata, now()),
            )

    async def client_metadata(self, client_id: str) -> str | None:
        rows = await self.store.fetch("SELECT metadata FROM oauth_clients WHERE client_id = ?", (client_id,))
        return rows[0]["metadata"] if rows else None

    # -- authorization codes -----------------------------------------------------------------

    async def save_auth_code(self, client_id: str, user_id: str, request: dict[str, Any]) -> tuple[str, float]:
        """A new authorization code for an approved request; returns (code, expires_at)."""
        code = secrets.token_urlsafe(32)
        expires_at = time.time() + AUTH_CODE_TTL
        async with self.store.transaction() as db:
            await db.execute("DELETE FROM oauth_auth_codes WHERE expires_at < ?", (time.time() - AUTH_CODE_TTL,))
            await db.execute(
                "INSERT INTO oauth_auth_codes (code_hash, client_id, user_id, request, expires_at) VALUES (?, ?, ?, ?, ?)",
                (hash_token(code), client_id, user_id, json.dumps(request), expires_at),
            )
        return code, expires_at

    async def load_auth_code(self, code: str) -> AuthCodeRecord | None:
        """The unused code's record; a code used before revokes the grant it got, and reads as None."""
        if len(code) > 200:
            return None
        digest = hash_token(code)
        rows = await self.store.fetch("SELECT * FROM oauth_auth_codes WHERE code_hash = ?", (digest,))
        if not rows:
            return None
        row = rows[0]
        if row["grant_id"] is not None:
            await self.revoke_grant(row["grant_id"])
            return None
        return AuthCodeRecord(row["client_id"], row["user_id"], json.loads(row["request"]), row["expires_at"])

    # -- grants ------------------------------------------------------------------------------

    async def exchange_auth_code(
        self,
        code: str,
        *,
        client_name: str | None,
        access_ttl: float = DEFAULT_ACCESS_TTL,
        refresh_ttl: float = DEFAULT_REFRESH_TTL,
    ) -> IssuedTokens | None:
        """Use an authorization code once: a new grant with its tokens; None if it was used meanwhile."""
        digest = hash_token(code)
        access, refresh = ACCESS_PREFIX + secrets.token_urlsafe(32), REFRESH_PREFIX + secrets.token_urlsafe(32)
        moment = time.time()
        async with self.store.transaction() as db:
            await db.execute("DELETE FROM oauth_grants WHERE refresh_expires_at < ? AND access_expires_at < ?", (moment, moment))
            async with db.execute(
                "SELECT * FROM oauth_auth_codes WHERE code_hash = ? AND grant_id IS NULL AND expires_at >= ?",
                (digest, moment),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return None
            request = json.loads(row["request"])
            grant = GrantInfo(
                grant_id="oauth-" + secrets.token_hex(4),
                client_id=row["client_id"],
                client_name=client_name,
                user_id=row["user_id"],
                scopes=tuple(request["scopes"]),
                resource=request["resource"],
                created_at=now(),
                access_expires_at=moment + access_ttl,
                refresh_expires_at=moment + refresh_ttl,
            )
            await db.execute(
                "INSERT INTO oauth_grants (grant_id, client_id, client_name, user_id, scopes, resource, created_at, "
                "access_hash, access_expires_at, refresh_hash, refresh_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    grant.grant_id, grant.client_id, grant.client_name, grant.user_id, " ".join(grant.scopes),
                    grant.resource, grant.created_at, hash_token(access), grant.access_expires_at,
                    hash_token(refresh), grant.refresh_expires_at,
                ),
            )
            await db.execute("UPDATE oauth_auth_codes SET grant_id = ? WHERE code_hash = ?", (grant.grant_id, digest))
        return IssuedTokens(grant, access, refresh)

    async def verify_access(self, token: str) -> GrantInfo | None:
        """The grant of a current (unexpired) access token, else None."""
        if not token.startswith(ACCESS_PREFIX) or len(token) > 200:
            return None
        rows = await self.store.fetch("SELECT * FROM oauth_grants WHERE access_hash = ?", (hash_token(token),))
        if not rows or rows[0]["access_expires_at"] < time.time():
            return None
        return _grant(rows[0])

    async def find_refresh(self, token: str) -> GrantInfo | None:
        """The grant a current refresh token belongs to. A rotated-out one revokes its grant (it was copied)."""
        if not token.startswith(REFRESH_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        rows = await self.store.fetch("SELECT * FROM oauth_grants WHERE refresh_hash = ?", (digest,))
        if rows:
            return _grant(rows[0])
        spent = await self.store.fetch("SELECT grant_id FROM oauth_spent_refresh WHERE refresh_hash = ?", (digest,))
        if spent:
            await self.revoke_grant(spent[0]["grant_id"])
        return None

    async def rotate(
        self, grant_id: str, refresh_token: str, *, access_ttl: float = DEFAULT_ACCESS_TTL, refresh_ttl: float = DEFAULT_REFRESH_TTL
    ) -> IssuedTokens | None:
        """New access and refresh tokens for a grant whose current refresh token is `refresh_token`."""
        old = hash_token(refresh_token)
        access, refresh = ACCESS_PREFIX + secrets.token_urlsafe(32), REFRESH_PREFIX + secrets.token_urlsafe(32)
        moment = time.time()
        async with self.store.transaction() as db:
            cursor = await db.execute(
                "UPDATE oauth_grants SET access_hash = ?, access_expires_at = ?, refresh_hash = ?, refresh_expires_at = ? "
                "WHERE grant_id = ? AND refresh_hash = ? AND refresh_expires_at >= ?",
                (hash_token(access), moment + access_ttl, hash_token(refresh), moment + refresh_ttl, grant_id, old, moment),
            )
            if cursor.rowcount != 1:
                return None
            await db.execute("INSERT INTO oauth_spent_refresh (refresh_hash, grant_id) VALUES (?, ?)", (old, grant_id))
            async with db.execute("SELECT * FROM oauth_grants WHERE grant_id = ?", (grant_id,)) as rows:
                row = await rows.fetchone()
        return IssuedTokens(_grant(row), access, refresh)

    async def revoke_grant(self, grant_id: str) -> GrantInfo | None:
        """Delete a grant (its access and refresh tokens stop working at once); None if there was none."""
        async with self.store.transaction() as db:
            async with db.execute("DELETE FROM oauth_grants WHERE grant_id = ? RETURNING *", (grant_id,)) as cursor:
                row = await cursor.fetchone()
            await db.execute("DELETE FROM oauth_spent_refresh WHERE grant_id = ?", (grant_id,))
        return None if row is None else _grant(row)

    async def revoke(self, key: str) -> GrantInfo | LoginCodeInfo | None:
        """Revoke a grant (by id, access token or refresh token) or an unused sign-in code (by id or code)."""
        key = key.strip()
        digest = hash_token(key)
        rows = await self.store.fetch(
            "SELECT grant_id FROM oauth_grants WHERE grant_id = ? OR access_hash = ? OR refresh_hash = ?",
            (key, digest, digest),
        )
        if rows:
            return await self.revoke_grant(rows[0]["grant_id"])
        async with self.store.transaction() as db:
            async with db.execute(
                "DELETE FROM oauth_login_codes WHERE code_id = ? OR code_hash = ? RETURNING *",
                (key, hash_token(normalize_login_code(key))),
            ) as cursor:
                row = await cursor.fetchone()
        return None if row is None else _code(row)

    async def grants(self) -> list[GrantInfo]:
        rows = await self.store.fetch(
            "SELECT * FROM oauth_grants WHERE refresh_expires_at >= ? OR access_expires_at >= ? ORDER BY created_at, grant_id",
            (time.time(), time.time()),
        )
        return [_grant(r) for r in rows]

    async def login_codes(self) -> list[LoginCodeInfo]:
        rows = await self.store.fetch(
            "SELECT * FROM oauth_login_codes WHERE expires_at >= ? ORDER BY created_at, code_id", (time.time(),)
        )
        return [_code(r) for r in rows]


def check_user_for_code(user_id: str | None, admin: bool) -> str:
    if admin or user_id is None:
        raise InvalidArgument(
            "--code", "a sign-in code signs in one user; name the user (`memoir token create USER --code`), without --admin"
        )
    return user_id


def _grant(row) -> GrantInfo:  # noqa: ANN001 - a sqlite3.Row
    return GrantInfo(
        grant_id=row["grant_id"],
        client_id=row["client_id"],
        client_name=row["client_name"],
        user_id=row["user_id"],
        scopes=tuple(row["scopes"].split()),
        resource=row["resource"],
        created_at=row["created_at"],
        access_expires_at=row["access_expires_at"],
        refresh_expires_at=row["refresh_expires_at"],
    )


def _code(row) -> LoginCodeInfo:  # noqa: ANN001
    return LoginCodeInfo(row["code_id"], row["user_id"], row["created_at"], row["expires_at"])
