"""Argument limits and the normalisation that goes with them.

Every check raises `InvalidArgument` naming the field, the limit and the fix, before anything
touches the store, so a rejected call leaves the store unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from .errors import InvalidArgument

_USER_ID = re.compile(r"[A-Za-z0-9_.@:\-]+")
# Ids the server makes are 12 hex digits; imports may carry others of this shape (memory/transfer.py).
_MEMORY_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# C0/C1 controls other than tab/newline/CR carry nothing a memory needs and confuse terminals and JSON consumers.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Limits:
    memory_max_chars: int = 2_000
    topics_max_count: int = 16
    topic_max_chars: int = 64
    query_max_chars: int = 1_000
    user_id_max_chars: int = 128
    messages_max_count: int = 200
    messages_max_chars: int = 100_000
    search_limit_max: int = 100
    list_limit_max: int = 100
    input_max_chars: int = 100_000

    # -- single fields ---------------------------------------------------------------------

    def user_id(self, value: str, field: str = "user_id") -> str:
        if not isinstance(value, str) or not value:
            raise InvalidArgument(field, "must be a non-empty string; omit it to use the configured user")
        if len(value) > self.user_id_max_chars:
            raise InvalidArgument(
                field, f"is {len(value)} characters, over the limit of {self.user_id_max_chars}; use a shorter id"
            )
        if not _USER_ID.fullmatch(value):
            raise InvalidArgument(
                field, "may contain only letters, digits and _ . @ : - (for example 'ava' or 'ava@example.com')"
            )
        return value

    def memory_id(self, value: str, field: str = "memory_id") -> str:
        """A well-formed id (whether it exists is the store's question); the value is not echoed back."""
        if not isinstance(value, str) or not _MEMORY_ID.fullmatch(value):
            raise InvalidArgument(
                field,
                "is not a memory id (they look like '3f9a1c2b7d4e'); pass a memory_id returned by add_memory, "
                "search_memories or list_memories",
            )
        return value

    def memory_text(self, value: str, field: str = "memory") -> str:
        text = value.strip()
        if not text:
            raise InvalidArgument(field, "is blank; give the fact to remember, e.g. 'Ava likes to ski'")
        if len(text) > self.memory_max_chars:
            raise InvalidArgument(
                field,
                f"is {len(text)} characters, over the limit of {self.memory_max_chars:,}; "
                "shorten it or split it into several memories",
            )
        if _CONTROL.search(text):
            raise InvalidArgument(field, "contains control characters; send plain text")
        if _has_lone_surrogate(text):
            raise InvalidArgument(field, "is not valid Unicode (lone surrogate); send UTF-8 text")
        return text

    def topics(self, values: Sequence[str], field: str = "topics") -> list[str]:
        """Trimmed, lower-cased, de-duplicated (first occurrence kept).

        The count is checked before any per-topic work, and every entry counts (duplicates too):
        a call with 100,000 topics is refused at once instead of being normalised and de-duplicated
        on the event loop, where the call time limit cannot stop it.
        """
        if len(values) > self.topics_max_count:
            raise InvalidArgument(
                field,
                f"has {len(values)} topics, over the limit of {self.topics_max_count}; keep the most telling ones",
            )
        out: list[str] = []
        seen: set[str] = set()
        for i, raw in enumerate(values):
            topic = raw.strip().lower()
            if not topic:
                raise InvalidArgument(f"{field}[{i}]", "is blank; drop it or name the topic, e.g. 'hobbies'")
            if len(topic) > self.topic_max_chars:
                raise InvalidArgument(
                    f"{field}[{i}]",
                    f"is {len(topic)} characters, over the limit of {self.topic_max_chars}; use a short label",
                )
            if _CONTROL.search(topic) or _has_lone_surrogate(topic):
                raise InvalidArgument(f"{field}[{i}]", "contains control characters or invalid Unicode")
            if topic not in seen:
                seen.add(topic)
                out.append(topic)
        return out

    def query(self, value: str, field: str = "query") -> str:
        if len(value) > self.query_max_chars:
            raise InvalidArgument(
                field,
                f"is {len(value)} characters, over the limit of {self.query_max_chars:,}; ask with fewer words",
            )
        if _has_lone_surrogate(value):
            raise InvalidArgument(field, "is not valid Unicode (lone surrogate); send UTF-8 text")
        return value

    def limit(self, value: int, maximum: int, field: str = "limit") -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise InvalidArgument(field, f"must be a whole number from 1 to {maximum}, got {value!r}")
        return value

    def input_text(self, value: str | None, field: str = "input") -> str | None:
        if value is None:
            return None
        if len(value) > self.input_max_chars:
            raise InvalidArgument(field, f"is {len(value)} characters, over the limit of {self.input_max_chars:,}")
        return value


# The longest ISO-8601 time worth reading ("2026-01-31T09:30:00.123456+14:00" is 32 characters).
_TIME_MAX_CHARS = 64
_TIME_EXAMPLE = "use e.g. '2026-01-31' or '2026-01-31T09:30:00Z'"


def parse_time(value: str | None, field: str) -> str | None:
    """An ISO-8601 date or time, normalised to the store's UTC form (naive times are taken as UTC).

    Every malformed value is an `InvalidArgument`: not only what `fromisoformat` refuses, but also
    a time whose conversion to UTC leaves the years 1-9999 (`0001-01-01T00:00:00+14:00` is in
    year 0 in UTC), which `datetime` reports as an OverflowError.
    """
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _TIME_MAX_CHARS:
        raise InvalidArgument(
            field, f"is not an ISO-8601 date or time of at most {_TIME_MAX_CHARS} characters; {_TIME_EXAMPLE}"
        )
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(field, f"{value!r} is not an ISO-8601 date or time; {_TIME_EXAMPLE}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return format_time(parsed)
    except (OverflowError, ValueError):
        raise InvalidArgument(
            field, f"{value!r} is outside the years 1-9999 once converted to UTC; {_TIME_EXAMPLE}"
        ) from None


def format_time(moment: datetime) -> str:
    """The store's form, compared as text: so the year is always four digits (strftime's %Y gives
    '999' for the year 999 on glibc, which would sort after '2026')."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def now() -> str:
    return format_time(datetime.now(timezone.utc))


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
