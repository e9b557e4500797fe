"""Turning what a user typed into a safe FTS5 query.

User text never reaches MATCH raw: it is split into words, stop words are dropped, and each
remaining word is quoted (so FTS5 syntax such as `"`, `*`, `NEAR(`, `OR`, `-` is inert) and
the words are OR-ed, letting BM25 rank memories that share more and rarer words higher.
"""

from __future__ import annotations

import re

# Words with inner apostrophes stay whole long enough to be checked against the stop list.
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*", re.UNICODE)

STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
    few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
    herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more
    most mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same
    shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those through to too under
    until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
    while who who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours yourself
    yourselves s t d ll m re ve
    """.split()
)


def query_terms(query: str) -> list[str]:
    """The distinct, lower-cased, non-stop-word terms of a query, in order."""
    seen: list[str] = []
    for word in _WORD.findall(query.lower().replace("\u2019", "'")):
        if word in STOP_WORDS:
            continue
        # FTS5's unicode61 tokenizer splits on apostrophes too ("ava's" -> "ava", "s").
        for part in word.split("'"):
            if part and part not in STOP_WORDS and part not in seen:
                seen.append(part)
    return seen


def build_fts_query(query: str) -> str | None:
    """An FTS5 MATCH expression for `query`, or None when it has no searchable word."""
    terms = query_terms(query)
    if not terms:
        return None
    return " OR ".join(f'"{term}"' for term in terms)
