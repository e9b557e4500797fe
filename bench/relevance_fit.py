"""The fit behind memoir's relevance constants (memory/ranking.py), in-process on LoCoMo dev.

Runs the product's retrieval without the server -- each conversation stored by memoir's own
Store and VectorIndex in a temporary file, searched by its Retriever (min_relevance 0) -- and
takes, for every query, the raw cosine and the word coverage (`ranking.coverage`) of each
candidate as memory/retrieval.py computes them (hybrid: coverage 0 outside its keyword list):

- positives: a conversation's own questions (categories 1-4), label 1 for its evidence memories
  in a method's top 10;
- negatives: the questions of the other two conversations and 100 queries per conversation of
  1-3 words found in another conversation but in no memory of this one, label 0 for their top 10.

It fits a class-balanced logistic regression per method (hybrid: cosine and coverage; semantic:
cosine; keyword: coverage) on the turn store and prints the coefficients and the table per
threshold (hit@5/10 of positives among results with relevance >= t; share of negative queries
with no such result) on turns and on the observation store. bench/relevance.py measures the
same through the MCP tools.

    /work/venv/bin/python bench/relevance_fit.py        # ~2 min per store on 2 cores (embeds everything)

Data: `MEMOIR_LOCOMO` or ../shared/data/locomo-dev.json next to the repo.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_locomo  # noqa: E402

from memoir.memory import embeddings, keyword_index, ranking  # noqa: E402
from memoir.memory.retrieval import Retriever  # noqa: E402
from memoir.memory.store import Store  # noqa: E402
from memoir.memory.vectors import VectorIndex  # noqa: E402

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
USER = "locomo"


class Conversation:
    """One LoCoMo conversation stored in the product, in-process (a Store on a temporary file and
    its VectorIndex, searched by the Retriever): every feature below is the product's own."""

    def __init__(self, tmp: Path, name: str, texts: list[str], sources: list[set[str]]) -> None:
        self.tmp, self.name, self.texts, self.sources = tmp, name, texts, sources

    async def __aenter__(self) -> "Conversation":
        self.store = await Store.open(self.tmp / f"{self.name}.db")
        self.vectors = VectorIndex(self.store, embeddings.load_embedder)
        self.retriever = Retriever(self.store, self.vectors)
        self.source_of: dict[str, set[str]] = {}
        for text, source in zip(self.texts, self.sources):
            memory = await self.store.add(USER, text)
            self.source_of[memory.memory_id] = source
        await self.vectors.settled()
        self.stems = {w for t in self.texts for w in keyword_index.words(t)}
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    async def query_rows(self, query: str, kind: str, gold: set[str] | None) -> dict:
        """Each method's top 25 (min_relevance 0), and each candidate's raw cosine and coverage
        as the product computes them for relevance (memory/retrieval.py)."""
        orders = {}
        for method in ("hybrid", "keyword", "semantic"):
            found = await self.retriever.search(USER, query, method=method, limit=25, min_relevance=0)
            orders[method] = [m.memory_id for m in found.results]
        timeline = await self.vectors.user_vectors(USER)
        qv = (await self.vectors.embed([query]))[0]
        ids = {m for order in orders.values() for m in order}
        beside = {i: timeline.neighbours(i) for i in ids}
        keyword = [m for m, _ in await self.store.keyword_ranked(USER, query, limit=ranking.CANDIDATES, respelled=timeline.respelled(query))]
        covered = await self.retriever._coverage(USER, query, sorted(ids | set(keyword) | {n for ns in beside.values() for n in ns}))
        in_list = set(keyword)  # hybrid's coverage is 0 outside its keyword list, as in the product
        return {"kind": kind, "orders": orders,
                "cos": {i: timeline.cosine(i, qv) for i in ids},
                "cov": {i: covered.get(i, 0.0) for i in ids},
                "cov_hybrid": {i: covered.get(i, 0.0) if i in in_list else 0.0 for i in ids},
                "nb_cov": {i: max((covered.get(n, 0.0) for n in beside[i]), default=0.0) for i in ids},
                "gold": {i for i in ids if gold and self.source_of[i] & gold}}


async def collect_async(store_kind: str) -> list[dict]:
    convs = load_locomo()
    vocab = [{w for t in c.turns for w in re.findall(r"[a-z]+", t.memory.lower())} for c in convs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ci, conv in enumerate(convs):
            items = [(t.memory, {t.dia_id}) for t in conv.turns] if store_kind == "turns" else [(f.memory, set(f.sources)) for f in conv.facts]
            async with Conversation(Path(tmp), f"{store_kind}-{ci}", [m for m, _ in items], [s for _, s in items]) as c:
                for oi, other in enumerate(convs):
                    qs = [q for q in other.questions if q.evidence and (oi != ci or q.category <= 4)]
                    for q in qs:
                        rows.append(await c.query_rows(q.question, "pos" if oi == ci else "other", set(q.evidence) if oi == ci else None))
                pool = sorted({w for j, v in enumerate(vocab) if j != ci for w in v} - ranking.STOP_WORDS)
                pool = [w for w in pool if len(w) >= 4 and not set(keyword_index.words(w)) & c.stems]
                rnd = random.Random(f"memoir-relevance:{conv.sample_id}")
                absent = [" ".join(rnd.sample(pool, rnd.choice((1, 2, 3)))) for _ in range(100)]
                for q in absent:
                    rows.append(await c.query_rows(q, "absent", None))
            print(f"{store_kind}: {conv.sample_id} done", file=sys.stderr, flush=True)
    return rows


def collect(store_kind: str) -> list[dict]:
    return asyncio.run(collect_async(store_kind))


FEATURES = {"hybrid": ("cos", "cov_hybrid", "nb_cov"), "semantic": ("cos",), "keyword": ("cov",)}


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
    both = "--fit-on-both" in sys.argv  # fit on the turn and the observation stores together
    turns, facts = collect("turns"), collect("observations")
    for method in FEATURES:
        beta = fit(turns + facts if both else turns, method)
        print(" turns"); table(turns, method, beta)
        print(" observations"); table(facts, method, beta)


if __name__ == "__main__":
    main()
