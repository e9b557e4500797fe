"""The access settings of SSE / streamable HTTP, read from the environment.

Kept apart from server/access.py (which needs the MCP SDK and Starlette) so that reading the
settings imports neither: `memoir hook ...` runs on every prompt and must start fast.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # extraction's 100,000 characters fit with room to spare


@dataclass(frozen=True)
class AccessSettings:
    """| variable | default | meaning |
    |---|---|---|
    | MEMOIR_ALLOW_UNAUTHENTICATED | off | serve a non-loopback address with no token (anyone who can reach it can use it) |
    | MEMOIR_ALLOWED_HOSTS | (none) | comma-separated Host names (optionally `name:port`) accepted besides the bound address's own |
    | MEMOIR_RATE_LIMIT | 600 | tool calls and resource reads per minute per token (0: no limit) |
    | MEMOIR_RATE_BURST | 60 | how many of them may come at once |
    | MEMOIR_CALL_TIMEOUT | 180 | seconds one tool call may take (0: no limit); a stopped call changed nothing |
    | MEMOIR_MAX_BODY_BYTES | 1048576 | the largest HTTP request body accepted (413 above it) |
    | MEMOIR_MAX_SESSIONS_PER_TOKEN | 32 | open HTTP sessions + SSE streams per token (0: no limit; 429 above it) |
    | MEMOIR_MAX_SESSIONS_PER_ADDRESS | 32 | the same per client address, for requests without a token (open server) |
    | MEMOIR_SESSION_IDLE_TIMEOUT | 300 | seconds an HTTP session may go unused before it is closed (0: never) |
    | MEMOIR_PUBLIC_URL | (the bound address) | `https://host[:port]` clients reach this server at (a TLS proxy's): the OAuth issuer and resource; its host is an allowed Host |
    | MEMOIR_OAUTH_ACCESS_TTL | 3600 | seconds an OAuth access token is valid |
    | MEMOIR_OAUTH_REFRESH_TTL | 2592000 | seconds an OAuth refresh token is valid (30 days; each refresh issues a new one) |
    """

    allow_unauthenticated: bool = False
    allowed_hosts: tuple[str, ...] = ()
    rate_per_minute: float = 600.0
    rate_burst: int = 60
    call_timeout: float = 180.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    sessions_per_token: int = 32
    sessions_per_address: int = 32
    session_idle_timeout: float = 300.0
    public_url: str | None = None
    oauth_access_ttl: float = 3600.0
    oauth_refresh_ttl: float = 30 * 24 * 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AccessSettings:
        values: dict[str, object] = {}
        if env.get("MEMOIR_ALLOW_UNAUTHENTICATED"):
            values["allow_unauthenticated"] = env["MEMOIR_ALLOW_UNAUTHENTICATED"].strip().lower() in ("1", "true", "yes")
        if env.get("MEMOIR_ALLOWED_HOSTS"):
            values["allowed_hosts"] = tuple(h.strip() for h in env["MEMOIR_ALLOWED_HOSTS"].split(",") if h.strip())
        if env.get("MEMOIR_PUBLIC_URL"):
            values["public_url"] = env["MEMOIR_PUBLIC_URL"].strip().rstrip("/")
        for name, key, kind in (
            ("MEMOIR_RATE_LIMIT", "rate_per_minute", float),
            ("MEMOIR_RATE_BURST", "rate_burst", int),
            ("MEMOIR_CALL_TIMEOUT", "call_timeout", float),
            ("MEMOIR_MAX_BODY_BYTES", "max_body_bytes", int),
            ("MEMOIR_MAX_SESSIONS_PER_TOKEN", "sessions_per_token", int),
            ("MEMOIR_MAX_SESSIONS_PER_ADDRESS", "sessions_per_address", int),
            ("MEMOIR_SESSION_IDLE_TIMEOUT", "session_idle_timeout", float),
            ("MEMOIR_OAUTH_ACCESS_TTL", "oauth_access_ttl", float),
            ("MEMOIR_OAUTH_REFRESH_TTL", "oauth_refresh_ttl", float),
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
        if self.sessions_per_token < 0 or self.sessions_per_address < 0:
            raise ValueError("MEMOIR_MAX_SESSIONS_PER_TOKEN and MEMOIR_MAX_SESSIONS_PER_ADDRESS must be 0 (no limit) or more")
        if not 0 <= self.session_idle_timeout < float("inf"):
            raise ValueError("MEMOIR_SESSION_IDLE_TIMEOUT must be 0 (never) or a number of seconds")
        if not (60 <= self.oauth_access_ttl <= 86400):
            raise ValueError("MEMOIR_OAUTH_ACCESS_TTL must be 60 to 86400 seconds (default 3600)")
        if not (self.oauth_access_ttl <= self.oauth_refresh_ttl <= 366 * 86400):
            raise ValueError("MEMOIR_OAUTH_REFRESH_TTL must be at least the access-token lifetime and at most 366 days")
        if self.public_url is not None:
            match = _PUBLIC_URL.fullmatch(self.public_url)
            if match is None or _parse_host(match["host"]) is None:
                raise ValueError(
                    f"MEMOIR_PUBLIC_URL must be scheme://host[:port] with no path, like https://memoir.example.com; "
                    f"not {self.public_url!r}"
                )
        for entry in self.allowed_hosts:
            if _parse_host(entry) is None:
                raise ValueError(f"MEMOIR_ALLOWED_HOSTS: {entry!r} is not a host name, address or name:port")


# A Host header value (or the host part of an Origin): a name or IPv4 address, or a bracketed
# IPv6 address, and an optional port.
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>[^/?#@]+)")
_PUBLIC_URL = re.compile(r"(?P<scheme>https?)://(?P<host>[^/?#@]+)", re.IGNORECASE)


def _parse_host(value: str) -> tuple[str, str | None] | None:
    """(name, port or None), lower-cased, IPv6 bracketed; None if `value` is not a host[:port]."""
    value = value.strip().lower()
    try:  # a bare IPv6 address, as someone might write it in MEMOIR_ALLOWED_HOSTS
        return f"[{ipaddress.IPv6Address(value)}]", None
    except ValueError:
        pass
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    name = match["name"]
    if name.startswith("["):  # one spelling per address: [::ffff:127.0.0.2] is [::ffff:7f00:2]
        try:
            name = f"[{ipaddress.IPv6Address(name[1:-1])}]"
        except ValueError:
            return None
    return name, match["port"]
