"""A token budget for search results, for hosts that put memories into a prompt.

The rule (documented in search_memories and the README): a memory's text costs a quarter
token per ASCII character, rounded up, plus one token per other character; at least 1. Only
the `memory` text counts - not its id, topics, times or the JSON around it - because that is
what a host pastes into a prompt.

Why this rule: memoir cannot know the host model's tokenizer, and a budget is a promise not to
overflow, so the count should be cheap, deterministic and rarely below the real one. English
runs about 4 characters a token in current tokenizers; accented letters, CJK and emoji are
split much finer, so each counts a whole token (ceil(UTF-8 bytes / 4) undercounted CJK by a
third). Measured against the WordPiece tokenizer memoir already ships (all-MiniLM-L6-v2,
memory/data) with bench/tokens.py: rule / WordPiece 1.12 on 10,000 short English facts (14%
of them counted lower), 1.14 on longer English, 1.00 on accented European text, 0.87 on CJK.

Results are taken in rank order; one that does not fit in what is left of the budget is
skipped and the scan goes on, so a long memory does not crowd out shorter, lower-ranked ones
that fit, and the order of what is returned is still the ranking's. A memory is never cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import InvalidArgument

MAX_TOKENS_LIMIT = 100_000

M = TypeVar("M")


def count_tokens(text: str) -> int:
    """The tokens a memory's text is counted as: a quarter token per ASCII character, rounded
    up, plus one per other character; at least 1."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return max(1, -(-ascii_chars // 4) + len(text) - ascii_chars)


def check_max_tokens(value: int | None, field: str = "max_tokens") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS_LIMIT:
        raise InvalidArgument(
            field,
            f"must be a whole number of tokens from 1 to {MAX_TOKENS_LIMIT:,}, got {value!r}; "
            "omit it for no budget",
        )
    return value


def fit(
    results: Sequence[M], max_tokens: int | None, text: Callable[[M], str] = lambda m: m.memory  # type: ignore[attr-defined]
) -> tuple[list[M], int, bool]:
    """The results that fit in `max_tokens`, in rank order (skipping any that do not fit); the
    tokens they use; and whether the budget left any out. Without a budget: all of them."""
    kept: list[M] = []
    used = 0
    cut = False
    for result in results:
        cost = count_tokens(text(result))
        if max_tokens is not None and used + cost > max_tokens:
            cut = True
            continue
        kept.append(result)
        used += cost
    return kept, used, cut
