"""memoir.memory.ranking: FTS5 query building and hybrid fusion (pure functions)."""

from __future__ import annotations

import sqlite3

from hypothesis import given, strategies as st

from memoir.memory.ranking import CANDIDATES, STOP_WORDS, FuseParams, build_fts_query, fuse, is_question, query_terms

T0 = "2025-01-01T00:00:00+00:00"


def test_query_terms_and_stop_words() -> None:
    assert query_terms("What does Caroline's dog like?") == ["caroline", "dog", "like"]
    assert query_terms("Café CAFÉ café") == ["café"]
    assert "what" in STOP_WORDS and "dog" not in STOP_WORDS


def test_build_fts_query() -> None:
    assert build_fts_query("Where does the user live?") == '"user" OR "live"'
    assert build_fts_query("where is it?") is None
    assert build_fts_query("") is None
    assert build_fts_query("tea", prefix=True) == '"tea"*'


@given(st.text(max_size=200))
def test_build_fts_query_is_always_valid_fts5(text: str) -> None:
    q = build_fts_query(text)
    if q is None:
        return
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE m USING fts5(memory, topics, tokenize='porter unicode61')")
    db.execute("INSERT INTO m VALUES ('some text', '')")
    db.execute("SELECT rowid FROM m WHERE m MATCH ?", (q,)).fetchall()  # must not raise


def test_fts_syntax_in_user_text_is_searched_as_words() -> None:
    q = build_fts_query('memory:secret NEAR("a" b) OR * AND NOT "x')
    assert q == '"memory" OR "secret" OR "near" OR "b" OR "x"'
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE m USING fts5(memory, topics, tokenize='porter unicode61')")
    db.execute("INSERT INTO m VALUES ('the secret is near', '')")
    assert db.execute("SELECT count(*) FROM m WHERE m MATCH ?", (q,)).fetchone()[0] == 1


def _created(ids, base=T0):
    return {i: base for i in ids}


def test_agreement_wins() -> None:
    kw = [("a", -9.0), ("b", -5.0), ("c", -1.0)]
    sem = [("b", 0.8), ("d", 0.5), ("a", 0.1)]
    out = fuse(kw, sem, _created("abcd"))
    assert [i for i, _ in out][0] in ("a", "b")
    assert {i for i, _ in out} == set("abcd")
    assert all(out[k][1] >= out[k + 1][1] for k in range(len(out) - 1))


def test_keyword_only_keeps_keyword_order_and_sign_convention() -> None:
    neg = [("a", -9.0), ("b", -5.0), ("c", -1.0)]  # FTS5 bm25(): more negative is better
    pos = [(i, -s) for i, s in neg]
    assert [i for i, _ in fuse(neg, [], _created("abc"))] == ["a", "b", "c"]
    assert [i for i, _ in fuse(pos, [], _created("abc"))] == ["a", "b", "c"]
    assert fuse([], [], {}) == []


def test_semantic_only() -> None:
    sem = [("x", 0.9), ("y", 0.4), ("z", 0.3)]
    assert [i for i, _ in fuse([], sem, _created("xyz"))] == ["x", "y", "z"]


def test_recency_breaks_ties() -> None:
    kw = [("old", -3.0), ("new", -3.0)]
    created = {"old": "2024-01-01T00:00:00+00:00", "new": "2025-06-01T00:00:00+00:00"}
    assert [i for i, _ in fuse(kw, [], created)] == ["new", "old"]


def test_neighbour_of_a_strong_hit_rises() -> None:
    # "How long have you been married?" is the keyword hit; "5 years already!" sits next to it.
    kw = [("question", -8.0), ("far1", -4.0), ("far2", -3.9), ("far3", -1.0)]
    sem = [("far1", 0.5), ("answer", 0.45), ("question", 0.44), ("far2", 0.3)]
    created = _created(["question", "answer", "far1", "far2", "far3"])
    position = {"question": 10, "answer": 11, "far1": 50, "far2": 80, "far3": 120}
    without = [i for i, _ in fuse(kw, sem, created)]
    with_nb = [i for i, _ in fuse(kw, sem, created, position=position)]
    assert with_nb.index("answer") < without.index("answer")
    assert with_nb[:2] == ["question", "answer"]
    # and turning the signal off gives the plain blend back
    off = fuse(kw, sem, created, position=position, params=FuseParams(neighbour_weight=0.0))
    assert [i for i, _ in off] == without


def test_a_question_yields_to_the_answer_after_it() -> None:
    # Stored chat turns: the question shares the query's words; its reply holds the fact.
    kw = [("question", -8.0), ("far1", -5.0), ("far2", -3.9), ("far3", -1.0)]
    sem = [("question", 0.6), ("far1", 0.55), ("answer", 0.3), ("far2", 0.2)]
    created = _created(["question", "answer", "far1", "far2", "far3"])
    position = {"question": 10, "answer": 11, "far1": 50, "far2": 80, "far3": 120}
    plain = [i for i, _ in fuse(kw, sem, created, position=position)]
    asked = [i for i, _ in fuse(kw, sem, created, position=position, questions={"question"})]
    assert plain[0] == "question" and plain.index("answer") > plain.index("far1")
    assert asked[0] == "answer" and asked.index("answer") < asked.index("question")
    # neutral settings give the plain ranking back
    same = fuse(kw, sem, created, position=position, questions={"question"},
                params=FuseParams(question_factor=1.0, after_question_boost=1.0))
    assert [i for i, _ in same] == plain


def test_is_question() -> None:
    assert is_question("[8 May, 2023] Caroline: Where did you go hiking?  ")
    assert not is_question("Ava lives in Lisbon.") and not is_question("Why? Because she likes it.")


def test_duplicate_ids_in_a_list_count_once() -> None:
    out = fuse([("a", -2.0), ("a", -1.0), ("b", -1.0)], [], _created("ab"))
    assert [i for i, _ in out] == ["a", "b"]


def test_candidates_constant() -> None:
    assert CANDIDATES == 100
