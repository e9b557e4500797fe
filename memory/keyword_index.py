"""memoir's own full-text index: each memory's words in ordinary tables, ranked by BM25 computed
from the searching user's own statistics.

Why not FTS5: BM25 weighs a word by how rare it is among the memories searched and a memory by
its length against theirs, so one user's ranking must use that user's statistics only (else it
depends on, and can reveal something about, what others stored). FTS5 keeps one set of
statistics per table, so memoir kept one FTS5 table per user: at 10,000 users that was 10,000
schema objects, which every connection re-parses after each new one (~0.2 s per new user and
~23 KB of empty index per user on 649139a). Here every user shares three ordinary tables:

- ``keyword_users``: a small integer ``uid`` per user, with the user's number of indexed
  memories (``docs``) and of tokens (``tokens``): BM25's N and average length.
- ``keyword_postings``: one row per (user, word, memory): the word's weighted count in the memory
  with its timeline neighbours' (``tf``), in the memory alone (``own``, 0 when only a neighbour
  holds it) and the memory's own length in tokens (``len``, repeated so a ranking reads one
  table). Its key (uid, term, doc) makes a word's memories one range scan, and counting a
  word's memories (BM25's n) the same scan.
- ``keyword_docs``: each indexed memory's owner, words and place in its user's timeline
  (``at``: its created_at), so a change removes exactly its rows and a deleted memory's former
  neighbours can be found.

The words are FTS5's ``porter unicode61`` as closely as Python gets: runs of letters and digits,
lower-cased, diacritics removed, Porter-stemmed when 3 to 64 characters long (PyStemmer's
'porter' is Martin Porter's original algorithm, as FTS5's). On LoCoMo dev's 1,451 turns and 497
questions the two vocabularies differ in 6 of 1,939 words (emoji, "incredibly").

The score is BM25 as FTS5's ``bm25(index, 1.0, 0.5)`` computes it --
``idf = ln((N - n + 0.5) / (n + 0.5))`` floored at 1e-6, a word in the topics counting half, a
memory's length being all its tokens (text and topics, stop words included) -- but with
k1 = 0.2 and b = 0 (:data:`K1`, :data:`B`) where FTS5 has 1.2 and 0.75: a word's repeats count
little and a memory's length not at all. With 1.2 / 0.75 the ranking is FTS5's exactly
(tests/test_keyword_index.py); why 0.2 / 0 is in memory/ranking.py ("Stores of facts, third
round").

Neighbour document expansion: a memory is indexed with the words of the memories just before and
after it in its user's timeline (all the user's memories, superseded ones too, by (created_at,
id)) at :data:`NEIGHBOUR_WEIGHT`: ``tf = own tf + 0.1 x (previous's own tf + next's own tf)``.
Facts stated together share context ("She moved there in May" beside "Ava lives in Lisbon").
BM25's n is then the number of memories whose expanded tf is > 0; its N and the lengths stay the
memories' own. What asks whether a memory *holds* a word -- the rule leaving out words in over
half of the memories (`ranked_words`, `rankable`) and relevance's coverage (`holders`) -- counts
own words only. So an add re-indexes its neighbours too: at the end of a timeline, the memory
and its predecessor (memory/ranking.py, "Fourth round", has the measurements and the cost).

Pure functions on a DB-API connection (``?`` parameters); the store calls them on its
connections' threads.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import Stemmer

from .backends import in_lists

K1 = 0.2  # BM25's term-frequency saturation (FTS5: 1.2); memory/ranking.py, "third round"
B = 0.0  # BM25's length normalisation (FTS5: 0.75): none
TOPICS_WEIGHT = 0.5  # a word in the topics counts half a word in the text (as FTS5's bm25 weights were)
NEIGHBOUR_WEIGHT = 0.1  # a timeline neighbour's words in a memory (0: none); memory/ranking.py, "fourth round"
_MAX_STEMMED = 64  # FTS5's porter leaves longer tokens as they are

_TOKEN = re.compile(r"[^\W_]+")
_stemmer = Stemmer.Stemmer("porter")


@lru_cache(maxsize=65_536)
def _stem(token: str) -> str:
    if 3 <= len(token) <= _MAX_STEMMED:
        return _stemmer.stemWord(token)
    return token


def _fold(text: str) -> str:
    text = text.lower()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    """The index's words of `text`, in order, repeats kept."""
    return [_stem(token) for token in _TOKEN.findall(_fold(text))]


