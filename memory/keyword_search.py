"""Reading the keyword index (memory/keyword_index.py) for a search: each function is one trip to
a connection's thread, because a trip costs about as much as the ranking's own SQL at 10,000
memories. `state(db)` is the backend's token for the database's state as that connection sees it
(it moves whenever any connection commits): what a search learned of a user's index (`IndexStats`)
is reused while it holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import keyword_index
from .backends import in_lists
from .keyword_index import IndexStats


@dataclass
class KeywordRead:
    rows: list[sqlite3.Row] = field(default_factory=list)
    pending: bool = False  # the user's index has queued changes: apply them, then read again
    stats: IndexStats | None = None  # None when the user has no index


def has_pending(db: sqlite3.Connection, user_id: str) -> bool:
    """Whether changes to the user's memories wait to be applied to the keyword index."""
    return db.execute("SELECT 1 FROM fts_pending WHERE user_id = ? LIMIT 1", (user_id,)).fetchone() is not None


def read(
    db: sqlite3.Connection, state: Callable[[Any], Any], user_id: str, terms: list[str], columns: str, limit: int,
    where: str, params: list[Any], stats: IndexStats | None, check_pending: bool, without_retired: bool,
    respelled: Mapping[str, Sequence[str]] | None = None,
) -> KeywordRead:
    """The user's best `limit` keyword matches for `terms` (BM25 over text and topics, with the
    user's statistics); `without_retired`: leaving out superseded memories (when `where`, which
    then says which memories are valid, is empty); `respelled`: hybrid's respellings of query
    terms (memory/spelling.py), whose index words join the query when no memory holds the term.
    `state(db)`: the backend's token for the database's state as this connection sees it (it
    moves when any connection commits)."""
    version = state(db)
    if stats is None or stats.version != version:
        # Nothing was committed since `stats` was taken with no changes queued: no need to look.
        if check_pending and has_pending(db, user_id):
            return KeywordRead(pending=True)
        stats = keyword_index.stats(db, user_id, version)
        if stats is None:
            return KeywordRead()  # the user has never had a memory
    by_term = keyword_index.query_words(terms)
    wanted = [w for ws in by_term.values() for w in ws]
    keyword_index.count_matches(db, stats, wanted)
    ranked = keyword_index.ranked_words(stats, wanted)
    unmatched = [t for t, ws in by_term.items() if ws and not any(stats.matches.get(w) for w in ws)]
    if respelled and unmatched:
        added = list(dict.fromkeys(w for t in unmatched for w in respelled.get(t, ()) if w not in wanted))
        keyword_index.count_matches(db, stats, added)
        ranked = [*ranked, *(w for w in added if keyword_index.rankable(stats, w))]
    if not ranked:
        return KeywordRead(stats=stats)
    scores, scores_params = keyword_index.bm25_sql(len(ranked)), keyword_index.bm25_params(stats, ranked)
    if where:  # a filter is on memories' columns: filter every match, then keep the best
        sql = (
            f"SELECT {columns}, k.score FROM ({scores}) AS k JOIN memories m ON m.id = k.doc"
            f" WHERE m.user_id = ?{where} ORDER BY k.score DESC, m.created_at DESC, m.id DESC LIMIT ?"
        )
        rows = db.execute(sql, (*scores_params, user_id, *params, limit)).fetchall()
    else:
        # Rank the user's postings alone, and join just the best `limit` rows.
        retired = (
            " WHERE doc NOT IN (SELECT id FROM memories WHERE user_id = ? AND valid_to IS NOT NULL)"
            if without_retired else ""
        )
        sql = (
            f"SELECT {columns}, k.score FROM (SELECT doc, score FROM ({scores}) AS s{retired}"
            " ORDER BY score DESC, doc DESC LIMIT ?) AS k JOIN memories m ON m.id = k.doc"
            " ORDER BY k.score DESC, m.created_at DESC, m.id DESC"
        )
        rows = db.execute(sql, (*scores_params, *((user_id,) if without_retired else ()), limit)).fetchall()
    return KeywordRead(rows=rows, stats=stats)


def term_matches(
    db: sqlite3.Connection, state: Callable[[Any], Any], user_id: str, terms: list[str], memory_ids: list[str], stats: IndexStats | None,
    respelled: Mapping[str, Sequence[str]] | None = None,
) -> tuple[int, dict[str, int], dict[str, set[str]]]:
    """For `Store.term_matches` (relevance's coverage); the counts the keyword search kept for this state are reused.
    A term of several index words ("e-mail") counts as its rarest and is held when any is. A
    term no memory holds stands for its `respelled` words, as in `read`."""
    held: dict[str, set[str]] = {m: set() for m in memory_ids}
    version = state(db)
    if stats is None or stats.version != version:
        stats = keyword_index.stats(db, user_id, version)
        if stats is None:
            return 0, {t: 0 for t in terms}, held
    by_term = keyword_index.query_words(terms)
    keyword_index.count_matches(db, stats, [w for ws in by_term.values() for w in ws])
    for t, ws in by_term.items():
        if respelled and respelled.get(t) and not any(stats.matches[w] for w in ws):
            by_term[t] = list(respelled[t])
            keyword_index.count_matches(db, stats, by_term[t])
    counts = {t: min((stats.matches[w] for w in ws), default=0) for t, ws in by_term.items()}
    if memory_ids:
        doc_of: dict[int, str] = {}
        for chunk, marks in in_lists(memory_ids):
            doc_of.update(
                (int(r[0]), r[1]) for r in db.execute(f"SELECT id, memory_id FROM memories WHERE memory_id IN ({marks})", chunk)
            )
        words = [w for t, ws in by_term.items() if counts[t] for w in ws]
        terms_of_word: dict[str, list[str]] = {}
        for t, ws in by_term.items():
            for w in ws:
                terms_of_word.setdefault(w, []).append(t)
        for doc, word in keyword_index.holders(db, stats.uid, words, list(doc_of)):
            held[doc_of[doc]].update(terms_of_word[word])
    return stats.size, counts, held
