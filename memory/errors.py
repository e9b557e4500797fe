"""Typed errors of the memory domain.

Each message is written for whoever made the call (often a model): it names the field, the
bound that was crossed and what to do instead. The MCP layer turns them into tool errors
as they are, without matching on words.
"""

from __future__ import annotations


class MemoirError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidArgument(MemoirError):
    """An argument is outside its limits; nothing was changed."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class MemoryNotFound(MemoirError):
    """No memory with that id belongs to that user (the same whether it exists for another user or not)."""

    def __init__(self, memory_id: str, user_id: str) -> None:
        self.memory_id = memory_id
        self.user_id = user_id
        super().__init__(f"no memory '{memory_id}' for user '{user_id}'")


class EventNotFound(MemoirError):
    def __init__(self, event_id: int, user_id: str | None = None) -> None:
        self.event_id = event_id
        who = f" for user '{user_id}'" if user_id else ""
        super().__init__(f"no history event {event_id}{who}")


class CannotUndo(MemoirError):
    """The event cannot be undone as things stand (explains why)."""


class MethodUnavailable(MemoirError):
    """A retrieval method or LLM feature was asked for explicitly but is not enabled; says how to enable it."""


class AccessDenied(MemoirError):
    """The caller's identity may not act for the user it named."""


class TokenNotFound(MemoirError):
    """No token has that token_id (or is that token)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no token '{key}'; `memoir token list` shows the token ids")


class RateLimited(MemoirError):
    """The caller's token has used up its request allowance for now; nothing was done."""

    def __init__(self, retry_after: float, rate_per_minute: float, burst: int) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"rate limit: this token may make {rate_per_minute:g} calls a minute (bursts of {burst}); "
            f"nothing was done - retry in {retry_after:.1f} s"
        )


class CallTimedOut(MemoirError):
    """A call ran past its time limit and was stopped before it changed anything."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(
            f"timeout: the call took longer than the server's limit of {seconds:g} s (MEMOIR_CALL_TIMEOUT) and "
            "was stopped; nothing was changed - retry, perhaps with a smaller request"
        )


class SecretRefused(InvalidArgument):
    """The text holds a credential (MEMOIR_SECRETS=refuse); nothing was stored. Names the kind, never the secret."""

    def __init__(self, field: str, kinds: list[str]) -> None:
        from .secrets import LABELS  # the labels live with the detector

        self.kinds = kinds
        found = " and ".join(LABELS.get(k, k) for k in kinds)
        super().__init__(
            field,
            f"contains {found}; memoir does not store credentials, so nothing was stored. "
            "Keep the fact without the secret (e.g. 'Ava has an AWS account', not the key itself)",
        )


class DatabaseFileGone(MemoirError):
    """The database file memoir opened was deleted or replaced while it ran; writes are refused.

    SQLite keeps writing to the file it opened, so after a delete (or a rename of another file
    over it) a write would be acknowledged and then vanish when memoir exits.
    """

    def __init__(self, path: str, replaced: bool) -> None:
        self.path = path
        what = "was replaced by another file" if replaced else "was deleted"
        super().__init__(
            f"database: the file {path} {what} while memoir had it open; nothing was written, because "
            "a write now would be lost when memoir exits. Restart memoir to use the file now at that "
            "path (a new, empty one if it is gone), or first restore it from a backup (memoir backup)"
        )