def surface_words(text: str) -> list[str]:
    """`text`'s words as `words` finds them, before stemming (folded: lower-cased, no diacritics)."""
    return _TOKEN.findall(_fold(text))


def stem(word: str) -> str:
    """The index word of one surface word."""
    return _stem(word)


def query_words(terms: Iterable[str]) -> dict[str, list[str]]:
    """Each query term (see `ranking.query_terms`) with its index words (usually one)."""
    return {term: list(dict.fromkeys(words(term))) for term in terms}


@dataclass(frozen=True)
class Document:
    """A memory as the index holds it."""

    length: int
    tf: dict[str, float]


def document(memory: str, topics: str) -> Document:
    """`topics` is the memory's JSON array of topics, as stored."""
    text = words(memory)
    tagged = words(" ".join(json.loads(topics))) if topics and topics != "[]" else []
    tf: Counter[str] = Counter(text)
    for word in tagged:
        tf[word] += TOPICS_WEIGHT
    return Document(len(text) + len(tagged), dict(tf))


def expanded(own: Document, neighbours: Iterable[Document]) -> dict[str, float]:
    """Each word's tf in a memory indexed with its timeline neighbours' words: its own tf plus
    :data:`NEIGHBOUR_WEIGHT` times each neighbour's; a word only a neighbour holds is in it too."""
    tf = dict(own.tf)
    if NEIGHBOUR_WEIGHT:  # 0: no expansion at all (no rows for neighbours' words)
        for other in neighbours:
            for word, n in other.tf.items():
                tf[word] = tf.get(word, 0.0) + NEIGHBOUR_WEIGHT * n
    return tf


# -- writing ---------------------------------------------------------------------------------

_BATCH = 500  # memories re-indexed at a time: a rebuild's 100,000 are not all in memory at once

# "Which of these ids are the user's memories", written so that they are looked up by id: with
# `user_id = ?`, PostgreSQL read every memory of the user through the (user_id, created_at, id)
# index (1 ms at 10,000 memories, 0.03 by id), as SQLite once did in Store.scored.
_BY_ID_OF_USER = "user_id || '' = ?"

# The user's memories just before and just after the place (created_at ?2, id ?3), which need not
# be a memory now. Each side is two probes of the (user_id, created_at, id) index: the row value
# `(created_at, id) < (?, ?)` says the same, but SQLite (3.40) seeks by created_at alone and
# filters the ids, reading every memory of one created_at (an import's, say) at each probe.
_AROUND = (
    "SELECT coalesce("
    "(SELECT id FROM memories WHERE user_id = ?1 AND created_at = ?2 AND id < ?3 ORDER BY id DESC LIMIT 1),"
    " (SELECT id FROM memories WHERE user_id = ?1 AND created_at < ?2 ORDER BY created_at DESC, id DESC LIMIT 1)),"
    " coalesce("
    "(SELECT id FROM memories WHERE user_id = ?1 AND created_at = ?2 AND id > ?3 ORDER BY id LIMIT 1),"
    " (SELECT id FROM memories WHERE user_id = ?1 AND created_at > ?2 ORDER BY created_at, id LIMIT 1))"
)


