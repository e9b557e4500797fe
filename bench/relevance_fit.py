"""The fit behind memoir's relevance constants (memory/ranking.py), in-process on LoCoMo dev.

Reproduces the product's retrieval without the server -- an in-memory FTS5 table (porter
unicode61, BM25 weights 1.0/0.5, common words left out as memory/store.py does) and the
all-MiniLM-L6-v2 vectors of `embedding_text` per conversation, fused by `ranking.fuse` -- then,
for every query, the raw cosine and the word coverage (`ranking.coverage`) of each candidate:

- positives: a conversation's own questions (categories 1-4), label 1 for its evidence memories
  in a method's top 10;
- negatives: the questions of the other two conversations and 100 queries per conversation of
  1-3 words found in another conversation but in no memory of this one, label 0 for their top 10.

It fits a class-balanced logistic regression per method (hybrid: cosine and coverage; semantic:
cosine; keyword: coverage) on the turn store and prints the coefficients and the table per
threshold (hit@5/10 of positives among results with relevance >= t; share of negative queries
with no such result) on turns and on the observation store. bench/relevance.py measures the
same through the MCP tools.

    /work/venv/bin/python bench/relevance_fit.py        # vectors cached in $MEMOIR_BENCH_CACHE or /tmp/memoir-bench

Data: `MEMOIR_LOCOMO` or ../shared/data/locomo-dev.json next to the repo.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import sqlite3
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_locomo  # noqa: E402

from memoir.memory import embeddings, ranking  # noqa: E402

CACHE = Path(os.environ.get("MEMOIR_BENCH_CACHE", "/tmp/memoir-bench"))
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
_embedder = None


def embed(texts: list[str]) -> np.ndarray:
    global _embedder
    path = CACHE / (hashlib.sha256(("minilm\0" + "\1".join(texts)).encode()).hexdigest()[:24] + ".npy")
    if path.exists():
        return np.load(path)
    _embedder = _embedder or embeddings.load_embedder()
    vectors = _embedder.embed(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


class Store:
    def __init__(self, texts: list[str], sources: list[set[str]]) -> None:
        self.texts, self.sources, self.n = texts, sources, len(texts)
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE m USING fts5(memory, topics, tokenize='porter unicode61')")
        self.db.executemany("INSERT INTO m(rowid, memory, topics) VALUES (?, ?, '')", enumerate(texts))
        self.vectors = embed([embeddings.embedding_text(t) for t in texts])
        self._df: dict[str, int] = {}

    def df(self, term: str) -> int:
        if term not in self._df:
            self._df[term] = self.db.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM m WHERE m MATCH ? LIMIT {self.n // 2 + 1})", (ranking.fts_match([term]),)
            ).fetchone()[0]
        return self._df[term]

    def keyword(self, query: str, limit: int = ranking.CANDIDATES) -> list[tuple[int, float]]:
        terms = ranking.query_terms(query)
        if len(terms) >= 2 and self.n // 2 >= 50:
            terms = [t for t in terms if self.df(t) <= self.n // 2] or terms
        if not terms:
            return []
        rows = self.db.execute(
            "SELECT rowid, bm25(m, 1.0, 0.5) AS s FROM m WHERE m MATCH ? ORDER BY s, rowid DESC LIMIT ?",
            (ranking.fts_match(terms), limit),
        ).fetchall()
        return [(r, -s) for r, s in rows]

    def held(self, terms: list[str], ids: list[int]) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {i: set() for i in ids}
        marks = ",".join(map(str, ids))
        for t in terms:
            if ids:
                for (r,) in self.db.execute(f"SELECT rowid FROM m WHERE m MATCH ? AND rowid IN ({marks})", (ranking.fts_match([t]),)):
                    out[r].add(t)
        return out


def top(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    k = min(k, len(scores))
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [(int(i), float(scores[i])) for i in idx]


def query_rows(store: Store, query: str, qv: np.ndarray, kind: str, gold: set[str] | None) -> dict:
    terms = ranking.query_terms(query)
    kw = store.keyword(query)
    cos = store.vectors @ qv
    sem = top(cos, ranking.CANDIDATES)
    cands = {i for i, _ in kw} | {i for i, _ in sem}
    fused = ranking.fuse(kw, sem, {i: f"{i:08d}" for i in cands}, position={i: i for i in cands},
                         questions={i for i in cands if ranking.is_question(store.texts[i])}) if terms else []
    weights = {t: ranking.term_weight(store.df(t), store.n) for t in terms}
    held = store.held(terms, [i for i, _ in kw])
    cov = {i: ranking.coverage(weights, held[i]) if i in held else 0.0 for i in cands}
    return {"kind": kind, "orders": {"hybrid": [i for i, _ in fused], "keyword": [i for i, _ in kw][:25], "semantic": [i for i, _ in sem][:25]},
            "cos": {i: float(cos[i]) for i in cands}, "cov": cov,
            "gold": {i for i in cands if gold and store.sources[i] & gold}}


def collect(store_kind: str) -> list[dict]:
    convs = load_locomo()
    stores = []
    for c in convs:
        items = [(t.memory, {t.dia_id}) for t in c.turns] if store_kind == "turns" else [(f.memory, set(f.sources)) for f in c.facts]
        stores.append(Store([m for m, _ in items], [s for _, s in items]))
    vocab = [{w for t in s.texts for w in re.findall(r"[a-z]+", t.lower())} for s in stores]
    rows = []
    for ci, (conv, store) in enumerate(zip(convs, stores)):
        for oi, other in enumerate(convs):
            qs = [q for q in other.questions if q.evidence and (oi != ci or q.category <= 4)]
            for q, qv in zip(qs, embed([q.question for q in qs])):
                rows.append(query_rows(store, q.question, qv, "pos" if oi == ci else "other", set(q.evidence) if oi == ci else None))
        pool = sorted({w for j, v in enumerate(vocab) if j != ci for w in v} - ranking.STOP_WORDS)
        pool = [w for w in pool if len(w) >= 4 and store.df(w) == 0]
        rnd = random.Random(f"memoir-relevance:{conv.sample_id}")
        absent = [" ".join(rnd.sample(pool, rnd.choice((1, 2, 3)))) for _ in range(100)]
        for q, qv in zip(absent, embed(absent)):
            rows.append(query_rows(store, q, qv, "absent", None))
    return rows


FEATURES = {"hybrid": ("cos", "cov"), "semantic": ("cos",), "keyword": ("cov",)}


def x(row: dict, i: int, method: str) -> list[float]:
    return [row[f][i] for f in FEATURES[method]]


def fit(rows: list[dict], method: str) -> np.ndarray:
    xs, ys = [], []
    for r in rows:
        for i in r["orders"][method][:10]:
            if r["kind"] != "pos" or i in r["gold"]:
                xs.append(x(r, i, method) + [1.0])
                ys.append(1.0 if r["kind"] == "pos" else 0.0)
    X, y = np.array(xs), np.array(ys)
    w = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))  # each class weighs half
    beta = np.zeros(X.shape[1])
    for _ in range(50):  # Newton's method, a touch of L2
        p = 1 / (1 + np.exp(-X @ beta))
        beta -= np.linalg.solve((X * (w * p * (1 - p))[:, None]).T @ X + 1e-3 * np.eye(len(beta)), X.T @ (w * (p - y)) + 1e-3 * beta)
    print(f"{method}: z = " + " + ".join(f"{b:.2f} * {f}" for b, f in zip(beta, FEATURES[method])) + f" {beta[-1]:+.2f}"
          f"   ({len(y)} pairs, {int(y.sum())} positive)")
    return beta


def table(rows: list[dict], method: str, beta: np.ndarray) -> None:
    print(f"  {'t':>4} {'hit@5':>6} {'hit@10':>6} {'other empty':>12} {'absent empty':>13}")
    for t in THRESHOLDS:
        h5 = h10 = n = 0
        empty = {"other": [], "absent": []}
        for r in rows:
            kept = [i for i in r["orders"][method] if 1 / (1 + math.exp(-(np.dot(beta[:-1], x(r, i, method)) + beta[-1]))) >= t]
            if r["kind"] == "pos":
                n += 1
                h5 += any(i in r["gold"] for i in kept[:5])
                h10 += any(i in r["gold"] for i in kept[:10])
            else:
                empty[r["kind"]].append(not kept)
        print(f"  {t:4.2f} {100 * h5 / n:6.1f} {100 * h10 / n:6.1f} {100 * np.mean(empty['other']):11.1f}% {100 * np.mean(empty['absent']):12.1f}%")


def main() -> None:
    turns, facts = collect("turns"), collect("observations")
    for method in FEATURES:
        beta = fit(turns, method)
        print(" turns"); table(turns, method, beta)
        print(" observations"); table(facts, method, beta)


if __name__ == "__main__":
    main()
