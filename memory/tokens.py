"""Bearer tokens for SSE and streamable HTTP: each belongs to one user, or is an admin token.

A token is `memoir_` followed by 32 random bytes (URL-safe base64): guessing is hopeless, so a
plain SHA-256 of it is a safe thing to store (no salt or slow hash needed - those protect
low-entropy passwords). Only the hash and a short public `token_id` are kept; the token itself
is shown once, when it is made. Verification hashes what the client sent, looks the hash up and
compares it again in constant time.

Every check reads the database, so a token created or revoked by another process (`memoir token
...` beside a running server) takes effect on the server's next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from .errors import InvalidArgument, TokenNotFound
from .limits import now
from .store import Store

TOKEN_PREFIX = "memoir_"


@dataclass(frozen=True)
class TokenInfo:
    """What is known about a token, without its secret."""

    token_id: str
    user_id: str | None
    admin: bool
    label: str | None
    created_at: str

    def describe(self) -> str:
        who = "admin" + (f" (default user '{self.user_id}')" if self.user_id else "") if self.admin else self.user_id
        return f"{self.token_id}  {who}  created {self.created_at}" + (f"  {self.label}" if self.label else "")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Tokens:
    """The `tokens` table of a store (schema migration 2)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, user_id: str | None, *, admin: bool = False, label: str | None = None) -> tuple[TokenInfo, str]:
        """Make a token; returns its description and the secret token (shown once, never stored)."""
        if user_id is not None:
            user_id = self.store.limits.user_id(user_id, "USER")
        elif not admin:
            raise InvalidArgument("USER", "a user token needs the user it belongs to; or pass --admin")
        if label is not None and len(label) > 200:
            raise InvalidArgument("label", f"is {len(label)} characters, over the limit of 200")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(token_id=secrets.token_hex(4), user_id=user_id, admin=admin, label=label, created_at=now())
        async with self.store.transaction() as db:
            await db.execute(
                "INSERT INTO tokens (token_id, token_hash, user_id, is_admin, label, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (info.token_id, hash_token(token), info.user_id, int(admin), label, info.created_at),
            )
        return info, token

    async def revoke(self, token_id_or_token: str) -> TokenInfo:
        """Remove a token, named by its token_id or by the token itself."""
        key = token_id_or_token.strip()
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT * FROM tokens WHERE token_id = ? OR token_hash = ?", (key, hash_token(key))
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise TokenNotFound(key)
            await db.execute("DELETE FROM tokens WHERE token_id = ?", (row["token_id"],))
        return _info(row)

    async def list(self) -> list[TokenInfo]:
        return [_info(r) for r in await self.store.fetch("SELECT * FROM tokens ORDER BY created_at, token_id")]

    async def exist(self) -> bool:
        """Whether any credential exists: a bearer token, an unexpired OAuth grant, an unused sign-in code or
        authorization code (memory/oauth_store.py). While none does, a loopback server is open."""
        rows = await self.store.fetch(
            "SELECT EXISTS (SELECT 1 FROM tokens) OR EXISTS (SELECT 1 FROM oauth_grants WHERE refresh_expires_at >= ?1 "
            "OR access_expires_at >= ?1) OR EXISTS (SELECT 1 FROM oauth_login_codes WHERE expires_at >= ?1) "
            "OR EXISTS (SELECT 1 FROM oauth_auth_codes WHERE grant_id IS NULL AND expires_at >= ?1) AS any_",
            (time.time(),),
        )
        return bool(rows[0]["any_"])

    async def verify(self, token: str) -> TokenInfo | None:
        """The token's description when `token` is a current token, else None."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        rows = await self.store.fetch("SELECT * FROM tokens WHERE token_hash = ?", (digest,))
        if not rows or not hmac.compare_digest(rows[0]["token_hash"], digest):
            return None
        return _info(rows[0])


def _info(row) -> TokenInfo:  # noqa: ANN001 - a sqlite3.Row
    return TokenInfo(
        token_id=row["token_id"],
        user_id=row["user_id"],
        admin=bool(row["is_admin"]),
        label=row["label"],
        created_at=row["created_at"],
    )