def apply_pending(db: Any, user_id: str) -> None:
    """Bring the user's index up to date with the changes queued for it (fts_pending, filled by
    triggers on memories), in the caller's write transaction: each changed memory is indexed
    again from the memories table, and so is each memory now beside where a changed one was or
    is (its neighbour changed) -- each once, however many changes name it."""
    pending = db.execute(
        "SELECT seq, id, memory FROM fts_pending WHERE user_id = ? ORDER BY seq", (user_id,)
    ).fetchall()
    if not pending:
        return
    latest = {int(row[1]): row[2] for row in pending}  # the last change of each memory is its state now
    existing = db.execute("SELECT uid FROM keyword_users WHERE user_id = ?", (user_id,)).fetchone()
    if existing is not None or any(m is not None for m in latest.values()):  # deletes alone make no user
        uid = int(existing[0]) if existing is not None else _new_user(db, user_id)
        timeline = _Timeline(db, user_id)
        docs = _affected(db, uid, timeline, list(latest))
        for start in range(0, len(docs), _BATCH):
            _remove(db, docs[start : start + _BATCH], owner=uid)
            _add(db, uid, timeline, docs[start : start + _BATCH])
    db.execute("DELETE FROM fts_pending WHERE user_id = ? AND seq <= ?", (user_id, pending[-1][0]))


def drop_user(db: Any, user_id: str) -> None:
    """Forget the user's index and queue (in the caller's write transaction)."""
    db.execute("DELETE FROM fts_pending WHERE user_id = ?", (user_id,))
    row = db.execute("SELECT uid FROM keyword_users WHERE user_id = ?", (user_id,)).fetchone()
    if row is not None:
        # keyword_docs has no index by user (one page less to write per add): its rows are found
        # through the postings, whose key starts with the user.
        db.execute("DELETE FROM keyword_docs WHERE doc IN (SELECT doc FROM keyword_postings WHERE uid = ?)", (row[0],))
        db.execute("DELETE FROM keyword_docs WHERE uid = ? AND terms = ''", (row[0],))  # no words, no postings: rare
        db.execute("DELETE FROM keyword_postings WHERE uid = ?", (row[0],))
        db.execute("DELETE FROM keyword_users WHERE uid = ?", (row[0],))


def index_queued(db: Any) -> None:
    """Apply every user's queued changes (in the caller's write transaction)."""
    for (user_id,) in db.execute("SELECT DISTINCT user_id FROM fts_pending").fetchall():
        apply_pending(db, user_id)


def _new_user(db: Any, user_id: str) -> int:
    return int(db.execute(
        "INSERT INTO keyword_users (user_id, docs, tokens) VALUES (?, 0, 0) RETURNING uid", (user_id,)
    ).fetchone()[0])


class _Timeline:
    """One user's timeline as a re-index asks it: the memories on either side of a place, read
    from the memories table one place at a time and kept for the rest of the transaction (a
    changed memory's neighbours are asked for twice: to find them, then to index it)."""

    def __init__(self, db: Any, user_id: str) -> None:
        self.db, self.user_id = db, user_id
        self._around: dict[tuple[str, int], tuple[int | None, int | None]] = {}

    def around(self, at: str, doc: int) -> tuple[int | None, int | None]:
        """(previous, next) of the place (at, doc); None at either end."""
        if (at, doc) not in self._around:
            before, after = self.db.execute(_AROUND, (self.user_id, at, doc)).fetchone()
            self._around[(at, doc)] = (
                None if before is None else int(before), None if after is None else int(after)
            )
        return self._around[(at, doc)]


def _affected(db: Any, uid: int, timeline: _Timeline, changed: list[int]) -> list[int]:
    """The memories to index again for `changed`: themselves, and the memories now on either side
    of each one's place in the index (where it was: a deleted memory's former neighbours) and in
    the memories table (where it is: a new memory's neighbours)."""
    places: set[tuple[str, int]] = set()
    for chunk, marks in in_lists(changed):
        places.update(
            (at, int(doc))
            for doc, at in db.execute(f"SELECT doc, at FROM keyword_docs WHERE uid = ? AND doc IN ({marks})", (uid, *chunk))
        )
        places.update(
            (at, int(doc))
            for doc, at in db.execute(
                f"SELECT id, created_at FROM memories WHERE id IN ({marks}) AND {_BY_ID_OF_USER}", (*chunk, timeline.user_id)
            )
        )
    docs = set(changed)
    for at, doc in places:
        docs.update(d for d in timeline.around(at, doc) if d is not None)
    return sorted(docs)


