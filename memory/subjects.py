"""Who a memory is about, for hybrid fusion's subject signal (memory/ranking.py, "fourth round").

A store of facts about several people ("Melanie has a cat named Luna", "Caroline adopted a
guinea pig") and a question that names one of them ("What pet does Caroline have?"): a memory
whose subject is someone else is less likely the answer, however well its words match.

- A *name* is a word the user's memories write capitalised at least :data:`NAME_MIN` times and
  never in lower case ("Caroline" is one; "Running" at the start of a sentence is not, once
  "running" appears anywhere). Counted over the user's live memories (memory/vectors.py
  ``UserVectors``), case-folded.
- A memory's *subject*: the first word of its text (after a leading ``[tag]``, as it is
  embedded), with any names joined to it by "and" / "or" ("Ava and Ben went to Paris"); none
  when the first word is possessive ("Ava's brother Ben lives in Denver" is about Ben as much
  as Ava) or not a name.
- A query names the names among its words (any case: "what does caroline like").

Pure functions; the counts live with the user's vectors.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

__all__ = ["NAME_MIN", "case_words", "subject_words", "is_name", "query_names", "subject_of", "about_others"]

#: Capitalised occurrences (in distinct memories) a word needs to count as a name.
NAME_MIN = 2

_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)?")
_POSSESSIVE = re.compile(r"['\u2019]s$", re.IGNORECASE)
_JOINERS = frozenset({"and", "or", "&"})


def _bare(word: str) -> str:
    return _POSSESSIVE.sub("", word)


def case_words(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """The words of `text` written capitalised and those written in lower case, case-folded,
    possessives stripped ("Ava's" counts as "ava" capitalised). Words of one letter are left out."""
    # Every memory of a user passes here when the user's vectors load: comprehensions, and the
    # possessive stripped only from words that have one (18 -> 7 us a LoCoMo turn).
    words = [_bare(w) if "'" in w or "\u2019" in w else w for w in _WORD.findall(text)]
    return (
        frozenset(w.casefold() for w in words if len(w) > 1 and w[0].isupper()),
        frozenset(w.casefold() for w in words if len(w) > 1 and not w[0].isupper()),
    )


def subject_words(text: str) -> tuple[str, ...]:
    """The capitalised words that could be `text`'s subject, case-folded: its first word and the
    capitalised words joined to it by "and"/"or"; () when the first word is possessive or not
    capitalised. Whether they are names is decided at search time (`subject_of`), against the
    user's counts then."""
    words = _WORD.findall(text[:200])
    if not words or not words[0][0].isupper() or _POSSESSIVE.search(words[0]):
        return ()
    found = [words[0].casefold()]
    k = 1
    while k + 1 < len(words) and words[k].casefold() in _JOINERS and words[k + 1][0].isupper():
        if _POSSESSIVE.search(words[k + 1]):
            break
        found.append(words[k + 1].casefold())
        k += 2
    return tuple(found)


def is_name(word: str, capitalised: Mapping[str, int], lower: Mapping[str, int]) -> bool:
    """`word` (case-folded) is a name of the store whose counts these are (memories writing it
    capitalised / in lower case)."""
    return capitalised.get(word, 0) >= NAME_MIN and not lower.get(word, 0)


def query_names(query: str, capitalised: Mapping[str, int], lower: Mapping[str, int]) -> frozenset[str]:
    """The names of the store that the query holds, in any case."""
    return frozenset(
        w for w in (_bare(word).casefold() for word in _WORD.findall(query)) if is_name(w, capitalised, lower)
    )


def subject_of(
    candidates: tuple[str, ...], capitalised: Mapping[str, int], lower: Mapping[str, int]
) -> frozenset[str]:
    """The names among a memory's `subject_words`; empty unless the first is a name."""
    if not candidates or not is_name(candidates[0], capitalised, lower):
        return frozenset()
    return frozenset(w for w in candidates if is_name(w, capitalised, lower))


def about_others(subject: Collection[str], names: Collection[str]) -> bool:
    """A memory whose subject is only people other than those the query names."""
    return bool(subject) and bool(names) and not any(w in names for w in subject)
