"""Ranking for memory search: the FTS5 query builder and hybrid fusion (pure functions).

(Draft; the recipe and numbers are filled in below once measured.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["STOP_WORDS", "query_terms", "build_fts_query", "FuseParams", "fuse"]

STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are aren as at be because been before
    being below between both but by can cannot could couldn d did didn do does doesn doing don
    down during each few for from further had hadn has hasn have haven having he her here hers
    herself him himself his how i if in into is isn it its itself just ll m me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own re s
    same she should shouldn so some such t than that the their theirs them themselves then
    there these they this those through to too under until up ve very was wasn we were weren
    what when where which while who whom why will with won would wouldn you your yours
    yourself yourselves
    """.split()
)

_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(query: str, stop_words: Iterable[str] = STOP_WORDS) -> list[str]:
    """Lower-cased unicode word tokens of ``query`` without stop words, first occurrence order."""
    stop = stop_words if isinstance(stop_words, (set, frozenset)) else frozenset(stop_words)
    out: dict[str, None] = {}
    for tok in _WORD.findall(query.lower()):
        tok = tok.strip("_")
        if tok and tok not in stop:
            out[tok] = None
    return list(out)


def build_fts_query(query: str, *, prefix: bool = False) -> str | None:
    """The FTS5 MATCH string for a user query, or None when it has only stop words.

    Each term is quoted (so no FTS5 syntax in user text can reach MATCH) and the terms are OR-ed;
    BM25 then rewards memories matching more and rarer terms.
    """
    terms = query_terms(query)
    if not terms:
        return None
    star = "*" if prefix else ""
    return " OR ".join('"' + t.replace('"', '""') + '"' + star for t in terms)


@dataclass(frozen=True)
class FuseParams:
    method: str = "score"  # "score" (normalised score blend) or "rrf"
    keyword_weight: float = 1.0
    semantic_weight: float = 1.0
    rrf_k: float = 60.0
    neighbour_weight: float = 0.0
    neighbour_window: int = 1
    neighbour_decay: float = 0.5
    neighbour_mode: str = "max"
    name_weight: float = 0.0


DEFAULT_PARAMS = FuseParams()

_NAME = re.compile(r"\b[A-Z][\w'-]*[a-z]\w*")


def _norm_keyword(hits: Sequence[tuple[str, float]]) -> dict:
    if not hits:
        return {}
    top = max(s for _, s in hits) or 1.0
    return {i: max(s, 0.0) / top for i, s in hits}


def _norm_semantic(hits: Sequence[tuple[str, float]]) -> dict:
    if not hits:
        return {}
    vals = [s for _, s in hits]
    hi, lo = max(vals), min(vals)
    span = hi - lo
    if span <= 1e-9:
        return {i: 1.0 for i, _ in hits}
    return {i: (s - lo) / span for i, s in hits}


def fuse(
    keyword: Sequence[tuple[str, float]],
    semantic: Sequence[tuple[str, float]],
    *,
    created_at: Mapping[str, str],
    texts: Mapping[str, str] | None = None,
    query: str | None = None,
    seq: Mapping[str, int] | None = None,
    params: FuseParams | None = None,
    **overrides,
) -> list[tuple[str, float]]:
    p = params or DEFAULT_PARAMS
    if overrides:
        p = replace(p, **overrides)
    base: dict = {}
    if p.method == "rrf":
        for w, lst in ((p.keyword_weight, keyword), (p.semantic_weight, semantic)):
            for r, (i, _) in enumerate(lst):
                base[i] = base.get(i, 0.0) + w / (p.rrf_k + r + 1)
    else:
        for w, d in ((p.keyword_weight, _norm_keyword(keyword)), (p.semantic_weight, _norm_semantic(semantic))):
            for i, s in d.items():
                base[i] = base.get(i, 0.0) + w * s
    score = dict(base)
    if p.name_weight and query and texts:
        names = {n.lower() for n in _NAME.findall(query)} - STOP_WORDS
        if names:
            for i in score:
                t = (texts.get(i) or "").lower()
                score[i] += p.name_weight * sum(n in t for n in names) / len(names)
    if p.neighbour_weight and seq:
        by_seq = {seq[i]: i for i in base if i in seq}
        for i in list(score):
            s = seq.get(i)
            if s is None:
                continue
            vals = [base.get(by_seq.get(s + d), 0.0) * p.neighbour_decay ** (abs(d) - 1)
                    for d in range(-p.neighbour_window, p.neighbour_window + 1) if d]
            nb = max(vals) if p.neighbour_mode == "max" else sum(vals)
            score[i] += p.neighbour_weight * nb
    return sorted(score.items(), key=lambda kv: (-kv[1], _neg_time(created_at.get(kv[0], ""))))


def _neg_time(iso: str) -> tuple:
    # newer first on ties: sort key ascending, so invert the string order
    return tuple(-ord(c) for c in iso)