def _remove(db: Any, docs: Sequence[int], *, owner: int) -> None:
    """Remove `docs` from the index. A memory's row id can be reused once it is deleted, by another
    user too: the rows removed are those of whoever the index says holds it, and a queued change
    of `owner` for a row id now indexed for another user's live memory changes nothing. When the
    rows removed are another user's (their memory is gone, its row id `owner`'s now), that user's
    memories around it are queued for them: their neighbour changed, and only this row said where
    it was."""
    rows = []
    for chunk, marks in in_lists(docs):
        rows += db.execute(f"SELECT doc, uid, length, terms, at FROM keyword_docs WHERE doc IN ({marks})", chunk).fetchall()
    removed: list[tuple[int, int, int, str]] = []
    for doc, uid, length, terms, at in rows:
        doc, uid = int(doc), int(uid)
        if uid != owner:
            holder = db.execute("SELECT user_id FROM keyword_users WHERE uid = ?", (uid,)).fetchone()
            if holder and db.execute("SELECT 1 FROM memories WHERE id = ? AND user_id = ?", (doc, holder[0])).fetchone():
                continue  # the row id is the other user's live memory now: theirs to index
            if holder:
                _queue_around(db, holder[0], at, doc)
        removed.append((doc, uid, int(length), terms))
    db.executemany(
        "DELETE FROM keyword_postings WHERE uid = ? AND term = ? AND doc = ?",
        [(uid, t, doc) for doc, uid, _, terms in removed for t in terms.split()],
    )
    db.executemany("DELETE FROM keyword_docs WHERE doc = ?", [(doc,) for doc, *_ in removed])
    for uid in {uid for _, uid, _, _ in removed}:
        mine = [length for _, u, length, _ in removed if u == uid]
        db.execute("UPDATE keyword_users SET docs = docs - ?, tokens = tokens - ? WHERE uid = ?", (len(mine), sum(mine), uid))


def _queue_around(db: Any, user_id: str, at: str, doc: int) -> None:
    """Queue, for `user_id`, their memories on either side of the place (at, doc)."""
    ids = [d for d in _Timeline(db, user_id).around(at, doc) if d is not None]
    if ids:
        db.execute(
            f"INSERT INTO fts_pending (user_id, id, memory, topics) SELECT user_id, id, memory, topics FROM memories"
            f" WHERE id IN ({', '.join('?' * len(ids))}) AND {_BY_ID_OF_USER} ORDER BY id",
            (*ids, user_id),
        )


def _add(db: Any, uid: int, timeline: _Timeline, docs: Sequence[int]) -> None:
    """Index those of `docs` that are the user's memories now, each with its neighbours' words."""
    live = _texts(db, timeline.user_id, docs)
    around = {doc: timeline.around(at, doc) for doc, (at, _) in live.items()}
    missing = sorted({n for pair in around.values() for n in pair if n is not None and n not in live})
    own = {doc: words_ for doc, (_, words_) in (live | _texts(db, timeline.user_id, missing)).items()}
    postings: list[tuple[Any, ...]] = []
    rows: list[tuple[Any, ...]] = []
    for doc, (at, document_) in sorted(live.items()):
        tf = expanded(document_, [own[n] for n in around[doc] if n is not None])
        postings += [(uid, term, doc, x, document_.tf.get(term, 0.0), document_.length) for term, x in tf.items()]
        rows.append((doc, uid, document_.length, " ".join(tf), at))
    db.executemany("INSERT INTO keyword_postings (uid, term, doc, tf, own, len) VALUES (?, ?, ?, ?, ?, ?)", postings)
    db.executemany("INSERT INTO keyword_docs (doc, uid, length, terms, at) VALUES (?, ?, ?, ?, ?)", rows)
    if rows:
        db.execute(
            "UPDATE keyword_users SET docs = docs + ?, tokens = tokens + ? WHERE uid = ?",
            (len(rows), sum(r[2] for r in rows), uid),
        )


def _texts(db: Any, user_id: str, docs: Sequence[int]) -> dict[int, tuple[str, Document]]:
    """Those of `docs` that are the user's memories: their created_at and own words."""
    out: dict[int, tuple[str, Document]] = {}
    for chunk, marks in in_lists(docs):
        for doc, at, memory, topics in db.execute(
            f"SELECT id, created_at, memory, topics FROM memories WHERE id IN ({marks}) AND {_BY_ID_OF_USER}", (*chunk, user_id)
        ):
            out[int(doc)] = (at, document(memory, topics))
    return out


# -- reading ---------------------------------------------------------------------------------


@dataclass
class IndexStats:
    """What searches learned about a user's index at one state of the database (`version`: the
    store's own token for that state); counts of a word's memories stop at half of them + 1."""

    version: Any
    uid: int
    size: int  # memories indexed: BM25's N
    tokens: int  # their own tokens: N times the average length
    matches: dict[str, int] = field(default_factory=dict)  # memories holding the word themselves
    expanded_matches: dict[str, int] = field(default_factory=dict)  # ... or beside one that does: BM25's n

    @property
    def cap(self) -> int:
        return self.size // 2 + 1


def stats(db: Any, user_id: str, version: Any) -> IndexStats | None:
    """The user's index statistics, None when the user has no index (never had a memory)."""
    row = db.execute("SELECT uid, docs, tokens FROM keyword_users WHERE user_id = ?", (user_id,)).fetchone()
    if row is None:
        return None
    return IndexStats(version, int(row[0]), int(row[1]), int(row[2]))


def count_matches(db: Any, stats: IndexStats, words_: Sequence[str]) -> None:
    """Count, once per state, the memories holding each of `words_` themselves (`matches`) and
    those indexed with it, their own or a neighbour's (`expanded_matches`), each up to `stats.cap`
    (beyond it the idf is at its floor anyway). One trip for all."""
    uncounted = [w for w in dict.fromkeys(words_) if w not in stats.matches]
    if not uncounted:
        return
    cap = stats.cap
    # One scan of a word's first `cap` postings counts both; only when there are that many is
    # the count of its own holders taken apart (CASE runs that subquery then only).
    one = (
        f"SELECT {{i}}, every, CASE WHEN every < {cap} THEN own"
        f" ELSE (SELECT count(*) FROM (SELECT 1 FROM keyword_postings WHERE uid = ? AND term = ? AND own > 0 LIMIT {cap}) AS o) END"
        " FROM (SELECT count(*) AS every, coalesce(sum(CASE WHEN own > 0 THEN 1 ELSE 0 END), 0) AS own"
        f" FROM (SELECT own FROM keyword_postings WHERE uid = ? AND term = ? LIMIT {cap}) AS p) AS e"
    )
    sql = " UNION ALL ".join(one.format(i=i) for i in range(len(uncounted)))
    rows = db.execute(sql, [x for w in uncounted for x in (stats.uid, w, stats.uid, w)]).fetchall()
    for i, every, own in rows:
        stats.matches[uncounted[int(i)]] = int(own)
        stats.expanded_matches[uncounted[int(i)]] = int(every)


def idf(stats: IndexStats, word: str) -> float:
    """BM25's idf, n counting every memory indexed with the word (a neighbour's words included)."""
    n = stats.expanded_matches[word]
    return max(math.log((stats.size - n + 0.5) / (n + 0.5)), 1e-6)


def ranked_words(stats: IndexStats, words_: Sequence[str]) -> list[str]:
    """The words to rank by: without those in over half of the user's memories when some are
    rarer. BM25 gives such a word (the user's own name, say) a weight of about zero, yet scoring
    it means scoring most of the user's memories: at 10,000 memories most of a search's time.
    A word repeated (two query terms of one stem: "ski skiing") is kept twice and counts twice,
    as two FTS5 phrases that match the same words did."""
    held = [w for w in words_ if stats.matches.get(w)]
    if len(held) < 2:
        return held
    kept = [w for w in held if not _too_common(stats, w)]
    return kept or held


def rankable(stats: IndexStats, word: str) -> bool:
    """Whether a word added to a query (a respelling) is ranked by: held by some of the
    user's memories and, as `ranked_words` keeps words beside rarer ones, not too common
    (counted: `count_matches`)."""
    return bool(stats.matches.get(word)) and not _too_common(stats, word)


def _too_common(stats: IndexStats, word: str) -> bool:
    """Held by over half of the user's memories, in a store of 100 or more (in a small store,
    scoring everything is cheap anyway)."""
    half = stats.size // 2
    return half >= 50 and stats.matches.get(word, 0) > half


def bm25_sql(n_words: int) -> str:
    """A subquery of `(doc, score)` for the user's memories holding any of `n_words` words.
    Parameters: (word, idf) per word, the average length when `B` is not 0, the uid."""
    # Typed parameters: PostgreSQL does not infer a VALUES list's types from their use.
    values = ", ".join(["(CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION))"] * n_words)
    if B:
        saturation = f"p.tf * {K1 + 1} / (p.tf + {K1} * ({1 - B} + {B} * p.len / CAST(? AS DOUBLE PRECISION)))"
    else:  # no length normalisation: one division less per posting (1.21 -> 1.08 ms at 10,000 memories)
        saturation = f"p.tf * {K1 + 1} / (p.tf + {K1})"
    return (
        f"WITH q (term, idf) AS (VALUES {values})"
        f" SELECT p.doc AS doc, sum(q.idf * {saturation}) AS score"
        " FROM q JOIN keyword_postings p ON p.uid = ? AND p.term = q.term GROUP BY p.doc"
    )


def bm25_params(stats: IndexStats, words_: Sequence[str]) -> list[Any]:
    params: list[Any] = []
    for w in words_:
        params += [w, idf(stats, w)]
    average = [stats.tokens / stats.size if stats.size else 1.0] if B else []
    return [*params, *average, stats.uid]


def holders(db: Any, uid: int, words_: Sequence[str], docs: Sequence[int]) -> list[tuple[int, str]]:
    """Which of `docs` hold which of `words_` themselves (a neighbour's words are not theirs):
    (doc, word) pairs.

    Written as a join of two lists of values, so every probe is a lookup of the postings' key
    whatever the planner believes of the tables' sizes: with `term IN (...) AND doc IN (...)`,
    PostgreSQL, its statistics taken while the store was small, scanned all of the user's
    postings (12 ms at 10,000 memories, 0.75 ms this way)."""
    if not words_ or not docs:
        return []
    sql = (
        f"WITH d (doc) AS (VALUES {', '.join(['(CAST(? AS BIGINT))'] * len(docs))}),"
        f" t (term) AS (VALUES {', '.join(['(CAST(? AS TEXT))'] * len(words_))})"
        " SELECT p.doc, p.term FROM d, t, keyword_postings p WHERE p.uid = ? AND p.term = t.term AND p.doc = d.doc"
        " AND p.own > 0"
    )
    return [(int(r[0]), r[1]) for r in db.execute(sql, (*docs, *words_, uid))]


# -- checking --------------------------------------------------------------------------------


def problems(db: Any) -> list[str]:
    """What is inconsistent in the index (empty when nothing is): each user's counts against
    their memories' rows, each memory's postings against its words, and, for users with nothing
    queued, the index against the memories themselves: the same memories, each at its place in
    the timeline, with its own words and its neighbours' as indexing it now would give. For
    `memoir doctor` and the tests."""
    found: list[str] = []
    for uid, user_id, docs, tokens in db.execute("SELECT uid, user_id, docs, tokens FROM keyword_users").fetchall():
        # Each of the user's index rows read once, for every check below.
        doc_rows = db.execute("SELECT doc, length, terms, at FROM keyword_docs WHERE uid = ?", (uid,)).fetchall()
        posting_rows = db.execute("SELECT doc, term, tf, own, len FROM keyword_postings WHERE uid = ?", (uid,)).fetchall()
        n, total = len(doc_rows), sum(int(length) for _, length, _, _ in doc_rows)
        if (n, total) != (docs, tokens):
            found.append(f"user {user_id!r}: counts {docs} memories / {tokens} tokens, rows say {n} / {total}")
        postings = {(doc, term) for doc, term, *_ in posting_rows}
        listed = {(doc, term) for doc, _, terms, _ in doc_rows for term in terms.split()}
        if postings != listed:
            found.append(f"user {user_id!r}: {len(postings ^ listed)} postings differ from their memories' words")
        if db.execute("SELECT 1 FROM fts_pending WHERE user_id = ? LIMIT 1", (user_id,)).fetchone() is None:
            expected, indexed = _as_memories_say(db, user_id), _as_indexed(doc_rows, posting_rows)
            if set(expected) != set(indexed):
                found.append(f"user {user_id!r}: {len(set(expected) ^ set(indexed))} memories indexed wrongly or not at all")
            if wrong := sum(1 for doc in set(expected) & set(indexed) if not _same(expected[doc], indexed[doc])):
                found.append(f"user {user_id!r}: {wrong} memories indexed with other words, counts or places than theirs and their neighbours'")
    return found


# A memory as the index should hold it: (at, length, {word: (tf, own tf, length)}).
_Indexed = tuple[str, int, dict[str, tuple[float, float, int]]]


def _as_memories_say(db: Any, user_id: str) -> dict[int, _Indexed]:
    timeline = db.execute(
        "SELECT id, created_at, memory, topics FROM memories WHERE user_id = ? ORDER BY created_at, id", (user_id,)
    ).fetchall()
    own = [document(memory, topics) for _, _, memory, topics in timeline]
    out: dict[int, _Indexed] = {}
    for i, (doc, at, _, _) in enumerate(timeline):
        tf = expanded(own[i], [own[j] for j in (i - 1, i + 1) if 0 <= j < len(own)])
        out[int(doc)] = (at, own[i].length, {t: (x, own[i].tf.get(t, 0.0), own[i].length) for t, x in tf.items()})
    return out


def _as_indexed(doc_rows: Sequence[Any], posting_rows: Sequence[Any]) -> dict[int, _Indexed]:
    out: dict[int, _Indexed] = {int(doc): (at, int(length), {}) for doc, length, _, at in doc_rows}
    for doc, term, tf, own, length in posting_rows:
        if int(doc) in out:
            out[int(doc)][2][term] = (float(tf), float(own), int(length))
    return out


def _same(a: _Indexed, b: _Indexed) -> bool:
    return a[:2] == b[:2] and a[2].keys() == b[2].keys() and all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for t in a[2] for x, y in zip(a[2][t], b[2][t])
    )


def rebuild(db: Any) -> int:
    """Index every memory again from scratch (in the caller's write transaction); returns how many."""
    db.execute("DELETE FROM keyword_postings")
    db.execute("DELETE FROM keyword_docs")
    db.execute("DELETE FROM keyword_users")
    db.execute("DELETE FROM fts_pending")
    db.execute("INSERT INTO fts_pending (user_id, id, memory, topics) SELECT user_id, id, memory, topics FROM memories ORDER BY id")
    index_queued(db)
    return int(db.execute("SELECT coalesce(sum(docs), 0) FROM keyword_users").fetchone()[0])
